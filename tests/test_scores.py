import math
import multiprocessing
import os
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kernels import kernels, needs_numba
from PIL import Image
from strategies import images

from entropy_prune import _compiled, detail_maps, entropy_maps, reconstruct, scores, select_patches

BT601 = np.array([0.299, 0.587, 0.114])


def reference_gray(img):
    """Luma in the image's units, float64, independent of the library."""
    x = img.astype(np.float64)
    if img.ndim == 2:
        return x
    if img.shape[-1] == 1:
        return x[..., 0]
    return x[..., :3] @ BT601


def reference_entropy(img, p, k, bins=256):
    """Entropy of every whole-cell level-k block (and partial base cells), by np.histogram."""
    top = np.iinfo(img.dtype).max if np.issubdtype(img.dtype, np.integer) else 1.0
    g = reference_gray(img)
    h, w = g.shape
    s = p << (k - 1)
    rows, cols = (-(-h // p), -(-w // p)) if k == 1 else ((h // p) >> (k - 1), (w // p) >> (k - 1))
    out = np.zeros((rows, cols))
    for i in range(rows):
        for j in range(cols):
            cell = g[i * s:(i + 1) * s, j * s:(j + 1) * s].astype(np.float32)
            b = np.minimum((cell * np.float32(bins / top)).astype(np.int64), bins - 1)
            c = np.bincount(b.ravel(), minlength=bins) / b.size
            c = c[c > 0]
            out[i, j] = -(c * np.log2(c)).sum()
    return out


@given(images(), st.integers(1, 7), st.integers(1, 4))
def test_entropy_matches_histogram_reference(img, p, k):
    maps = entropy_maps(img, patch_size=p, num_scales=k)
    assert len(maps) == k
    for level in range(1, k + 1):
        np.testing.assert_allclose(maps[level - 1], reference_entropy(img, p, level), atol=1e-9)
        assert (maps[level - 1] >= 0).all() and (maps[level - 1] <= 8 + 1e-9).all()


def reference_gray_levels(img):
    """Gray in 8-bit levels as the detail score defines it: uint8 RGB(A) in integers, BT.601 in
    14-bit fixed point rounded half up (OpenCV's RGB2GRAY); other images their luma scaled."""
    if img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] >= 3:
        return ((img[..., :3].astype(np.int64) @ np.array([4899, 9617, 1868]) + 8192) >> 14).astype(np.float64)
    top = np.iinfo(img.dtype).max if np.issubdtype(img.dtype, np.integer) else 1.0
    return reference_gray(img) * (255.0 / top)


def reference_detail(img, p, k):
    """sqrt(added squared error / p^2) of a level-k block vs its children, by explicit resizing."""
    g = reference_gray_levels(img)
    h, w = g.shape

    def blur(x, f):  # area-average f x f blocks, then bring back to full size
        r, c = x.shape
        m = x.reshape(r // f, f, c // f, f).mean((1, 3))
        return np.repeat(np.repeat(m, f, 0), f, 1)

    if k == 1:
        rows, cols = -(-h // p), -(-w // p)
        out = np.zeros((rows, cols))
        for i in range(rows):
            for j in range(cols):
                cell = g[i * p:(i + 1) * p, j * p:(j + 1) * p]
                out[i, j] = math.sqrt(((cell - cell.mean()) ** 2).sum() / p**2)
        return out
    rows, cols = (h // p) >> (k - 1), (w // p) >> (k - 1)
    s, f = p << (k - 1), 1 << (k - 1)
    out = np.zeros((rows, cols))
    for i in range(rows):
        for j in range(cols):
            region = g[i * s:(i + 1) * s, j * s:(j + 1) * s]
            fine = region if f == 2 else blur(region, f // 2)
            out[i, j] = math.sqrt(max(((fine - blur(region, f)) ** 2).sum(), 0) / p**2)
    return out


@given(images(), st.integers(1, 6), st.integers(1, 4))
def test_detail_matches_resize_reference(img, p, k):
    maps = detail_maps(img, patch_size=p, num_scales=k)
    for level in range(1, k + 1):
        np.testing.assert_allclose(maps[level - 1], reference_detail(img, p, level), rtol=1e-5, atol=1e-4)


@given(st.integers(0, 2**32 - 1), st.sampled_from([2, 4, 6]), st.integers(1, 3), st.integers(1, 3), st.integers(2, 4))
def test_detail_from_pixel_pairs_matches_reference(seed, p, rows, cols, k):
    """Images that are whole blocks of 2 x 2 cells (even p) take the cell sums from the 2 x 2 px
    sums; the maps still match the reference."""
    img = np.random.default_rng(seed).integers(0, 256, (2 * p * rows, 2 * p * cols, 3), dtype=np.uint8)
    maps = detail_maps(img, patch_size=p, num_scales=k)
    for level in range(1, k + 1):
        np.testing.assert_allclose(maps[level - 1], reference_detail(img, p, level), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("p", [257, 258, 259])
def test_detail_row_sums_of_8bit_squares_are_exact(p):
    """8-bit gray is summed in float32 only while p rows of 255^2 stay below 2^24 (p <= 258);
    past that a float32 sum of p white rows would round, so float64 takes over."""
    white = np.full((p, 3 * p, 3), 255, np.uint8)
    g = scores._gray_levels(white, p, (0.0, 255.0))
    assert g.dtype == (np.float32 if p <= 258 else np.float64)
    assert np.all(g == 255.0)
    assert np.array_equal(scores._cell_sums(g, p, squared=True), np.full((1, 3), float(p * p * 255**2)))


def numpy_and_compiled_detail(img, **kw):
    """detail_maps with the compiled luma sums (which must run) and without numba."""
    assert _compiled._kernels() is not None
    compiled = detail_maps(img, **kw)
    with kernels(False):
        return detail_maps(img, **kw), compiled


@needs_numba
@given(images(max_side=90, dtypes=("uint8",)), st.integers(1, 9), st.integers(1, 4), st.booleans())
def test_compiled_luma_sums_give_the_numpy_scores_bit_for_bit(img, p, k, channels_first):
    """Any size (partial cells, levels too small to exist, odd p), 1 to 4 channels or 2-D, both layouts."""
    x = np.ascontiguousarray(np.moveaxis(img, -1, 0)) if channels_first and img.ndim == 3 else img
    kw = dict(patch_size=p, num_scales=k, channels_first=channels_first and img.ndim == 3)
    assert _compiled.gray_sums(img, p, (0.0, 255.0), k) is not None  # every uint8 image takes the compiled path
    for a, b in zip(*numpy_and_compiled_detail(x, **kw), strict=True):
        assert np.array_equal(a, b)


@needs_numba
@pytest.mark.parametrize("side", [448, 1000])
def test_compiled_luma_sums_on_photographs_and_8bit_integers(side):
    """The astronaut (448: 2 x 2 sums that tile every cell, the numpy code's shortcut) in uint8,
    as int64 with value_range=(0, 255) (8-bit values in a wider dtype) and in a batch; colours
    whose fixed-point luma is exactly halfway between two levels (rounded up)."""
    from skimage import data

    img = np.asarray(Image.fromarray(data.astronaut()).resize((side, side), Image.BICUBIC))
    for x, kw in ((img, {}), (img.astype(np.int64), {"value_range": (0, 255)}), (np.stack([img, img[::-1]]), {})):
        for a, b in zip(*numpy_and_compiled_detail(x, num_scales=3, **kw), strict=True):
            assert np.array_equal(a, b)
    assert _compiled.gray_sums(img.astype(np.int64), 28, (0.0, 255.0), 3) is not None  # the compiled path ran
    halfway = np.array([[0, 56, 102], [0, 116, 65], [0, 176, 28], [1, 57, 103], [1, 117, 66]], np.uint8)
    colours = np.concatenate([halfway, halfway - np.uint8(1)])  # luma exactly between two levels, and not
    tiles = colours[np.random.default_rng(side).integers(0, 10, (112, 112))]
    for a, b in zip(*numpy_and_compiled_detail(tiles, num_scales=2), strict=True):
        assert np.array_equal(a, b)
    assert _compiled.gray_sums(img.astype(np.uint16), 28, (0.0, 65535.0), 3) is None  # not 8-bit: numpy


@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(1, 3))
def test_detail_of_bright_near_flat_blocks_is_exact(seed, rows, cols):
    """Gray v, v, v, v + 1 in every 2 x 2 px block: each block's squared deviation from its mean
    is 3/16 + 9/16, so every level-2 region scores sqrt(3/4) whatever the v's. The squared odd
    block sums near 1020^2 add up past 2^24 over p rows: float32 would round them."""
    rng = np.random.default_rng(seed)
    v = rng.integers(230, 255, (28 * rows, 28 * cols), dtype=np.uint8)
    img = np.repeat(np.repeat(v, 2, 0), 2, 1)
    img[1::2, 1::2] += 1
    maps = detail_maps(img, patch_size=28, num_scales=2)
    np.testing.assert_allclose(maps[1], math.sqrt(0.75), rtol=1e-12)


@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 4]), st.integers(0, 9))
def test_detail_in_bands_and_threads_matches_one_pass(seed, workers, extra_rows):
    """A tall image (12 bands of 56 rows, then a partial band and partial edge cells) scores the
    same in bands, one after another or in threads, as in one pass, and matches the reference."""
    img = np.random.default_rng(seed).integers(0, 256, (56 * 12 + extra_rows, 45, 3), dtype=np.uint8)
    whole = scores._detail_one(img, 7, 3, (0.0, 255.0))
    original, scores._score_workers = scores._score_workers, lambda: workers
    try:
        maps = detail_maps(img, patch_size=7, num_scales=3)
    finally:
        scores._score_workers = original
    for level, (got, expect) in enumerate(zip(maps, whole, strict=True), 1):
        np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(got, reference_detail(img, 7, level), rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_threaded_bands_work_in_a_forked_child():
    """A child forked after the band threads started (a DataLoader worker, say) scores too,
    instead of waiting forever on threads it does not have."""
    img = np.random.default_rng(0).integers(0, 256, (56 * 6, 45, 3), dtype=np.uint8)
    original, scores._score_workers = scores._score_workers, lambda: 2
    try:
        expect = detail_maps(img, patch_size=7, num_scales=3)[0]
        child = multiprocessing.get_context("fork").Process(
            target=lambda: os._exit(0 if np.array_equal(detail_maps(img, patch_size=7, num_scales=3)[0], expect) else 1)
        )
        child.start()
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
        assert child.exitcode == 0
    finally:
        scores._score_workers = original


@given(images(), st.integers(1, 6), st.integers(1, 4), st.sampled_from([entropy_maps, detail_maps]))
def test_numpy_and_torch_agree(img, p, k, fn):
    a = fn(img, patch_size=p, num_scales=k)
    b = fn(torch.from_numpy(img), patch_size=p, num_scales=k)
    for x, y in zip(a, b, strict=True):
        assert isinstance(x, np.ndarray) and isinstance(y, torch.Tensor)
        assert np.array_equal(x, y.numpy())


@given(images(channels=(3,)), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_shuffling_pixels_inside_a_cell_keeps_all_entropies(img, p, seed):
    maps = entropy_maps(img, patch_size=p, num_scales=3)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, -(-img.shape[0] // p))
    j = rng.integers(0, -(-img.shape[1] // p))
    cell = img[i * p:(i + 1) * p, j * p:(j + 1) * p]
    flat = cell.reshape(-1, 3)
    shuffled = img.copy()
    shuffled[i * p:(i + 1) * p, j * p:(j + 1) * p] = flat[rng.permutation(len(flat))].reshape(cell.shape)
    for x, y in zip(maps, entropy_maps(shuffled, patch_size=p, num_scales=3), strict=True):
        assert np.array_equal(x, y)


@given(images(max_side=24), st.integers(1, 4))
def test_channels_first_and_batch_dims(img, p):
    ref = entropy_maps(img, patch_size=p, num_scales=2)
    if img.ndim == 3:
        cf = entropy_maps(np.moveaxis(img, -1, 0), patch_size=p, num_scales=2, channels_first=True)
        for x, y in zip(ref, cf, strict=True):
            assert np.array_equal(x, y)
    batch = np.stack([img, img[::-1]])
    batched = entropy_maps(batch, patch_size=p, num_scales=2) if img.ndim == 3 else None
    if batched is not None:
        flipped = entropy_maps(img[::-1].copy(), patch_size=p, num_scales=2)
        for x, y, z in zip(batched, ref, flipped, strict=True):
            assert x.shape == (2,) + y.shape
            assert np.array_equal(x[0], y) and np.array_equal(x[1], z)


def test_partial_cells_are_flagged_and_coarse_maps_use_whole_cells():
    img = np.zeros((65, 30, 3), np.uint8)
    img[60:] = 255  # the partial bottom row of cells is bright, so mixes with nothing coarse
    maps = entropy_maps(img, patch_size=14, num_scales=3)
    assert maps[0].shape == (5, 3) and maps[1].shape == (2, 1) and maps[2].shape == (1, 0)
    expected = np.zeros((5, 3), bool)
    expected[-1, :] = True
    expected[:, -1] = True
    assert np.array_equal(maps.partial, expected)
    assert maps.image_shape == (65, 30)
    assert maps[0][-1, 0] == pytest.approx(reference_entropy(img, 14, 1)[-1, 0])
    assert np.all(maps[1] == 0.0)


def test_gradient_scores_high_in_entropy_but_low_in_detail():
    ramp = np.tile(np.linspace(0, 1, 56, dtype=np.float32), (56, 1))
    text = np.ones((56, 56), np.float32)
    text[10:46:6, 8:48] = 0.0  # black strokes on white
    e_ramp, e_text = entropy_maps(ramp, 56, 1)[0][0, 0], entropy_maps(text, 56, 1)[0][0, 0]
    d_ramp, d_text = detail_maps(ramp, 28, 2)[1][0, 0], detail_maps(text, 28, 2)[1][0, 0]
    assert e_ramp > e_text
    assert d_text > d_ramp


@given(images(dtypes=("uint8",)), st.integers(1, 6), st.integers(1, 4),
       st.sampled_from(["int16", "int32", "int64", "uint16", "uint32", "uint64"]))
def test_wide_integers_with_value_range_score_like_uint8(img, p, k, wide):
    """8-bit pixels stored in a wider integer dtype score exactly as the uint8 image when
    value_range=(0, 255) says what they mean."""
    for fn in (entropy_maps, detail_maps):
        ref = fn(img, patch_size=p, num_scales=k)
        got = fn(img.astype(wide), patch_size=p, num_scales=k, value_range=(0, 255))
        for x, y in zip(ref, got, strict=True):
            assert np.array_equal(x, y)
    e = entropy_maps(img.astype(np.float32), patch_size=p, num_scales=k, value_range=np.array([0.0, 255.0]))
    for x, y in zip(entropy_maps(img, patch_size=p, num_scales=k), e, strict=True):
        assert np.array_equal(x, y)


@given(
    images(dtypes=("uint8",)),
    st.integers(1, 6),
    st.integers(1, 3),
    st.integers(-1000, 1000),
    st.sampled_from([1, 4, 257]),
)
def test_value_range_is_offset_and_scale(img, p, k, offset, step):
    """An 8-bit picture stored as offset + step * value with value_range = (offset, offset +
    255 step) scores as the 8-bit picture (a 12-bit camera frame, a depth map in mm, ...):
    detail up to float32 luma rounding, entropy of one-channel pictures exactly (colour luma
    may round across a bin edge)."""
    stored = offset + step * img.astype(np.int64)
    rng = (offset, offset + 255 * step)
    ref = detail_maps(img.astype(np.float64) / 255, patch_size=p, num_scales=k)
    got = detail_maps(stored.astype(np.float64), patch_size=p, num_scales=k, value_range=rng)
    for x, y in zip(ref, got, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-4)
    if img.ndim == 2 or img.shape[-1] == 1:
        ref = entropy_maps(img, patch_size=p, num_scales=k)
        for x, y in zip(ref, entropy_maps(stored, patch_size=p, num_scales=k, value_range=rng), strict=True):
            np.testing.assert_allclose(x, y, atol=1e-12)


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint32", "uint64"])
@pytest.mark.parametrize(
    "fn", [entropy_maps, detail_maps, select_patches, None], ids=["entropy", "detail", "select", "reconstruct"]
)
def test_wide_integer_image_in_a_tiny_part_of_its_range_warns(dtype, fn):
    """8-bit pixels as int64 (the usual result of numpy arithmetic) use 1/2^55 of the range
    integer images mean: the caller gets a UserWarning telling them to pass value_range,
    attributed to their own line; with value_range, no warning."""
    img = np.random.default_rng(0).integers(0, 256, (56, 56, 3)).astype(dtype)
    call = fn or (lambda x, **kw: reconstruct(x, select_patches(x, "none", **kw), **kw))
    with pytest.warns(UserWarning, match=r"value_range=\(lo, hi\)") as record:
        call(img)
    assert all(w.filename == __file__ for w in record)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        call(img, value_range=(0, 255))


@given(st.sampled_from(["uint8", "int8", "uint16", "int16", "int32", "int64", "uint32", "uint64"]), st.floats(0, 1))
def test_warning_only_for_wide_integers_below_1_256_of_their_range(dtype, fraction):
    top = np.iinfo(dtype).max
    peak = int(fraction * top) if fraction < 1 else top
    img = np.zeros((8, 8), dtype)
    img[0, 0] = peak
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        entropy_maps(img)
    assert bool(record) == (np.dtype(dtype).itemsize > 2 and peak < top // 256)


@given(images(), st.integers(1, 6), st.integers(1, 4), st.sampled_from([2, 7, 256, 1000]), st.integers(1, 3000))
def test_entropy_in_bands_matches_one_pass(img, p, k, bins, limit):
    """Histograms are held for bands of whole rows of coarsest blocks (ENTROPY_COUNTS counts at
    most, one row of blocks at least): any banding gives the maps of one pass."""
    whole = entropy_maps(img, patch_size=p, num_scales=k, bins=bins)
    original, scores._ENTROPY_COUNTS = scores._ENTROPY_COUNTS, limit
    try:
        banded = entropy_maps(img, patch_size=p, num_scales=k, bins=bins)
    finally:
        scores._ENTROPY_COUNTS = original
    for x, y in zip(whole, banded, strict=True):
        assert np.array_equal(x, y)


def test_most_bins_on_a_tall_image_take_bounded_memory():
    """4096 bins (the most allowed) on a 4000 x 1000 image: the histograms of a band of rows at
    a time (~50 MB), not the 5k cells x 4096 bins x 12 bytes (250 MB) of holding them all."""
    img = np.random.default_rng(0).integers(0, 2**16, (4000, 1000), dtype=np.uint16)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        maps = entropy_maps(img, bins=4096)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 80 * 2**20, f"extra peak {peak / 2**20:.0f} MiB"
    corner = reference_entropy(img[-112 - 4000 % 112:, -224 - 1000 % 112:], 28, 3, 4096)
    np.testing.assert_allclose(maps[2][-1:, -2:], corner[-1:, -2:], atol=1e-9)


@pytest.mark.parametrize("channels", [3, 4])
def test_luma_of_planes_is_the_fixed_point_luma(channels):
    """Channels-first 8-bit images seen channels-last (planes) take their luma a plane at a time:
    every (r, g, b) value of the first two channels against a few of the third, both layouts."""
    r, g = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    planes = [r, g] + [np.full_like(r, v) for v in (0, 1, 128, 255)[: channels - 2]]
    for b in (0, 77, 255):
        planes[2] = np.full_like(r, b)
        chw = np.ascontiguousarray(np.stack(planes).astype(np.uint8))
        view = np.moveaxis(chw, 0, -1)
        assert view.strides[-1] != view.itemsize  # the planar path
        got = scores._gray_levels(view, 28, (0.0, 255.0))
        np.testing.assert_array_equal(got, reference_gray_levels(np.ascontiguousarray(view)))
        np.testing.assert_array_equal(got, scores._gray_levels(np.ascontiguousarray(view), 28, (0.0, 255.0)))
