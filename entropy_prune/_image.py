"""Input validation and conversion shared by the scores, selection and reconstruction."""

from __future__ import annotations

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


def value_range(dtype: np.dtype) -> float:
    """Largest value of the dtype's nominal range: dtype max for integers, 1.0 for floats."""
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


def check_image(image: Any, channels_first: bool = False) -> np.ndarray:
    """Validate an image and return it as numpy, channels last: (..., H, W) or (..., H, W, C).

    Accepts (H, W), (H, W, C) with C in {1, 3, 4} and optional leading batch dims, or with
    ``channels_first=True`` (..., C, H, W). Integer dtypes mean [0, dtype max]; floats mean
    [0, 1]. Raises TypeError for a non-numeric dtype and ValueError for a wrong shape, an empty
    image, NaN/inf or values outside the range.
    """
    if not isinstance(channels_first, bool):
        raise TypeError(f"channels_first must be a bool, got {type(channels_first).__name__}")
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
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = arr.min(), arr.max()
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("image contains NaN or inf")
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"float image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    elif np.issubdtype(arr.dtype, np.signedinteger) and (lo := arr.min()) < 0:  # unsigned: nothing to scan
        raise ValueError(f"integer image values must lie in [0, {np.iinfo(arr.dtype).max}], got min {lo}")
    return arr


def gray(arr: np.ndarray) -> np.ndarray:
    """BT.601 luma of a checked channels-last image, float32 in the image's own units.

    Shape: (..., H, W, C) or (..., H, W) -> (..., H, W).
    """
    if arr.ndim == 2 or arr.shape[-1] == 1:
        g = arr if arr.ndim == 2 else arr[..., 0]
        return g.astype(np.float32, copy=False)
    return arr[..., :3].astype(np.float32) @ np.array(BT601, np.float32)


def check_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as int if it is an integer >= minimum, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)
