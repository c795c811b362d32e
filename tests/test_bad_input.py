"""Every bad argument raises ValueError/TypeError naming the argument."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from entropy_prune import detail_maps, entropy_maps, reconstruct, select_patches
from entropy_prune._image import check_real

IMG = np.zeros((56, 56, 3), np.uint8)


@pytest.mark.parametrize("fn", [entropy_maps, detail_maps, select_patches])
@pytest.mark.parametrize(
    "image, error, words",
    [
        (np.full((8, 8), np.nan, np.float32), ValueError, "NaN"),
        (np.full((8, 8), np.inf), ValueError, "NaN or inf"),
        (np.full((8, 8), 1.5), ValueError, "[0, 1]"),
        (np.full((8, 8), -0.1), ValueError, "[0, 1]"),
        (np.full((8, 8), -1, np.int16), ValueError, "integer image"),
        (np.zeros((0, 8, 3), np.uint8), ValueError, "empty"),
        (np.zeros((8, 0)), ValueError, "empty"),
        (np.zeros(8), ValueError, "ndim"),
        (np.zeros((8, 8, 2)), ValueError, "channels"),
        (np.zeros((8, 8), bool), TypeError, "dtype"),
        (np.zeros((8, 8), complex), TypeError, "dtype"),
        (np.array([["a"]]), TypeError, "dtype"),
        ([[0, 1], [1, 0]], TypeError, "image must be"),
        (torch.full((8, 8), float("nan")), ValueError, "NaN"),
    ],
)
def test_bad_images(fn, image, error, words):
    with pytest.raises(error, match=None) as info:
        fn(image)
    assert words in str(info.value)


@given(st.integers(-5, 0), st.sampled_from([entropy_maps, detail_maps, select_patches]))
def test_patch_size_below_one(p, fn):
    with pytest.raises(ValueError, match="patch_size"):
        fn(IMG, patch_size=p)


@given(st.integers(-5, 0), st.sampled_from([entropy_maps, detail_maps, select_patches]))
def test_num_scales_below_one(k, fn):
    with pytest.raises(ValueError, match="num_scales"):
        fn(IMG, num_scales=k)


@pytest.mark.parametrize("name, value", [("patch_size", 2.5), ("num_scales", "3"), ("patch_size", True), ("bins", 1.0)])
def test_non_integer_sizes(name, value):
    with pytest.raises(TypeError, match=name):
        entropy_maps(IMG, **{name: value})


def test_bins_below_two():
    with pytest.raises(ValueError, match="bins"):
        entropy_maps(IMG, bins=1)


@given(st.integers(4097, 10**12))
def test_bins_above_4096(bins):
    """Was unbounded: bins=10**7 allocated cells x bins counts until the OOM killer came."""
    with pytest.raises(ValueError, match=rf"bins must be an integer in \[2, 4096\], got {bins}"):
        entropy_maps(IMG, bins=bins)


@pytest.mark.parametrize("fn", [entropy_maps, detail_maps, select_patches, reconstruct])
@pytest.mark.parametrize(
    "value_range, error, words",
    [
        ((0, 255, 1), TypeError, "pair (lo, hi)"),
        ("0-255", TypeError, "pair (lo, hi)"),
        ((0, "255"), TypeError, "pair (lo, hi)"),
        ((True, 255), TypeError, "pair (lo, hi)"),
        (255, TypeError, "pair (lo, hi)"),
        ((255, 0), ValueError, "lo < hi"),
        ((3, 3), ValueError, "lo < hi"),
        ((0, float("inf")), ValueError, "finite"),
        ((float("nan"), 1), ValueError, "finite"),
        ((0, 100), ValueError, "image values must lie in value_range [0, 100], got [0, 255]"),
        ((10, 300), ValueError, "image values must lie in value_range [10, 300], got [0, 255]"),
    ],
)
def test_bad_value_range(fn, value_range, error, words):
    img = np.zeros((56, 56, 3), np.uint8)
    img[0, 0] = 255
    call = fn if fn is not reconstruct else lambda x, **kw: reconstruct(x, select_patches(x, "none"), **kw)
    with pytest.raises(error) as info:
        call(img, value_range=value_range)
    assert "value_range" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("image", [np.full((8, 8), np.inf), np.full((8, 8), np.nan, np.float32)])
def test_nan_and_inf_raise_with_a_value_range_too(image):
    with pytest.raises(ValueError, match="NaN or inf"):
        entropy_maps(image, value_range=(0, 10))


@given(st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0, exclude_min=True), st.just(float("nan"))))
def test_budget_alpha_outside_0_1(alpha):
    with pytest.raises(ValueError, match=r"alpha for method 'budget' must be in \(0, 1\]"):
        select_patches(IMG, "budget", alpha)


@given(st.one_of(st.floats(max_value=0.0, exclude_max=True), st.just(float("inf")), st.just(float("nan"))))
def test_v2_alpha_negative_or_not_finite(alpha):
    with pytest.raises(ValueError, match="alpha for method 'v2'"):
        select_patches(IMG, "v2", alpha)


@pytest.mark.parametrize("alpha", ["0.3", None, True, [0.3]])
def test_alpha_not_a_number(alpha):
    with pytest.raises(TypeError, match="alpha"):
        select_patches(IMG, "budget", alpha)


@given(st.integers(1, 4), st.lists(st.floats(0, 5), max_size=5), st.sampled_from(["multiscale", "drop"]))
def test_thresholds_of_wrong_length(k, thresholds, mode):
    expected = k - 1 if mode == "multiscale" else max(k - 1, 1)
    if len(thresholds) == expected:
        thresholds = thresholds + [1.0]
    with pytest.raises(ValueError, match="thresholds must have"):
        select_patches(IMG, "v1", thresholds=thresholds, num_scales=k, mode=mode)


@pytest.mark.parametrize("thresholds", [[float("nan"), 1.0], [1.0, float("inf")], [1.0, "2"]])
def test_thresholds_not_finite(thresholds):
    with pytest.raises(ValueError, match="thresholds must be finite"):
        select_patches(IMG, "v1", thresholds=thresholds)


@pytest.mark.parametrize("thresholds", [3.0, "3,2", np.array(3.0), np.ones((1, 2)), torch.ones(2, 1)])
def test_thresholds_not_a_sequence(thresholds):
    with pytest.raises(TypeError, match="thresholds"):
        select_patches(IMG, "v1", thresholds=thresholds)


def test_default_thresholds_only_up_to_three_scales():
    with pytest.raises(ValueError, match="thresholds must be given"):
        select_patches(np.zeros((224, 224), np.uint8), "v1", num_scales=4)


@given(st.text(max_size=8).filter(lambda s: s not in ("budget", "v1", "v2", "threshold", "adaptive", "none")))
def test_unknown_method_lists_valid_ones(method):
    with pytest.raises(ValueError, match="method must be one of .*budget.*v1.*v2"):
        select_patches(IMG, method)


@pytest.mark.parametrize("method", [["budget"], ("v1",), {"budget": 1}, 1, 0.3, b"budget", np.array(["budget"])])
def test_non_string_method_lists_valid_ones(method):
    valid = r"\['adaptive', 'budget', 'none', 'threshold', 'v1', 'v2'\]"
    with pytest.raises(TypeError, match=rf"method must be one of {valid} or None, got"):
        select_patches(IMG, method)


@pytest.mark.parametrize("kw, name", [({"mode": ["drop"]}, "mode"), ({"mode": np.array(["drop"])}, "mode"),
                                      ({"score": ["detail"]}, "score"), ({"score": 1}, "score")])
def test_non_string_mode_or_score_lists_valid_ones(kw, name):
    with pytest.raises(TypeError, match=f"{name} must be one of"):
        select_patches(IMG, **kw)


@pytest.mark.parametrize("kw, name", [({"mode": "crop"}, "mode"), ({"score": "sharpness"}, "score")])
def test_unknown_mode_or_score(kw, name):
    with pytest.raises(ValueError, match=f"{name} must be one of"):
        select_patches(IMG, **kw)


def test_bad_precomputed_maps():
    with pytest.raises(ValueError, match="level 2 must have shape"):
        select_patches([np.zeros((4, 4)), np.zeros((3, 2))], "none")
    with pytest.raises(ValueError, match="NaN or inf"):
        select_patches([np.full((2, 2), np.nan)])
    with pytest.raises(ValueError, match="2-D"):
        select_patches([np.zeros((2, 2, 2))])
    with pytest.raises(ValueError, match="at least one level"):
        select_patches([])


def test_batched_image_is_rejected_by_select():
    with pytest.raises(ValueError, match="one image at a time"):
        select_patches(np.zeros((2, 56, 56, 3), np.uint8))


def test_channels_first_needs_a_channel_axis():
    with pytest.raises(ValueError, match="channels_first"):
        entropy_maps(np.zeros((8, 8)), channels_first=True)
    with pytest.raises(TypeError, match="channels_first"):
        entropy_maps(IMG, channels_first="yes")


@pytest.mark.parametrize("value", [0, 1, 0.5, np.float32(0.25), np.float64(1.0), np.int64(1), np.uint8(0)])
def test_check_real_returns_a_float(value):
    got = check_real("x", value, low=0, high=1)
    assert type(got) is float and got == float(value)


@pytest.mark.parametrize("value", [True, np.bool_(True), "0.5", None, [0.5], np.array(0.5), 1j])
def test_check_real_rejects_non_reals_with_a_type_error(value):
    with pytest.raises(TypeError, match=r"^x must be a real number, got "):
        check_real("x", value)


@pytest.mark.parametrize(
    "value, bounds, allowed",
    [
        (0, dict(low=0, high=1, low_open=True), "in (0, 1]"),
        (1, dict(low=0, high=1, high_open=True), "in [0, 1)"),
        (-0.5, dict(low=0, high=1), "in [0, 1]"),
        (float("nan"), dict(low=0, high=1), "in [0, 1]"),
        (float("inf"), dict(low=0), "a finite number >= 0"),
        (0, dict(low=0, low_open=True), "a finite number > 0"),
        (2, dict(high=1), "a finite number <= 1"),
        (-float("inf"), {}, "a finite number"),
        (-1, dict(low=0, finite=False), "a number >= 0"),
        (10**400, dict(low=0, high=1), "in [0, 1]"),  # beyond float's range: out of range, not OverflowError
    ],
)
def test_check_real_names_the_argument_and_the_range(value, bounds, allowed):
    with pytest.raises(ValueError) as info:
        check_real("x", value, **bounds)
    assert str(info.value) == f"x must be {allowed}, got {value}"


def test_check_real_bounds_and_meaning():
    assert check_real("x", float("inf"), low=0, finite=False) == float("inf")
    assert np.isnan(check_real("x", float("nan"), finite=False))
    assert check_real("x", 0, low=0) == 0.0 and check_real("x", 1, high=1) == 1.0
    with pytest.raises(ValueError, match=r"^x must be a finite number >= 0 \(a meaning\), got -1$"):
        check_real("x", -1, low=0, meaning="a meaning")


@pytest.mark.parametrize("fill", [np.float32(0.25), np.float64(0.5), np.int64(1), 0, 1.0])
def test_fill_takes_any_real_number_in_0_1(fill):
    img = np.zeros((56, 56), np.uint8)
    sel = select_patches(img, "budget", 0.25, mode="drop")
    out = reconstruct(img, sel, fill=fill)
    assert out[-1, -1] == round(255 * float(fill))


@pytest.mark.parametrize("fill, error", [(True, TypeError), ("0.5", TypeError), (None, TypeError),
                                         (float("nan"), ValueError), (-0.1, ValueError), (1.5, ValueError)])
def test_bad_fill(fill, error):
    sel = select_patches(IMG, "none")
    with pytest.raises(error, match=r"^fill must be"):
        reconstruct(IMG, sel, fill=fill)
