"""``downscale``: shrink an image further, as a smaller ``max_pixels`` would, before the budget
selection (:func:`entropy_prune.select_patches` and the Qwen adapter's processors).

``True`` (:func:`fit_to_budget`): until the cells the selection must show fit the budget. A page
of text at a budget of 30% of its cells reads far better shown whole at 0.7x (its blank cells
predicted away by ``tolerance``) than at full size with most text blocks averaged 2 x 2, or
uniformly at 0.55x. ``"least_error"`` (:func:`least_error`): to the size, between none and
that, whose selection keeps the most of the image (least squared luma error); on photographs
never below uniform down-scaling at equal tokens. ``"balanced"`` (:func:`balanced`): of those
sizes that keep clearly more than uniform down-scaling, the smallest of those whose worst cell
loses least (within 0.2 dB): photographs keep most of least_error's gain, and text is not
sacrificed a few blocks at a time (a block of text averaged 2 x 2 is unreadable; squared error
barely counts it). See docs/benchmarks.md.

The rules take what differs between callers as a :class:`Shrink`: the core resizes numpy
images with Pillow's bicubic to multiples of the cell, the adapter resizes tensors with its
processor's kernel to ``smart_resize``'s sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ._resample import bilinear
from .reconstruct import reconstruct

_STEPS = 4  # proportional steps down at most: two almost always suffice
_BETWEEN = 5  # least_error: sizes tried between the image's and fit_to_budget's
_MARGIN_DB = 0.2  # balanced: smaller differences in predicted error count as none (kernels, rounding, RGB)


@dataclass(frozen=True)
class Shrink:
    """What the rules need of one image and its caller.

    Attributes:
        size: image -> (h, w) in px.
        resize: (image, h, w) -> the image resized to (h, w).
        size_under: units -> the (h, w) the caller's size family gives the original image under
            that many units' pixels.
        removed: image -> bool (rows, cols), its cells that ``tolerance`` removes, or None.
        select: (image, alpha, its ``removed`` cells) -> its budget Selection.
        luma: image -> (h, w) float32 luma in 8-bit levels.
        error: ((h, w) luma shown, (H, W) reference luma) -> float64 (ceil(H / unit_px),
            ceil(W / unit_px)) squared error summed per cell, after bringing the shown luma to
            (H, W) bilinearly.
        unit_px: cell side in px.
        min_pixels: smallest h * w a smaller size may have.
    """

    size: Callable[[Any], tuple[int, int]]
    resize: Callable[[Any, int, int], Any]
    size_under: Callable[[int], tuple[int, int]]
    removed: Callable[[Any], np.ndarray | None]
    select: Callable[[Any, float, np.ndarray | None], Any]
    luma: Callable[[Any], np.ndarray]
    error: Callable[[np.ndarray, np.ndarray], float]
    unit_px: int
    min_pixels: int


def units(size: tuple[int, int], unit_px: int) -> int:
    """Cells of a (h, w) image, counting those cut by its edge."""
    return -(-size[0] // unit_px) * -(-size[1] // unit_px)


def alpha_for(budget: int, cells: int, alpha: float) -> float:
    """The alpha that selects ``budget`` of ``cells`` (``alpha`` itself where the budget is 0)."""
    return min(budget / cells, 1.0) if budget else alpha


def cell_sums(values: np.ndarray, unit_px: int) -> np.ndarray:
    """(H, W) -> (ceil(H / unit_px), ceil(W / unit_px)) sums over cells of unit_px (a cell cut by
    the edge sums what it holds)."""
    rows = np.add.reduceat(values, np.arange(0, values.shape[0], unit_px), axis=0)
    return np.add.reduceat(rows, np.arange(0, values.shape[1], unit_px), axis=1)


def luma_errors(shown: np.ndarray, ref: np.ndarray, unit_px: int) -> np.ndarray:
    """The core's :attr:`Shrink.error`: (h, w) float32 brought to ``ref``'s (H, W) by
    :func:`~entropy_prune._resample.bilinear`, squared difference in float64 summed per cell."""
    return cell_sums(np.square(bilinear(shown, ref.shape) - ref, dtype=np.float64), unit_px)


def _unremoved(gone: np.ndarray | None, size: tuple[int, int], unit_px: int) -> int:
    return units(size, unit_px) - (0 if gone is None else int(gone.sum()))


def fit_to_budget(raw: Any, ops: Shrink, alpha: float) -> tuple[Any, float, np.ndarray | None]:
    """Shrink an image until its unremoved cells fit the budget.

    Returns the image to select on (``raw`` itself where its unremoved cells fit), the alpha that
    gives the same budget on it (budget = floor(alpha * cells + 0.5) cells of ``raw``; ``alpha``
    itself where that is 0) and its ``removed`` cells. Each step aims at ``cells * budget /
    unremoved`` cells (``ops.size_under``), resized from ``raw`` each time; it stops at the
    first size whose unremoved cells fit, after 4 steps, or where the size family goes no
    smaller or below ``ops.min_pixels`` (then the budget coarsens the rest).
    """
    h, w = ops.size(raw)
    cells = units((h, w), ops.unit_px)
    budget = math.floor(alpha * cells + 0.5)
    gone = ops.removed(raw)
    image, need, size = raw, _unremoved(gone, (h, w), ops.unit_px), (h, w)
    for _ in range(_STEPS):
        if need <= budget or budget < 1:
            break
        target = min(math.floor(cells * budget / need), cells - 1)
        new = ops.size_under(max(target, 1))
        if not ops.min_pixels <= new[0] * new[1] < size[0] * size[1]:  # the family may go below it
            break
        size, cells = new, units(new, ops.unit_px)
        image = ops.resize(raw, *size)
        gone = ops.removed(image)
        need = _unremoved(gone, size, ops.unit_px)
    return image, alpha_for(budget, cells, alpha), gone


def _candidates(raw: Any, ops: Shrink, alpha: float) -> tuple[list, np.ndarray, int, Callable[[], tuple]]:
    """The sizes :func:`least_error` and :func:`balanced` choose from, each selected at the budget
    and scored.

    Candidates: ``raw`` itself, ``fit_to_budget``'s image, and up to 5 sizes between them
    (``ops.size_under`` of cell counts spaced geometrically from one to the other). Each is
    selected at the same budget (floor(alpha * cells + 0.5) cells of ``raw``), shown by
    ``reconstruct`` in luma and scored by ``ops.error`` against ``raw``'s luma. Candidates whose
    selection passes the budget are left out. Returns ([(image, Selection, per-cell error)],
    ``raw``'s luma, the budget, and a call giving ``fit_to_budget``'s (image, Selection), for
    where no candidate fits).
    """
    h, w = ops.size(raw)
    cells = units((h, w), ops.unit_px)
    budget = math.floor(alpha * cells + 0.5)
    raw_gone = ops.removed(raw)  # fit_to_budget's first step, and the image's own candidate
    first = replace(ops, removed=lambda x: raw_gone if x is raw else ops.removed(x))
    fit, fit_alpha, fit_gone = fit_to_budget(raw, first, alpha)
    fit_size = ops.size(fit)
    fit_cells = units(fit_size, ops.unit_px)
    sizes = [(h, w)]
    for i in range(1, _BETWEEN + 1):
        target = math.floor(cells ** (1 - i / (_BETWEEN + 1)) * fit_cells ** (i / (_BETWEEN + 1)))
        size = ops.size_under(max(target, 1))
        if fit_size[0] * fit_size[1] < size[0] * size[1] < h * w and size not in sizes:
            sizes.append(size)
    ref = ops.luma(raw)
    scored = []
    for size in sizes + ([fit_size] if fit_size != (h, w) else []):
        if size == fit_size:
            image, a, gone = fit, fit_alpha, fit_gone
        elif size == (h, w):
            image, a, gone = raw, alpha_for(budget, cells, alpha), raw_gone
        else:
            image = ops.resize(raw, *size)
            a, gone = alpha_for(budget, units(size, ops.unit_px), alpha), ops.removed(image)
        sel = ops.select(image, a, gone)
        if sel.num_tokens > budget:
            continue
        shown = ref if image is raw else ops.luma(image)
        if not (sel.label_map == 1).all():  # something coarse, predicted or dropped
            shown = reconstruct(shown, sel, ops.unit_px, value_range=(0.0, 255.0))
        scored.append((image, sel, ops.error(shown, ref)))
    return scored, ref, budget, lambda: (fit, ops.select(fit, fit_alpha, fit_gone))


def _least_total(scored: list) -> tuple[Any, Any]:
    """(image, Selection) of the candidate with the least error summed over its cells (the first
    of equals)."""
    return min(scored, key=lambda c: c[2].sum())[:2]


def least_error(raw: Any, ops: Shrink, alpha: float) -> tuple[Any, Any]:
    """Of :func:`_candidates`' sizes, the one whose selection at the budget shows the image with
    the least error (summed over its cells; the first of equals). Returns the chosen image and
    its Selection (``fit_to_budget``'s where no candidate fits)."""
    scored, _, _, fallback = _candidates(raw, ops, alpha)
    return _least_total(scored) if scored else fallback()


def balanced(raw: Any, ops: Shrink, alpha: float) -> tuple[Any, Any]:
    """Of :func:`_candidates`' sizes whose error (summed) is at least 0.2 dB below that of
    uniform down-scaling (``raw`` resized to ``ops.size_under(budget)``, every cell kept), the
    smallest whose worst cell is within 0.2 dB of the least worst cell among them;
    :func:`least_error`'s choice where none is, or where the budget keeps every cell. The margin
    absorbs the differences between this luma estimate and the RGB the model sees (kernels,
    rounding). Returns the chosen image and its Selection (``fit_to_budget``'s where no candidate
    fits)."""
    scored, ref, budget, fallback = _candidates(raw, ops, alpha)
    if not scored:
        return fallback()
    h, w = ops.size(raw)
    size = ops.size_under(max(budget, 1))
    if size[0] * size[1] < h * w:
        # fit_to_budget's image where nothing is removed: that size with every cell kept, already scored
        same = [c[2] for c in scored if ops.size(c[0]) == size and (c[1].label_map == 1).all()]
        uniform = float((same[0] if same else ops.error(ops.luma(ops.resize(raw, *size)), ref)).sum())
        gains = [c for c in scored if c[2].sum() <= uniform * 10 ** (-_MARGIN_DB / 10)]
        if gains:
            return _smallest_of_least_worst(gains, ops.size)[:2]
    return _least_total(scored)


def _smallest_of_least_worst(scored: list, size: Callable[[Any], tuple[int, int]]) -> tuple:
    """The candidate (image, Selection, per-cell error) of fewest pixels among those whose worst
    cell is within 0.2 dB of the least worst cell (the first of equals). Worst cells that close
    are as alike as the estimate can tell (the bar's margin); the smaller image shows more of its
    cells at one scale, closer to uniform down-scaling, and fewer averaged."""
    least = min(c[2].max() for c in scored)
    close = [c for c in scored if c[2].max() <= least * 10 ** (_MARGIN_DB / 10)]
    return min(close, key=lambda c: size(c[0])[0] * size(c[0])[1])


def shrink_and_select(raw: Any, rule: bool | str, ops: Shrink, alpha: float) -> tuple[Any, Any]:
    """``downscale=rule`` (True, "least_error" or "balanced") on ``raw``: the image to cut the
    cells from and its Selection."""
    if rule == "least_error":
        return least_error(raw, ops, alpha)
    if rule == "balanced":
        return balanced(raw, ops, alpha)
    image, a, gone = fit_to_budget(raw, ops, alpha)
    return image, ops.select(image, a, gone)


def size_under(h: int, w: int, unit_px: int, cells: int) -> tuple[int, int]:
    """The core's size family: (h, w) scaled down to at most ``cells`` cells' pixels, as
    ``smart_resize`` scales an image down to ``max_pixels``: each side a multiple of ``unit_px``
    (rounded down, at least one cell) and never longer than the image's; a side shorter than one
    cell stays as it is."""
    beta = max(math.sqrt(h * w / (cells * unit_px * unit_px)), 1.0)
    return tuple(n if n < unit_px else max(unit_px, math.floor(n / beta / unit_px) * unit_px) for n in (h, w))
