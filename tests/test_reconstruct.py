import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from entropy_prune import reconstruct, select_patches
from strategies import images, settings_for


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
            np.testing.assert_allclose(got[1, 1], (9 * token[0, 0] + 3 * token[0, 1] + 3 * token[1, 0] + token[1, 1]) / 16)
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
