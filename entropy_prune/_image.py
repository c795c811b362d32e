"""Input validation and conversion shared by the scores, selection, reconstruction, pictures and
model adapters (a private module: its names are the package's own, not a public API)."""

from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Any

import numpy as np

__all__ = [
    "BT601",
    "cells_to_pixels",
    "check_image",
    "check_int",
    "check_real",
    "check_value_range",
    "gray",
    "is_real",
    "is_torch",
    "like_input",
    "to_numpy",
]

BT601 = (0.299, 0.587, 0.114)


def is_torch(x: Any) -> bool:
    """True for a ``torch.Tensor`` (without importing torch when it is not loaded)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def to_numpy(image: Any) -> np.ndarray:
    """numpy view/copy of a numpy array or torch tensor (bfloat16 becomes float32)."""
    if is_torch(image):
        t = image.detach()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.cpu().numpy()
    if isinstance(image, np.ndarray):
        return image
    raise TypeError(f"image must be a numpy array or torch tensor, got {type(image).__name__}")


def like_input(array: np.ndarray, reference: Any) -> Any:
    """Return ``array`` as the same kind of object as ``reference`` (torch tensor on its device)."""
    if is_torch(reference):
        import torch

        return torch.from_numpy(np.ascontiguousarray(array)).to(reference.device)
    return array


def is_real(x: Any) -> bool:
    """True for a real number: a Python or numpy integer or float, not a bool (NaN and inf included).

    >>> [is_real(x) for x in (1, 2.5, np.float32(0.5), float("nan"), True, "1", None)]
    [True, True, True, True, False, False, False]
    """
    return not isinstance(x, bool) and isinstance(x, (int, float, np.integer, np.floating))


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool, finite: bool) -> str:
    """How :func:`check_real` words an allowed range: "in (0, 1]", "a finite number >= 0", ..."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    kind = "a finite number" if finite else "a number"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {high:g}"
    return kind


def check_real(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
    meaning: str | None = None,
) -> float:
    """Return ``value`` as a float if it is a real number (see :func:`is_real`) in the allowed
    range, else raise.

    The range is [low, high], a bound left out when None, an end excluded with ``low_open`` /
    ``high_open``; ``finite`` also rejects NaN and +-inf (NaN never lies in a range with a bound).
    Raises TypeError "{name} must be a real number, got {value!r}" for anything else than a real
    number, and ValueError "{name} must be {range} ({meaning}), got {value}" for one outside the
    range, where range reads e.g. "in (0, 1]" or "a finite number >= 0"; ``name`` may say more
    than the argument's name (``"alpha for method 'v2'"``).

    >>> check_real("alpha", np.float32(0.5), low=0, high=1, low_open=True)
    0.5
    >>> check_real("alpha", 0, low=0, high=1, low_open=True, meaning="fraction of tokens kept")
    Traceback (most recent call last):
    ...
    ValueError: alpha must be in (0, 1] (fraction of tokens kept), got 0
    >>> check_real("tau", True)
    Traceback (most recent call last):
    ...
    TypeError: tau must be a real number, got True
    """
    if not is_real(value):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        x = float(value)
    except OverflowError:  # an int beyond float's range
        x = math.inf if value > 0 else -math.inf
    inside = (
        (not finite or math.isfinite(x))
        and (low is None or (x > low if low_open else x >= low))
        and (high is None or (x < high if high_open else x <= high))
    )
    if not inside:
        note = f" ({meaning})" if meaning else ""
        raise ValueError(f"{name} must be {_interval(low, high, low_open, high_open, finite)}{note}, got {value}")
    return x


def check_value_range(value_range: Any) -> tuple[float, float] | None:
    """``value_range`` as (lo, hi) floats, or None; raises unless it is two finite reals lo < hi."""
    if value_range is None:
        return None
    if isinstance(value_range, np.ndarray) and value_range.ndim == 1:
        value_range = value_range.tolist()
    if not (isinstance(value_range, (tuple, list)) and len(value_range) == 2 and all(map(is_real, value_range))):
        raise TypeError(f"value_range must be None or a pair (lo, hi) of real numbers, got {value_range!r}")
    lo, hi = (float(v) for v in value_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"value_range must be finite numbers with lo < hi, got {value_range!r}")
    return lo, hi


def _warn_from_caller(message: str) -> None:
    """UserWarning attributed to the first calling frame outside this package."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    level, frame = 1, sys._getframe(0)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _check_dtype(arr: np.ndarray) -> None:
    """Raise TypeError unless ``arr`` has an integer or real floating dtype (bool excluded)."""
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"image must have an integer or real floating dtype, got {arr.dtype}")


def _channels_last(arr: np.ndarray, channels_first: bool) -> np.ndarray:
    """``arr`` with its channel axis last; raises ValueError for a wrong ndim or channel count."""
    shape = tuple(arr.shape)
    if arr.ndim < 2:
        raise ValueError(f"image must have ndim >= 2 ((H, W) or (..., H, W, C)), got shape {shape}")
    if arr.ndim == 2:
        if channels_first:
            raise ValueError(f"channels_first=True needs (..., C, H, W), got shape {shape}")
        return arr
    if channels_first:
        arr = np.moveaxis(arr, -3, -1)
    if arr.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "image must have 1, 3 or 4 channels in its "
            f"{'first' if channels_first else 'last'} image axis, got shape {shape}"
        )
    return arr


def _finite_extremes(arr: np.ndarray) -> tuple[Any, Any]:
    """(min, max) of ``arr``; raises ValueError if either is NaN or inf."""
    lo, hi = arr.min(), arr.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("image contains NaN or inf")
    return lo, hi


def _check_given_range(arr: np.ndarray, rng: tuple[float, float]) -> None:
    """Raise ValueError unless every value of ``arr`` is finite and lies in ``rng``."""
    lo, hi = _finite_extremes(arr)
    if lo < rng[0] or hi > rng[1]:
        raise ValueError(
            f"image values must lie in value_range [{rng[0]:.6g}, {rng[1]:.6g}], got [{lo:.6g}, {hi:.6g}]"
        )


def _float_range(arr: np.ndarray) -> tuple[float, float]:
    """The range [0, 1] a float image means; raises ValueError for values outside it, NaN or inf."""
    lo, hi = _finite_extremes(arr)
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"float image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; "
            "pass value_range=(lo, hi) for another range"
        )
    return 0.0, 1.0


def _integer_range(arr: np.ndarray) -> tuple[float, float]:
    """The range [0, dtype max] an integer image means; raises ValueError for negative values and
    warns when a dtype wider than 16 bits holds values below 1/256 of its range."""
    top = np.iinfo(arr.dtype).max
    if np.issubdtype(arr.dtype, np.signedinteger) and (lo := arr.min()) < 0:  # unsigned: nothing to scan
        raise ValueError(
            f"integer image values must lie in [0, {top}], got min {lo}; pass value_range=(lo, hi) for another range"
        )
    if arr.dtype.itemsize > 2 and (hi := arr.max()) < top // 256:
        _warn_from_caller(
            f"{arr.dtype} image with values up to {hi} uses less than 1/256 of [0, {top}], the range integer "
            "images mean, so it scores as nearly flat; pass value_range=(lo, hi) (e.g. (0, 255) for 8-bit "
            "pixels) to score it on its real range"
        )
    return 0.0, float(top)


def check_image(
    image: Any, channels_first: bool = False, value_range: Any = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """Validate an image; return it as numpy, channels last ((..., H, W) or (..., H, W, C)),
    and the (lo, hi) range its values mean.

    Accepts (H, W), (H, W, C) with C in {1, 3, 4} and optional leading batch dims, or with
    ``channels_first=True`` (..., C, H, W). The range is ``value_range`` if given, else
    [0, dtype max] for integers and [0, 1] for floats. Raises TypeError for a non-numeric dtype
    or a malformed ``value_range``, ValueError for a wrong shape, an empty image, NaN/inf or
    values outside the range. Warns (UserWarning) when an integer image wider than 16 bits uses
    less than 1/256 of its dtype's range and no ``value_range`` is given (8-bit pixels stored
    as int64, say, which would score as nearly black).

    >>> arr, rng = check_image(np.zeros((3, 4, 5), np.uint8), channels_first=True)
    >>> arr.shape, rng
    ((4, 5, 3), (0.0, 255.0))
    """
    if not isinstance(channels_first, bool):
        raise TypeError(f"channels_first must be a bool, got {type(channels_first).__name__}")
    rng = check_value_range(value_range)
    arr = to_numpy(image)
    shape = tuple(arr.shape)
    _check_dtype(arr)
    arr = _channels_last(arr, channels_first)
    spatial = arr.shape[-3:-1] if arr.ndim >= 3 else arr.shape
    if arr.size == 0 or 0 in spatial:
        raise ValueError(f"image must not be empty, got shape {shape}")
    if rng is not None:
        _check_given_range(arr, rng)
        return arr, rng
    if np.issubdtype(arr.dtype, np.floating):
        return arr, _float_range(arr)
    return arr, _integer_range(arr)


def gray(arr: np.ndarray) -> np.ndarray:
    """BT.601 luma of a checked channels-last image, float32 in the image's own units.

    Shape: (..., H, W, C) or (..., H, W) -> (..., H, W).
    """
    if arr.ndim == 2 or arr.shape[-1] == 1:
        g = arr if arr.ndim == 2 else arr[..., 0]
        return g.astype(np.float32, copy=False)
    return arr[..., :3].astype(np.float32) @ np.array(BT601, np.float32)


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` as int if it is an integer in [minimum, maximum], else raise."""
    allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer {allowed}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an integer {allowed}, got {value}")
    return int(value)


def cells_to_pixels(
    cells: np.ndarray, p: int, shape: tuple[int, int], fill: Any = 0, source: tuple[int, int] | None = None
) -> np.ndarray:
    """Per-pixel array of ``shape`` (plus cells' trailing axes) from a per-cell one: pixel (y, x)
    takes ``cells[y // p, x // p]``, or ``fill`` where that cell is past the grid's end (grids of
    whole blocks). With ``source=(H, W)`` the output is an H x W image shown at ``shape`` px
    (nearest pixel: row y of the output is row y * H // shape[0] of the image).

    >>> cells_to_pixels(np.array([[1, 2]]), 2, (3, 5), fill=9)
    array([[1, 1, 2, 2, 9],
           [1, 1, 2, 2, 9],
           [9, 9, 9, 9, 9]])
    """
    src_h, src_w = shape if source is None else source
    rows = (np.arange(shape[0]) * src_h // max(shape[0], 1)) // p
    cols = (np.arange(shape[1]) * src_w // max(shape[1], 1)) // p
    nr, nc = np.searchsorted(rows, cells.shape[0]), np.searchsorted(cols, cells.shape[1])
    if nr == shape[0] and nc == shape[1]:
        return cells[rows[:, None], cols[None, :]]
    out = np.full(tuple(shape) + cells.shape[2:], fill, dtype=cells.dtype)
    out[:nr, :nc] = cells[rows[:nr, None], cols[None, :nc]]
    return out
