"""numba kernels of :mod:`entropy_prune._compiled` (imported only there, and only with numba).

:func:`walk` (predictable cells): images are 2-D (H, W * C) C-contiguous arrays; the p x p cell at
pixel row y0 and value column x0 spans rows y0 .. y0 + p - 1 and columns x0 .. x0 + q - 1,
q = p C. A prediction is a cell's values (mode 0), its last pixel column repeated across (1) or
its last pixel row repeated down (2). Differences are taken in int32 for 8- and 16-bit integers
(exact) and in float64 otherwise, as the numpy path takes them; images are finite, so
``fastmath`` changes no result.

:func:`gray_sums`, :func:`gray_sums_planar` (the detail score): exact integer sums of 8-bit luma.

:func:`region_sums`, :func:`region_sums_planar` (``shapes="halves"``): exact sums of squared luma
block sums per region shape; :func:`split_walk`: the greedy split order's heap.

:func:`cut_units` (the Qwen adapter's cut): kept regions of 8-bit frames as area-averaged units.
"""

import heapq

import numpy as np
from numba import njit, types
from numba.extending import overload


def _wide(v):
    """A pixel value in the type its differences are taken in (compiled only)."""
    raise NotImplementedError


@overload(_wide)
def _wide_impl(v):
    if isinstance(v, types.Integer) and v.bitwidth <= 16:
        return lambda v: np.int32(v)
    return lambda v: np.float64(v)


@njit(nogil=True, cache=True, fastmath=True)
def _within(shown, xr, xc, yr, yc, p, q, mode, tol):
    """The cell of ``shown`` at (xr, xc) within tol in every value of the mode-``mode`` prediction
    made from its cell at (yr, yc); compared a pixel row at a time."""
    channels = q // p
    for i in range(p):
        a = shown[xr + i, xc:xc + q]
        b = shown[yr + p - 1 if mode == 2 else yr + i, yc:yc + q]
        m = _wide(a[0]) - _wide(a[0])  # 0 in the wide type
        if mode == 1:
            for j in range(q):
                m = max(m, abs(_wide(a[j]) - _wide(b[q - channels + j % channels])))
        else:
            for j in range(q):
                m = max(m, abs(_wide(a[j]) - _wide(b[j])))
        if m > tol:
            return False
    return True


@njit(nogil=True, cache=True)
def _rule(shown, y0, x0, p, q, tol):
    """(row, column, mode) of the prediction of the cell at (y0, x0) from what is ``shown``: its left
    cell A (mode 0) in the first row, its upper cell B in the first column, else
    ``selection._predict``'s rule on A, B and the upper-left cell C."""
    left, up = (y0, x0 - q), (y0 - p, x0)
    if y0 == 0 or x0 == 0:
        return (left if y0 == 0 else up) + (0,)
    vertical = _within(shown, y0 - p, x0 - q, y0, x0 - q, p, q, 0, tol)  # C ~ A
    horizontal = _within(shown, y0 - p, x0 - q, y0 - p, x0, p, q, 0, tol)  # C ~ B
    if vertical or horizontal:
        return (up if vertical and not horizontal else left) + (0,)
    if _within(shown, y0 - p, x0, y0 - p, x0 - q, p, q, 1, tol):  # B ~ C's last column repeated
        return left + (1,)
    if _within(shown, y0, x0 - q, y0 - p, x0 - q, p, q, 2, tol):  # A ~ C's last row repeated
        return up + (2,)
    return left + (0,)


@njit(nogil=True, cache=True)
def _show(shown, y0, x0, yr, yc, p, q, mode):
    """Write the mode-``mode`` prediction made from the cell at (yr, yc) over the cell at (y0, x0)."""
    channels = q // p
    for i in range(p):
        src = yr + p - 1 if mode == 2 else yr + i
        for j in range(q):
            shown[y0 + i, x0 + j] = shown[src, yc + (q - channels + j % channels if mode == 1 else j)]


@njit(nogil=True, cache=True)
def walk(shown, p, channels, tol, out):
    """Mark in bool ``out`` (rows, cols) the cells that their prediction from what is ``shown`` gives
    within ``tol``, in raster order, and show them so: ``shown`` starts as a copy of the image and
    is updated in place (a cell still holds the image's values when it is decided). Cell (0, 0) is
    kept."""
    rows, cols = out.shape
    q = p * channels
    for r in range(rows):
        for c in range(1 if r == 0 else 0, cols):
            y0, x0 = r * p, c * q
            yr, yc, mode = _rule(shown, y0, x0, p, q, tol)
            if _within(shown, y0, x0, yr, yc, p, q, mode, tol):
                out[r, c] = True
                _show(shown, y0, x0, yr, yc, p, q, mode)


_R, _G, _B, _HALF = np.int32(4899), np.int32(9617), np.int32(1868), np.int32(8192)  # 14-bit BT.601, 0.5


@njit(nogil=True, cache=True)
def _luma(r, g, b):
    """8-bit luma of one pixel: BT.601 in 14-bit fixed point, rounded half up (exact, int32)."""
    return (_R * np.int32(r) + _G * np.int32(g) + _B * np.int32(b) + _HALF) >> 14


@njit(nogil=True, cache=True, inline="always")  # per pixel row: inlined, as fast as the loop written in place
def _luma_row(row, channels, g):
    """g[x] = 8-bit luma of pixel x of a row of ``channels``-interleaved values (1: the value; 3 or 4:
    RGB(A)), for x < len(g)."""
    if channels == 3:  # literal strides: vectorised
        for x in range(g.shape[0]):
            g[x] = _luma(row[3 * x], row[3 * x + 1], row[3 * x + 2])
    elif channels == 4:
        for x in range(g.shape[0]):
            g[x] = _luma(row[4 * x], row[4 * x + 1], row[4 * x + 2])
    else:
        for x in range(g.shape[0]):
            g[x] = row[x]


@njit(nogil=True, cache=True, inline="always")
def _luma_planes(red, green, blue, g):
    """g[x] = 8-bit luma of pixel x of a row given as three planes' rows, for x < len(g)."""
    for x in range(g.shape[0]):
        g[x] = _luma(red[x], green[x], blue[x])


@njit(nogil=True, cache=True)
def _sums(h, w, p, block_rows, block_cols):
    """Zeroed int64 s1, s2 (one per p x p cell, edge cells partial) and 2 x 2 px block sums, and
    int32 (W,) running column sums of g and g^2 over a row of cells (p * 255^2 < 2^31 for p < 33025)
    and the last even row's g."""
    cells = ((h + p - 1) // p, (w + p - 1) // p)
    return (np.zeros(cells, np.int64), np.zeros(cells, np.int64), np.zeros((block_rows, block_cols), np.int64),
            np.zeros(w, np.int32), np.zeros(w, np.int32), np.zeros(w, np.int32))


@njit(nogil=True, cache=True)
def _add_row(g, y, h, p, s1, s2, blocks, col1, col2, even):
    """Add pixel row y's luma g (int32 (W,)) to the column sums (into s1, s2 at a row of cells' last
    pixel row) and, at odd y, the 2 x 2 px block sums with the even row before it."""
    w = g.shape[0]
    for x in range(w):
        col1[x] += g[x]
        col2[x] += g[x] * g[x]
    if y % p == p - 1 or y == h - 1:
        r = y // p
        for c in range(s1.shape[1]):
            a1, a2 = 0, 0
            for x in range(c * p, min(c * p + p, w)):
                a1 += col1[x]
                a2 += col2[x]
            s1[r, c], s2[r, c] = a1, a2
        col1[:] = 0
        col2[:] = 0
    if y // 2 < blocks.shape[0]:
        if y % 2 == 0:
            even[:] = g
        else:
            for j in range(blocks.shape[1]):
                blocks[y // 2, j] = even[2 * j] + even[2 * j + 1] + g[2 * j] + g[2 * j + 1]


@njit(nogil=True, cache=True)
def gray_sums(rows, channels, p, block_rows, block_cols):
    """Exact sums of the 8-bit luma g of a uint8 image given as C-contiguous (H, W * channels)
    pixel rows, channels 1 (g is the value), 3 or 4 (RGB(A)): per p x p cell, edge cells partial,
    the sums of g and of g^2 (int64 (ceil(H/p), ceil(W/p)) each), and int64 (block_rows,
    block_cols) sums of g over 2 x 2 px blocks from the top left. One pass, a pixel row at a time."""
    h, w = rows.shape[0], rows.shape[1] // channels
    s1, s2, blocks, col1, col2, even = _sums(h, w, p, block_rows, block_cols)
    g = np.empty(w, np.int32)
    for y in range(h):
        _luma_row(rows[y], channels, g)
        _add_row(g, y, h, p, s1, s2, blocks, col1, col2, even)
    return s1, s2, blocks


@njit(nogil=True, cache=True)
def gray_sums_planar(red, green, blue, p, block_rows, block_cols):
    """:func:`gray_sums` of an RGB image given as three C-contiguous (H, W) planes."""
    h, w = red.shape
    s1, s2, blocks, col1, col2, even = _sums(h, w, p, block_rows, block_cols)
    g = np.empty(w, np.int32)
    for y in range(h):
        _luma_planes(red[y], green[y], blue[y], g)
        _add_row(g, y, h, p, s1, s2, blocks, col1, col2, even)
    return s1, s2, blocks


@njit(nogil=True, cache=True)
def _add_squares(col, k, v, n):
    """col[k, :n] += v[:n]^2 (int64)."""
    for x in range(n):
        col[k, x] += np.int64(v[x]) * v[x]


@njit(nogil=True, cache=True)
def _add_pair_squares(col, k, v, n):
    """col[k, :n] += (v[2j] + v[2j + 1])^2 for j < n (int64)."""
    for j in range(n):
        s = np.int64(v[2 * j] + v[2 * j + 1])
        col[k, j] += s * s


@njit(nogil=True, cache=True)
def _flush(col, k, out, r, n, q):
    """out[r, c] = sum of col[k, c q:(c + 1) q] for c < n; col[k] zeroed."""
    for c in range(n):
        a = np.int64(0)
        for x in range(c * q, c * q + q):
            a += col[k, x]
        out[r, c] = a
    col[k, :] = 0


@njit(nogil=True, cache=True)
def _region_row(y, p, four, energy, acc, col, g, hp, hp2):
    """Add pixel row y's luma g[y % 2] (int32 (cols * p,)) to int64 running column sums ``col`` of
    the squares of g and of the h x w px block sums whose last pixel row y is (regions of 1x2, 2x1,
    2x2 cells, with ``four`` also 2x4, 4x2, 4x4), and flush them into the per-cell sums of g^2
    (``energy``) and each region's ``acc[k]`` at its last pixel row. ``hp[y % 2]``: this row's
    horizontal pair sums; ``hp2[y // 2 % 2]``: those over the current 2 rows."""
    rows, cols = energy.shape
    gy, hy = g[y % 2], hp[y % 2]
    _add_squares(col, 0, gy, cols * p)
    for j in range(cols // 2 * p):
        hy[j] = gy[2 * j] + gy[2 * j + 1]
    _add_squares(col, 1, hy, cols // 2 * p)  # 1 x 2 cells: 1 x 2 px blocks
    if y % p == p - 1:
        _flush(col, 0, energy, y // p, cols, p)
        _flush(col, 1, acc[0], y // p, cols // 2, p)
    if y < rows // 2 * 2 * p and y % 2 == 1:
        _two_rows(y, p, four, cols, acc, col, g, hp, hp2[y // 2 % 2])
        if four and y < rows // 4 * 4 * p and y % 4 == 3:
            _four_rows(y, p, cols, acc, col, hp2)


@njit(nogil=True, cache=True)
def _two_rows(y, p, four, cols, acc, col, g, hp, h2):
    """:func:`_region_row` at the second row y of a pair: 2 x 1 px sums (into g[0]) and 2 x 2 px
    sums (into ``h2``), for regions of 2 x 1, 2 x 2 and 2 x 4 cells."""
    v = g[0]  # the even row's luma is no longer needed
    for x in range(cols * p):
        v[x] += g[1, x]
    for j in range(cols // 2 * p):
        h2[j] = hp[0, j] + hp[1, j]
    _add_squares(col, 2, v, cols * p)  # 2 x 1 cells
    _add_squares(col, 3, h2, cols // 2 * p)  # 2 x 2
    if four:
        _add_pair_squares(col, 4, h2, cols // 4 * p)  # 2 x 4
    if y // 2 % p == p - 1:
        i = y // 2 // p
        _flush(col, 2, acc[1], i, cols, p)
        _flush(col, 3, acc[2], i, cols // 2, p)
        if four:
            _flush(col, 4, acc[3], i, cols // 4, p)


@njit(nogil=True, cache=True)
def _four_rows(y, p, cols, acc, col, hp2):
    """:func:`_region_row` at the last row y of four: 4 x 2 px sums (into hp2[0]) for regions of
    4 x 2 and 4 x 4 cells."""
    h4 = hp2[0]
    for j in range(cols // 2 * p):
        h4[j] += hp2[1, j]
    _add_squares(col, 5, h4, cols // 2 * p)  # 4 x 2
    _add_pair_squares(col, 6, h4, cols // 4 * p)  # 4 x 4
    if y // 4 % p == p - 1:
        i = y // 4 // p
        _flush(col, 5, acc[4], i, cols // 2, p)
        _flush(col, 6, acc[5], i, cols // 4, p)


@njit(nogil=True, cache=True)
def _region_arrays(rows, cols, p):
    """Zeroed int64 energy (rows, cols), acc (6, rows, cols) and column sums (7, cols * p), and int32
    (2, cols * p) rows of luma, of pair sums and of pair sums over 2 rows."""
    w = cols * p
    return (np.zeros((rows, cols), np.int64), np.zeros((6, rows, cols), np.int64), np.zeros((7, w), np.int64),
            np.empty((2, w), np.int32), np.empty((2, w), np.int32), np.empty((2, w), np.int32))


@njit(nogil=True, cache=True)
def region_sums(pixels, channels, p, rows, cols, four):
    """Exact sums of the 8-bit luma g (see :func:`gray_sums`) over the whole rows x cols p x p cells
    of a uint8 image given as C-contiguous (H, W * channels) pixel rows: int64 (rows, cols) per cell
    the sum of g^2, and int64 (6, rows, cols) per region of shape k (1x2, 2x1, 2x2, 2x4, 4x2, 4x4
    cells; the last three only with ``four``) the sum of its squared h x w px block sums of g, in
    acc[k, :rows // h, :cols // w]. One pass, a pixel row at a time."""
    energy, acc, col, g, hp, hp2 = _region_arrays(rows, cols, p)
    for y in range(rows * p):
        _luma_row(pixels[y], channels, g[y % 2])
        _region_row(y, p, four, energy, acc, col, g, hp, hp2)
    return energy, acc


@njit(nogil=True, cache=True)
def region_sums_planar(red, green, blue, p, rows, cols, four):
    """:func:`region_sums` of an RGB image given as three C-contiguous (H, W) planes."""
    energy, acc, col, g, hp, hp2 = _region_arrays(rows, cols, p)
    for y in range(rows * p):
        _luma_planes(red[y], green[y], blue[y], g[y % 2])
        _region_row(y, p, four, energy, acc, col, g, hp, hp2)
    return energy, acc


@njit(nogil=True, cache=True)
def _push(heap, key, hs, ws, k, r, c):
    """Push the region of shape k at cell (r, c) where splitting it is possible (key > -inf)."""
    i, j = r // hs[k], c // ws[k]
    if key[k, i, j] > -np.inf:
        heapq.heappush(heap, (-key[k, i, j], -hs[k] * ws[k], r, c, k))


@njit(nogil=True, cache=True)
def split_walk(key, side, add, hs, ws, kid, leaf, budget, spent):
    """``_halves.split_leaves``'s greedy walk on regions of shapes k (hs[k] x ws[k] cells) indexed
    [k, row // hs[k], col // ws[k]]: split the leaf with the largest key (ties: larger area, then
    row, then column) into its two kid[k, side] halves while ``spent`` + its add fits ``budget``.
    ``leaf`` (bool) holds the starting leaves and is updated in place."""
    heap = [(0.0, np.int64(0), np.int64(0), np.int64(0), np.int64(0))]
    heap.pop()  # typed empty
    for k in range(leaf.shape[0]):
        for i in range(leaf.shape[1]):
            for j in range(leaf.shape[2]):
                if leaf[k, i, j]:
                    _push(heap, key, hs, ws, k, np.int64(i * hs[k]), np.int64(j * ws[k]))
    while len(heap) > 0:
        _, _, r, c, k = heap[0]
        i, j = r // hs[k], c // ws[k]
        if spent + add[k, i, j] > budget:
            break
        heapq.heappop(heap)
        spent += add[k, i, j]
        leaf[k, i, j] = False
        h = kid[k, side[k, i, j]]
        r2, c2 = (r + hs[h], c) if side[k, i, j] == 0 else (r, c + ws[h])
        for rr, cc in ((r, c), (r2, c2)):
            leaf[h, rr // hs[h], cc // ws[h]] = True
            _push(heap, key, hs, ws, h, rr, cc)


@njit(nogil=True, cache=True, inline="always")  # per pixel row: inlined, twice as fast as a call
def _sum_rows(frames, f, plane, y, bh, x0, n, acc):
    """acc[:n] = the sums of frames[f, plane, y:y + bh, x0:x0 + n] over the bh rows (int32)."""
    src = frames[f, plane, y, x0:x0 + n]
    for x in range(n):
        acc[x] = src[x]
    for dy in range(1, bh):
        src = frames[f, plane, y + dy, x0:x0 + n]
        for x in range(n):
            acc[x] += src[x]


@njit(nogil=True, cache=True, inline="always")  # per pixel row: inlined, twice as fast as a call
def _reduce_row(acc, bw, stride, offset, scale, dst):
    """dst[x] = scale * the sum of acc[(x bw + dx) stride + offset] over dx < bw (float32); literal
    strides for planes (1) and RGB pixel rows (3), so that the loops vectorise."""
    if stride == 1:
        _reduce_contiguous(acc, bw, scale, dst)
    elif stride == 3:
        _reduce_rgb(acc, bw, offset, scale, dst)
    else:
        _reduce_strided(acc, bw, stride, offset, scale, dst)


@njit(nogil=True, cache=True, inline="always")
def _reduce_contiguous(acc, bw, scale, dst):
    """:func:`_reduce_row` with stride 1."""
    if bw == 1:
        for x in range(dst.shape[0]):
            dst[x] = np.float32(acc[x]) * scale
    elif bw == 2:
        for x in range(dst.shape[0]):
            dst[x] = np.float32(acc[2 * x] + acc[2 * x + 1]) * scale
    else:
        _reduce_strided(acc, bw, 1, 0, scale, dst)


@njit(nogil=True, cache=True, inline="always")
def _reduce_rgb(acc, bw, offset, scale, dst):
    """:func:`_reduce_row` with stride 3."""
    if bw == 1:
        for x in range(dst.shape[0]):
            dst[x] = np.float32(acc[3 * x + offset]) * scale
    elif bw == 2:
        for x in range(dst.shape[0]):
            dst[x] = np.float32(acc[6 * x + offset] + acc[6 * x + 3 + offset]) * scale
    else:
        _reduce_strided(acc, bw, 3, offset, scale, dst)


@njit(nogil=True, cache=True, inline="always")
def _reduce_strided(acc, bw, stride, offset, scale, dst):
    """:func:`_reduce_row` for any stride and bw."""
    for x in range(dst.shape[0]):
        a = np.int32(0)
        for dx in range(bw):
            a += acc[(x * bw + dx) * stride + offset]
        dst[x] = np.float32(a) * scale


@njit(nogil=True, cache=True)
def cut_units(frames, channels, r, c, h, w, s, out):
    """Each region k (top-left unit (r[k], c[k]), h[k] x w[k] units of s px) of uint8 frames as one
    s x s unit: its h x w px block means, into float32 out (K, F, C, s, s). ``frames``: C-contiguous
    (F, C, H, W) planes (``channels`` 1) or (F, 1, H, W * C) pixel rows of channels-last memory
    (``channels`` C). Exact: int32 sums times 1 / (h w), a power of two."""
    planes = frames.shape[1]
    acc = np.empty(s * channels * (w.max() if w.size else 1), np.int32)
    for k in range(r.shape[0]):
        bh, bw, y0, x0 = h[k], w[k], r[k] * s, c[k] * s * channels
        scale = np.float32(1.0 / (bh * bw))
        for f in range(frames.shape[0]):
            for plane in range(planes):
                for y in range(s):
                    _sum_rows(frames, f, plane, y0 + y * bh, bh, x0, s * bw * channels, acc)
                    for ch in range(channels):
                        _reduce_row(acc, bw, channels, ch, scale, out[k, f, plane + ch, y])
