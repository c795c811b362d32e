"""The image as the encoder sees it after a selection."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._image import check_image, check_int, like_input, value_range
from .selection import Selection


def _bilinear_taps(regions: int, p: int, f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lo, hi) and weight of hi for up-scaling ``regions`` runs of p token
    pixels by f along one axis, each run interpolated on its own (edges clamped)."""
    i = np.arange(regions * p * f)
    run, local = np.divmod(i, p * f)
    c = np.clip((local + 0.5) / f - 0.5, 0.0, p - 1.0)
    lo = np.floor(c).astype(np.int64)
    hi = np.minimum(lo + 1, p - 1)
    return run * p + lo, run * p + hi, c - lo


def reconstruct(image: Any, selection: Selection, patch_size: int = 28, fill: float = 0.5,
                channels_first: bool = False) -> Any:
    """Render what a selection keeps of an image, at full size.

    Level-1 cells are unchanged. A level-k region (side 2^(k-1) p px) is one token of p x p
    px: its pixels area-averaged over f x f blocks, f = 2^(k-1) (what the encoder is given).
    That p x p token image is brought back to the region's size by bilinear interpolation
    inside the region (pixel centres aligned, edges clamped to the region, so no region borrows
    from its neighbours). Dropped cells are filled with ``fill`` x the range's top (mid-gray
    by default, the neutral value). Integer dtypes are rounded to the nearest integer.

    Args:
        image: (H, W) or (H, W, C) (or (C, H, W) with ``channels_first``), numpy or torch.
        selection: a :class:`Selection` of this image with this ``patch_size``.
        patch_size: base cell side p in pixels.
        fill: value of dropped pixels as a fraction of the range, in [0, 1].

    Returns:
        Same shape, dtype and array type as ``image``; values stay in its range.
    """
    arr = check_image(image, channels_first)
    p = check_int("patch_size", patch_size, 1)
    if not isinstance(selection, Selection):
        raise TypeError(f"selection must be a Selection, got {type(selection).__name__}")
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not 0.0 <= fill <= 1.0:
        raise ValueError(f"fill must be a number in [0, 1], got {fill!r}")
    if arr.ndim > 3:
        raise ValueError(f"reconstruct takes one image at a time, got shape {arr.shape}")
    h, w = arr.shape[:2]
    grid = (-(-h // p), -(-w // p))
    if selection.label_map.shape != grid:
        raise ValueError(
            f"selection grid {selection.label_map.shape} does not match a {h}x{w} image with patch_size={p} (expected {grid})"
        )
    x = arr.astype(np.float64).reshape(h, w, -1)
    out = x.copy()
    for k, mask in enumerate(selection.masks[1:], 2):
        if not mask.any():
            continue
        f, s = 1 << (k - 1), p << (k - 1)
        rk, ck = mask.shape
        area = x[: rk * s, : ck * s]
        tokens = area.reshape(rk * p, f, ck * p, f, -1).mean((1, 3))
        lo, hi, t = _bilinear_taps(rk, p, f)
        rows = tokens[lo] * (1 - t)[:, None, None] + tokens[hi] * t[:, None, None]
        lo, hi, t = _bilinear_taps(ck, p, f)
        blurred = rows[:, lo] * (1 - t)[None, :, None] + rows[:, hi] * t[None, :, None]
        where = np.repeat(np.repeat(mask, s, 0), s, 1)
        out[: rk * s, : ck * s][where] = blurred[where]
    dropped = np.repeat(np.repeat(selection.label_map == 0, p, 0), p, 1)[:h, :w]
    out[dropped] = fill * value_range(arr.dtype)
    if np.issubdtype(arr.dtype, np.integer):
        out = np.rint(out)
    out = out.astype(arr.dtype, copy=False)
    out = out if arr.ndim == 3 else out[..., 0]
    if channels_first:
        out = np.moveaxis(out, -1, 0)
    return like_input(out, image)
