"""Predictable cells with ``tolerance > 0``, walked cell by cell in compiled code (numba, optional).

With a tolerance a removed cell is shown as its prediction, not as itself, so every later cell is
decided from what is shown: a raster walk. The numpy path in :mod:`entropy_prune.selection`
speculates on the whole grid and walks the rest in Python (up to ~25 ms at 1 MP); this walk
compiles the same rule (``selection._predict``) and takes a few ms. Used when numba is installed
(``pip install entropy-prune[fast]``) and the image holds 8- or 16-bit integers or floats of 32 or
64 bits; :func:`predictable` returns None otherwise and the numpy path runs. The first call in a
process loads (or, the first time, compiles, ~2 s per dtype) the kernel; numba caches it on disk.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings

import numpy as np

_DTYPES = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.float32, np.float64)}


@functools.cache
def _walk():
    """The compiled walk, or None without a working numba (imported on first use: ~0.3 s)."""
    if importlib.util.find_spec("numba") is None:
        return None
    try:
        from ._kernel import walk
    except Exception as e:  # e.g. a numba release without support for this numpy, or no writable cache
        warnings.warn(f"numba is installed but the compiled walk cannot be loaded ({type(e).__name__}: {e}); "
                      "tolerance > 0 takes the slower numpy path", RuntimeWarning, stacklevel=2)
        return None
    return walk


def predictable(arr: np.ndarray, p: int, tol: float, shape: tuple[int, int]) -> np.ndarray | None:
    """:func:`entropy_prune.selection._predictable` for ``tol > 0`` (image units) on a channels-last
    (H, W[, C]) image: bool ``shape``, the whole p x p cells removed in raster order; None where
    this module cannot run it (no numba, or another dtype)."""
    walk = _walk()
    if walk is None or arr.dtype not in _DTYPES:
        return None
    x = arr if arr.ndim == 3 else arr[..., None]
    rows, cols, channels = x.shape[0] // p, x.shape[1] // p, x.shape[2]
    out = np.zeros(shape, dtype=bool)
    if rows and cols:
        shown = np.array(x[: rows * p, : cols * p], order="C").reshape(rows * p, cols * p * channels)  # a copy
        whole = np.zeros((rows, cols), dtype=bool)
        walk(shown, p, channels, float(tol), whole)
        out[:rows, :cols] = whole
    return out
