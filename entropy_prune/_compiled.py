"""Hot loops in compiled code (numba >= 0.65: the qwen, vllm and fast extras; optional). Each gives
exactly what the numpy code gives; that code runs where numba is missing or fails to load (a
``RuntimeWarning`` says so) and for inputs these functions do not take (they return None).

* :func:`gray_sums`: the detail score's exact sums of 8-bit luma, in one pass over the pixels.
* :func:`region_sums`: ``shapes="halves"``' exact sums of squared 8-bit luma block sums, in one pass.
* :func:`split_walk`: ``shapes="halves"``' greedy split order, a heap walk (~1 ms in Python at 1 MP).
* :func:`cut_units`: the Qwen adapter's kept regions of 8-bit frames as units, in one pass.
* :func:`predictable`: predictable cells with ``tolerance > 0``. With a tolerance a removed cell
  is shown as its prediction, not as itself, so every later cell is decided from what is shown:
  a raster walk. The numpy path in :mod:`entropy_prune.selection` speculates on the whole grid
  and walks the rest in Python (up to ~30 ms at 1 MP); this walk compiles the same rule
  (``selection._predict``) and takes a few ms.

The first call in a process imports numba and loads the kernels (~0.5 s); the first ever call
per dtype and memory layout compiles them (~2 s), and numba caches them on disk.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import warnings

import numpy as np

_DTYPES = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.float32, np.float64)}
_off = False  # set by turn_off()


def turn_off() -> None:
    """Keep the kernels off in this process from now on (the numpy code runs, with the same results)."""
    global _off
    _off = True
    _kernels.cache_clear()


@functools.cache
def _kernels():
    """The :mod:`._kernel` module, or None where turned off or without a working numba (imported on
    first use)."""
    if _off or importlib.util.find_spec("numba") is None:
        return None
    try:
        return importlib.import_module("._kernel", __package__)
    except Exception as e:  # e.g. a numba release without support for this numpy, or no writable cache
        warnings.warn(f"numba is installed but the compiled kernels cannot be loaded ({type(e).__name__}: {e}); "
                      "the slower numpy code runs instead", RuntimeWarning, stacklevel=2)
        return None


def _luma_input(arr: np.ndarray, rng: tuple[float, float], p: int) -> bool:
    """Whether the luma kernels take this checked image: 8-bit values (range (0, 255), an integer
    dtype) and p rows of 255^2 within their int32 column sums."""
    return rng == (0.0, 255.0) and np.issubdtype(arr.dtype, np.integer) and p < 33025


def _luma_layout(arr: np.ndarray) -> tuple[tuple[np.ndarray, ...] | None, np.ndarray | None, int]:
    """(planes, pixels, channels) of an 8-bit channels-last (H, W[, C]) image for the luma kernels:
    its three C-contiguous uint8 (H, W) planes where its memory is channels-first RGB, else None and
    its C-contiguous (H, W * C) uint8 pixel rows (a copy only where not already so)."""
    x = arr.astype(np.uint8, copy=False)  # checked to lie in [0, 255]
    x = x if x.ndim == 3 else x[..., None]
    planes = np.moveaxis(x, -1, 0)
    if x.shape[2] >= 3 and all(plane.flags.c_contiguous for plane in planes[:3]):  # a channels-first image
        return tuple(planes[:3]), None, x.shape[2]
    return None, np.ascontiguousarray(x).reshape(x.shape[0], -1), x.shape[2]


def gray_sums(arr: np.ndarray, p: int, rng: tuple[float, float], num_scales: int):
    """For a checked 8-bit channels-last (H, W[, C]) image (range (0, 255)), float64 (s1, s2,
    blocks): per p x p cell (edge cells partial) the sum of its 8-bit luma and of its square, and
    the luma's 2 x 2 px sums over the whole level-2 blocks (None for one scale); exact integers,
    equal to ``scores._detail_one``'s own. None where this module cannot run it."""
    kernels = _kernels()
    if kernels is None or not _luma_input(arr, rng, p):
        return None
    h, w = arr.shape[:2]
    # 2 x 2 px blocks over the whole level-2 regions
    blocks = (((h // p) >> 1) * p, ((w // p) >> 1) * p) if num_scales > 1 else (0, 0)
    planes, pixels, channels = _luma_layout(arr)
    if planes is not None:
        s1, s2, sums = kernels.gray_sums_planar(*planes, p, *blocks)
    else:
        s1, s2, sums = kernels.gray_sums(pixels, channels, p, *blocks)
    return s1.astype(np.float64), s2.astype(np.float64), sums.astype(np.float64) if num_scales > 1 else None


def region_sums(arr: np.ndarray, p: int, rng: tuple[float, float], num_scales: int):
    """For a checked 8-bit channels-last (H, W[, C]) image (range (0, 255)), float64 (energy, sums):
    per whole p x p cell the sum of its squared 8-bit luma (rows, cols), and per region shape (h, w)
    of ``_halves.region_shapes(num_scales)`` but (1, 1) the sum over each aligned region of its
    squared h x w px block sums of luma ((rows // h, cols // w)); exact integers,
    ``_halves.region_errors``' own. None where this module cannot run it (num_scales 2 and 3 only)."""
    kernels = _kernels()
    if kernels is None or num_scales not in (2, 3) or not _luma_input(arr, rng, p):
        return None
    rows, cols = arr.shape[0] // p, arr.shape[1] // p
    planes, pixels, channels = _luma_layout(arr)  # the kernels read the whole cells only
    if planes is not None:
        energy, acc = kernels.region_sums_planar(*planes, p, rows, cols, num_scales == 3)
    else:
        energy, acc = kernels.region_sums(pixels, channels, p, rows, cols, num_scales == 3)
    shapes = ((1, 2), (2, 1), (2, 2), (2, 4), (4, 2), (4, 4))[: 3 if num_scales == 2 else 6]
    return energy.astype(np.float64), {(h, w): acc[k, : rows // h, : cols // w].astype(np.float64)
                                       for k, (h, w) in enumerate(shapes)}


def split_walk(key: np.ndarray, side: np.ndarray, add: np.ndarray, hs: np.ndarray, ws: np.ndarray, kid: np.ndarray,
               leaf: np.ndarray, budget: int, spent: int) -> bool:
    """``_halves.split_leaves``'s walk on its packed arrays (see ``_kernel.split_walk``), updating
    ``leaf`` in place; False where this module cannot run it."""
    kernels = _kernels()
    if kernels is None:
        return False
    kernels.split_walk(key, side, add, hs, ws, kid, leaf, budget, spent)
    return True


def cut_units(frames: np.ndarray, rows: np.ndarray, cols: np.ndarray, sizes: np.ndarray, s: int
              ) -> np.ndarray | None:
    """float32 (K, F, C, s, s): each region (top-left unit ``rows[k], cols[k]``, ``sizes[k]`` = (h, w)
    units of s px) of uint8 (F, C, H, W) frames as one s x s unit of its h x w px block means,
    in one pass over the regions' pixels (planar or channels-last memory; other layouts are copied
    first). The adapter's torch cut bit for bit. None where this module cannot run it."""
    kernels = _kernels()
    if kernels is None or frames.dtype != np.uint8:
        return None
    height, width = frames.shape[-2:]
    inside = ((rows + sizes[:, 0]) * s <= height).all() and ((cols + sizes[:, 1]) * s <= width).all()
    if not inside or (len(sizes) and sizes.prod(1).max() >= 1 << 23):
        return None  # (the kernel reads whole regions only, and a region's sums of 255 must fit int32)
    f, ch = frames.shape[:2]
    out = np.empty((len(rows), f, ch, s, s), np.float32)
    args = (rows.astype(np.int64), cols.astype(np.int64), *(np.ascontiguousarray(sizes[:, i], np.int64)
                                                            for i in (0, 1)))
    last = np.moveaxis(frames, 1, -1)  # (F, H, W, C)
    if ch > 1 and last.flags.c_contiguous:  # channels-last memory: (F, 1, H, W C) pixel rows
        kernels.cut_units(last.reshape(f, 1, last.shape[1], -1), ch, *args, s, out)
    else:
        kernels.cut_units(np.ascontiguousarray(frames), 1, *args, s, out)
    return out


def predictable(arr: np.ndarray, p: int, tol: float, shape: tuple[int, int]) -> np.ndarray | None:
    """:func:`entropy_prune.selection._predictable` for ``tol > 0`` (image units) on a channels-last
    (H, W[, C]) image: bool ``shape``, the whole p x p cells removed in raster order; None where
    this module cannot run it (no numba, or another dtype)."""
    kernels = _kernels()
    if kernels is None or arr.dtype not in _DTYPES:
        return None
    x = arr if arr.ndim == 3 else arr[..., None]
    rows, cols, channels = x.shape[0] // p, x.shape[1] // p, x.shape[2]
    out = np.zeros(shape, dtype=bool)
    if rows and cols:
        shown = np.array(x[: rows * p, : cols * p], order="C").reshape(rows * p, cols * p * channels)  # a copy
        whole = np.zeros((rows, cols), dtype=bool)
        kernels.walk(shown, p, channels, float(tol), whole)
        out[:rows, :cols] = whole
    return out
