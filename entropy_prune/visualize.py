"""Pictures of a selection: regions outlined by scale beside a score heatmap."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._image import check_image
from .selection import Selection

# Outline colour of a region by level (1, 2, 3, 4+), RGB.
LEVEL_COLOURS = np.array([(255, 255, 255), (255, 200, 0), (255, 60, 60), (180, 80, 255)], np.uint8)
# Anchors of a dark-blue -> yellow heatmap (viridis-like), RGB.
_HEAT = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], np.float64)


def to_rgb8(image: Any, channels_first: bool = False, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """(H, W[, C]) image in any supported dtype -> uint8 (H, W, 3), its range mapped to [0, 255]."""
    arr, (lo, hi) = check_image(image, channels_first, value_range)
    if arr.ndim != 3 and arr.ndim != 2:
        raise ValueError(f"image must be a single (H, W) or (H, W, C) image, got shape {arr.shape}")
    x = (arr.astype(np.float64) - lo) * (255.0 / (hi - lo))
    if x.ndim == 2:
        x = x[..., None]
    x = x[..., :3] if x.shape[-1] >= 3 else np.repeat(x, 3, -1)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def heatmap(values: np.ndarray) -> np.ndarray:
    """(rows, cols) scores -> uint8 (rows, cols, 3), min..max mapped dark blue..yellow."""
    v = np.asarray(values, np.float64)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    t = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    pos = t * (len(_HEAT) - 1)
    i = np.minimum(pos.astype(int), len(_HEAT) - 2)
    f = (pos - i)[..., None]
    return np.rint(_HEAT[i] * (1 - f) + _HEAT[i + 1] * f).astype(np.uint8)


def render_selection(image: Any, selection: Selection, scores: np.ndarray, patch_size: int = 28) -> np.ndarray:
    """Image with kept regions outlined by level (dropped cells dimmed) beside a score heatmap.

    Args:
        image: (H, W[, C]) image that was selected on.
        selection: its :class:`Selection`.
        scores: (rows, cols) level-1 score map (e.g. ``entropy_maps(image)[0]``).
        patch_size: base cell side in pixels.

    Returns:
        uint8 (H, 2 W + 8, 3): selection on the left, heatmap (one colour per base cell) right.
    """
    rgb = to_rgb8(image)
    h, w = rgb.shape[:2]
    p = patch_size
    rows, cols = selection.label_map.shape
    if (rows, cols) != (-(-h // p), -(-w // p)):
        raise ValueError(f"selection grid {rows}x{cols} does not match a {h}x{w} image with patch_size={p}")
    left = rgb.copy()
    dropped = np.repeat(np.repeat(selection.label_map == 0, p, 0), p, 1)[:h, :w]
    left[dropped] = left[dropped] // 4
    for level, r, c in selection.regions:
        s = p << (level - 1)
        colour = LEVEL_COLOURS[min(level, len(LEVEL_COLOURS)) - 1]
        y0, x0, y1, x1 = r * p, c * p, min(r * p + s, h) - 1, min(c * p + s, w) - 1
        left[y0, x0:x1 + 1] = left[y1, x0:x1 + 1] = colour
        left[y0:y1 + 1, x0] = left[y0:y1 + 1, x1] = colour
    heat = np.repeat(np.repeat(heatmap(scores), p, 0), p, 1)[:h, :w]
    gap = np.full((h, 8, 3), 255, np.uint8)
    return np.concatenate([left, gap, heat], 1)
