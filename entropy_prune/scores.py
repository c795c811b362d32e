"""Multi-scale region scores: histogram entropy and coarse-representation error.

Scales: level 1 is the base cell of ``patch_size`` px, level k a block of 2^(k-1) x 2^(k-1)
base cells aligned to its size. Base cells cut by the image edge are scored over the pixels
they contain and flagged in ``ScoreMaps.partial``; coarse regions are only formed from whole
base cells, so a coarse map has ``(H // p) // 2^(k-1)`` rows and ``(W // p) // 2^(k-1)`` cols.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _compiled
from ._image import check_image, check_int, gray, like_input

__all__ = ["SCORES", "ScoreMaps", "detail_maps", "entropy_maps", "score_maps"]

SCORES = ("entropy", "detail")
"""Names of the scores :func:`score_maps` computes."""
_MAX_BINS = 4096  # a cell's histogram holds p^2 pixels (784 for 28 px): more bins only split singletons
_ENTROPY_COUNTS = 1 << 22  # histogram counts held at once (int32, and float64 while summed)


@dataclass(frozen=True, eq=False)
class ScoreMaps(Sequence):
    """Per-level score maps of one image (or a batch).

    Indexing gives ``levels[k - 1]``, the (..., rows_k, cols_k) map of level k.

    Attributes:
        levels: one map per level, finest first; numpy or torch like the input image.
        image_shape: (H, W) of the scored image in pixels.
        patch_size: base cell side in pixels.
        score: name of the score ("entropy" or "detail").

    Example:
        >>> import numpy as np
        >>> maps = entropy_maps(np.zeros((70, 112), np.uint8))  # 3 x 4 cells of 28 px, the last row cut
        >>> len(maps), [m.shape for m in maps], maps.image_shape, maps.score
        (3, [(3, 4), (1, 2), (0, 1)], (70, 112), 'entropy')
        >>> maps.partial[:, 0]  # base cells cut by the image edge
        array([False, False,  True])
    """

    levels: tuple
    image_shape: tuple[int, int]
    patch_size: int
    score: str

    def __getitem__(self, k):
        return self.levels[k]

    def __len__(self) -> int:
        return len(self.levels)

    @property
    def partial(self) -> np.ndarray:
        """bool (rows_1, cols_1): base cells cut by the image edge."""
        return _grid(*self.image_shape, self.patch_size, 1)[1]


def _grid(h: int, w: int, p: int, num_scales: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Shapes of every level's grid and the base grid's partial-cell mask."""
    rows, cols = -(-h // p), -(-w // p)
    shapes = [(rows, cols)] + [((h // p) >> k, (w // p) >> k) for k in range(1, num_scales)]
    partial = np.zeros((rows, cols), dtype=bool)
    if h % p:
        partial[-1, :] = True
    if w % p:
        partial[:, -1] = True
    return shapes, partial


def _image_hw(arr: np.ndarray) -> tuple[int, int]:
    """(H, W) of a checked channels-last image."""
    return tuple(arr.shape[-2:]) if arr.ndim == 2 else tuple(arr.shape[-3:-1])


def _check_common(image: Any, patch_size: Any, num_scales: Any, channels_first: bool, value_range: Any) -> tuple:
    p = check_int("patch_size", patch_size, 1)
    k = check_int("num_scales", num_scales, 1)
    arr, rng = check_image(image, channels_first, value_range)
    return arr, p, k, rng


def _luma(arr: np.ndarray, lo: float) -> np.ndarray:
    """BT.601 luma (float32) of a checked image minus ``lo``, the bottom of its range."""
    return gray(arr.astype(np.float64) - lo) if lo else gray(arr)


_BAND_CELLS = 8  # rows of base cells per band (rounded up to whole coarsest blocks)


def _score_workers() -> int:
    """Threads for the detail score's bands: half the cores this process may use (1 on a 2-core
    machine). The other half stay with the caller's own threads: in a processor, torch's, and on
    two cores numpy threads beside them ran slower than one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // 2)


@functools.lru_cache(maxsize=None)
def _thread_pool(workers: int) -> ThreadPoolExecutor:
    """The package's shared thread pool with ``workers`` threads (per process: a forked child,
    e.g. a DataLoader worker, starts afresh instead of waiting on its parent's threads, which it
    does not have)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="entropy_prune")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_thread_pool.cache_clear)


def _banded(arr: np.ndarray, fn, p: int, num_scales: int) -> list[np.ndarray]:
    """Apply ``fn`` (image -> list of maps) to horizontal bands of whole coarsest-level blocks,
    so its float64 temporaries stay cache-sized, and stack the maps; bands run in
    :func:`_score_workers` threads (most passes release the GIL; the gray ``matmul`` and
    two-operand ``einsum`` hold it). Cells never straddle a band, so the numbers are those of one
    call on the whole image."""
    block = p << (num_scales - 1)
    band = block * -(-_BAND_CELLS // (1 << (num_scales - 1)))
    starts = range(0, arr.shape[0], band)
    if len(starts) < 2:
        return fn(arr)
    workers = min(_score_workers(), len(starts))
    if workers < 2:
        parts = [fn(arr[y:y + band]) for y in starts]
    else:
        parts = list(_thread_pool(workers).map(lambda y: fn(arr[y:y + band]), starts))
    return [np.concatenate([part[k] for part in parts]) for k in range(num_scales)]


def _batched(arr: np.ndarray, fn, num_scales: int) -> list[np.ndarray]:
    """Apply ``fn`` (one (H, W[, C]) image -> list of maps) over leading batch dims."""
    image_ndim = 2 if arr.ndim == 2 else 3
    batch = arr.shape[: arr.ndim - image_ndim]
    if not batch:
        return fn(arr)
    flat = arr.reshape((-1,) + arr.shape[len(batch):])
    per_image = [fn(x) for x in flat]
    return [np.stack([m[k] for m in per_image]).reshape(batch + per_image[0][k].shape) for k in range(num_scales)]


def _entropy_from_counts(counts: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits from histograms (..., bins) holding n pixels each (...).

    H = (n log2 n - sum c log2 c) / n, both terms from one table so one full bin gives 0 exactly.
    """
    c = np.arange(int(n.max()) + 1 if n.size else 1, dtype=np.float64)
    table = c * np.log2(np.maximum(c, 1.0))
    return (table[n] - table[counts].sum(-1)) / np.maximum(n, 1)


def _entropy_one(arr: np.ndarray, p: int, num_scales: int, bins: int, rng: tuple[float, float]) -> list[np.ndarray]:
    h, w = arr.shape[:2]
    shapes, _ = _grid(h, w, p, num_scales)
    rows, cols = shapes[0]
    scale = np.float32(bins / (rng[1] - rng[0]))
    col_offset = (np.arange(w, dtype=np.int64) // p) * bins
    counts = np.empty((rows, cols, bins), dtype=np.int32)
    for r in range(rows):  # one strip of cells at a time: O(p * W) temporaries
        b = (_luma(arr[r * p:(r + 1) * p], rng[0]) * scale).astype(np.int64)
        np.minimum(b, bins - 1, out=b)
        b += col_offset
        counts[r] = np.bincount(b.ravel(), minlength=cols * bins).reshape(cols, bins)
    ch = np.minimum(p, h - p * np.arange(rows))
    cw = np.minimum(p, w - p * np.arange(cols))
    maps = [_entropy_from_counts(counts, np.outer(ch, cw))]
    for k in range(1, num_scales):
        rk, ck = shapes[k]
        counts = counts[: 2 * rk, : 2 * ck].reshape(rk, 2, ck, 2, bins).sum((1, 3), dtype=np.int32)
        maps.append(_entropy_from_counts(counts, np.full((rk, ck), (p << k) ** 2)))
    return maps


def _entropy_tiled(arr: np.ndarray, p: int, num_scales: int, bins: int, rng: tuple[float, float]) -> list[np.ndarray]:
    """:func:`_entropy_one` on bands of whole rows of coarsest blocks holding at most
    ``_ENTROPY_COUNTS // bins`` cells (one row of blocks at least), so the histograms take
    O(_ENTROPY_COUNTS + W / p * 4^(num_scales - 1) * bins) memory whatever the image's height.
    Each band sees the same full-width pixel strips, so the maps are those of one pass."""
    h, w = arr.shape[:2]
    cols = -(-w // p)
    b = 1 << (num_scales - 1)
    band = max(1, _ENTROPY_COUNTS // bins // cols // b) * b * p
    if band >= h:
        return _entropy_one(arr, p, num_scales, bins, rng)
    parts = [_entropy_one(arr[y:y + band], p, num_scales, bins, rng) for y in range(0, h, band)]
    return [np.concatenate([part[k] for part in parts]) for k in range(num_scales)]


def entropy_maps(
    image: Any,
    patch_size: int = 28,
    num_scales: int = 3,
    bins: int = 256,
    channels_first: bool = False,
    value_range: tuple[float, float] | None = None,
) -> ScoreMaps:
    """Shannon entropy (bits) of the grayscale histogram of every region at every scale.

    Grayscale is BT.601 luma (0.299 R + 0.587 G + 0.114 B); ``bins`` equal-width bins span the
    image's range (``value_range``). Each pixel is read once: coarse histograms are sums of
    their four children's. Histograms are held for bands of rows of cells (at most 2^22 counts
    or one row of coarsest blocks), so extra memory is O(p * W + 2^22 + W / p *
    4^(num_scales - 1) * bins) whatever the image's height.

    Args:
        image: (..., H, W) or (..., H, W, C), C in {1, 3, 4} (alpha ignored); numpy or torch.
        patch_size: base cell side p in pixels, >= 1.
        num_scales: number of levels (cell sides p, 2p, 4p, ...), >= 1.
        bins: histogram bins, in [2, 4096].
        channels_first: image is (..., C, H, W).
        value_range: (lo, hi) the pixel values span; default [0, dtype max] for integer images,
            [0, 1] for floats. Values outside it raise a ValueError. An integer image wider
            than 16 bits that uses less than 1/256 of its dtype's range without a
            value_range (8-bit pixels stored as int64, say) gets a UserWarning.

    Returns:
        ScoreMaps: level k is (..., rows_k, cols_k) float64 in [0, log2(bins)] bits, numpy or
        torch on the input's device like the input.

    Example:
        >>> import numpy as np
        >>> image = np.zeros((112, 112), np.uint8)  # 4 x 4 cells of 28 px
        >>> image[:28, :28] = np.arange(28) * 9  # 28 gray levels in the top-left cell, flat elsewhere
        >>> maps = entropy_maps(image)
        >>> [m.shape for m in maps]
        [(4, 4), (2, 2), (1, 1)]
        >>> maps[0][0].round(3)  # log2(28) bits, then flat cells
        array([4.807, 0.   , 0.   , 0.   ])
    """
    arr, p, k, rng = _check_common(image, patch_size, num_scales, channels_first, value_range)
    b = check_int("bins", bins, 2, _MAX_BINS)
    maps = _batched(arr, lambda x: _entropy_tiled(x, p, k, b, rng), k)
    return ScoreMaps(tuple(like_input(m, image) for m in maps), _image_hw(arr), p, "entropy")


def _cell_sums(x: np.ndarray, s: int, squared: bool = False) -> np.ndarray:
    """Sums of a (H, W) array (of its squares with ``squared``) over s x s cells, edge cells
    partial: (ceil(H/s), ceil(W/s)). Rows first (contiguous adds over the whole width; squares
    summed by einsum without a squared copy, in x's dtype), then columns on the small row sums,
    in float64."""
    h, w = x.shape
    whole_h, whole_w = h // s * s, w // s * s
    spec = "rpw,rpw->rw" if squared else "rpw->rw"
    rows = np.einsum(spec, *[x[:whole_h].reshape(h // s, s, w)] * (2 if squared else 1))
    if whole_h < h:
        rest = x[whole_h:]
        rows = np.concatenate([rows, np.einsum(spec.replace("r", ""), *[rest] * (2 if squared else 1))[None]])
    out = rows[:, :whole_w].reshape(len(rows), w // s, s).sum(-1, dtype=np.float64)
    if whole_w < w:
        out = np.concatenate([out, rows[:, whole_w:].sum(1, keepdims=True, dtype=np.float64)], axis=1)
    return out


def _rms(squared_error: np.ndarray, energy: np.ndarray, p: int) -> np.ndarray:
    """sqrt(SS / p^2) in gray levels; SS at or below 1e-9 of the region's energy (sum of squared
    values) is float rounding of a flat region and gives 0."""
    squared_error = np.where(squared_error <= 1e-9 * energy, 0.0, squared_error)
    return np.sqrt(squared_error / (p * p))


def _pool2(x: np.ndarray) -> np.ndarray:
    """Sums of a (2R, 2C) array over 2 x 2 blocks: (R, C). Row pairs by a reduction (~2x faster
    than adding strided rows), then column pairs."""
    pairs = x.reshape(x.shape[0] // 2, 2, -1).sum(1)
    return pairs[:, 0::2] + pairs[:, 1::2]


_LUMA_8BIT = np.array([4899, 9617, 1868], np.float32) / np.float32(1 << 14)
"""BT.601 weights in 14-bit fixed point (OpenCV's RGB2GRAY); exact in float32."""


def _gray_levels(arr: np.ndarray, p: int, rng: tuple[float, float]) -> np.ndarray:
    """(H, W) gray of a checked image in 8-bit gray levels, for the detail score.

    8-bit pixels (uint8, or any integer dtype with range (0, 255)): luma rounded to an integer
    (``_LUMA_8BIT`` weights, half up), computed exactly in float32, and kept in float32 while p
    rows of squared levels sum below 2^24 (p <= 258), so float32 row sums are exact too. Other
    images: float64 BT.601 luma, its range ``rng`` mapped to [0, 255].
    """
    if rng == (0.0, 255.0) and np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.uint8, copy=False)  # checked to lie in [0, 255]
    if arr.dtype != np.uint8 or rng != (0.0, 255.0):
        g = _luma(arr, rng[0]).astype(np.float64)
        if rng[1] - rng[0] != 255.0:
            g *= 255.0 / (rng[1] - rng[0])
        return g
    if arr.ndim == 3 and arr.shape[-1] >= 3:
        if arr.strides[-1] == arr.itemsize:  # channels-last memory
            g = arr[..., :3].astype(np.float32) @ _LUMA_8BIT  # multiples of 2^-14 below 2^8: exact
        else:  # planes (a channels-first image seen channels-last): a plane at a time, the same exact sums
            g = arr[..., 0].astype(np.float32) * _LUMA_8BIT[0]
            for c in (1, 2):
                g += arr[..., c].astype(np.float32) * _LUMA_8BIT[c]
        g += np.float32(0.5)
        np.floor(g, out=g)
    else:
        g = gray(arr)
    return g if p * 255**2 < 1 << 24 else g.astype(np.float64)


def _detail_one(arr: np.ndarray, p: int, num_scales: int, rng: tuple[float, float]) -> list[np.ndarray]:
    h, w = arr.shape[:2]
    shapes, _ = _grid(h, w, p, num_scales)
    n = np.outer(np.minimum(p, h - np.arange(0, h, p)), np.minimum(p, w - np.arange(0, w, p)))  # pixels per cell
    # blocks: level 2's 2 x 2 px sums where computed up front (else None)
    if (compiled := _compiled.gray_sums(arr, p, rng, num_scales)) is not None:  # the same sums, one pass
        s1, s2, blocks = compiled
        g = None
    else:
        g = _gray_levels(arr, p, rng)
        # where the 2 x 2 px sums tile every cell, they also give the cell sums from a quarter of the values
        halves = num_scales > 1 and p % 2 == 0 and h % (2 * p) == 0 and w % (2 * p) == 0
        blocks = _pool2(g) if halves else None
        s1 = _cell_sums(blocks, p // 2) if halves else _cell_sums(g, p)
        s2 = _cell_sums(g, p, squared=True)
    maps = [_rms(s2 - s1 * s1 / n, s2, p)]
    # Energy of block means E_f = sum over f x f px blocks of (block sum)^2 / f^2. A level-(k+1)
    # region shown as one token holds means over f = 2^k px blocks, its four children means over
    # f/2 blocks; the squared error this adds, summed over the region, is E_{f/2} - E_f.
    fine, sums = s2, g  # fine: E_{f/2} per region of the level below; sums: f/2-block sums
    for k in range(1, num_scales):
        rk, ck = shapes[k]
        if rk == 0 or ck == 0:
            maps.append(np.zeros((rk, ck)))
            continue
        sums = blocks if k == 1 and blocks is not None else _pool2(sums[: rk * 2 * p, : ck * 2 * p])
        sums = sums.astype(np.float64, copy=False)  # p rows of squared 2 x 2 sums can pass 2^24
        coarse = _cell_sums(sums, p, squared=True) / float(1 << (2 * k))
        fine = _cell_sums(fine[: rk * 2, : ck * 2], 2)
        maps.append(_rms(fine - coarse, fine, p))
        fine = coarse
    return maps


def detail_maps(
    image: Any,
    patch_size: int = 28,
    num_scales: int = 3,
    channels_first: bool = False,
    value_range: tuple[float, float] | None = None,
) -> ScoreMaps:
    """Error of each region's coarse representation, in 8-bit gray levels.

    A level-k region (k >= 2) is shown to the encoder as one token: its pixels area-averaged
    over f x f blocks, f = 2^(k-1). Its score is sqrt(dSS / p^2), where dSS is the summed squared
    error that this adds over the region compared with its four level-(k-1) children (block
    means at f/2 px minus block means at f px). dSS is additive, so splitting in descending
    score order removes the most error per token. Level 1 scores sqrt(SS / p^2), SS the squared
    deviation of the cell from its mean (the standard deviation for a whole cell). Gray: for
    8-bit pixels (uint8, or integers with ``value_range=(0, 255)``) 8-bit luma, BT.601 weights
    in 14-bit fixed point rounded to an integer (OpenCV's RGB2GRAY), so every sum is exact and
    most passes run in float32; for other images BT.601 luma, ``value_range`` mapped to
    [0, 255]. A squared error at or below 1e-9 of the region's energy
    (float rounding of a flat region) scores 0. Runs on horizontal bands of whole coarsest
    blocks (cache-sized temporaries), in threads on machines with 4 or more cores; with numba
    (the ``fast`` extra) an 8-bit image's luma sums take one compiled pass (the same numbers).

    Args:
        image: (..., H, W) or (..., H, W, C), C in {1, 3, 4}; numpy or torch.
        patch_size: base cell side p in pixels, >= 1.
        num_scales: number of levels, >= 1.
        channels_first: image is (..., C, H, W).
        value_range: (lo, hi) the pixel values span, as in :func:`entropy_maps`.

    Returns:
        ScoreMaps: level k is (..., rows_k, cols_k) float64 >= 0 gray levels, like the input.

    Example:
        >>> import numpy as np
        >>> image = np.zeros((112, 112), np.uint8)  # 4 x 4 cells of 28 px
        >>> image[:28, :28] = np.arange(28) * 9  # a ramp in the top-left cell, flat elsewhere
        >>> maps = detail_maps(image)
        >>> maps[0][0].round(1)  # the ramp's standard deviation, then flat cells
        array([72.7,  0. ,  0. ,  0. ])
        >>> print(maps[1][0, 0], maps[2][0, 0])  # error added by one token per 2 x 2, then 4 x 4 cells
        4.5 9.0
    """
    arr, p, k, rng = _check_common(image, patch_size, num_scales, channels_first, value_range)
    maps = _batched(arr, lambda x: _banded(x, lambda band: _detail_one(band, p, k, rng), p, k), k)
    return ScoreMaps(tuple(like_input(m, image) for m in maps), _image_hw(arr), p, "detail")


def score_maps(image: Any, score: str = "entropy", **kwargs: Any) -> ScoreMaps:
    """Score maps by name: ``"entropy"`` (:func:`entropy_maps`) or ``"detail"`` (:func:`detail_maps`)."""
    if score == "entropy":
        return entropy_maps(image, **kwargs)
    if score == "detail":
        return detail_maps(image, **kwargs)
    raise ValueError(f"score must be one of {SCORES}, got {score!r}")
