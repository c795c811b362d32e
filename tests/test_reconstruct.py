import importlib
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import images, settings_for

from entropy_prune import reconstruct, select_patches

reconstruct_module = importlib.import_module("entropy_prune.reconstruct")  # the name is the function


def reference_reconstruct(img, sel, p, fill=0.5):
    """The whole-image float64 implementation reconstruct had before it worked in chunks (~50x
    the image's memory). Same arithmetic, except that numpy's mean added some block sums in
    another order: integer images (exact sums) are bit-identical to it, float images within
    rounding (1e-13 relative, or one ulp of float32) (:func:`assert_matches_reference`)."""
    h, w = img.shape[:2]
    x = img.astype(np.float64).reshape(h, w, -1)
    out = x.copy()
    for k, mask in enumerate(sel.masks[1:], 2):
        if not mask.any():
            continue
        f, s = 1 << (k - 1), p << (k - 1)
        rk, ck = mask.shape
        tokens = x[: rk * s, : ck * s].reshape(rk * p, f, ck * p, f, -1).mean((1, 3))
        rows, blurred = None, None
        for axis, n in ((0, rk), (1, ck)):
            i = np.arange(n * p * f)
            run, local = np.divmod(i, p * f)
            c = np.clip((local + 0.5) / f - 0.5, 0.0, p - 1.0)
            lo = np.floor(c).astype(np.int64)
            hi, t = run * p + np.minimum(lo + 1, p - 1), c - lo
            lo = run * p + lo
            if axis == 0:
                rows = tokens[lo] * (1 - t)[:, None, None] + tokens[hi] * t[:, None, None]
            else:
                blurred = rows[:, lo] * (1 - t)[None, :, None] + rows[:, hi] * t[None, :, None]
        where = np.repeat(np.repeat(mask, s, 0), s, 1)
        out[: rk * s, : ck * s][where] = blurred[where]
    top = np.iinfo(img.dtype).max if np.issubdtype(img.dtype, np.integer) else 1.0
    out[np.repeat(np.repeat(sel.label_map == 0, p, 0), p, 1)[:h, :w]] = fill * top
    if np.issubdtype(img.dtype, np.integer):
        out = np.rint(out)
    return out.astype(img.dtype).reshape(img.shape)


@given(images(), st.data())
def test_shape_dtype_and_range_are_kept(img, data):
    kw = settings_for(data.draw)
    sel = select_patches(img, **kw)
    out = reconstruct(img, sel, kw["patch_size"])
    assert out.shape == img.shape and out.dtype == img.dtype
    top = np.iinfo(img.dtype).max if np.issubdtype(img.dtype, np.integer) else 1.0
    assert out.min() >= 0 and out.max() <= top


@given(images(), st.integers(1, 6), st.integers(1, 4))
def test_keep_all_is_identity(img, p, k):
    for sel in (select_patches(img, "none", patch_size=p, num_scales=k),
                select_patches(img, "budget", 1.0, patch_size=p, num_scales=k)):
        assert np.array_equal(reconstruct(img, sel, p), img)


@given(images(channels=(3,), dtypes=("float64",)), st.integers(1, 5), st.integers(2, 4), st.floats(0.05, 1.0))
def test_coarse_regions_keep_their_block_means(img, p, k, alpha):
    """Each coarse region shows its p x p token image (area means over f x f blocks) up-scaled
    bilinearly inside the region: values within the token's range, exact interpolation weights."""
    sel = select_patches(img, "budget", alpha, patch_size=p, num_scales=k)
    out = reconstruct(img, sel, p)
    for level, r, c in sel.regions:
        f, s = 1 << (level - 1), p << (level - 1)
        src = img[r * p:r * p + s, c * p:c * p + s]
        got = out[r * p:r * p + s, c * p:c * p + s]
        if level == 1:
            assert np.array_equal(got, src)
            continue
        token = src.reshape(p, f, p, f, 3).mean((1, 3))
        assert got.min() >= token.min() - 1e-12 and got.max() <= token.max() + 1e-12
        if f == 2 and p >= 2:  # interior pixels sit 1/4 and 3/4 between token pixel centres
            blend = (9 * token[0, 0] + 3 * token[0, 1] + 3 * token[1, 0] + token[1, 1]) / 16
            np.testing.assert_allclose(got[1, 1], blend)
        if p == 1:
            np.testing.assert_allclose(got, np.broadcast_to(token, got.shape), atol=1e-12)


@given(images(dtypes=("uint8",)), st.integers(1, 5), st.floats(0.05, 1.0))
def test_dropped_cells_are_filled_and_kept_cells_untouched(img, p, alpha):
    sel = select_patches(img, "budget", alpha, patch_size=p, mode="drop")
    out = reconstruct(img, sel, p)
    kept = np.repeat(np.repeat(sel.label_map == 1, p, 0), p, 1)[: img.shape[0], : img.shape[1]]
    assert np.array_equal(out[kept], img[kept])
    assert (out[~kept] == 128).all()


def test_torch_and_channels_first_round_trip():
    img = torch.rand(3, 60, 90)
    sel = select_patches(img, "budget", 0.4, channels_first=True)
    out = reconstruct(img, sel, channels_first=True)
    assert isinstance(out, torch.Tensor) and out.shape == img.shape and out.dtype == img.dtype
    ref = reconstruct(img.permute(1, 2, 0).numpy(), sel)
    assert np.array_equal(out.permute(1, 2, 0).numpy(), ref)


def test_bad_arguments():
    img = np.zeros((56, 56, 3), np.uint8)
    sel = select_patches(img)
    with pytest.raises(ValueError, match="does not match"):
        reconstruct(img, sel, patch_size=14)
    with pytest.raises(TypeError, match="selection"):
        reconstruct(img, sel.label_map)
    with pytest.raises(ValueError, match="fill"):
        reconstruct(img, sel, fill=2)


def assert_matches_reference(out, img, sel, p, fill=0.5):
    ref = reference_reconstruct(img, sel, p, fill)
    assert out.dtype == img.dtype
    if np.issubdtype(img.dtype, np.integer):
        assert np.array_equal(out, ref)
    else:
        np.testing.assert_allclose(out, ref, rtol=max(np.finfo(img.dtype).eps, 1e-13), atol=0)


@given(images(), st.data(), st.floats(0.0, 1.0))
def test_matches_the_whole_image_reference(img, data, fill):
    kw = settings_for(data.draw)
    sel = select_patches(img, **kw)
    assert_matches_reference(reconstruct(img, sel, kw["patch_size"], fill=fill), img, sel, kw["patch_size"], fill)


@given(st.integers(1, 3), st.integers(2, 8), st.integers(2, 4), st.sampled_from([1, 3]), st.integers(0, 2**32 - 1))
def test_regions_wider_than_a_chunk_match_the_reference(rows, p, k, c, seed):
    """Rows of regions are done in chunks of at most _CHUNK values; tiny chunks (one region each)
    give the same pixels."""
    side = p << (k - 1)
    img = np.random.default_rng(seed).integers(0, 2**16, (rows * side + 3, 5 * side + 2, c), np.uint16)
    sel = select_patches(img, "v1", thresholds=[8.0] * (k - 1), patch_size=p, num_scales=k)
    original, reconstruct_module._CHUNK = reconstruct_module._CHUNK, 1
    try:
        out = reconstruct(img, sel, p)
    finally:
        reconstruct_module._CHUNK = original
    assert_matches_reference(out, img, sel, p)
    assert_matches_reference(reconstruct(img / 65535.0, sel, p), img / 65535.0, sel, p)


NUMPY_DTYPES = [
    "uint8", "uint16", "uint32", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "longdouble"
]
TORCH_DTYPES = [torch.uint8, torch.uint16, torch.int16, torch.int32, torch.int64,
                torch.float16, torch.bfloat16, torch.float32, torch.float64]


@pytest.mark.parametrize("mode", ["multiscale", "drop"])
@pytest.mark.parametrize("dtype", NUMPY_DTYPES + TORCH_DTYPES, ids=str)
def test_every_dtype_is_kept(dtype, mode):
    """Output dtype (and tensor type and device) equal the input's; keep-all is the identity."""
    rng = np.random.default_rng(0)
    name = str(dtype).removeprefix("torch.")
    if name in ("bfloat16",) or np.dtype(name).kind == "f":
        img = rng.random((60, 90, 3))
        img = torch.from_numpy(img).to(dtype) if isinstance(dtype, torch.dtype) else img.astype(dtype)
    else:
        img = rng.integers(0, np.iinfo(name).max, (60, 90, 3), dtype=name, endpoint=True)
        img = torch.from_numpy(img) if isinstance(dtype, torch.dtype) else img
    sel = select_patches(img, "budget", 0.4, mode=mode)
    out = reconstruct(img, sel)
    assert type(out) is type(img) and out.dtype == img.dtype and out.shape == img.shape
    keep_all = reconstruct(img, select_patches(img, "none"))
    assert keep_all.dtype == img.dtype
    assert (keep_all == img).all()


def test_extra_memory_is_a_few_times_the_image():
    """2000 x 2000 x 3 uint8 with most of the image in coarse regions: extra peak memory (the
    output included) at most 3x the image's bytes (it was ~50x)."""
    img = np.random.default_rng(0).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    img[:1000] //= 64  # low detail: coarse regions; the rest stays at full resolution
    for sel in (select_patches(img, "budget", 0.3), select_patches(img, "v1", thresholds=[1e9, 1e9])):
        assert sel.num_tokens < sel.num_cells // 2
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            out = reconstruct(img, sel)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert out.shape == img.shape
        assert peak <= 3 * img.nbytes, f"extra peak {peak / img.nbytes:.2f}x the image"
