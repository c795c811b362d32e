"""numba kernels of :mod:`entropy_prune._compiled` (imported only there, and only with numba).

Images are 2-D (H, W * C) C-contiguous arrays: the p x p cell at pixel row y0 and value column
x0 spans rows y0 .. y0 + p - 1 and columns x0 .. x0 + q - 1, q = p C. A prediction is a cell's
values (mode 0), its last pixel column repeated across (1) or its last pixel row repeated down
(2). Differences are taken in int32 for 8- and 16-bit integers (exact) and in float64 otherwise,
as the numpy path takes them; images are finite, so ``fastmath`` changes no result.
"""

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
def _within(x, xr, xc, y, yr, yc, p, q, mode, tol):
    """The cell of x at (xr, xc) within tol in every value of the mode-``mode`` prediction made from
    y's cell at (yr, yc); compared a pixel row at a time."""
    channels = q // p
    for i in range(p):
        a = x[xr + i, xc:xc + q]
        b = y[yr + p - 1 if mode == 2 else yr + i, yc:yc + q]
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
    vertical = _within(shown, y0 - p, x0 - q, shown, y0, x0 - q, p, q, 0, tol)  # C ~ A
    horizontal = _within(shown, y0 - p, x0 - q, shown, y0 - p, x0, p, q, 0, tol)  # C ~ B
    if vertical or horizontal:
        return (up if vertical and not horizontal else left) + (0,)
    if _within(shown, y0 - p, x0, shown, y0 - p, x0 - q, p, q, 1, tol):  # B ~ C's last column repeated
        return left + (1,)
    if _within(shown, y0, x0 - q, shown, y0 - p, x0 - q, p, q, 2, tol):  # A ~ C's last row repeated
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
            if _within(shown, y0, x0, shown, yr, yc, p, q, mode, tol):
                out[r, c] = True
                _show(shown, y0, x0, yr, yc, p, q, mode)
