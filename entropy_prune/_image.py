"""Input validation and conversion shared by the scores, selection and reconstruction."""

from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Any

import numpy as np

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


def _is_real(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float, np.integer, np.floating))


def check_value_range(value_range: Any) -> tuple[float, float] | None:
    """``value_range`` as (lo, hi) floats, or None; raises unless it is two finite reals lo < hi."""
    if value_range is None:
        return None
    if isinstance(value_range, np.ndarray) and value_range.ndim == 1:
        value_range = value_range.tolist()
    if not (isinstance(value_range, (tuple, list)) and len(value_range) == 2 and all(map(_is_real, value_range))):
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


def check_image(image: Any, channels_first: bool = False, value_range: Any = None) -> tuple[np.ndarray, tuple[float, float]]:
    """Validate an image; return it as numpy, channels last ((..., H, W) or (..., H, W, C)),
    and the (lo, hi) range its values mean.

    Accepts (H, W), (H, W, C) with C in {1, 3, 4} and optional leading batch dims, or with
    ``channels_first=True`` (..., C, H, W). The range is ``value_range`` if given, else
    [0, dtype max] for integers and [0, 1] for floats. Raises TypeError for a non-numeric dtype
    or a malformed ``value_range``, ValueError for a wrong shape, an empty image, NaN/inf or
    values outside the range. Warns (UserWarning) when an integer image wider than 16 bits uses
    less than 1/256 of its dtype's range and no ``value_range`` is given (8-bit pixels stored
    as int64, say, which would score as nearly black).
    """
    if not isinstance(channels_first, bool):
        raise TypeError(f"channels_first must be a bool, got {type(channels_first).__name__}")
    rng = check_value_range(value_range)
    arr = to_numpy(image)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(f"image must have an integer or real floating dtype, got {arr.dtype}")
    if arr.ndim < 2:
        raise ValueError(f"image must have ndim >= 2 ((H, W) or (..., H, W, C)), got shape {arr.shape}")
    if arr.ndim >= 3:
        if channels_first:
            arr = np.moveaxis(arr, -3, -1)
        if arr.shape[-1] not in (1, 3, 4):
            raise ValueError(
                "image must have 1, 3 or 4 channels in its "
                f"{'first' if channels_first else 'last'} image axis, got shape {tuple(to_numpy(image).shape)}"
            )
    elif channels_first:
        raise ValueError(f"channels_first=True needs (..., C, H, W), got shape {arr.shape}")
    spatial = arr.shape[-3:-1] if arr.ndim >= 3 else arr.shape
    if arr.size == 0 or 0 in spatial:
        raise ValueError(f"image must not be empty, got shape {tuple(to_numpy(image).shape)}")
    if rng is not None:
        lo, hi = arr.min(), arr.max()
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("image contains NaN or inf")
        if lo < rng[0] or hi > rng[1]:
            raise ValueError(f"image values must lie in value_range [{rng[0]:.6g}, {rng[1]:.6g}], got [{lo:.6g}, {hi:.6g}]")
        return arr, rng
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = arr.min(), arr.max()
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("image contains NaN or inf")
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"float image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; pass value_range=(lo, hi) for another range"
            )
        return arr, (0.0, 1.0)
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
    return arr, (0.0, float(top))


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
