"""Hypothesis strategies for images and selection settings."""

import numpy as np
from hypothesis import strategies as st


@st.composite
def images(draw, max_side=48, channels=(None, 1, 3, 4), dtypes=("uint8", "uint16", "float32", "float64")):
    """Small images with ties and flat areas: (H, W) or (H, W, C), any dtype convention."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    c = draw(st.sampled_from(channels))
    dtype = draw(st.sampled_from(dtypes))
    levels = draw(st.sampled_from([1, 2, 4, 16, 256]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (h, w) if c is None else (h, w, c)
    q = rng.integers(0, levels, shape)
    if dtype.startswith("float"):
        return (q / max(levels - 1, 1)).astype(dtype)
    top = np.iinfo(dtype).max
    return (q * (top // max(levels - 1, 1))).astype(dtype)


def settings_for(draw, methods=("budget", "v1", "v2", "none"), modes=("multiscale", "drop")):
    """Random selection keyword arguments (patch_size, num_scales, method, mode, score, alpha, thresholds)."""
    kw = dict(
        patch_size=draw(st.integers(1, 6)),
        num_scales=draw(st.integers(1, 4)),
        method=draw(st.sampled_from(methods)),
        mode=draw(st.sampled_from(modes)),
        score=draw(st.sampled_from(["entropy", "detail"])),
    )
    if kw["method"] == "budget":
        kw["alpha"] = draw(st.floats(0.01, 1.0))
    elif kw["method"] == "v2":
        kw["alpha"] = draw(st.floats(0.0, 3.0))
    elif kw["method"] == "v1":
        n = kw["num_scales"] - 1 if kw["mode"] == "multiscale" else max(kw["num_scales"] - 1, 1)
        kw["thresholds"] = draw(st.lists(st.floats(0.0, 8.0), min_size=n, max_size=n))
    return kw
