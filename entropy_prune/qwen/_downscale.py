"""``downscale``: shrink a resized image further, as a smaller ``max_pixels`` would, before the
budget selection.

``True`` (:func:`fit_to_budget`): until the units the selection must show fit the budget. A page
of text at a budget of 30% of its units reads far better shown whole at 0.7x (its blank units
predicted away by ``tolerance``) than at full size with most text blocks averaged 2 x 2, or
uniformly at 0.55x. ``"least_error"`` (:func:`least_error`): to the size, between none and
that, whose selection keeps the most of the image (least squared luma error); on photographs
never below uniform down-scaling at equal tokens. See docs/benchmarks.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from .._image import gray
from ..reconstruct import reconstruct

_STEPS = 4  # proportional steps down at most: two almost always suffice
_BETWEEN = 5  # least_error: sizes tried between the processor's and fit_to_budget's


def _units(size: tuple[int, int], unit_px: int) -> int:
    return (size[0] // unit_px) * (size[1] // unit_px)


def _unremoved(gone: np.ndarray | None, size: tuple[int, int], unit_px: int) -> int:
    return _units(size, unit_px) - (0 if gone is None else int(gone.sum()))


def _alpha(budget: int, units: int, alpha: float) -> float:
    """The alpha that selects ``budget`` units of ``units`` (``alpha`` itself where the budget is 0)."""
    return min(budget / units, 1.0) if budget else alpha


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
    units = _units((h, w), unit_px)
    budget = math.floor(alpha * units + 0.5)
    gone = removed(raw)
    image, need, size = raw, _unremoved(gone, (h, w), unit_px), (h, w)
    for _ in range(_STEPS):
        if need <= budget or budget < 1:
            break
        target = min(math.floor(units * budget / need), units - 1)
        new = smart_resize(h, w, unit_px, min_pixels, max(target, 1) * unit_px * unit_px)
        if not min_pixels <= new[0] * new[1] < size[0] * size[1]:  # smart_resize may shrink below it
            break
        size, units = new, _units(new, unit_px)
        image = resize(raw, *size)
        gone = removed(image)
        need = _unremoved(gone, size, unit_px)
    return image, _alpha(budget, units, alpha), gone


def _luma(image: np.ndarray) -> torch.Tensor:
    """(h, w) float32 BT.601 luma of a (3, h, w) uint8 or [0, 1] float image, in 8-bit levels
    (fastest on channels-last memory)."""
    y = gray(np.moveaxis(image, 0, -1))
    return torch.from_numpy(y if image.dtype == np.uint8 else y * np.float32(255.0))


def _up(luma: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(h, w) -> ``shape``, bilinear (as the benchmarks bring uniform down-scaling back)."""
    if tuple(luma.shape) == tuple(shape):
        return luma
    return F.interpolate(luma[None, None], shape, mode="bilinear", align_corners=False)[0, 0]


def least_error(raw: torch.Tensor, removed: Callable[[torch.Tensor], np.ndarray | None], select: Callable,
                scoring: Callable[[torch.Tensor], np.ndarray], alpha: float, unit_px: int,
                min_pixels: int) -> tuple[torch.Tensor, object]:
    """The size between the processor's and :func:`fit_to_budget`'s whose selection at the budget
    shows the image with the least error.

    Candidates: ``raw`` itself, ``fit_to_budget``'s image, and up to 5 sizes between them
    (smart_resize under units spaced geometrically from one to the other). Each is selected at
    the same budget (floor(alpha * units + 0.5) units of ``raw``), shown by ``reconstruct`` in
    luma, brought back to (H, W) bilinearly and compared with ``raw``'s luma (summed squared
    error). Candidates whose selection passes the budget are skipped.

    Args:
        raw, removed, alpha, unit_px, min_pixels: as in :func:`fit_to_budget`.
        select: ((C, h, w) image, alpha, its ``removed`` units) -> its Selection.
        scoring: (C, h, w) image -> (3, h, w) uint8 or [0, 1] float numpy image (what the
            selection scores).
    Returns:
        the chosen (C, h, w) image and its Selection (``fit_to_budget``'s where no candidate's
        selection fits the budget).
    """
    h, w = raw.shape[-2:]
    units = _units((h, w), unit_px)
    budget = math.floor(alpha * units + 0.5)
    raw_gone = removed(raw)  # fit_to_budget's first step, and the processor's size's candidate
    fit, fit_alpha, fit_gone = fit_to_budget(raw, lambda x: raw_gone if x is raw else removed(x), alpha, unit_px,
                                             min_pixels)
    fit_size = tuple(fit.shape[-2:])
    fit_units = _units(fit_size, unit_px)
    sizes = [(h, w)]
    for i in range(1, _BETWEEN + 1):
        target = math.floor(units ** (1 - i / (_BETWEEN + 1)) * fit_units ** (i / (_BETWEEN + 1)))
        size = smart_resize(h, w, unit_px, min_pixels, max(target, 1) * unit_px * unit_px)
        if fit_size[0] * fit_size[1] < size[0] * size[1] < h * w and size not in sizes:
            sizes.append(size)
    ref = _luma(scoring(raw))
    best = None
    for size in sizes + ([fit_size] if fit_size != (h, w) else []):
        if size == fit_size:
            image, a, gone = fit, fit_alpha, fit_gone
        elif size == (h, w):
            image, a, gone = raw, _alpha(budget, units, alpha), raw_gone
        else:
            image = resize(raw, *size)
            a, gone = _alpha(budget, _units(size, unit_px), alpha), removed(image)
        sel = select(image, a, gone)
        if sel.num_tokens > budget:
            continue
        shown = ref if image is raw else _luma(scoring(image))
        if not (sel.label_map == 1).all():  # something coarse, predicted or dropped
            shown = torch.from_numpy(reconstruct(shown.numpy(), sel, unit_px, value_range=(0.0, 255.0)))
        err = float(torch.dist(_up(shown, ref.shape), ref)) ** 2
        if best is None or err < best[0]:
            best = (err, image, sel)
    if best is None:
        return fit, select(fit, fit_alpha, fit_gone)
    return best[1], best[2]


def shrink_and_select(raw: torch.Tensor, rule: bool | str, removed: Callable[[torch.Tensor], np.ndarray | None],
                      select: Callable, scoring: Callable[[torch.Tensor], np.ndarray], alpha: float, unit_px: int,
                      min_pixels: int) -> tuple[torch.Tensor, object]:
    """``downscale=rule`` (True or "least_error") on ``raw``: the image to cut the units from and
    its Selection (arguments as in :func:`least_error`)."""
    if rule == "least_error":
        return least_error(raw, removed, select, scoring, alpha, unit_px, min_pixels)
    image, a, gone = fit_to_budget(raw, removed, alpha, unit_px, min_pixels)
    return image, select(image, a, gone)
