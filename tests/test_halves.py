"""shapes="halves": regions that split in two across either side. The tiling, exact budgets, the
split order against a plain re-implementation, each shape's error against its definition, and
what reconstruct shows of an oblong region."""

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kernels import kernels, needs_numba
from skimage import data
from strategies import images
from test_main import run as run_main_job

from entropy_prune import _compiled, reconstruct, select_patches
from entropy_prune._halves import image_errors, region_errors, region_shapes, split_leaves
from entropy_prune._image import check_image
from entropy_prune.scores import _gray_levels
from entropy_prune.selection import _predictable, _tolerance_units
from entropy_prune.visualize import _legend_entries, render_selection


def grid(img, p):
    return -(-img.shape[0] // p), -(-img.shape[1] // p)


def check_tiling(sel, img, p, k, removed=None):
    """regions x sizes cover every cell not removed exactly once; each region is a shape of
    num_scales k aligned to its size inside the whole cells (or a single cell); label_map holds
    the level of its longer side, masks its square regions; raster order."""
    rows, cols = grid(img, p)
    whole = (img.shape[0] // p, img.shape[1] // p)
    hits = np.zeros((rows, cols), int)
    label = np.zeros((rows, cols), np.int8)
    squares = [np.zeros(m.shape, bool) for m in sel.masks]
    assert sel.regions.shape == (sel.num_tokens, 3) and sel.sizes.shape == (sel.num_tokens, 2)
    for (level, r, c), (h, w) in zip(sel.regions.tolist(), sel.sizes.tolist(), strict=True):
        assert (h, w) in region_shapes(k)
        assert r % h == 0 and c % w == 0
        assert (h, w) == (1, 1) or (r + h <= whole[0] and c + w <= whole[1])
        assert level == max(h, w).bit_length()
        hits[r:r + h, c:c + w] += 1
        label[r:r + h, c:c + w] = level
        if h == w:
            squares[level - 1][r // h, c // w] = True
    expected = np.ones((rows, cols), int) if removed is None else 1 - removed
    if removed is None:
        assert np.array_equal(hits, expected)
    else:  # a kept region holds at least one cell not removed; removed single cells have no token
        assert hits.max(initial=0) <= 1 and (hits >= expected).all()
    assert np.array_equal(label, sel.label_map)
    assert all(np.array_equal(a, b) for a, b in zip(squares, sel.masks, strict=True))
    order = np.lexsort((sel.regions[:, 2], sel.regions[:, 1]))
    assert np.array_equal(order, np.arange(len(order)))


def coarsest(img, p, k):
    """The squares' coarsest tiling (every whole block coarse)."""
    return select_patches(img, "v1", thresholds=[1e9] * (k - 1), patch_size=p, num_scales=k)


@given(images(), st.integers(1, 5), st.integers(1, 4), st.floats(0.001, 1.0))
def test_tiles_the_grid_with_exactly_the_budget(img, p, k, alpha):
    sel = select_patches(img, "budget", alpha, patch_size=p, num_scales=k, shapes="halves")
    check_tiling(sel, img, p, k)
    floor = coarsest(img, p, k)
    assert sel.budget == math.floor(alpha * sel.num_cells + 0.5)
    if sel.budget >= floor.num_tokens:
        assert sel.budget_met and sel.num_tokens == sel.budget
    else:  # the coarsest tiling, as with squares
        assert not sel.budget_met and np.array_equal(sel.label_map, floor.label_map)


@given(images(), st.integers(1, 5), st.integers(1, 4), st.lists(st.floats(0.001, 1.0), min_size=2, max_size=6))
def test_tokens_non_decreasing_in_alpha_and_deterministic(img, p, k, alphas):
    sels = [select_patches(img, "budget", a, patch_size=p, num_scales=k, shapes="halves") for a in sorted(alphas)]
    counts = [s.num_tokens for s in sels]
    assert counts == sorted(counts)
    again = select_patches(img.copy(), "budget", sorted(alphas)[-1], patch_size=p, num_scales=k, shapes="halves")
    assert np.array_equal(again.regions, sels[-1].regions) and np.array_equal(again.sizes, sels[-1].sizes)


@given(images(max_side=32), st.integers(1, 5), st.integers(1, 4), st.floats(0.001, 1.0),
       st.sampled_from([None, 0.0, 10.0]))
def test_numpy_and_torch_images_select_the_same(img, p, k, alpha, tolerance):
    kw = dict(patch_size=p, num_scales=k, shapes="halves", tolerance=tolerance)
    a = select_patches(img, "budget", alpha, **kw)
    b = select_patches(torch.from_numpy(img), "budget", alpha, **kw)
    assert np.array_equal(a.regions, b.regions) and np.array_equal(a.sizes, b.sizes)


@given(images(), st.integers(1, 5), st.integers(1, 4), st.floats(0.001, 1.0), st.sampled_from([0.0, 10.0]))
def test_tolerance_spends_the_budget_on_the_rest(img, p, k, alpha, tolerance):
    sel = select_patches(img, "budget", alpha, patch_size=p, num_scales=k, shapes="halves", tolerance=tolerance)
    arr, rng = check_image(img)
    removed = _predictable(arr, p, _tolerance_units(tolerance, rng), grid(img, p))
    check_tiling(sel, img, p, k, removed)
    assert np.array_equal(sel.predicted, removed & (sel.label_map == 0))
    if sel.budget_met:
        assert sel.num_tokens == min(sel.budget, int((~removed).sum()))


@given(images(max_side=40, channels=(None, 3)), st.integers(1, 5))
def test_keep_all_with_tolerance_0_is_lossless(img, p):
    sel = select_patches(img, "budget", 1.0, patch_size=p, shapes="halves", tolerance=0)
    assert np.array_equal(reconstruct(img, sel, p), img)


def brute_errors(gray, p, shape):
    """Squared error of each aligned region of ``shape`` cells shown as its h x w px block means."""
    h, w = shape
    rh, cw = gray.shape[0] // p // h, gray.shape[1] // p // w
    out = np.zeros((rh, cw))
    for i in range(rh):
        for j in range(cw):
            x = gray[i * h * p:(i + 1) * h * p, j * w * p:(j + 1) * w * p]
            means = x.reshape(p, h, p, w).mean((1, 3))
            out[i, j] = ((x - np.repeat(np.repeat(means, h, 0), w, 1)) ** 2).sum()
    return out


@given(st.integers(1, 6), st.integers(1, 13), st.integers(1, 13), st.integers(1, 4), st.integers(0, 2**32 - 1),
       st.booleans())
def test_region_errors_are_the_squared_error_of_block_means(p, rows, cols, k, seed, integer):
    rng = np.random.default_rng(seed)
    h, w = rows * p + rng.integers(0, p), cols * p + rng.integers(0, p)
    gray = rng.integers(0, 256, (h, w)).astype(np.float32) if integer else rng.random((h, w)) * 255
    errors = region_errors(gray, p, k, exact=integer)
    assert sorted(errors) == sorted(region_shapes(k))
    for shape, e in errors.items():
        np.testing.assert_allclose(e, brute_errors(gray.astype(np.float64), p, shape), rtol=1e-9, atol=1e-6)


@needs_numba
@given(images(max_side=90, dtypes=("uint8",)), st.integers(1, 9), st.integers(1, 4), st.booleans())
def test_compiled_region_sums_give_the_numpy_errors_bit_for_bit(img, p, k, channels_first):
    """Any size (partial cells, shapes too large to fit), odd p, 1 to 4 channels or 2-D, both layouts."""
    x = np.moveaxis(np.ascontiguousarray(np.moveaxis(img, -1, 0)), 0, -1) if channels_first and img.ndim == 3 else img
    assert (_compiled.region_sums(x, p, (0.0, 255.0), k) is not None) == (k in (2, 3))
    with kernels(False):
        expected = image_errors(x, p, k, (0.0, 255.0))
    got = image_errors(x, p, k, (0.0, 255.0))
    assert list(got) == list(expected)
    for shape, e in expected.items():
        assert got[shape].dtype == np.float64 and np.array_equal(got[shape], e), shape


@needs_numba
@pytest.mark.parametrize("side", [448, 1000])
def test_compiled_region_sums_on_photographs(side):
    """The astronaut in both layouts, as uint8 and as 8-bit values in int64; float and 16-bit
    images and num_scales 1 and 4 are left to numpy."""
    from PIL import Image

    img = np.asarray(Image.fromarray(data.astronaut()).resize((side, side), Image.BICUBIC))
    planar = np.moveaxis(np.ascontiguousarray(np.moveaxis(img, -1, 0)), 0, -1)
    for x in (img, planar, img.astype(np.int64), img[..., :1]):
        with kernels(False):
            expected = image_errors(x, 28, 3, (0.0, 255.0))
        got = image_errors(x, 28, 3, (0.0, 255.0))
        assert all(np.array_equal(got[s], e) for s, e in expected.items())
    assert _compiled.region_sums(img / 255.0, 28, (0.0, 1.0), 3) is None
    assert _compiled.region_sums(img.astype(np.uint16), 28, (0.0, 65535.0), 3) is None
    assert _compiled.region_sums(img, 28, (0.0, 255.0), 4) is None


def test_region_shapes():
    assert region_shapes(1) == [(1, 1)]
    assert region_shapes(3) == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 4), (4, 2), (4, 4)]


def reference_order(errors, start, budget, tokens):
    """split_leaves' rule, written plainly: scan every leaf for the split of the largest drop per
    token (free ones first; ties: rows first, larger region, raster order) until one does not fit."""
    def cost(r, c, s):
        return 1 if tokens is None else int(tokens[s][r // s[0], c // s[1]])

    def err(r, c, s):
        return errors[s][r // s[0], c // s[1]]

    leaves = {(r, c): s for r, c, s in start}
    spent = sum(cost(r, c, s) for r, c, s in start)
    while True:
        best = None
        for (r, c), (h, w) in leaves.items():
            if not cost(r, c, (h, w)):
                continue
            for side, half, dr, dc in ((0, (h // 2, w), h // 2, 0), (1, (h, w // 2), 0, w // 2)):
                if half not in errors or half[0] * half[1] == 0 or max(half) > 2 * min(half):
                    continue
                added = cost(r, c, half) + cost(r + dr, c + dc, half) - 1
                drop = err(r, c, (h, w)) - err(r, c, half) - err(r + dr, c + dc, half)
                key = (-(np.inf if added == 0 else drop), -h * w, r, c, side)  # a region's sides: rows first
                if best is None or key < best[0]:
                    best = (key, r, c, half, dr, dc, added)
        if best is None or spent + best[6] > budget:
            return sorted((r, c, s) for (r, c), s in leaves.items())
        _, r, c, half, dr, dc, added = best
        spent += added
        del leaves[r, c]
        leaves[r, c] = half
        leaves[r + dr, c + dc] = half


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
@given(st.integers(1, 9), st.integers(1, 9), st.integers(2, 3), st.integers(0, 2**32 - 1), st.floats(0.0, 1.0),
       st.sampled_from([None, 0.3]), st.booleans())
def test_split_leaves_is_the_plain_greedy_rule(compiled, rows, cols, k, seed, alpha, removed_share, flat_cells):
    rng = np.random.default_rng(seed)
    p = 4
    if flat_cells:  # two gray levels, one per cell: many drops are 0 (ties)
        gray = np.kron(rng.integers(0, 2, (rows, cols)), np.ones((p, p))).astype(np.float32) * 255
    else:
        gray = rng.integers(0, 4, (rows * p, cols * p)).astype(np.float32) * 85
    errors = region_errors(gray, p, k, exact=True)
    top = 1 << (k - 1)
    start = [(r, c, (top, top)) for r in range(0, rows - top + 1, top) for c in range(0, cols - top + 1, top)]
    covered = np.zeros((rows, cols), bool)
    for r, c, _ in start:
        covered[r:r + top, c:c + top] = True
    start += [(int(r), int(c), (1, 1)) for r, c in zip(*np.nonzero(~covered), strict=True)]
    tokens = None
    if removed_share is not None:
        shown = rng.random((rows, cols)) > removed_share
        tokens = {s: shown[: e.shape[0] * s[0], : e.shape[1] * s[1]].reshape(e.shape[0], s[0], e.shape[1], s[1])
                  .any((1, 3)) for s, e in errors.items()}
        tokens[1, 1] = shown
    budget = int(alpha * rows * cols)
    with kernels(compiled):
        leaf = split_leaves(errors, start, budget, tokens)
    shapes = list(errors)
    leaves = sorted((int(i) * shapes[k][0], int(j) * shapes[k][1], shapes[k])
                    for k, i, j in zip(*np.nonzero(leaf), strict=True))
    assert leaves == reference_order(errors, start, budget, tokens)


def render_reference(img, r, c, h, w, p):
    """An h x w-cell region as reconstruct shows it: h x w px block means, then each axis linear
    between token pixel centres (np.interp), clamped at the region's edge."""
    x = img[r * p:(r + h) * p, c * p:(c + w) * p].astype(np.float64)
    token = x.reshape(p, h, p, w, -1).mean((1, 3))
    centres = np.arange(p) + 0.5
    ys, xs = (np.arange(p * h) + 0.5) / h, (np.arange(p * w) + 0.5) / w
    cols = np.stack([[np.interp(xs, centres, token[i, :, ch]) for ch in range(token.shape[-1])]
                     for i in range(p)])  # (p, C, w p)
    out = np.stack([[np.interp(ys, centres, cols[:, ch, j]) for j in range(p * w)]
                    for ch in range(token.shape[-1])])  # (C, w p, h p)
    return np.rint(out.transpose(2, 1, 0))


def test_reconstruct_shows_oblong_regions_as_their_squashed_token():
    img = data.coffee()[:280, :336]
    sel = select_patches(img, "budget", 0.2, shapes="halves")
    oblong = [(r, c, h, w) for (_, r, c), (h, w) in zip(sel.regions.tolist(), sel.sizes.tolist(), strict=True)
              if h != w]
    assert {(h, w) for *_, h, w in oblong} == {(1, 2), (2, 1), (2, 4), (4, 2)}
    shown = reconstruct(img, sel)
    for r, c, h, w in oblong:
        np.testing.assert_array_equal(shown[r * 28:(r + h) * 28, c * 28:(c + w) * 28],
                                      render_reference(img, r, c, h, w, 28))


@given(images(max_side=40, channels=(3,), dtypes=("uint8",)), st.integers(2, 6), st.integers(2, 3),
       st.floats(0.05, 0.6))
def test_reconstruct_shows_each_region_of_an_image_cut_by_the_cells(img, p, k, alpha):
    """Sides that are no multiple of the cell: each oblong region is its squashed token, each
    single cell (those cut by the edge too) as it was."""
    sel = select_patches(img, "budget", alpha, patch_size=p, num_scales=k, shapes="halves")
    shown = reconstruct(img, sel, p)
    for (_, r, c), (h, w) in zip(sel.regions.tolist(), sel.sizes.tolist(), strict=True):
        block = np.s_[r * p:(r + h) * p, c * p:(c + w) * p]
        if (h, w) == (1, 1):
            np.testing.assert_array_equal(shown[block], img[block])
        elif h != w:
            np.testing.assert_array_equal(shown[block], render_reference(img, r, c, h, w, p))


def test_halves_keep_more_of_a_photograph_than_squares():
    img = data.chelsea()[:280, :420]
    for alpha in (0.2, 0.3, 0.5):
        errs = []
        for shapes in ("squares", "halves"):
            sel = select_patches(img, "budget", alpha, shapes=shapes)
            errs.append(((reconstruct(img, sel).astype(float) - img) ** 2).mean())
        assert errs[1] < 0.9 * errs[0]


def test_gray_is_the_detail_score_luma():
    img = data.coffee()[:112, :112]
    arr, rng = check_image(img)
    g = _gray_levels(arr, 28, rng)
    assert g.dtype == np.float32 and np.array_equal(g, np.rint(g))


@pytest.mark.parametrize(("kw", "error", "words"), [
    (dict(shapes=1), TypeError, "shapes must be one of ('squares', 'halves')"),
    (dict(shapes="Halves"), ValueError, "shapes must be one of ('squares', 'halves'), got 'Halves'"),
    (dict(shapes="halves", mode="drop"), ValueError, "needs method 'budget' and mode 'multiscale'"),
    (dict(shapes="halves", method="v2", alpha=1.0), ValueError, "needs method 'budget' and mode 'multiscale'"),
    (dict(shapes="halves", score="entropy"), ValueError, "splits by the 'detail' score's error"),
])
def test_bad_shapes_settings(kw, error, words):
    with pytest.raises(error, match=re.escape(words)):
        select_patches(np.zeros((56, 56), np.uint8), **{"method": "budget", **kw})


def test_halves_need_the_image():
    maps = [np.zeros((2, 2)), np.zeros((1, 1))]
    with pytest.raises(ValueError, match="shapes='halves' needs the image"):
        select_patches(maps, "budget", 0.5, shapes="halves")


def test_main_job_selects_in_halves(tmp_path, capsys):
    out = tmp_path / "sel.png"
    code, text, _ = run_main_job(["--shapes", "halves", "--out", str(out)], capsys)
    assert code == 0 and "budget rows shapes='halves'" in text.splitlines()[0]
    assert "budget      0.3   detail      77    256  30.1%" in text  # exactly the budget, floor(0.3 * 256 + 0.5)
    assert text.splitlines()[-1] == f"budget alpha=0.3 shapes='halves' score=detail: 77 of 256 tokens -> wrote {out}"
    code, text, err = run_main_job(["--shapes", "halves", "--mode", "drop", "--out", str(out)], capsys)
    assert code == 2 and not text and "argument --shapes: shapes='halves' needs method 'budget'" in err


def test_legend_counts_each_shape():
    img = data.coffee()[:280, :336]
    sel = select_patches(img, "budget", 0.2, shapes="halves")
    entries = [text for _, text in _legend_entries(sel, 28)]
    counts = {tuple(s): int(n) for s, n in zip(*np.unique(sel.sizes, axis=0, return_counts=True), strict=True)}
    assert f"28x56 px blocks of 1x2 cells: {counts[1, 2]} tokens" in entries
    assert f"112x56 px blocks of 4x2 cells: {counts[4, 2]} tokens" in entries
    assert sum(int(t.split(": ")[1].split()[0]) for t in entries) == sel.num_tokens
    picture = render_selection(img, sel, "detail")
    assert picture.shape[1] == 2 * 336 + 8
