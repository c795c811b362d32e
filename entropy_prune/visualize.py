"""Pictures of a selection: kept regions outlined by size beside a heatmap of the score, with a
legend for the region sizes and a colour bar for the score."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from ._image import cells_to_pixels, check_image, check_int, to_numpy
from ._resample import as_selected
from .scores import SCORES, ScoreMaps, score_maps
from .selection import Selection

__all__ = ["MAX_SIDE", "render_selection"]

# Outline colour of a region by level (1, 2, 3, 4+), RGB; each outline is lined inside with _DARK,
# so it shows on light and on dark pictures.
_LEVEL_COLOURS = np.array([(255, 255, 255), (255, 200, 0), (255, 60, 60), (180, 80, 255)], np.uint8)
_DARK = np.array((0, 0, 0), np.uint8)
# Anchors of a dark-blue -> yellow heatmap (viridis-like), RGB.
_HEAT = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], np.float64)
_UNITS = {"entropy": "bits", "detail": "gray levels"}
_GAP = 8  # px between the panels, and around the legend
MAX_SIDE = 4096  # default bound on the picture's long side, px


def _to_rgb8(
    image: Any, channels_first: bool = False, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """(H, W[, C]) image in any supported dtype -> uint8 (H, W, 3), its range mapped to [0, 255]
    (converted 256 rows at a time, so temporaries stay small)."""
    arr, (lo, hi) = check_image(image, channels_first, value_range)
    if arr.ndim not in (2, 3):
        raise ValueError(f"image must be a single (H, W) or (H, W, C) image, got shape {arr.shape}")
    x = arr[..., None] if arr.ndim == 2 else arr
    x = x[..., :3] if x.shape[-1] >= 3 else x[..., :1]
    out = np.empty(x.shape[:2] + (3,), np.uint8)
    if arr.dtype == np.uint8 and (lo, hi) == (0.0, 255.0):
        out[...] = x
        return out
    for y in range(0, x.shape[0], 256):
        band = (x[y:y + 256].astype(np.float64) - lo) * (255.0 / (hi - lo))
        out[y:y + 256] = np.clip(np.rint(band), 0, 255)
    return out


def _heatmap(values: np.ndarray) -> np.ndarray:
    """(rows, cols) scores -> uint8 (rows, cols, 3), min..max mapped dark blue..yellow."""
    v = np.asarray(values, np.float64)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    t = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    pos = t * (len(_HEAT) - 1)
    i = np.minimum(pos.astype(int), len(_HEAT) - 2)
    f = (pos - i)[..., None]
    return np.rint(_HEAT[i] * (1 - f) + _HEAT[i + 1] * f).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's bundled default font, at ``size`` px where FreeType is available."""
    return ImageFont.load_default(size=size) if features.check("freetype2") else ImageFont.load_default()


def _outline(pic: np.ndarray, y0: int, x0: int, y1: int, x1: int, colour: np.ndarray) -> None:
    """Rectangle [y0, y1] x [x0, x1] (inclusive) in ``colour``, lined inside with _DARK when room."""
    pic[y0, x0:x1 + 1] = pic[y1, x0:x1 + 1] = colour
    pic[y0:y1 + 1, x0] = pic[y0:y1 + 1, x1] = colour
    if y1 - y0 >= 4 and x1 - x0 >= 4:
        pic[y0 + 1, x0 + 1:x1] = pic[y1 - 1, x0 + 1:x1] = _DARK
        pic[y0 + 1:y1, x0 + 1] = pic[y0 + 1:y1, x1 - 1] = _DARK


def _legend_entries(selection: Selection, p: int) -> list[tuple[np.ndarray | None, str]]:
    """(outline colour, text) per region size of the legend (squares of each level, each followed by
    the oblong regions of ``shapes="halves"`` that occur with that longer side, in its colour),
    then (None, text) for dropped cells in drop mode and for cells removed as predictable."""
    entries = []
    shapes, counts = np.unique(selection.sizes.reshape(-1, 2), axis=0, return_counts=True)
    count = {(int(h), int(w)): int(n) for (h, w), n in zip(shapes, counts, strict=True)}
    oblong = sorted((s for s in count if s[0] != s[1]), key=lambda s: (max(s), s))
    for k in range(1, len(selection.masks) + 1):
        b = 1 << (k - 1)
        for h, w in [(b, b)] + [s for s in oblong if max(s) == b]:
            size = "cells (full resolution)" if h == w == 1 else f"blocks of {h}x{w} cells"
            px = f"{p * h} px" if h == w else f"{p * h}x{p * w} px"
            colour = _LEVEL_COLOURS[min(k, len(_LEVEL_COLOURS)) - 1]
            entries.append((colour, f"{px} {size}: {count.get((h, w), 0)} tokens"))
    if selection.mode == "drop":
        dropped = int(((selection.label_map == 0) & ~selection.predicted).sum())
        entries.append((None, f"dropped (dimmed): {dropped} cells"))
    if selection.predicted.any():
        entries.append((None, f"predicted from neighbours (dimmed): {int(selection.predicted.sum())} cells"))
    return entries


def _selected_rgb(image: Any, selection: Selection, value_range: Any) -> np.ndarray:
    """uint8 (h, w, 3) of the image as it was selected on (resized where ``selection.resized``)."""
    rgb = _to_rgb8(image, value_range=value_range)
    return rgb if selection.resized is None else as_selected(rgb, selection.resized, (0, 255))


def _level1(image: Any, selection: Selection, scores: Any, p: int, value_range: Any) -> tuple[np.ndarray, str | None]:
    """(float64 level-1 map, the score's name or None) of :func:`render_selection`'s ``scores``."""
    if isinstance(scores, str):
        if scores not in SCORES:
            raise ValueError(f"scores must be score maps or one of {SCORES}, got {scores!r}")
        arr, rng = check_image(image, value_range=value_range)
        shown = arr if selection.resized is None else as_selected(arr, selection.resized, rng)
        scores = score_maps(shown, scores, patch_size=p, value_range=rng)
    if isinstance(scores, ScoreMaps):
        return np.asarray(to_numpy(scores[0]), np.float64), scores.score
    return np.asarray(to_numpy(scores), np.float64), None


def render_selection(
    image: Any,
    selection: Selection,
    scores: Any,
    patch_size: int = 28,
    *,
    score_name: str | None = None,
    title: str | None = None,
    value_range: tuple[float, float] | None = None,
    max_side: int = MAX_SIDE,
) -> np.ndarray:
    """The image with kept regions outlined by size (dropped cells dimmed) beside a heatmap of
    the level-1 score, above a legend: region sizes with their colours and token counts, and a
    colour bar with the score's name, unit and numeric range.

    Pictures wider or taller than ``max_side`` px are scaled down (area-averaged) to fit.

    Args:
        image: (H, W[, C]) image that was selected on.
        selection: its :class:`Selection`; with ``downscale`` (``selection.resized``) the image
            is drawn resized as it was selected.
        scores: the :class:`ScoreMaps` it was selected on (level 1 is drawn, its name shown), a
            (rows, cols) level-1 score map, or a score's name (``"detail"``, ``"entropy"``) to
            compute it here; maps given with ``downscale`` must be of the resized image, a name
            scores the image resized as it was selected.
        patch_size: base cell side in pixels.
        score_name: name shown on the colour bar; default the ScoreMaps' score, else "score".
        title: first legend line; default method, mode and token count.
        value_range: (lo, hi) the image's pixel values span, as in :func:`entropy_maps`.
        max_side: largest width or height of the picture in px, >= 256.

    Returns:
        uint8 (height, width, 3): panels of the image's size (scaled to fit ``max_side``) with
        an 8 px gap, the legend below; at least as wide as the legend needs.
    """
    if not isinstance(selection, Selection):
        raise TypeError(f"selection must be a Selection, got {type(selection).__name__}")
    p = check_int("patch_size", patch_size, 1)
    max_side = check_int("max_side", max_side, 256)
    level1, named = _level1(image, selection, scores, p, value_range)
    score_name = named if score_name is None else score_name
    rgb = _selected_rgb(image, selection, value_range)
    h, w = rgb.shape[:2]
    rows, cols = selection.label_map.shape
    if (rows, cols) != (-(-h // p), -(-w // p)):
        raise ValueError(f"selection grid {rows}x{cols} does not match a {h}x{w} image with patch_size={p}")
    if level1.shape != (rows, cols):
        shrunk = "" if selection.resized is None else (
            f" (the selection was made on the image downscaled to {h}x{w} px; pass the score's name, e.g. "
            f"'detail', to score it as selected)")
        raise ValueError(f"scores must be the level-1 map, shape {(rows, cols)}, got {level1.shape}{shrunk}")

    font = _font(14)
    line = font.getbbox("Ag")[3] + 6
    entries = _legend_entries(selection, p)
    title = title or (f"{selection.method} {selection.mode}: {selection.num_tokens} of {selection.num_cells} tokens "
                      f"({selection.num_tokens / selection.num_cells:.1%})")
    name = score_name or "score"
    bar_label = f"{name} ({_UNITS[name]})" if name in _UNITS else name
    bar_label += f" of each {p} px cell"
    left_w = _GAP + 24 + max(int(font.getlength(text)) for _, text in entries)
    right_w = max(240, int(font.getlength(bar_label)) + _GAP)
    legend_h = _GAP + line + max(len(entries), 3) * line + _GAP

    scale = min(1.0, (max_side - _GAP) / (2 * w), (max_side - legend_h) / h)
    h2, w2 = max(1, int(h * scale)), max(1, int(w * scale))
    width = max(2 * w2 + _GAP, left_w + _GAP + right_w, int(font.getlength(title)) + 2 * _GAP)
    pic = np.full((h2 + legend_h, width, 3), 255, np.uint8)

    # Left: the image (scaled), dropped cells dimmed, kept regions outlined by level.
    left = rgb if (h2, w2) == (h, w) else np.array(Image.fromarray(rgb).resize((w2, h2), Image.Resampling.BOX))
    left[cells_to_pixels(selection.label_map == 0, p, (h2, w2), source=(h, w))] //= 4
    for (level, r, c), (rh, rw) in zip(selection.regions, selection.sizes, strict=True):
        # image px [r p, (r + rh) p) -> picture rows [y0, y1]
        y0, x0 = min(r * p * h2 // h, h2 - 1), min(c * p * w2 // w, w2 - 1)
        y1 = min(max(y0, min((r + rh) * p, h) * h2 // h - 1), h2 - 1)
        x1 = min(max(x0, min((c + rw) * p, w) * w2 // w - 1), w2 - 1)
        _outline(left, y0, x0, y1, x1, _LEVEL_COLOURS[min(level, len(_LEVEL_COLOURS)) - 1])
    pic[:h2, :w2] = left
    # Right: one heatmap colour per base cell.
    pic[:h2, w2 + _GAP:2 * w2 + _GAP] = cells_to_pixels(_heatmap(level1), p, (h2, w2), source=(h, w))

    # Legend: title; region sizes (left); colour bar with its scale (right).
    canvas = Image.fromarray(pic)
    draw = ImageDraw.Draw(canvas)
    y = h2 + _GAP
    draw.text((_GAP, y), title, fill=(0, 0, 0), font=font)
    y += line
    swatch = np.full((line - 4, 18, 3), 255, np.uint8)
    for i, (colour, text) in enumerate(entries):
        box = swatch.copy()
        if colour is None:
            box[...] = 60
        else:
            box[...] = 128
            _outline(box, 0, 0, box.shape[0] - 1, box.shape[1] - 1, colour)
        canvas.paste(Image.fromarray(box), (_GAP, y + i * line))
        draw.text((_GAP + 24, y + i * line), text, fill=(0, 0, 0), font=font)
    bx = max(w2 + _GAP, left_w + _GAP)
    bw = width - bx - _GAP
    draw.text((bx, y), bar_label, fill=(0, 0, 0), font=font)
    ramp = _heatmap(np.linspace(0.0, 1.0, bw)[None, :])
    canvas.paste(Image.fromarray(np.repeat(ramp, line - 4, 0)), (bx, y + line))
    lo, hi = float(level1.min()), float(level1.max())
    for frac in (0.0, 0.5, 1.0):  # ticks: min, middle, max, aligned left, centred, right
        text = f"{lo + frac * (hi - lo):.3g}"
        draw.text((bx + round(frac * (bw - font.getlength(text))), y + 2 * line), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
