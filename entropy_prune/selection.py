"""From score maps to a multi-scale selection of regions and a token count."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import _compiled, _halves
from ._image import cells_to_pixels, check_image, check_int, check_real, gray, is_torch, to_numpy
from .scores import SCORES, ScoreMaps, score_maps

__all__ = ["METHODS", "MODES", "SHAPES", "Selection", "check_settings", "default_score", "select_patches"]

METHODS = {
    None: "none", "none": "none", "v1": "v1", "threshold": "v1", "v2": "v2", "adaptive": "v2", "budget": "budget"
}
"""Method names and aliases accepted by :func:`select_patches` -> canonical name."""
MODES = ("multiscale", "drop")
SHAPES = ("squares", "halves")
"""Region shapes :func:`select_patches` may use (``shapes``)."""
_VALID_METHODS = sorted(k for k in METHODS if k)
_DEFAULT_THRESHOLDS = (3.0, 2.0)


def default_score(method: str | None) -> str:
    """Score used when none is given: "detail" for "budget" (it keeps the most of the image per
    token, see benchmarks/bench_fidelity.py), "entropy" otherwise (v1 thresholds are in bits)."""
    return "detail" if METHODS.get(method) == "budget" else "entropy"


@dataclass(frozen=True, eq=False)
class Selection:
    """Which regions of one image are kept, and at which scale.

    Level 1 is the base cell; a level-k region covers a 2^(k-1) x 2^(k-1) block of base cells
    aligned to its size and costs one token. With ``shapes="halves"`` a region may also be
    h x w cells with one side twice the other (``sizes``), aligned to its size; its level is
    that of its longer side. Arrays are read-only.

    Attributes:
        method, mode: the canonical method ("none", "v1", "v2", "budget") and mode.
        num_tokens: kept regions = tokens.
        budget: the token budget (method "budget"), else None.
        budget_met: False only when the budget is below the coarsest tiling's token count
            (multiscale), which is then returned.
        threshold: the score threshold(s) applied (v1: per coarse level; v2: one), else None.
        label_map: int8 (rows, cols) over base cells: level of the covering region, 0 = dropped.
        masks: masks[k-1] is bool (rows_k, cols_k) on the level-k block grid: True where a kept
            square region of level k is that block.
        regions: int64 (num_tokens, 3): (level, row, col) of each region's top-left base cell,
            in raster order of (row, col).
        sizes: int64 (num_tokens, 2): (h, w) of each region in base cells, in the order of
            ``regions`` ((b, b), b = 2^(level-1), unless ``shapes="halves"``).
        tolerance: the ``tolerance`` setting (8-bit levels), else None.
        predicted: bool (rows, cols): base cells removed as predictable (label 0, no token);
            :func:`reconstruct` shows them as their prediction. All False without ``tolerance``.
        resized: ((H, W), (h, w)) where ``downscale`` shrank the image (H x W px) to h x w px
            before cutting it into cells (the grid, num_cells and budget are the smaller
            image's; the budget is the one asked of H x W, at most its cells), else None.

    Example:
        >>> import numpy as np
        >>> sel = select_patches(np.zeros((112, 112), np.uint8), "budget", alpha=0.1)  # flat: one token
        >>> sel.num_tokens, sel.num_cells, sel.budget, sel.regions.tolist()
        (1, 16, 2, [[3, 0, 0]])
    """

    method: str
    mode: str
    num_tokens: int
    budget: int | None
    budget_met: bool
    threshold: tuple[float, ...] | None
    label_map: np.ndarray
    masks: tuple[np.ndarray, ...]
    regions: np.ndarray
    sizes: np.ndarray
    tolerance: float | None
    predicted: np.ndarray
    resized: tuple[tuple[int, int], tuple[int, int]] | None = None

    @property
    def num_cells(self) -> int:
        """Token count with every base cell kept at full resolution."""
        return int(self.label_map.size)


def _check_alpha(method: str, alpha: Any) -> float | None:
    """alpha as a float for "budget" (in (0, 1]) and "v2" (finite, >= 0), None for the others."""
    if method == "budget":
        return check_real("alpha for method 'budget'", alpha, low=0, high=1, low_open=True,
                          meaning="fraction of tokens kept")
    if method == "v2":
        return check_real("alpha for method 'v2'", alpha, low=0, meaning="multiple of the mean score")
    return None


def _check_thresholds(thresholds: Any, num_scales: int, mode: str) -> tuple[float, ...]:
    expected = num_scales - 1 if mode == "multiscale" else max(num_scales - 1, 1)
    if thresholds is None:
        if expected > len(_DEFAULT_THRESHOLDS):
            raise ValueError(
                f"thresholds must be given for num_scales > {len(_DEFAULT_THRESHOLDS) + 1} (one per coarse level)"
            )
        return _DEFAULT_THRESHOLDS[:expected]
    if is_torch(thresholds) or isinstance(thresholds, np.ndarray):
        thresholds = to_numpy(thresholds)
        if thresholds.ndim != 1:
            raise TypeError(
                f"thresholds must be a 1-D array or sequence of {expected} numbers, got shape {thresholds.shape}"
            )
        thresholds = thresholds.tolist()
    if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, Sequence):
        raise TypeError(f"thresholds must be a 1-D array or sequence of {expected} numbers, got {thresholds!r}")
    if len(thresholds) != expected:
        raise ValueError(
            f"thresholds must have {expected} value(s) (one per coarse level, level 2 first) "
            f"for num_scales={num_scales}, mode={mode!r}; got {len(thresholds)}"
        )
    try:
        return tuple(check_real("thresholds", t) for t in thresholds)
    except (TypeError, ValueError):  # one message for the whole sequence
        raise ValueError(f"thresholds must be finite numbers, got {thresholds!r}") from None


def _check_level(k: int, m: Any) -> np.ndarray:
    """Score map of level ``k`` as float64 numpy; raises unless it is a finite real 2-D array."""
    a = to_numpy(m)
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"score map of level {k} must be real-valued, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(
            f"score map of level {k} must be 2-D (rows, cols) (one image at a time), got shape {a.shape}"
        )
    if not np.isfinite(a).all():
        raise ValueError(f"score map of level {k} contains NaN or inf")
    return a.astype(np.float64, copy=False)


def _base_grid(maps: Any, rows: int, cols: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Partial-cell mask of the base grid and its count of whole cells (rows, cols): from the
    image for a ScoreMaps, else every cell whole."""
    if isinstance(maps, ScoreMaps):
        partial = maps.partial
        whole = tuple(n // maps.patch_size for n in maps.image_shape)
    else:
        partial = np.zeros((rows, cols), dtype=bool)
        whole = (rows, cols)
    if partial.shape != (rows, cols):
        raise ValueError(f"score map of level 1 must have shape {partial.shape} for its image, got {(rows, cols)}")
    return partial, whole


def _check_maps(maps: Any) -> tuple[list[np.ndarray], np.ndarray]:
    """Validate precomputed score maps; return numpy float64 levels and the partial-cell mask."""
    levels = list(maps.levels if isinstance(maps, ScoreMaps) else maps)
    if not levels:
        raise ValueError("score maps must hold at least one level")
    out = [_check_level(k, m) for k, m in enumerate(levels, 1)]
    rows, cols = out[0].shape
    if rows == 0 or cols == 0:
        raise ValueError(f"score map of level 1 must not be empty, got shape {out[0].shape}")
    partial, (whole_r, whole_c) = _base_grid(maps, rows, cols)
    for k in range(2, len(out) + 1):
        expect = (whole_r >> (k - 1), whole_c >> (k - 1))
        if out[k - 1].shape != expect:
            raise ValueError(
                f"score map of level {k} must have shape {expect} for a level-1 map of shape "
                f"{(rows, cols)} (blocks of whole base cells), got {out[k - 1].shape}"
            )
    return out, partial


def _check_tolerance(tolerance: Any) -> float | None:
    """tolerance as a float in [0, 255] (8-bit levels), or None."""
    if tolerance is None:
        return None
    return check_real("tolerance", tolerance, low=0, high=255,
                      meaning="largest error per pixel value of a removed cell, in 8-bit levels; or None")


def _check_downscale(downscale: Any) -> bool | str:
    """``downscale`` as False, True, "least_error" or "balanced"; raises TypeError / ValueError
    naming the values."""
    allowed = "True, False, 'least_error' or 'balanced'"
    if isinstance(downscale, str):
        if downscale not in ("least_error", "balanced"):
            raise ValueError(f"downscale must be {allowed}, got {downscale!r}")
        return downscale
    if not isinstance(downscale, (bool, np.bool_)):
        raise TypeError(f"downscale must be {allowed}, got {downscale!r}")
    return bool(downscale)


def _check_shapes(shapes: Any, method: str, mode: str, score: Any) -> bool:
    """True for ``shapes="halves"``, False for "squares"; raises for other values and for settings
    halves do not combine with."""
    if not isinstance(shapes, str):
        raise TypeError(f"shapes must be one of {SHAPES}, got {shapes!r}")
    if shapes not in SHAPES:
        raise ValueError(f"shapes must be one of {SHAPES}, got {shapes!r}")
    if shapes == "squares":
        return False
    if method != "budget" or mode != "multiscale":
        raise ValueError(f"shapes='halves' needs method 'budget' and mode 'multiscale' (it splits regions by "
                         f"error per token), got method {method!r}, mode {mode!r}")
    if score not in (None, "detail"):
        raise ValueError(f"shapes='halves' splits by the 'detail' score's error, got score={score!r}")
    return True


def _unit_grid(arr: np.ndarray, p: int) -> np.ndarray:
    """(rows, p, cols, p, C) view of the whole p x p cells of a channels-last (H, W[, C]) image."""
    x = arr if arr.ndim == 3 else arr[..., None]
    rows, cols = x.shape[0] // p, x.shape[1] // p
    return x[: rows * p, : cols * p].reshape(rows, p, cols, p, x.shape[2])


def _distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|x - y| elementwise (broadcast): in the dtype itself for unsigned integers (max - min cannot
    wrap), else in float64."""
    if x.dtype == y.dtype and np.issubdtype(x.dtype, np.unsignedinteger):
        return np.maximum(x, y) - np.minimum(x, y)
    return np.abs(x.astype(np.float64) - y)


def _close(x: np.ndarray, y: np.ndarray, tol: float) -> np.ndarray:
    """(n,) True where units x[i] and y[i] ((n, p, p, C), y may broadcast) differ by at most tol
    in every value."""
    n, size = x.shape[0], math.prod(x.shape[1:])
    if tol == 0:
        return np.broadcast_to(x == y, x.shape).reshape(n, size).all(1)
    return np.broadcast_to(_distance(x, y), x.shape).reshape(n, size).max(1) <= tol


_SIGNED = {np.dtype(t): w for t, w in ((np.uint8, np.int16), (np.int8, np.int16), (np.uint16, np.int32),
                                         (np.int16, np.int32))}  # holds any difference of two values


def _gap(x: np.ndarray, y: np.ndarray) -> float:
    """Largest |difference| between one unit x ((p, p, C)) and y (broadcast, same dtype)."""
    return np.abs(np.subtract(x, y, dtype=_SIGNED.get(x.dtype, np.float64))).max()


def _same(x: np.ndarray, y: np.ndarray, tol: float) -> bool:
    """One unit x ((p, p, C)) within tol of y (broadcast, same dtype) in every value; True
    without comparing where they are the same array (a cell shown as a copy of another)."""
    if x is y:
        return True
    if tol == 0:
        return bool((x == y).all())
    return bool(_gap(x, y) <= tol)


def _predict(cell: Callable[[int, int], np.ndarray], r: int, c: int, tol: float) -> np.ndarray:
    """Prediction (p, p, C) of the unit at (r, c) (not (0, 0)) from what ``cell(i, j)`` shows of its
    left (A), upper (B) and upper-left (C) neighbours. First row: A; first column: B. Elsewhere
    PixelPrune's LOCO-I rule, B if C ~ A and not C ~ B, else A, except where neither holds: then
    A's last pixel column extended across the unit if that extension of C gives B, else B's last
    pixel row extended down if that extension of C gives A (a new band or block right of or below
    an edge). ~ is equality within ``tol`` in every value. :func:`_speculate` is the same rule on a
    whole grid showing the image itself."""
    if r == 0 or c == 0:
        return cell(r, c - 1) if r == 0 else cell(r - 1, c)
    a, b, ci = cell(r, c - 1), cell(r - 1, c), cell(r - 1, c - 1)
    vertical, horizontal = _same(ci, a, tol), _same(ci, b, tol)
    if vertical or horizontal:
        return b if vertical and not horizontal else a
    if _same(b, ci[:, -1:], tol):
        return np.broadcast_to(a[:, -1:], a.shape)
    if _same(a, ci[-1:], tol):
        return np.broadcast_to(b[-1:], b.shape)
    return a


def _tolerance_units(tolerance: float, rng: tuple[float, float]) -> float:
    """tolerance in 8-bit levels -> in the image's units (its range mapped to [0, 255])."""
    return tolerance * (rng[1] - rng[0]) / 255.0


def _predictable(arr: np.ndarray, p: int, tol: float, shape: tuple[int, int]) -> np.ndarray:
    """bool ``shape`` (the base grid): whole cells that their prediction (:func:`_predict`, from
    what is shown of their neighbours) gives within ``tol`` (image units) in every value, in
    raster dependency order; a removed cell is shown as its prediction, so each value's error is
    at most ``tol``. Cell (0, 0) and cells cut by the image edge are never removed. With
    ``tol > 0`` the walk runs compiled where numba is installed (:mod:`._compiled`)."""
    if tol > 0 and (walked := _compiled.predictable(arr, p, tol, shape)) is not None:
        return walked
    out = np.zeros(shape, dtype=bool)
    grid = _unit_grid(arr, p)
    rows, cols = grid.shape[0], grid.shape[2]
    if rows == 0 or cols == 0:
        return out
    gaps = _edge_gaps(grid, exact=tol == 0)
    rule, ok = _speculate(grid, tol, gaps)  # as if every neighbour showed the image itself
    if tol == 0:  # ... which it does: a cell removed is shown as itself
        out[:rows, :cols] = ok
        return out
    # Where a removed cell's prediction differs from it (shown changed), the cells after it are
    # decided again from what is shown, one at a time in raster order. What is shown differs from
    # the image by at most tol, and a prediction copies what is shown, so a removed cell lies
    # within 2 tol of one of the four predictions made from the image itself (its edge pixels at
    # least): only those candidates are walked (margin: float rounding).
    changed = ok & ~np.choose(rule, [_matches(grid, gaps, k, ok & (rule == k), 0) for k in range(4)])
    screen = [gap <= 2 * tol * (1 + 1e-9) for gap in gaps]
    candidate = np.logical_or.reduce(screen)
    candidate[0], candidate[:, 0] = screen[0][0], screen[1][:, 0]  # first row: A only; first column: B only
    shown: dict[tuple[int, int], np.ndarray] = {}  # values of cells shown changed

    def cell(i: int, j: int) -> np.ndarray:
        return shown[i, j] if (i, j) in shown else grid[i, :, j]

    # A cell shown changed is shown as the very array it was predicted from (a neighbour's, or a
    # view extending one), so chains of copies compare as the same array without comparing values.
    walk = candidate & (np.cumsum(changed).reshape(rows, cols) > 0)  # from the first cell shown changed on
    for r, c in zip(*np.nonzero(walk), strict=True):
        r, c = int(r), int(c)
        if (r, c - 1) in shown or (r - 1, c) in shown or (r - 1, c - 1) in shown:  # decide again
            pred = _predict(cell, r, c, tol)
            gap = _gap(grid[r, :, c], pred)
            ok[r, c] = gap <= tol
            if ok[r, c] and gap > 0:
                shown[r, c] = pred
        elif changed[r, c]:
            shown[r, c] = _predict(cell, r, c, tol)
    out[:rows, :cols] = ok
    return out


def _edge_gaps(grid: np.ndarray, exact: bool) -> tuple[np.ndarray, ...]:
    """Four float64 (rows, cols) maps of a (rows, p, cols, p, C) unit grid, one per prediction of
    :func:`_references`: the largest difference between each cell's first and last pixel column
    (for A and A extended) or row (for B and B extended) and the prediction's (1/p of the values
    each); inf where the neighbour is outside. With ``exact``, 0 where equal and 1 where not
    (faster)."""
    rows, cols = grid.shape[0], grid.shape[2]
    # each cell's edge pixels as contiguous (rows, cols, p * C) rows: ~5x faster to compare than
    # the strided columns of the image
    first_col, last_col = (np.ascontiguousarray(grid[:, :, :, i].transpose(0, 2, 1, 3)).reshape(rows, cols, -1)
                           for i in (0, -1))
    first_row, last_row = (grid[:, i].reshape(rows, cols, -1) for i in (0, -1))

    def gap(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x != y).any(-1).astype(np.float64) if exact else _distance(x, y).max(-1).astype(np.float64)

    same_last_col = gap(last_col[:, 1:], last_col[:, :-1])
    same_last_row = gap(last_row[1:], last_row[:-1])
    out = tuple(np.full((rows, cols), np.inf) for _ in range(4))
    out[0][:, 1:] = np.maximum(same_last_col, gap(first_col[:, 1:], first_col[:, :-1]))
    out[1][1:] = np.maximum(same_last_row, gap(first_row[1:], first_row[:-1]))
    out[2][:, 1:] = np.maximum(same_last_col, gap(first_col[:, 1:], last_col[:, :-1]))
    out[3][1:] = np.maximum(same_last_row, gap(first_row[1:], last_row[:-1]))
    return out


def _references(grid: np.ndarray) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...]:
    """The four predictions of a cell from the image itself, as functions of cell indices (r, c) ->
    (n, p, p, C) (broadcast): its left cell A, its upper cell B, A's last pixel column repeated
    across, B's last pixel row repeated down."""
    return (lambda r, c: grid[r, :, c - 1], lambda r, c: grid[r - 1, :, c],
            lambda r, c: grid[r, :, c - 1][:, :, -1:], lambda r, c: grid[r - 1, :, c][:, -1:])


def _matches(grid: np.ndarray, gaps: tuple[np.ndarray, ...], k: int, where: np.ndarray, tol: float) -> np.ndarray:
    """bool (rows, cols): cells of a (rows, p, cols, p, C) unit grid within ``tol`` in every value
    of their :func:`_references` prediction ``k``, tried only ``where`` asked (bool (rows, cols))
    and their edges agree (``gaps[k] <= tol``, from :func:`_edge_gaps`)."""
    r, c = np.nonzero(where & (gaps[k] <= tol))
    out = np.zeros(where.shape, dtype=bool)
    out[r, c] = _close(grid[r, :, c], _references(grid)[k](r, c), tol) if r.size else False
    return out


def _speculate(grid: np.ndarray, tol: float, gaps: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_predict`'s rule on every cell of a (rows, p, cols, p, C) unit grid that shows the
    image itself: int (rows, cols), which of the :func:`_references` each cell is predicted by
    (first row: A, first column: B), and bool (rows, cols), where that prediction is within
    ``tol`` of the cell ((0, 0): False). Cells are compared in full only where their edges
    (``gaps``, from :func:`_edge_gaps`) agree, and with an extended neighbour only where the
    rule asks (those comparisons are the slow ones)."""
    def matches(k: int, where: np.ndarray) -> np.ndarray:
        return _matches(grid, gaps, k, where, tol)

    everywhere = np.ones(gaps[0].shape, dtype=bool)
    left, up = matches(0, everywhere), matches(1, everywhere)
    rule = np.zeros(left.shape, dtype=np.intp)
    rule[1:, 0] = 1  # first column: B
    vertical, horizontal = up[1:, :-1], left[:-1, 1:]  # C ~ A, C ~ B
    neither = ~vertical & ~horizontal
    asked = np.zeros_like(everywhere)
    asked[:-1, 1:] = neither
    extend_left = neither & matches(2, asked)[:-1, 1:]  # extending C's last column gives B
    asked[:] = False
    asked[1:, :-1] = neither & ~extend_left
    extend_up = neither & ~extend_left & matches(3, asked)[1:, :-1]  # extending C's last row gives A
    rule[1:, 1:] = np.where(vertical & ~horizontal, 1, np.where(extend_left, 2, np.where(extend_up, 3, 0)))
    ok = np.choose(rule, (left, up, matches(2, rule == 2), matches(3, rule == 3)))
    return rule, ok


def _coarsest_tiling(shapes: list[tuple[int, int]]) -> np.ndarray:
    """Label map of the tiling that uses the coarsest whole block around every cell, from each
    level's grid shape (level 1 first)."""
    label = np.ones(shapes[0], dtype=np.int8)
    for k in range(len(shapes), 1, -1):
        exists = cells_to_pixels(np.ones(shapes[k - 1], dtype=bool), 1 << (k - 1), label.shape, False)
        label[exists & (label == 1)] = k
    return label


def _threshold_tiling(maps: list[np.ndarray], thresholds: Sequence[float], inclusive: bool) -> np.ndarray:
    """Label map keeping a level-k block coarse iff its score is below thresholds[k-2]
    (or at/below with ``inclusive``), coarsest level first."""
    label = np.ones(maps[0].shape, dtype=np.int8)
    for k in range(len(maps), 1, -1):
        b = 1 << (k - 1)
        s = maps[k - 1]
        coarse = s <= thresholds[k - 2] if inclusive else s < thresholds[k - 2]
        free = label[::b, ::b][: s.shape[0], : s.shape[1]] == 1
        label[cells_to_pixels(coarse & free, b, label.shape, False)] = k
    return label


def _block_counts(predicted: np.ndarray, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """counts[k-1]: int (rows_k, cols_k), how many base cells of each level-k block are not
    predicted (0: the whole block is removed, no token)."""
    counts = [(~predicted).astype(np.int64)]
    for rk, ck in shapes[1:]:
        prev = counts[-1][: 2 * rk, : 2 * ck]
        counts.append(prev.reshape(rk, 2, ck, 2).sum((1, 3)))
    return counts


def _budget_tiling(maps: list[np.ndarray], budget: int, predicted: np.ndarray) -> tuple[np.ndarray, bool]:
    """Split regions of the coarsest tiling in descending order of score per token added, while
    the tokens fit: a split adds 3 tokens, or fewer where children are wholly ``predicted``
    (bool, base grid) and cost none; a wholly predicted split is free."""
    shapes = [m.shape for m in maps]
    label = _coarsest_tiling(shapes)
    tokens = [c > 0 for c in _block_counts(predicted, shapes)]  # does a block cost a token?
    start = sum(int((t & (label[:: 1 << k, :: 1 << k][: t.shape[0], : t.shape[1]] == k + 1)).sum())
                for k, t in enumerate(tokens))
    if budget < start:
        return label, False
    # A region can only be split after its parent: its effective priority is the minimum of the
    # priorities along its ancestor chain. Ties go coarser level first, then raster order.
    keys, costs, levels, rows, cols = [], [], [], [], []
    parent_eff = None
    for k in range(len(maps), 1, -1):
        rk, ck = shapes[k - 1]
        child = tokens[k - 2][: 2 * rk, : 2 * ck].reshape(rk, 2, ck, 2).sum((1, 3))
        cost = child - tokens[k - 1]  # 0 to 3
        eff = np.where(cost == 3, maps[k - 1], np.where(cost > 0, maps[k - 1] * 3 / np.maximum(cost, 1), np.inf))
        if parent_eff is not None:
            pr, pc = parent_eff.shape
            inside = cells_to_pixels(parent_eff, 2, (2 * pr, 2 * pc))
            eff[: 2 * pr, : 2 * pc] = np.minimum(eff[: 2 * pr, : 2 * pc], inside)
        parent_eff = eff
        r, c = np.indices((rk, ck))
        keys.append(eff.ravel())
        costs.append(cost.ravel())
        levels.append(np.full(rk * ck, k))
        rows.append(r.ravel())
        cols.append(c.ravel())
    if not keys:
        return label, True
    keys, costs, levels, rows, cols = (np.concatenate(x) for x in (keys, costs, levels, rows, cols))
    order = np.lexsort((cols, rows, -levels, -keys))
    num_splits = int(np.searchsorted(np.cumsum(costs[order]), budget - start, side="right"))
    chosen = order[:num_splits]
    for k in range(len(maps), 1, -1):
        b = 1 << (k - 1)
        split = np.zeros(shapes[k - 1], dtype=bool)
        pick = chosen[levels[chosen] == k]
        split[rows[pick], cols[pick]] = True
        label[(label == k) & cells_to_pixels(split, b, label.shape, False)] = k - 1
    return label, True


def _remove_predicted(label: np.ndarray, predicted: np.ndarray, shapes: list[tuple[int, int]]) -> np.ndarray:
    """``label`` with predicted level-1 cells and wholly predicted coarse regions set to 0."""
    label = label.copy()
    for k, count in enumerate(_block_counts(predicted, shapes), 1):
        b = 1 << (k - 1)
        gone = cells_to_pixels(count == 0, b, label.shape, False)
        label[gone & (label == k)] = 0
    return label


def _selection_from_labels(label: np.ndarray, shapes: list[tuple[int, int]], predicted: np.ndarray,
                           **fields: Any) -> Selection:
    """Build the Selection (masks, raster-ordered regions, removed predicted cells) of a label map."""
    masks, regions = [], []
    for k, (rk, ck) in enumerate(shapes, 1):
        b = 1 << (k - 1)
        mask = label[::b, ::b][:rk, :ck] == k
        masks.append(mask)
        r, c = np.nonzero(mask)
        regions.append(np.stack([np.full(r.size, k), r * b, c * b], 1))
    regions = np.concatenate(regions).astype(np.int64)
    regions = regions[np.lexsort((regions[:, 2], regions[:, 1]))]
    sides = np.left_shift(1, regions[:, 0] - 1)
    return _frozen(label, masks, regions, np.stack([sides, sides], 1), predicted, **fields)


def _frozen(label: np.ndarray, masks: list[np.ndarray], regions: np.ndarray, sizes: np.ndarray, predicted: np.ndarray,
            **fields: Any) -> Selection:
    """The Selection of these arrays, made read-only (``predicted`` kept only where the label is 0)."""
    predicted = predicted & (label == 0)
    for a in [label, regions, sizes, predicted, *masks]:
        a.setflags(write=False)
    return Selection(num_tokens=len(regions), label_map=label, masks=tuple(masks), regions=regions, sizes=sizes,
                     predicted=predicted, **fields)


def _halves_selection(arr: np.ndarray, rng: tuple[float, float], p: int, num_scales: int, a: float,
                      tolerance: float | None, predictable: Callable[[], np.ndarray]) -> Selection:
    """:func:`select_patches` with ``shapes="halves"`` (method "budget", multiscale) on a checked
    channels-last image, by the error of each region in the detail score's gray levels."""
    return _halves_from_errors(_halves.image_errors(arr, p, num_scales, rng), arr.shape[:2], p, num_scales, a,
                               tolerance, predictable)


def _halves_from_errors(errors: dict[tuple[int, int], np.ndarray], size: tuple[int, int], p: int, num_scales: int,
                        a: float, tolerance: float | None, predictable: Callable[[], np.ndarray]) -> Selection:
    """The ``shapes="halves"`` Selection of an image of ``size`` (H, W) px from its regions' errors
    (:func:`._halves.region_errors`): the coarsest tiling, then splits in two by
    :func:`._halves.split_leaves` up to the budget, alpha ``a`` of its p x p px cells;
    ``predictable()`` gives the cells ``tolerance`` removes (None: off)."""
    h, w = size
    rows, cols, whole = -(-h // p), -(-w // p), (h // p, w // p)
    shapes = [(rows, cols)] + [(whole[0] >> k, whole[1] >> k) for k in range(1, num_scales)]
    removed = predictable() if tolerance is not None else np.zeros((rows, cols), dtype=bool)
    budget = math.floor(a * rows * cols + 0.5)
    label = _coarsest_tiling(shapes)
    start = []
    for k, (rk, ck) in enumerate(shapes, 1):
        b = 1 << (k - 1)
        r, c = np.nonzero(label[::b, ::b][:rk, :ck] == k)
        start += [(int(i) * b, int(j) * b, (b, b)) for i, j in zip(r, c, strict=True)]
    tokens = None
    if tolerance is not None:
        shown = ~removed[: whole[0], : whole[1]]
        tokens = {s: shown[: e.shape[0] * s[0], : e.shape[1] * s[1]].reshape(e.shape[0], s[0], e.shape[1], s[1])
                  .any((1, 3)) for s, e in errors.items()}
        tokens[1, 1] = ~removed
    leaf = _halves.split_leaves(errors, start, budget, tokens)
    label = np.zeros((rows, cols), dtype=np.int8)
    masks = [np.zeros(s, dtype=bool) for s in shapes]
    kept = []
    for shown, (hh, ww) in zip(leaf, errors, strict=True):  # leaves that cost a token, one shape at a time
        if tokens is not None:
            costs = tokens[hh, ww]
            shown = shown & np.pad(costs, [(0, n - t) for n, t in zip(shown.shape, costs.shape, strict=True)])
        k = max(hh, ww).bit_length()  # the level of the longer side
        cells = np.repeat(np.repeat(shown, hh, 0), ww, 1)[:rows, :cols]
        label[cells] = k
        i, j = np.nonzero(shown)
        if hh == ww:
            masks[k - 1][i, j] = True
        kept.append(np.column_stack([np.full(len(i), k), i * hh, j * ww, np.full((len(i), 2), (hh, ww))]))
    kept = np.concatenate(kept).astype(np.int64)  # (level, row, col, h, w)
    kept = kept[np.lexsort((kept[:, 2], kept[:, 1]))]
    # splits never pass the budget, so more tokens than it means the coarsest tiling already did
    return _frozen(label, masks, np.ascontiguousarray(kept[:, :3]), np.ascontiguousarray(kept[:, 3:]), removed,
                   method="budget", mode="multiscale", budget=budget, budget_met=len(kept) <= budget, threshold=None,
                   tolerance=tolerance)


def _check_method(method: Any, alpha: Any, mode: Any) -> tuple[str, float | None]:
    """Canonical method name and alpha (None where the method takes none); raises for bad ones."""
    if method is not None and not isinstance(method, str):
        raise TypeError(f"method must be one of {_VALID_METHODS} or None, got {method!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {_VALID_METHODS} or None, got {method!r}")
    method = METHODS[method]
    if not isinstance(mode, str):
        raise TypeError(f"mode must be one of {MODES}, got {mode!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return method, _check_alpha(method, alpha)


def _check_score(method: str, score: Any) -> str:
    score = default_score(method) if score is None else score
    if not isinstance(score, str):
        raise TypeError(f"score must be one of {SCORES}, got {score!r}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    return score


def check_settings(method: Any, alpha: Any, thresholds: Any, num_scales: Any, mode: Any, score: Any,
                   tolerance: Any = None, shapes: Any = "squares") -> None:
    """Raise the ValueError/TypeError :func:`select_patches` would raise for these settings on
    an image, without scoring one."""
    method, _ = _check_method(method, alpha, mode)
    _check_score(method, score)
    _check_shapes(shapes, method, mode, score)
    k = check_int("num_scales", num_scales, 1)
    if method == "v1":
        _check_thresholds(thresholds, k, mode)
    _check_tolerance(tolerance)


def select_patches(
    image: Any,
    method: str | None = "budget",
    alpha: float = 0.3,
    thresholds: Sequence[float] | np.ndarray | None = None,
    patch_size: int = 28,
    num_scales: int = 3,
    mode: str = "multiscale",
    score: str | None = None,
    channels_first: bool = False,
    value_range: tuple[float, float] | None = None,
    tolerance: float | None = None,
    downscale: bool | str = False,
    shapes: str = "squares",
) -> Selection:
    """Choose which regions of an image keep full resolution, go coarse, or are dropped.

    Methods:
        ``"budget"``: budget = floor(alpha * cells + 0.5) tokens, 0 < alpha <= 1, cells = base
            cells. Multiscale starts from the coarsest tiling and splits regions (one into four,
            +3 tokens) in descending score order while the split fits, so
            budget - 2 <= num_tokens <= budget; below the coarsest tiling's count that tiling is
            returned with ``budget_met=False``. num_tokens is non-decreasing in alpha.
        ``"v1"`` / ``"threshold"``: a level-k region (k >= 2) is coarse iff its score is below
            thresholds[k-2], coarsest level first (default thresholds (3.0, 2.0) bits).
        ``"v2"`` / ``"adaptive"``: one threshold t = alpha * mean score of the coarsest level's
            whole regions, applied at every coarse level (coarse iff score <= t), alpha >= 0.
            Larger alpha -> more coarse regions -> fewer or equal tokens.
        ``None`` / ``"none"``: every base cell kept.

    Modes:
        ``"multiscale"``: the kept regions tile the base grid exactly (quadtree).
        ``"drop"``: only base cells; budget keeps exactly ``budget`` cells with the highest
            level-1 scores (ties: cells their left / upper neighbours do not predict exactly
            first, then raster order); v1 / v2 keep cells scoring >= thresholds[0] / t. Larger
            v2 alpha keeps fewer or equal cells.

    Predictable cells (``tolerance``, any method and mode): a whole base cell is removed (no
    token, label 0, ``predicted``) when its prediction from what is shown of its left (A),
    upper (B) and upper-left (C) cells matches it within ``tolerance`` in every pixel value, in
    raster order: PixelPrune's LOCO-I rule (first row A, first column B, else B if C ~ A and
    not C ~ B, else A), extended where neither holds: A's last pixel column repeated across the
    cell if that repetition of C gives B, else B's last row repeated down if that of C gives A.
    :func:`reconstruct` shows removed cells as their prediction, so with every other cell kept
    at full resolution each pixel value is within ``tolerance`` (exact at 0). Alone (method
    None) the count depends on the content; with a budget the tokens go to the rest (a split
    costs 3 minus its wholly predicted children; regions are split by score per token), so
    num_tokens lies in [budget - 2, budget] or is every unpredicted cell where that is fewer.

    Down-scaling (``downscale``, method "budget", images only): the image may first be shrunk
    (Pillow's bicubic, each side a multiple of ``patch_size`` no longer than the image's, or the
    image's own where shorter than one cell, as Qwen's processor shrinks an image under a
    smaller ``max_pixels``) and selected there at the same budget (of the given image's cells;
    ``resized`` records the sizes). ``True``: until the cells that ``tolerance``
    does not remove fit the budget (for text: shown whole, smaller). ``"least_error"``: of up to 7
    sizes from none to ``True``'s, the one whose selection, shown by :func:`reconstruct` and
    brought back bilinearly, has the least squared luma error (for photographs: never below
    uniform down-scaling at equal tokens). ``"balanced"``: of those sizes whose error is at
    least 0.2 dB below uniform down-scaling's at the budget, the smallest whose worst cell loses
    least within 0.2 dB (least_error's choice where none is): for mixed content, text shown
    whole at a smaller size rather than a few blocks averaged away. num_tokens is then at most
    the budget, neither exact nor monotone in alpha.

    Region shapes (``shapes``, method "budget", multiscale, images only): ``"squares"``
    (default) as above; ``"halves"``: a region may also split in two across either side, so
    it can be h x w cells with one side twice the other (1 x 2, 2 x 1, 2 x 4, 4 x 2 at
    num_scales 3; ``Selection.sizes``), one token squashed by 2 along its longer side. Each
    split adds one token and removes the most squared gray-level error per token of any split
    (the detail score's error, per region), so num_tokens is exactly the budget (or every
    unpredicted cell), and photographs keep more per token (docs/benchmarks.md).

    Args:
        image: an image for :func:`entropy_maps` / :func:`detail_maps` ((H, W) or (H, W, C),
            numpy or torch), or precomputed maps: a :class:`ScoreMaps` or a sequence of 2-D
            arrays, level 1 first, level k of shape (rows // 2^(k-1), cols // 2^(k-1)).
        method, alpha, thresholds, mode: see above; thresholds is a sequence or 1-D array
            (numpy or torch) of num_scales - 1 real numbers (level 2 first; drop mode uses
            thresholds[0]).
        patch_size: base cell side in pixels (images only).
        num_scales: number of levels (images only; maps bring their own).
        score: ``"entropy"`` (bits) or ``"detail"`` (gray levels) (images only); None picks
            ``"detail"`` for method "budget" and ``"entropy"`` otherwise.
        channels_first: image is (C, H, W).
        value_range: (lo, hi) the image's pixel values span (images only), as in
            :func:`entropy_maps`; default [0, dtype max] for integers, [0, 1] for floats.
        tolerance: None (off) or the largest error per pixel value of a removed predictable
            cell, in [0, 255] 8-bit levels (the image's range mapped to [0, 255]); images only.
        downscale: False (default), True, "least_error" or "balanced"; see above.
        shapes: ``"squares"`` (default) or ``"halves"``; see above.

    Returns:
        Selection: label map, per-level masks, regions and token count (numpy arrays).

    Example:
        >>> import numpy as np
        >>> image = np.zeros((112, 112), np.uint8)  # 4 x 4 cells of 28 px
        >>> image[:28, :28] = np.arange(28) * 9  # detail in the top-left cell only
        >>> sel = select_patches(image, "budget", alpha=0.5)  # budget 8 of 16 tokens
        >>> sel.num_tokens, sel.budget
        (7, 8)
        >>> sel.label_map  # 4 full-resolution cells, 3 tokens of 2 x 2 cells
        array([[1, 1, 2, 2],
               [1, 1, 2, 2],
               [2, 2, 2, 2],
               [2, 2, 2, 2]], dtype=int8)
        >>> select_patches(image, "budget", alpha=0.25, mode="drop").label_map[:2]  # ties: unpredicted cells first
        array([[1, 1, 1, 0],
               [1, 0, 0, 0]], dtype=int8)
        >>> select_patches(image, None, tolerance=0).label_map[:2]  # the rest repeat a neighbour
        array([[1, 1, 0, 0],
               [1, 0, 0, 0]], dtype=int8)
        >>> select_patches(image, "budget", alpha=0.25, downscale=True).resized  # 4 tokens: all of it at half size
        ((112, 112), (56, 56))
    """
    method, a = _check_method(method, alpha, mode)
    tol = _check_tolerance(tolerance)
    rule = _check_downscale(downscale)
    halves = _check_shapes(shapes, method, mode, score)
    if rule and method != "budget":
        raise ValueError(f"downscale={downscale!r} needs method 'budget' (it fits the image to the budget), "
                         f"got {method!r}")
    if isinstance(image, (ScoreMaps, list, tuple)):
        if tol is not None:
            raise ValueError("tolerance needs the image, not precomputed score maps (cells are predicted from pixels)")
        if rule:
            raise ValueError("downscale needs the image, not precomputed score maps (it resizes the pixels)")
        if halves:
            raise ValueError("shapes='halves' needs the image, not precomputed score maps (each shape's error is "
                             "measured on the pixels)")
        return _select_maps(image, method, a, thresholds, mode)
    score = _check_score(method, score)
    check_int("num_scales", num_scales, 1)
    if halves:
        return _halves_image(*check_image(image, channels_first, value_range), check_int("patch_size", patch_size, 1),
                             num_scales, a, tol, rule)
    sm = score_maps(image, score, patch_size=patch_size, num_scales=num_scales, channels_first=channels_first,
                    value_range=value_range)
    if sm[0].ndim != 2:
        raise ValueError(f"select_patches takes one image at a time, got a batch of shape {tuple(sm[0].shape[:-2])}")
    def predictable() -> np.ndarray:
        arr, rng = check_image(image, channels_first, value_range)
        return _predictable(arr, sm.patch_size, _tolerance_units(tol or 0.0, rng), sm.partial.shape)

    if rule:
        arr, rng = check_image(image, channels_first, value_range)
        return _downscaled(arr, rng, sm.patch_size, rule, a, tol, _budget_on_maps(arr, rng, sm, mode, tol))
    return _select_maps(sm, method, a, thresholds, mode, tol, predictable)


def _budget_on_maps(arr: np.ndarray, rng: tuple[float, float], sm: ScoreMaps, mode: str, tol: float | None):
    """(x, alpha, predictable) -> the budget Selection of image ``arr`` (its maps ``sm``) or of a
    shrunk copy x of it (scored again), for :func:`_downscaled`."""
    def select_at(x: np.ndarray, alpha: float, predictable: Callable[[], np.ndarray]) -> Selection:
        maps = sm if x is arr else score_maps(x, sm.score, patch_size=sm.patch_size, num_scales=len(sm.levels),
                                              value_range=rng)
        return _select_maps(maps, "budget", alpha, None, mode, tol, predictable)

    return select_at


def _halves_image(arr: np.ndarray, rng: tuple[float, float], p: int, num_scales: int, a: float,
                  tol: float | None, rule: bool | str) -> Selection:
    """:func:`select_patches` with ``shapes="halves"`` on a checked channels-last image."""
    if arr.ndim > 3:
        raise ValueError(f"select_patches takes one image at a time, got a batch of shape {arr.shape[:-3]}")
    if rule:
        return _downscaled(arr, rng, p, rule, a, tol,
                           lambda x, alpha, predictable: _halves_selection(x, rng, p, num_scales, alpha, tol,
                                                                           predictable))
    grid = (-(-arr.shape[0] // p), -(-arr.shape[1] // p))
    return _halves_selection(arr, rng, p, num_scales, a, tol,
                             lambda: _predictable(arr, p, _tolerance_units(tol or 0.0, rng), grid))


def _downscaled(arr: np.ndarray, rng: tuple[float, float], p: int, rule: bool | str, alpha: float, tol: float | None,
                select_at: Callable[[np.ndarray, float, Callable[[], np.ndarray]], Selection]) -> Selection:
    """:func:`select_patches` with ``downscale=rule`` on a checked channels-last image with p px cells;
    ``select_at(x, alpha, predictable)`` is the budget selection of a (shrunk) image x."""
    from ._downscale import Shrink, luma_errors, shrink_and_select, size_under  # imports reconstruct, which imports us
    from ._resample import resize

    h, w = arr.shape[:2]

    def removed(x: np.ndarray, tolerance: float | None = tol) -> np.ndarray | None:
        grid = (-(-x.shape[0] // p), -(-x.shape[1] // p))
        return None if tolerance is None else _predictable(x, p, _tolerance_units(tolerance, rng), grid)

    def select(x: np.ndarray, a: float, gone: np.ndarray | None) -> Selection:
        return select_at(x, a, lambda: removed(x, 0.0) if gone is None else gone)

    def luma(x: np.ndarray) -> np.ndarray:
        return (gray(x) - np.float32(rng[0])) * np.float32(255.0 / (rng[1] - rng[0]))

    ops = Shrink(size=lambda x: x.shape[:2], resize=lambda x, hh, ww: resize(x, hh, ww, rng),
                 size_under=lambda n: size_under(h, w, p, n), removed=removed, select=select, luma=luma,
                 error=lambda shown, ref: luma_errors(shown, ref, p), unit_px=p, min_pixels=p * p)
    image, sel = shrink_and_select(arr, rule, ops, alpha)
    return sel if image is arr else replace(sel, resized=((h, w), image.shape[:2]))


def _select_maps(maps: Any, method: str, a: float | None, thresholds: Any, mode: str, tolerance: float | None = None,
                 predictable: Callable[[], np.ndarray] | None = None) -> Selection:
    """:func:`select_patches` on score maps, for a checked method and alpha. ``predictable()``
    gives bool (rows, cols), the cells that the ``tolerance`` setting (None: off) removes; in drop
    mode without it, the cells dropped first among equal scores (called only where that matters)."""
    maps, partial = _check_maps(maps)
    shapes = [m.shape for m in maps]
    removed = predictable() if tolerance is not None else np.zeros(shapes[0], dtype=bool)
    thr = _check_thresholds(thresholds, len(maps), mode) if method == "v1" else None
    num_cells = maps[0].size
    budget = math.floor(a * num_cells + 0.5) if method == "budget" else None
    met = True
    if method == "v2":
        coarsest = next(m for m in reversed(maps) if m.size)
        if coarsest is maps[0] and (~partial).any():
            coarsest = maps[0][~partial]
        thr = (a * float(coarsest.mean()),)
    if method == "none":
        label = np.ones(shapes[0], dtype=np.int8)
    elif mode == "drop":
        s = maps[0].ravel()
        if method == "budget":
            keep = np.zeros(s.size, dtype=bool)
            ranked = np.argsort(-s, kind="stable")
            ranked = ranked[~removed.ravel()[ranked]]
            tie = 0 < budget < ranked.size and s[ranked[budget - 1]] == s[ranked[budget]]
            if tolerance is None and predictable is not None and tie:
                ranked = np.lexsort((predictable().ravel(), -s))  # equal scores: predictable cells dropped first
            keep[ranked[:budget]] = True
        else:
            keep = s >= thr[0]
        label = keep.reshape(shapes[0]).astype(np.int8)
    elif method == "budget":
        label, met = _budget_tiling(maps, budget, removed)
    else:
        label = _threshold_tiling(maps, thr if method == "v1" else thr * (len(maps) - 1), inclusive=method == "v2")
    if tolerance is not None:
        label = _remove_predicted(label, removed, shapes)
    return _selection_from_labels(label, shapes, removed, method=method, mode=mode, budget=budget, budget_met=met,
                                  threshold=thr, tolerance=tolerance)
