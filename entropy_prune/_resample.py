"""Resampling of checked numpy images shared by ``downscale``, :func:`reconstruct` and the pictures
(a private module)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps (pixel centres aligned, edges clamped): int (n_out,) i0, i1, float32 weight of i1."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
    return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32)


def bilinear(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w[, C]) -> float32 ``shape`` (+ C), bilinear without antialiasing (torch's
    ``interpolate(mode="bilinear", align_corners=False)``)."""
    x = arr.astype(np.float32, copy=False)
    if x.shape[:2] == tuple(shape):
        return x
    i0, i1, t = _taps(x.shape[0], shape[0])
    t = t.reshape(-1, *(1,) * (x.ndim - 1))
    x = x[i0] * (1 - t) + x[i1] * t
    j0, j1, u = _taps(x.shape[1], shape[1])
    u = u.reshape(-1, *(1,) * (x.ndim - 2))
    return x[:, j0] * (1 - u) + x[:, j1] * u


def resize(arr: np.ndarray, h: int, w: int, value_range: tuple[float, float]) -> np.ndarray:
    """(H, W[, C]) checked image -> (h, w[, C]) of its dtype: Pillow's bicubic (antialiased, what
    Qwen's PIL image processor uses) per channel (8-bit RGB at once), 8-bit planes as 8-bit, others
    in float32; integers rounded, every value clipped to ``value_range``."""
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:  # 3x faster than plane by plane
        return np.array(Image.fromarray(arr, "RGB").resize((w, h), Image.BICUBIC))
    x = arr if arr.ndim == 3 else arr[..., None]
    out = np.empty((h, w, x.shape[2]), arr.dtype)
    for c in range(x.shape[2]):
        plane = np.ascontiguousarray(x[..., c])
        if arr.dtype == np.uint8:
            out[..., c] = np.asarray(Image.fromarray(plane, "L").resize((w, h), Image.BICUBIC))
            continue
        small = np.asarray(Image.fromarray(plane.astype(np.float32), "F").resize((w, h), Image.BICUBIC))
        if np.issubdtype(arr.dtype, np.integer):
            small = np.rint(small)
        out[..., c] = np.clip(small, *value_range)
    return out if arr.ndim == 3 else out[..., 0]


def as_selected(arr: np.ndarray, resized: tuple[tuple[int, int], tuple[int, int]],
                value_range: tuple[float, float]) -> np.ndarray:
    """A checked (H, W[, C]) image as a ``downscale`` selection was made on it: :func:`resize` to
    (h, w) of ``resized`` (``Selection.resized``, ((H, W), (h, w))); raises ValueError for an image
    of another size."""
    if arr.shape[:2] != resized[0]:
        raise ValueError(f"selection was made on a {resized[0][0]}x{resized[0][1]} image (downscale), "
                         f"got a {arr.shape[0]}x{arr.shape[1]} image")
    return resize(arr, *resized[1], value_range)
