"""Kept regions of resized frames -> processor rows, in torch: cutting, pooling and row layout.

A kept region of h x w units (level k: ``h = w = 2^(k-1)``; ``shapes="halves"`` also one side
twice the other) becomes ONE unit: its pixels (every distinct temporal frame, all channels)
box-averaged by h x w down to one unit (1 x 1: the unit itself) and cut into its
``merge_size^2`` patch rows in the processor's layout [unit][mh][mw] x (C, tp, p, p).
"""

from __future__ import annotations

import numpy as np
import torch

from .. import _compiled


def cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat without the copy for a single part (one image: its rows are already new)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def pool_sums(frames: torch.Tensor, unit_px: int, wide: torch.dtype) -> torch.Tensor:
    """Sums of (..., H, W) pixels over 2 x 2 px blocks, over whole blocks of 2 x 2 units of
    ``unit_px``, in dtype ``wide``: pixel sums of one level -> the next coarser level's (each
    sum covers 4x as many pixels)."""
    block = 2 * unit_px
    h, w = frames.shape[-2] // block * block, frames.shape[-1] // block * block
    return block_sums(frames[..., :h, :w], 2, 2, wide)


def block_sums(x: torch.Tensor, h: int, w: int, wide: torch.dtype) -> torch.Tensor:
    """(..., s h, s w) pixels -> (..., s, s) their sums over h x w px blocks, in dtype ``wide``: strided
    adds of rows, then of columns (on CPU several times faster than ``avg_pool2d`` or a sum over
    unflattened axes); the result is contiguous, faster to gather from and pool again."""
    rows = x[..., 0::h, :].to(wide, copy=True)
    for i in range(1, h):
        rows += x[..., i::h, :] if x.dtype in _PROMOTES else x[..., i::h, :].to(wide)  # torch adds no bool/uint16+
    if w == 1:
        return rows
    out = rows[..., 0::w] + rows[..., 1::w]
    for j in range(2, w):
        out += rows[..., j::w]
    return out


def unit_blocks(frames: torch.Tensor, r: np.ndarray, c: np.ndarray, s: int, sw: int | None = None) -> torch.Tensor:
    """(F, C, H, W) frames -> (K, F, C, s, sw): the s x sw px blocks (sw None: s) at block rows r,
    cols c (K,)."""
    sw = s if sw is None else sw
    hu, wu = frames.shape[-2] // s, frames.shape[-1] // sw
    grid = frames[..., : hu * s, : wu * sw].unflatten(-1, (wu, sw)).unflatten(-3, (hu, s))  # (F, C, hu, s, wu, sw)
    if grid.device.type == "cpu" and grid.dtype != torch.bfloat16:  # numpy copies these short runs ~2x faster
        # index arrays split by a slice: numpy puts their axis first, (K, F, C, s, s), and reads
        # the unit rows in place (faster than indexing a permuted view)
        return torch.from_numpy(grid.numpy()[..., r, :, c, :])
    grid = grid.permute(2, 4, 0, 1, 3, 5)
    return grid[torch.from_numpy(r).to(grid.device), torch.from_numpy(c).to(grid.device)]


def block_rows(blocks: torch.Tensor, m: int, p: int, tp: int) -> torch.Tensor:
    """(K, F, C, m*p, m*p) unit pixels -> (K, m, m, C, tp, p, p), the processor's row layout
    (m*m patch rows of C*tp*p*p values per unit); F = 1 stands for tp copies (a view)."""
    k, f, ch = blocks.shape[:3]
    x = blocks.unflatten(-1, (m, p)).unflatten(-3, (m, p)).permute(0, 3, 5, 2, 1, 4, 6)
    return x.expand(k, m, m, ch, tp, p, p)


_PROMOTES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)  # added in place to wider ints


def sum_dtype(dtype: torch.dtype, level: int) -> torch.dtype:
    """dtype that holds sums of ``dtype`` pixels over 2^(level-1) x 2^(level-1) px blocks
    exactly: floats and complex as they are; bool and integers the narrowest of int16, int32,
    int64 that holds the largest sum, else float64 (exact below 2^53)."""
    if dtype.is_floating_point or dtype.is_complex:
        return dtype
    top = (1 if dtype == torch.bool else torch.iinfo(dtype).max) << (2 * level - 2)
    return next((t for t in (torch.int16, torch.int32, torch.int64) if top <= torch.iinfo(t).max), torch.float64)


def cut_regions(frames: torch.Tensor, regions: np.ndarray, m: int, p: int, tp: int, normalize=None,
                sizes: np.ndarray | None = None) -> torch.Tensor:
    """Rows of one temporal patch's kept regions.

    A level-k region (b = 2^(k-1) units on a side) becomes ONE unit, its pixels area-averaged
    by b; a region of h x w units, h != w, by (h, w). 8-bit frames on the CPU are cut in one
    compiled pass where numba runs; otherwise in torch, level 2 from the image's 2 x 2 px sums
    and deeper levels by pooling those sums further within the kept regions only. The same rows.

    Args:
        frames: (F, C, H, W) pixels of the temporal patch (F = 1: tp copies, or tp).
        regions: int (K, 3) (level, row, col) in units.
        normalize: float (N, C, s, s) units (integer pixels converted exactly, all levels in
            one call) -> the same in the stock rows' values and dtype (None: identity).
        sizes: int (K, 2) (h, w) of each region in units; None: squares of their level.
    Returns:
        (K * m*m, C*tp*p*p) rows in region order.
    """
    f, ch = frames.shape[:2]
    s = m * p
    if sizes is None:  # squares of their level
        sizes = np.repeat(1 << (regions[:, :1] - 1), 2, axis=1)
    compiled = None
    if frames.device.type == "cpu" and frames.dtype == torch.uint8:
        compiled = _compiled.cut_units(frames.numpy(), regions[:, 1], regions[:, 2], sizes, s)
    units, back = (torch.from_numpy(compiled), None) if compiled is not None else _cut(frames, regions, sizes, s)
    if normalize is not None:
        units = normalize(units.flatten(0, 1)).unflatten(0, (len(regions), f))
    rows = block_rows(units, m, p, tp)
    rows = rows if back is None else rows.index_select(0, back)  # into region order
    return rows.reshape(len(regions) * m * m, ch * tp * p * p)


def _cut(frames: torch.Tensor, regions: np.ndarray, sizes: np.ndarray, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`cut_regions`' units in torch: (K, F, C, s, s) in the order oblong regions by shape,
    then squares level by level, and the indices that put them back in region order."""
    f, ch = frames.shape[:2]
    work = frames.dtype if frames.is_floating_point() or frames.is_complex() else torch.float32
    oblong = sizes[:, 0] != sizes[:, 1]
    group = np.where(oblong, 0, regions[:, 0])  # oblong regions first, then level by level
    order = np.lexsort((sizes[:, 1], sizes[:, 0], group))
    units = torch.empty((len(regions), f, ch, s, s), dtype=work, device=frames.device)
    # 2 x 2 px sums, for squares of level 2 and up and for oblong regions of 2 x 4 and 4 x 2 units
    top = max(int(regions[~oblong, 0].max(initial=1)), 3 if (sizes[oblong] > 1).all(1).any() else 1)
    pairs = pool_sums(frames, s, sum_dtype(frames.dtype, top)) if top > 1 else None
    start = 0
    for h, w in np.unique(sizes[oblong], axis=0).tolist():
        pick = order[start : start + int((oblong & (sizes[:, 0] == h) & (sizes[:, 1] == w)).sum())]
        r, c = regions[pick, 1] // h, regions[pick, 2] // w
        if min(h, w) > 1:  # (K, F, C, s h/2, s w/2) pair sums, then their pairs along the longer side
            sums = block_sums(unit_blocks(pairs, r, c, s * h // 2, s * w // 2), h // 2, w // 2, pairs.dtype)
        else:  # (K, F, C, s h, s w) pixels
            sums = block_sums(unit_blocks(frames, r, c, s * h, s * w), h, w, sum_dtype(frames.dtype, 2))
        torch.mul(sums, 1.0 / (h * w), out=units[start : start + len(pick)])
        start += len(pick)
    for level in range(1, top + 1):
        pick = order[start : start + int((~oblong & (regions[:, 0] == level)).sum())]
        r, c = regions[pick, 1] >> (level - 1), regions[pick, 2] >> (level - 1)
        dst = units[start : start + len(pick)]
        if level == 1:
            dst.copy_(unit_blocks(frames, r, c, s))
        else:
            blocks = unit_blocks(pairs, r, c, s << (level - 2))  # (K, F, C, s*b/2, s*b/2) pair sums
            for half in range(level - 3, -1, -1):
                blocks = pool_sums(blocks, s << half, blocks.dtype)
            torch.mul(blocks, 1.0 / (1 << (2 * level - 2)), out=dst)  # sums -> means
        start += len(pick)
    return units, torch.from_numpy(np.argsort(order)).to(frames.device)
