"""The ``tolerance`` setting: predictable cells removed exactly (0) or within a bound, alone and as
the first step of a budget, shown by ``reconstruct`` as their prediction."""

import importlib.util
import math
import sys
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kernels import kernels, needs_numba
from strategies import images

from entropy_prune import _compiled, reconstruct, select_patches
from entropy_prune.scores import score_maps
from entropy_prune.selection import _predictable

# tolerance > 0 walks compiled where numba is installed (the dev extra installs it): both paths are tested
WALKS = ["numpy", pytest.param("compiled", marks=needs_numba)]


def walk_path(walk):
    """select_patches' tolerance > 0 walk on the numpy path, or compiled (which must then run)."""
    return kernels(walk == "compiled")


@st.composite
def tiled_images(draw, max_cells=6):
    """uint8 (H, W, 3) images of p x p cells drawn from a few patterns (flat, stripes, noise) or
    continuing a neighbour (its last column repeated rightwards, its last row downwards), some with
    +-2 noise, so many cells repeat or extend a neighbour exactly or nearly; sometimes cut edges."""
    p = draw(st.integers(1, 5))
    rows, cols = draw(st.integers(1, max_cells)), draw(st.integers(1, max_cells))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    patterns = [np.full((p, p, 3), rng.integers(0, 256, 3), np.int64) for _ in range(2)]
    patterns.append(np.broadcast_to(rng.integers(0, 256, (p, 1, 3)), (p, p, 3)))  # rows constant
    patterns.append(np.broadcast_to(rng.integers(0, 256, (1, p, 3)), (p, p, 3)))  # columns constant
    patterns.append(rng.integers(0, 256, (p, p, 3)))
    img = np.zeros((rows * p, cols * p, 3), np.int64)
    for r in range(rows):
        for c in range(cols):
            k = rng.integers(0, len(patterns) + 2)
            if k == len(patterns) and c:
                cell = np.repeat(img[r * p:(r + 1) * p, c * p - 1:c * p], p, 1)
            elif k == len(patterns) + 1 and r:
                cell = np.repeat(img[r * p - 1:r * p, c * p:(c + 1) * p], p, 0)
            else:
                cell = patterns[min(k, len(patterns) - 1)]
            img[r * p:(r + 1) * p, c * p:(c + 1) * p] = cell
    if draw(st.booleans()):
        img = img + rng.integers(-2, 3, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    cut_h, cut_w = draw(st.integers(0, p - 1)), draw(st.integers(0, p - 1))
    return img[: img.shape[0] - cut_h or None, : img.shape[1] - cut_w or None], p


def reference_prediction(a, b, cc, p, same):
    """The documented rule for an inner cell from its left (a), upper (b), upper-left (cc) cells."""
    if same(cc, a) and not same(cc, b):
        return b
    if same(cc, a) or same(cc, b):
        return a
    if same(np.repeat(cc[:, -1:], p, 1), b):
        return np.repeat(a[:, -1:], p, 1)
    if same(np.repeat(cc[-1:], p, 0), a):
        return np.repeat(b[-1:], p, 0)
    return a


def reference_predicted(img: np.ndarray, p: int, tol: float, shown_too: bool = False):
    """One cell at a time in raster order (the rule as documented), on whole cells: the removed
    cells, and with ``shown_too`` also what is shown of the whole cells (float64)."""
    x = (img if img.ndim == 3 else img[..., None]).astype(np.float64)
    rows, cols = x.shape[0] // p, x.shape[1] // p
    shown = x[: rows * p, : cols * p].copy()
    out = np.zeros((-(-img.shape[0] // p), -(-img.shape[1] // p)), bool)

    def unit(r, c):
        return shown[r * p:(r + 1) * p, c * p:(c + 1) * p]

    def same(u, v):
        return np.abs(u - v).max() <= tol

    for r, c in np.ndindex(rows, cols):
        if r == 0 and c == 0:
            continue
        if r == 0 or c == 0:
            pred = unit(r, c - 1) if r == 0 else unit(r - 1, c)
        else:
            pred = reference_prediction(unit(r, c - 1), unit(r - 1, c), unit(r - 1, c - 1), p, same)
        pred = pred.copy()
        if same(unit(r, c), pred):
            out[r, c] = True
            shown[r * p:(r + 1) * p, c * p:(c + 1) * p] = pred
    return (out, shown) if shown_too else out


@pytest.mark.parametrize("walk", WALKS)
@given(tiled_images(), st.sampled_from([0, 0.5, 2, 3, 40]))
def test_removed_cells_match_a_cell_by_cell_reference(walk, case, tol):
    img, p = case
    with walk_path(walk):
        sel = select_patches(img, None, patch_size=p, tolerance=tol)
    assert np.array_equal(sel.predicted, reference_predicted(img, p, tol))
    assert np.array_equal(sel.label_map == 0, sel.predicted)
    assert sel.num_tokens == sel.num_cells - int(sel.predicted.sum()) and sel.tolerance == tol


@pytest.mark.parametrize("walk", WALKS)
@given(tiled_images(max_cells=12), st.sampled_from([1, 2, 3]),
       st.sampled_from(["uint8", "uint16", "int16", "float32", "float64"]), st.sampled_from(["rgb", "one", "gray"]))
def test_removed_cells_match_the_reference_on_larger_grids(walk, case, tol, dtype, channels):
    """Longer chains of cells shown changed (removed within tol of, not equal to, the image), which
    the raster walk decides again; in each dtype's units (tol 8-bit levels of its range [0, top]),
    with three channels, one, or none (2-D)."""
    img, p = case
    top = {"uint8": 255.0, "uint16": 65535.0, "int16": 32767.0, "float32": 1.0, "float64": 1.0}[dtype]
    x = (img.astype(np.float64) * (top / 255)).astype(dtype)
    x = {"rgb": x, "one": x[..., :1], "gray": x[..., 0]}[channels]
    with walk_path(walk):
        sel = select_patches(x, None, patch_size=p, tolerance=tol)
    assert np.array_equal(sel.predicted, reference_predicted(x, p, tol * top / 255.0))  # same units and rounding


@pytest.mark.parametrize("walk", WALKS)
@given(tiled_images(max_cells=12), st.sampled_from([0, 1, 3]))
def test_reconstruct_shows_what_the_reference_shows(walk, case, tol):
    """Removed cells are shown as the reference's predictions, value for value."""
    img, p = case
    with walk_path(walk):
        sel = select_patches(img, None, patch_size=p, tolerance=tol)
    out = reconstruct(img, sel, patch_size=p)
    _, shown = reference_predicted(img, p, tol, shown_too=True)
    h, w = shown.shape[:2]
    assert np.array_equal(out[:h, :w], shown.astype(np.uint8))


@given(tiled_images(), st.sampled_from([0, 1, 2, 5]), st.sampled_from(["multiscale", "drop"]))
def test_round_trip_is_exact_at_zero_and_bounded_above(case, tol, mode):
    img, p = case
    sel = select_patches(img, None, patch_size=p, tolerance=tol, mode=mode)
    out = reconstruct(img, sel, patch_size=p)
    err = np.abs(out.astype(int) - img).max()
    assert err <= tol
    if tol == 0:
        assert np.array_equal(out, img)


@given(images(max_side=32, dtypes=("uint8", "uint16", "float32")), st.integers(1, 5), st.sampled_from([0, 3]))
def test_round_trip_bound_in_the_image_units(img, p, tol):
    """tolerance is in 8-bit levels of the image's range, whatever its dtype."""
    sel = select_patches(img, None, patch_size=p, tolerance=tol)
    lo, hi = (0.0, 1.0) if img.dtype.kind == "f" else (0.0, float(np.iinfo(img.dtype).max))
    err = np.abs(reconstruct(img, sel, patch_size=p).astype(np.float64) - img).max()
    assert err <= tol * (hi - lo) / 255 * (1 + 1e-12)


@given(tiled_images(), st.sampled_from([0, 2]), st.sampled_from(["multiscale", "drop"]), st.floats(0.01, 1.0))
def test_reconstruct_reads_only_what_is_kept(case, tol, mode, alpha):
    """Removed cells are shown from the kept ones: garbage in them changes nothing."""
    img, p = case
    sel = select_patches(img, "budget", alpha, patch_size=p, tolerance=tol, mode=mode)
    spoiled = img.copy()
    for r, c in zip(*np.nonzero(sel.label_map == 0), strict=True):
        spoiled[r * p:(r + 1) * p, c * p:(c + 1) * p] = 255 - spoiled[r * p:(r + 1) * p, c * p:(c + 1) * p]
    assert np.array_equal(reconstruct(img, sel, patch_size=p), reconstruct(spoiled, sel, patch_size=p))


@given(tiled_images(), st.sampled_from([0, 2]), st.integers(1, 4), st.sampled_from(["multiscale", "drop"]),
       st.lists(st.floats(0.01, 1.0), min_size=1, max_size=5))
def test_budget_after_prediction_bounds_and_monotone(case, tol, k, mode, alphas):
    img, p = case
    free = select_patches(img, None, patch_size=p, tolerance=tol).num_tokens  # cells not predicted
    counts = []
    for alpha in sorted(alphas):
        sel = select_patches(img, "budget", alpha, patch_size=p, num_scales=k, tolerance=tol, mode=mode)
        assert sel.budget == math.floor(alpha * sel.num_cells + 0.5)
        if sel.budget_met:
            assert sel.num_tokens <= sel.budget
            assert sel.num_tokens >= sel.budget - (2 if mode == "multiscale" else 0) or sel.num_tokens == free
        assert sel.num_tokens <= free or not sel.budget_met
        if mode == "drop":
            assert sel.num_tokens == min(sel.budget, free)
        if sel.budget_met and sel.num_tokens == free:  # every unpredicted cell kept at full resolution
            assert np.abs(reconstruct(img, sel, patch_size=p).astype(int) - img).max() <= tol
        counts.append(sel.num_tokens)
    assert counts == sorted(counts)


@given(tiled_images(), st.sampled_from(["budget", "v1", "v2", "none"]), st.sampled_from(["multiscale", "drop"]),
       st.sampled_from([0, 2]))
def test_tolerance_is_deterministic_and_numpy_equals_torch(case, method, mode, tol):
    img, p = case
    kw = dict(patch_size=p, tolerance=tol, mode=mode, alpha=0.4 if method == "budget" else 1.0)
    a = select_patches(img, method, **kw)
    b = select_patches(torch.from_numpy(img.copy()), method, **kw)
    c = select_patches(img.copy(), method, **kw)
    for other in (b, c):
        assert np.array_equal(a.regions, other.regions) and np.array_equal(a.predicted, other.predicted)
    # multiscale regions stay aligned blocks, and predicted cells are exactly the uncovered ones
    covered = np.zeros(a.label_map.shape, bool)
    for level, r, c_ in a.regions:
        b_ = 1 << (level - 1)
        assert r % b_ == 0 and c_ % b_ == 0 and not covered[r:r + b_, c_:c_ + b_].any()
        covered[r:r + b_, c_:c_ + b_] = True
    if mode == "multiscale":
        assert np.array_equal(~covered, a.predicted)


@given(tiled_images(), st.floats(0.01, 1.0))
def test_drop_ties_keep_unpredictable_cells_first(case, alpha):
    """Among cells of equal score, a predictable one is dropped before an unpredictable one is."""
    img, p = case
    sel = select_patches(img, "budget", alpha, patch_size=p, mode="drop")
    s = np.asarray(score_maps(img, "detail", patch_size=p, num_scales=3)[0])
    predictable = select_patches(img, None, patch_size=p, tolerance=0).predicted
    kept = sel.label_map == 1
    for value in np.unique(s):
        tied = s == value
        if (tied & kept).any() and (tied & ~kept).any():
            assert not (tied & kept & predictable).any() or not (tied & ~kept & ~predictable).any()


def test_page_with_a_rule():
    """A white page (4 x 5 cells) with a dark rule through cells (1, 1) .. (1, 3): kept are the
    first cell, the rule's three cells, the white cell after it (predicted from its left) and
    (2, 1), which the LOCO-I rule predicts from above (C ~ A, not C ~ B); everything else is
    predicted."""
    img = np.full((112, 140, 3), 255, np.uint8)
    img[40:44, 30:110] = 0
    sel = select_patches(img, None, tolerance=0)
    assert np.array_equal(reconstruct(img, sel), img)
    kept = {(int(r), int(c)) for _, r, c in sel.regions}
    assert kept == {(0, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 1)}


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("tol", [0, 3])
def test_a_new_band_is_predicted_by_extending_a_neighbour(transpose, tol):
    """2 x 2 cells of 4 px: C (upper left) dark with a light last column, which B (upper right)
    continues; A (lower left) ends in gray, which X (lower right) continues. No copy of a whole
    neighbour predicts X, A's last column extended across does (transposed: B's last row down)."""
    img = np.zeros((8, 8), np.uint8)
    img[:4, 2:] = 200  # C's right half and all of B
    img[4:, :2], img[4:, 2:] = 50, 100  # A: 50 | 100; X: 100
    img = img.T.copy() if transpose else img
    sel = select_patches(img, None, patch_size=4, tolerance=tol)
    assert sel.predicted.tolist() == [[False, False], [False, True]]
    assert np.array_equal(reconstruct(img, sel, patch_size=4), img)


@pytest.mark.parametrize("bad", [-1, 255.5, float("nan"), float("inf")])
def test_bad_tolerance_raises_naming_it_and_its_range(bad):
    with pytest.raises(ValueError, match=r"tolerance must be in \[0, 255\]"):
        select_patches(np.zeros((56, 56), np.uint8), tolerance=bad)


@given(images(max_side=40, dtypes=("uint8", "uint16", "float32", "float64")), st.integers(1, 6),
       st.sampled_from([0.5, 1, 4, 100]))
def test_compiled_walk_equals_the_numpy_walk(img, p, tol):
    """On any image (cells cut by the edge included), tol in the image's units."""
    pytest.importorskip("numba")
    shape = (-(-img.shape[0] // p), -(-img.shape[1] // p))
    tol = tol * (1.0 if img.dtype.kind == "f" else np.iinfo(img.dtype).max) / 255.0
    compiled = _compiled.predictable(img, p, tol, shape)
    with walk_path("numpy"):
        assert np.array_equal(compiled, _predictable(img, p, tol, shape))


def test_compiled_walk_leaves_other_dtypes_and_no_numba_to_numpy():
    """None (the numpy path runs) for dtypes numba walks differently from numpy or not at all, and
    without numba or with one that fails to import (warned); select_patches gives the same cells."""
    img = np.zeros((56, 84, 3), np.uint8)
    img[:, 28:56], img[:, 56:] = 3, 6  # (0, 2) is 6 from (0, 1) as shown (0), so kept
    for dtype in (np.int32, np.uint64, np.float16):
        assert _compiled.predictable(img.astype(dtype), 28, 4.0, (2, 3)) is None
        sel = select_patches(img.astype(dtype), None, tolerance=4, value_range=(0, 255))
        assert sel.predicted.tolist() == [[0, 1, 0], [1, 1, 1]]
    try:
        _compiled._kernels.cache_clear()
        with mock.patch.object(importlib.util, "find_spec", lambda name: None):
            assert _compiled.predictable(img, 28, 4.0, (2, 3)) is None
        _compiled._kernels.cache_clear()
        loading = "numba is installed but the compiled kernels cannot be loaded .* numpy code"
        with mock.patch.dict(sys.modules, {"entropy_prune._kernel": None}):  # a numba that cannot be imported
            with pytest.warns(RuntimeWarning, match=loading):
                assert select_patches(img, None, tolerance=4).predicted.tolist() == [[0, 1, 0], [1, 1, 1]]
    finally:
        _compiled._kernels.cache_clear()


def test_turned_off_kernels_stay_off():
    """turn_off (what the vLLM plugin does on CPU) leaves the numpy code to run, with the same cells."""
    img = np.zeros((56, 84, 3), np.uint8)
    img[:, 28:56], img[:, 56:] = 3, 6
    try:
        _compiled.turn_off()
        assert _compiled._kernels() is None and _compiled.predictable(img, 28, 4.0, (2, 3)) is None
        assert select_patches(img, None, tolerance=4).predicted.tolist() == [[0, 1, 0], [1, 1, 1]]
    finally:
        _compiled._off = False
        _compiled._kernels.cache_clear()


def test_tolerance_type_and_maps():
    with pytest.raises(TypeError, match="tolerance must be a real number"):
        select_patches(np.zeros((56, 56), np.uint8), tolerance="0")
    maps = score_maps(np.zeros((56, 56), np.uint8), "detail")
    with pytest.raises(ValueError, match="tolerance needs the image"):
        select_patches(maps, tolerance=0)
