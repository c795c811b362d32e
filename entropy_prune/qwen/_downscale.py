"""``downscale``: shrink a resized image further, as a smaller ``max_pixels`` would, until the units
that the selection must show fit its budget.

A page of text at a budget of 30% of its units reads far better shown whole at 0.7x (its blank
units predicted away by ``tolerance``) than at full size with most text blocks averaged 2 x 2,
or uniformly at 0.55x (see docs/benchmarks.md, OCR).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

_STEPS = 4  # proportional steps down at most: two almost always suffice


def _unremoved(gone: np.ndarray | None, h: int, w: int, unit_px: int) -> int:
    return (h // unit_px) * (w // unit_px) - (0 if gone is None else int(gone.sum()))


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


def fit_to_budget(raw: torch.Tensor, removed: Callable[[torch.Tensor], np.ndarray | None], alpha: float,
                  unit_px: int, min_pixels: int) -> tuple[torch.Tensor, float, np.ndarray | None]:
    """Shrink a resized image until its unpredicted units fit the budget.

    Args:
        raw: (C, H, W) resized image (H, W multiples of ``unit_px``), before rescaling.
        removed: (C, h, w) image -> bool (h // unit_px, w // unit_px), its units that ``tolerance``
            removes, or None where nothing is removed (no ``tolerance``).
        alpha: the budget's fraction: budget = floor(alpha * units + 0.5) units of ``raw``.
        min_pixels: the processor's lower bound on H * W (``size["shortest_edge"]``).
    Returns:
        the image to select on ((C, h, w), ``raw`` itself where its unpredicted units fit), the
        alpha that gives the same budget on it (``alpha`` itself where the budget is 0), and its
        ``removed`` units. Each step aims at ``units * budget /
        unpredicted`` units (smart_resize of (H, W) under that many units' pixels), from ``raw``
        each time; it stops at the first size whose unpredicted units fit, after 4 steps, or where
        smart_resize goes no smaller or below ``min_pixels`` (then the budget coarsens the rest).
    """
    h, w = raw.shape[-2:]
    units = (h // unit_px) * (w // unit_px)
    budget = math.floor(alpha * units + 0.5)
    gone = removed(raw)
    image, need, size = raw, _unremoved(gone, h, w, unit_px), (h, w)
    for _ in range(_STEPS):
        if need <= budget or budget < 1:
            break
        target = min(math.floor(units * budget / need), units - 1)
        new = smart_resize(h, w, unit_px, min_pixels, max(target, 1) * unit_px * unit_px)
        if not min_pixels <= new[0] * new[1] < size[0] * size[1]:  # smart_resize may shrink below it
            break
        size, units = new, (new[0] // unit_px) * (new[1] // unit_px)
        image = resize(raw, *size)
        gone = removed(image)
        need = _unremoved(gone, *size, unit_px)
    return image, min(budget / units, 1.0) if budget else alpha, gone
