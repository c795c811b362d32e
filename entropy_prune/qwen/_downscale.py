"""The Qwen adapter's ``downscale``: the core's rules (:mod:`entropy_prune._downscale`) on a
resized (C, H, W) tensor, shrunk with the processor's kernel to ``smart_resize``'s sizes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from .._downscale import Shrink
from .._downscale import shrink_and_select as _shrink_and_select
from .._image import gray


def resize(raw: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(C, H, W) pixels -> (C, h, w), antialiased bicubic (torchvision's resize of the Qwen-VL
    processors, and on 8-bit CPU images the same kernel): integers rounded and clamped to their
    dtype, floats in their dtype (computed in float32 for half precision). Channels-last memory in and out
    (faster to resize and to compare units in)."""
    x = raw[None].contiguous(memory_format=torch.channels_last)
    if x.dtype == torch.uint8 and x.device.type == "cpu":
        return F.interpolate(x, (h, w), mode="bicubic", antialias=True, align_corners=False)[0]
    work = x.to(torch.float64 if x.dtype in (torch.float64, torch.int32, torch.int64) else torch.float32)
    out = F.interpolate(work, (h, w), mode="bicubic", antialias=True, align_corners=False)[0]
    if raw.is_floating_point():
        return out.to(raw.dtype)
    info = torch.iinfo(raw.dtype) if raw.dtype != torch.bool else None
    lo, hi = (0, 1) if info is None else (info.min, info.max)
    return out.round_().clamp_(lo, hi).to(raw.dtype)


def _luma(image: np.ndarray) -> np.ndarray:
    """(h, w) float32 BT.601 luma of a (3, h, w) uint8 or [0, 1] float image, in 8-bit levels
    (fastest on channels-last memory)."""
    y = gray(np.moveaxis(image, 0, -1))
    return y if image.dtype == np.uint8 else y * np.float32(255.0)


def _errors(shown: np.ndarray, ref: np.ndarray, unit_px: int) -> np.ndarray:
    """:attr:`Shrink.error`: (h, w) luma brought to ``ref``'s (H, W) bilinearly, squared error
    summed per unit (H, W multiples of ``unit_px``) as float64 (torch: about 3x faster than the
    core's numpy at 1 MP)."""
    up = torch.from_numpy(shown)
    if tuple(up.shape) != ref.shape:
        up = F.interpolate(up[None, None], ref.shape, mode="bilinear", align_corners=False)[0, 0]
    rows, cols = ref.shape[0] // unit_px, ref.shape[1] // unit_px
    sq = (up - torch.from_numpy(ref)).square_().reshape(rows, unit_px, cols, unit_px)
    return sq.sum((1, 3), dtype=torch.float64).numpy()


def shrink_and_select(raw: torch.Tensor, rule: bool | str, removed: Callable[[torch.Tensor], np.ndarray | None],
                      select: Callable, scoring: Callable[[torch.Tensor], np.ndarray], alpha: float, unit_px: int,
                      min_pixels: int) -> tuple[torch.Tensor, object]:
    """``downscale=rule`` (True, "least_error" or "balanced") on a resized image: the image to cut
    the units from and its Selection.

    Args:
        raw: (C, H, W) resized image (H, W multiples of ``unit_px``), before rescaling.
        removed: (C, h, w) image -> bool (h // unit_px, w // unit_px), its units that
            ``tolerance`` removes, or None where nothing is removed (no ``tolerance``).
        select: ((C, h, w) image, alpha, its ``removed`` units) -> its Selection.
        scoring: (C, h, w) image -> (3, h, w) uint8 or [0, 1] float numpy image (what the
            selection scores).
        alpha: the budget's fraction: budget = floor(alpha * units + 0.5) units of ``raw``.
        min_pixels: the processor's lower bound on h * w (``size["shortest_edge"]``).
    """
    h, w = raw.shape[-2:]
    ops = Shrink(size=lambda x: tuple(x.shape[-2:]), resize=resize,
                 size_under=lambda n: smart_resize(h, w, unit_px, min_pixels, n * unit_px * unit_px),
                 removed=removed, select=select, luma=lambda x: _luma(scoring(x)),
                 error=lambda shown, ref: _errors(shown, ref, unit_px), unit_px=unit_px,
                 min_pixels=min_pixels)
    return _shrink_and_select(raw, rule, ops, alpha)
