"""Regions split in halves (``select_patches(..., shapes="halves")``): each region's error as one
token, and the order in which splits spend a budget.

A region is h x w base cells, h and w powers of two below 2^num_scales, neither side more than
twice the other (num_scales 3: 1x1, 1x2, 2x1, 2x2, 2x4, 4x2, 4x4), aligned to its size. It is one
token of p x p px: its pixels area-averaged over h x w px blocks (a non-square region is squashed
by 2 along its longer side). A region splits in two across either side where both halves are
regions; each split adds one token.
"""

from __future__ import annotations

import heapq

import numpy as np

from . import _compiled
from .scores import _gray_levels

Shape = tuple[int, int]


def region_shapes(num_scales: int) -> list[Shape]:
    """(h, w) in base cells of every region shape, smallest first."""
    sides = [1 << i for i in range(num_scales)]
    return sorted(((h, w) for h in sides for w in sides if max(h, w) <= 2 * min(h, w)), key=lambda s: (s[0] * s[1], s))


def _halves(shape: Shape) -> tuple[Shape | None, Shape | None]:
    """The halves of a region of ``shape`` (h, w) split across its rows (h/2, w) and across its
    columns (h, w/2), None where that half is not a region shape."""
    h, w = shape
    return ((h // 2, w) if h > 1 and w <= h else None), ((h, w // 2) if w > 1 and h <= w else None)


def region_errors(gray: np.ndarray, p: int, num_scales: int, exact: bool = False) -> dict[Shape, np.ndarray]:
    """Squared error of each region shown as one token, summed over its pixels.

    Args:
        gray: (H, W) float gray levels; only whole p x p cells count.
        p: base cell side in px.
        num_scales: as in :func:`region_shapes`.
        exact: ``gray`` holds integers in [0, 255] (8-bit luma): with num_scales <= 3 block sums
            are taken in float32, exactly; else in float64.
    Returns:
        shape (h, w) -> float64 (rows // h, cols // w) for the aligned regions of whole cells
        (rows, cols = H // p, W // p); (1, 1) is all 0. Values at or below 1e-9 of the region's
        energy (float rounding of a flat region) are 0.
    """
    rows, cols = gray.shape[0] // p, gray.shape[1] // p
    g = gray[: rows * p, : cols * p]
    # 8-bit levels in float32: block sums of up to 16 px and their squares are exact integers
    # below 2^24; every sum over a cell or region is taken in float64.
    g = g.astype(np.float32 if exact and num_scales <= 3 else np.float64, copy=False)
    sums: dict[Shape, np.ndarray] = {(1, 1): g}  # h x w px block sums over the cells the regions cover
    squares = {}
    for h, w in region_shapes(num_scales)[1:]:  # (1, 1) first
        rh, cw = rows // h, cols // w
        if h > 1 and (h // 2, w) in sums:  # pair rows of the half-height blocks
            src = sums[h // 2, w][: rh * p * 2, : cw * p]
            sums[h, w] = src[0::2] + src[1::2]
        else:  # pair columns of the half-width blocks
            src = sums[h, w // 2][: rh * p, : cw * p * 2]
            sums[h, w] = src[:, 0::2] + src[:, 1::2]
        squares[h, w] = _cell_squares(sums[h, w], rh, p, cw, p)
    return _errors(_cell_squares(g, rows, p, cols, p), squares)


def _errors(energy: np.ndarray, squares: dict[Shape, np.ndarray]) -> dict[Shape, np.ndarray]:
    """:func:`region_errors` from float64 per-cell sums of squared gray levels (rows, cols) and, per
    region shape (h, w) but (1, 1), each region's sum of squared h x w px block sums."""
    out = {(1, 1): np.zeros(energy.shape)}
    for (h, w), sq in squares.items():
        rh, cw = sq.shape
        total = energy[: rh * h, : cw * w].reshape(rh, h, cw, w).sum((1, 3))
        err = total - sq / (h * w)
        err[err <= 1e-9 * total] = 0.0
        out[h, w] = err
    return out


def image_errors(arr: np.ndarray, p: int, num_scales: int, rng: tuple[float, float]) -> dict[Shape, np.ndarray]:
    """:func:`region_errors` of a checked channels-last image (values spanning ``rng``), on the
    detail score's gray levels (8-bit luma: exact integers, summed in one compiled pass where numba
    runs, else in float32)."""
    if (compiled := _compiled.region_sums(arr, p, rng, num_scales)) is not None:
        return _errors(*compiled)
    g = _gray_levels(arr, p, rng)  # float32 only for 8-bit luma, which is integer
    return region_errors(g, p, num_scales, exact=g.dtype == np.float32)


def _cell_squares(x: np.ndarray, rows: int, p: int, cols: int, q: int) -> np.ndarray:
    """float64 (rows, cols) sums of squares of x's p x q blocks (x float32 or float64): rows of
    each block first (contiguous), then its columns."""
    squares = np.square(x[: rows * p, : cols * q])
    return squares.reshape(rows, p, cols * q).sum(1, dtype=np.float64).reshape(rows, cols, q).sum(-1)


def split_leaves(errors: dict[Shape, np.ndarray], start: list[tuple[int, int, Shape]], budget: int,
                 tokens: dict[Shape, np.ndarray] | None = None) -> np.ndarray:
    """Leaves after splitting the ``start`` regions ((row, col, shape) in cells) while the tokens
    fit ``budget``, as bool (len(errors), R, C), R x C cells the ``start`` regions cover:
    [k, row // h, col // w] for a leaf at (row, col) of the k-th shape (h, w) of ``errors``.

    The next split is always the one of the largest error drop per token added (ties: the larger
    region, then raster order; of a region's two sides, rows first), so the order does not depend
    on the budget. ``tokens`` (shape -> bool map like ``errors``) says which regions cost a token
    (False: wholly removed as predictable); a split that adds none is taken first. Splits stop at
    the first one that does not fit. The walk runs compiled where numba runs, else in Python; the
    same leaves.
    """
    table = _split_table(errors, tokens)
    spent = sum(1 if tokens is None else int(tokens[s][r // s[0], c // s[1]]) for r, c, s in start)
    shapes = list(errors)
    index = {s: k for k, s in enumerate(shapes)}
    size = (max(r + s[0] for r, _, s in start), max(c + s[1] for _, c, s in start)) if start else (0, 0)
    leaf = np.zeros((len(shapes), *size), dtype=bool)
    for r, c, s in start:
        leaf[index[s], r // s[0], c // s[1]] = True
    key = np.full(leaf.shape, -np.inf)  # the table packed per shape; -inf: the region does not split
    side, add = np.zeros(key.shape, np.int64), np.zeros(key.shape, np.int64)
    for k, shape in enumerate(shapes):
        if shape in table:
            for dst, src in zip((key, side, add), table[shape], strict=True):
                dst[k, : src.shape[0], : src.shape[1]] = src
    hs, ws = (np.array([s[i] for s in shapes], dtype=np.int64) for i in (0, 1))
    kid = np.array([[-1 if h is None else index[h] for h in _halves(s)] for s in shapes], dtype=np.int64)
    if not _compiled.split_walk(key, side, add, hs, ws, kid, leaf, budget, spent):
        _walk(key, side, add, hs, ws, kid, leaf, budget, spent)
    return leaf


def _walk(key: np.ndarray, side: np.ndarray, add: np.ndarray, hs: np.ndarray, ws: np.ndarray, kid: np.ndarray,
          leaf: np.ndarray, budget: int, spent: int) -> None:
    """:func:`split_leaves`' walk in Python (``_kernel.split_walk``'s, on the same packed arrays),
    updating ``leaf`` in place."""
    # nested lists: indexing them is several times faster than numpy scalars, one lookup per push
    key, side, add, hs, ws, kid = (a.tolist() for a in (key, side, add, hs, ws, kid))
    heap = []

    def push(k: int, r: int, c: int) -> None:
        i, j = r // hs[k], c // ws[k]
        if key[k][i][j] > -np.inf:  # a region that splits
            heapq.heappush(heap, (-key[k][i][j], -hs[k] * ws[k], r, c, k))

    for k, i, j in zip(*np.nonzero(leaf), strict=True):
        push(int(k), int(i) * hs[k], int(j) * ws[k])
    while heap:
        _, _, r, c, k = heap[0]
        i, j = r // hs[k], c // ws[k]
        if spent + add[k][i][j] > budget:
            break
        heapq.heappop(heap)
        spent += add[k][i][j]
        leaf[k, i, j] = False
        h = kid[k][side[k][i][j]]
        for rr, cc in ((r, c), (r + hs[h], c) if side[k][i][j] == 0 else (r, c + ws[h])):
            leaf[h, rr // hs[h], cc // ws[h]] = True
            push(h, rr, cc)


def _split_table(errors: dict[Shape, np.ndarray], tokens: dict[Shape, np.ndarray] | None
                 ) -> dict[Shape, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per shape that splits, maps like ``errors[shape]`` of its better split: key (the error drop;
    inf where the split adds no token; -inf where the region costs none), side (0: across rows,
    1: across columns; rows where equal) and tokens added."""
    table = {}
    for shape, err in errors.items():
        h, w = shape
        rh, cw = err.shape
        own = np.ones(err.shape, dtype=np.int64) if tokens is None else tokens[shape].astype(np.int64)
        best = None
        for side, half in enumerate(_halves(shape)):
            if half is None:
                continue
            if side == 0:  # the two halves of every region, in the halves' map
                first, second = ((slice(k, 2 * rh, 2), slice(0, cw)) for k in (0, 1))
            else:
                first, second = ((slice(0, rh), slice(k, 2 * cw, 2)) for k in (0, 1))
            drop = err - errors[half][first] - errors[half][second]
            if tokens is None:
                added = np.ones(err.shape, dtype=np.int64)
            else:
                t = tokens[half].astype(np.int64)
                added = t[first] + t[second] - 1
            key = np.where(own == 0, -np.inf, np.where(added == 0, np.inf, drop))
            if best is None:
                best = (key, np.full(err.shape, side), added)
            else:
                better = key > best[0]
                best = (np.where(better, key, best[0]), np.where(better, side, best[1]),
                        np.where(better, added, best[2]))
        if best is not None:
            table[shape] = best
    return table
