"""The picture of a selection: outlines that show on any background, a legend, a colour bar,
and a bounded size."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from entropy_prune import detail_maps, entropy_maps, select_patches
from entropy_prune.visualize import _GAP, _HEAT, _LEVEL_COLOURS, _heatmap, _to_rgb8, render_selection


@given(st.integers(0, 255), st.integers(1, 4), st.floats(0.05, 1.0), st.integers(0, 2**32 - 1),
       st.sampled_from(["multiscale", "drop"]))
def test_outlines_show_on_light_and_dark_pictures(value, k, alpha, seed, mode):
    """Every region's outline is its level colour lined inside with black: on any flat background
    one of the two differs from it by >= 128 in some channel."""
    img = np.full((224, 280, 3), value, np.uint8)
    noise = np.random.default_rng(seed).integers(0, 2, (224, 280, 3), dtype=np.uint8)
    img = np.where(img > 127, img - noise, img + noise).astype(np.uint8)  # ties broken at random
    sel = select_patches(img, "budget", alpha, num_scales=k, mode=mode)
    pic = render_selection(img, sel, detail_maps(img, num_scales=k))
    background = pic[:224, :280].astype(int)
    for level, r, c in sel.regions:
        s = 28 << (level - 1)
        y0, x0 = r * 28, c * 28
        for y, x in [(y0, x0 + s // 2), (y0 + s // 2, x0), (y0 + s - 1, x0 + s // 2), (y0 + s // 2, x0 + s - 1)]:
            ring = background[y, x], background[y + (1 if y == y0 else -1 if y == y0 + s - 1 else 0),
                                                  x + (1 if x == x0 else -1 if x == x0 + s - 1 else 0)]
            assert max(np.abs(px - value).max() for px in ring) >= 128
            assert (ring[0] == _LEVEL_COLOURS[min(level, 4) - 1]).all() and (ring[1] == 0).all()


def test_legend_shows_every_level_and_a_colour_bar():
    img = np.random.default_rng(0).integers(0, 256, (112, 224, 3), dtype=np.uint8)
    img[:, :112] //= 32
    sel = select_patches(img, "budget", 0.5)
    pic = render_selection(img, sel, entropy_maps(img))
    legend = pic[112:]
    assert legend.shape[0] > 3 * 14
    colours = {tuple(px) for px in legend.reshape(-1, 3)}
    for k in range(1, len(sel.masks) + 1):
        assert tuple(_LEVEL_COLOURS[k - 1]) in colours  # a swatch per level, even with no region
    assert tuple(np.rint(_HEAT[0]).astype(np.uint8)) in colours and tuple(_HEAT[-1].astype(np.uint8)) in colours
    heat = np.repeat(np.repeat(_heatmap(entropy_maps(img)[0]), 28, 0), 28, 1)
    assert np.array_equal(pic[:112, 224 + _GAP:2 * 224 + _GAP], heat)


@given(st.integers(1, 2500), st.integers(1, 2500), st.integers(256, 1500))
def test_picture_never_exceeds_max_side(h, w, max_side):
    """A 8000 x 8000 image made a 16000 x 8000 picture (a PIL decompression-bomb warning when
    opened); now both sides stay within max_side (4096 by default; the CLI test checks an
    8000 x 8000 image), scaled by area-averaging."""
    img = np.zeros((h, w), np.uint8)
    sel = select_patches(img, "none", patch_size=max(1, max(h, w) // 64), num_scales=1)
    scores = np.zeros(sel.label_map.shape)
    pic = render_selection(img, sel, scores, patch_size=max(1, max(h, w) // 64), max_side=max_side)
    assert max(pic.shape[:2]) <= max(max_side, 600)  # the legend needs ~600 px however small the picture


@given(st.sampled_from(["uint16", "int32", "float64"]), st.integers(0, 2**32 - 1))
def test_to_rgb8_maps_the_value_range_to_0_255(dtype, seed):
    rng = np.random.default_rng(seed)
    lo, hi = sorted(rng.integers(-1000, 1000, 2)) if dtype != "uint16" else (0, 65535)
    hi = hi + 1 if hi == lo else hi
    img = rng.uniform(lo, hi, (5, 7)).astype(dtype)
    img[0, 0], img[0, 1] = lo, hi
    rgb = _to_rgb8(img, value_range=(lo, hi) if dtype != "uint16" else None)
    assert rgb.shape == (5, 7, 3) and rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 1].tolist() == [255, 255, 255]
    np.testing.assert_allclose(rgb[..., 1], (img.astype(float) - lo) * 255 / (hi - lo), atol=0.5 + 1e-9)
