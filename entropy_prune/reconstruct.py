"""The image as the encoder sees it after a selection."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ._image import cells_to_pixels, check_image, check_int, check_real, is_torch, like_input
from ._resample import as_selected, bilinear
from .selection import Selection, _predict, _tolerance_units, _unit_grid

__all__ = ["reconstruct"]


def _bilinear_taps(p: int, f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lo, hi), each (p f,), and weight of hi for up-scaling p token pixels by f
    along one axis (pixel centres aligned, edges clamped)."""
    c = np.clip((np.arange(p * f) + 0.5) / f - 0.5, 0.0, p - 1.0)
    lo = np.floor(c).astype(np.int64)
    return lo, np.minimum(lo + 1, p - 1), c - lo


_CHUNK = 1 << 18  # values per chunk of coarse regions: float64 temporaries of ~2 MB each


def _coarse_regions(src: np.ndarray, out: np.ndarray, mask: np.ndarray, p: int, fh: int, fw: int,
                    integer: bool) -> None:
    """Write the regions of fh x fw cells kept in ``mask`` (bool (rows // fh, cols // fw), on the grid
    of such blocks) of ``src`` into ``out`` (both (H, W, C)), a chunk of one row of regions at a
    time, so the float64 temporaries stay O(_CHUNK) whatever the image size."""
    sh, sw, c = p * fh, p * fw, src.shape[-1]
    rk, ck = mask.shape
    per_chunk = max(1, _CHUNK // (sh * sw * c))
    lo, hi, t = _bilinear_taps(p, fh)
    row_t = t[:, None]
    # columns: gather (pixel, channel) pairs of the flattened last two axes
    col_lo, col_hi, t = _bilinear_taps(p, fw)
    col_lo, col_hi = ((i[:, None] * c + np.arange(c)).ravel() for i in (col_lo, col_hi))
    col_w0, col_w1 = np.repeat(1 - t, c), np.repeat(t, c)
    for i in range(rk):
        band = src[i * sh:(i + 1) * sh, : ck * sw].reshape(sh, ck, sw, c)
        dest = out[i * sh:(i + 1) * sh, : ck * sw].reshape(sh, ck, sw, c)
        kept = np.flatnonzero(mask[i])
        for j in range(0, kept.size, per_chunk):
            cols = kept[j:j + per_chunk]
            n = cols.size
            x = band[:, cols].astype(np.float64).reshape(p, fh, n * p, fw, c)
            pixel_rows = x[:, 0].copy()  # (p, n p, fw, c): sums over the fh rows of each block
            for a in range(1, fh):
                pixel_rows += x[:, a]
            tokens = pixel_rows[:, :, 0].copy()  # (p, n p, c): means of fh x fw blocks
            for b in range(1, fw):
                tokens += pixel_rows[:, :, b]
            tokens = tokens.reshape(p, -1)
            tokens /= fh * fw
            rows = (tokens[lo] * (1 - row_t) + tokens[hi] * row_t).reshape(sh * n, p * c)
            blurred = np.take(rows, col_lo, axis=1)  # (sh n, sw c)
            blurred *= col_w0
            upper = np.take(rows, col_hi, axis=1)
            upper *= col_w1
            blurred += upper
            if integer:
                np.rint(blurred, out=blurred)
            dest[:, cols] = blurred.reshape(sh, n, sw, c)


def _oblong_masks(selection: Selection, whole: tuple[int, int]) -> dict[tuple[int, int], np.ndarray]:
    """(h, w) -> bool (rows // h, cols // w) of the ``whole`` (rows, cols) cells (regions never hold
    a cell cut by the image's edge): where a kept region of h x w cells, h != w, is that block."""
    rows, cols = whole
    sizes, corners = selection.sizes, selection.regions[:, 1:]
    out = {}
    for h, w in np.unique(sizes[sizes[:, 0] != sizes[:, 1]], axis=0).tolist():
        r, c = corners[(sizes[:, 0] == h) & (sizes[:, 1] == w)].T
        out[h, w] = np.zeros((rows // h, cols // w), dtype=bool)
        out[h, w][r // h, c // w] = True
    return out


def _fill_predicted(out: np.ndarray, predicted: np.ndarray, p: int, tol: float) -> None:
    """Write each predicted cell of ``out`` ((H, W, C), everything else final) as its prediction
    from what ``out`` shows of its neighbours, in raster (dependency) order: the selection's rule."""
    grid = _unit_grid(out, p)

    def cell(i: int, j: int) -> np.ndarray:
        return grid[i, :, j]

    for r, c in zip(*np.nonzero(predicted), strict=True):
        grid[r, :, c] = _predict(cell, int(r), int(c), tol)


def _render(arr: np.ndarray, selection: Selection, p: int, fill: float, rng: tuple[float, float]) -> np.ndarray:
    """:func:`reconstruct` on a checked channels-last (H, W[, C]) image: (H, W, C) of its dtype."""
    h, w = arr.shape[:2]
    if selection.resized is not None:
        small = _render(as_selected(arr, selection.resized, rng), replace(selection, resized=None), p, fill, rng)
        back = bilinear(small, (h, w))  # as uniform down-scaling is brought back
        return np.clip(np.rint(back) if np.issubdtype(arr.dtype, np.integer) else back, *rng).astype(arr.dtype)
    grid = (-(-h // p), -(-w // p))
    if selection.label_map.shape != grid:
        raise ValueError(
            f"selection grid {selection.label_map.shape} does not match a {h}x{w} image with patch_size={p} "
            f"(expected {grid})"
        )
    src = arr.reshape(h, w, -1)
    out = src.copy(order="C")
    integer = np.issubdtype(arr.dtype, np.integer)
    for k, mask in enumerate(selection.masks[1:], 2):
        _coarse_regions(src, out, mask, p, 1 << (k - 1), 1 << (k - 1), integer)
    for (fh, fw), mask in _oblong_masks(selection, (h // p, w // p)).items():
        _coarse_regions(src, out, mask, p, fh, fw, integer)
    fill_value = rng[0] + fill * (rng[1] - rng[0])
    fill_value = np.rint(fill_value) if integer else fill_value
    dropped = (selection.label_map == 0) & ~selection.predicted
    for r in np.flatnonzero(dropped.any(1)):  # one row of cells at a time
        strip = out[r * p:(r + 1) * p]
        strip[cells_to_pixels(dropped[r:r + 1], p, strip.shape[:2])] = fill_value
    if selection.predicted.any():
        _fill_predicted(out, selection.predicted, p, _tolerance_units(selection.tolerance, rng))
    return out


def reconstruct(image: Any, selection: Selection, patch_size: int = 28, fill: float = 0.5,
                channels_first: bool = False, value_range: tuple[float, float] | None = None) -> Any:
    """Render what a selection keeps of an image, at full size.

    Level-1 cells are unchanged. A region of h x w cells (``selection.sizes``; a level-k
    square: h = w = 2^(k-1)) is one token of p x p px: its pixels area-averaged over h x w
    blocks (what the encoder is given).
    That p x p token image is brought back to the region's size by bilinear interpolation
    inside the region (pixel centres aligned, edges clamped to the region, so no region borrows
    from its neighbours). Dropped cells are filled with lo + ``fill`` x (hi - lo) of the
    image's range (mid-gray by default, the neutral value). Cells removed as predictable
    (``selection.predicted``) are shown as their prediction from what is shown of their
    neighbours, last: with every other cell kept at level 1, each value is within the
    selection's ``tolerance`` (exact at 0). A selection made with ``downscale``
    (``selection.resized``) is rendered on the image resized as it was selected, then brought
    back to the image's size bilinearly. Integer dtypes are rounded to the nearest integer.
    Works on chunks of a row of regions: extra memory is the output plus ~10 MB of float64
    temporaries whatever the image size.

    Args:
        image: (H, W) or (H, W, C) (or (C, H, W) with ``channels_first``), numpy or torch.
        selection: a :class:`Selection` of this image with this ``patch_size``.
        patch_size: base cell side p in pixels.
        fill: value of dropped pixels as a fraction of the range, in [0, 1].
        channels_first: image is (C, H, W).
        value_range: (lo, hi) the pixel values span, as in :func:`entropy_maps`.

    Returns:
        Same shape, dtype (bfloat16 included) and array type (torch: on the image's device)
        as ``image``; values stay in its range.

    Example:
        >>> import numpy as np
        >>> from entropy_prune import select_patches
        >>> image = np.tile(np.arange(0, 224, 2, dtype=np.uint8), (112, 1))  # a ramp, 4 x 4 cells of 28 px
        >>> sel = select_patches(image, "budget", alpha=0.1)  # all of it as one token
        >>> sel.regions.tolist()
        [[3, 0, 0]]
        >>> out = reconstruct(image, sel)
        >>> image[0, :6], out[0, :6]  # 4 x 4 px averages, brought back bilinearly
        (array([ 0,  2,  4,  6,  8, 10], dtype=uint8), array([ 3,  3,  4,  6,  8, 10], dtype=uint8))
        >>> dropped = reconstruct(image, select_patches(image, "budget", alpha=0.25, mode="drop"))
        >>> dropped[100, :3]  # dropped cells are mid-gray
        array([128, 128, 128], dtype=uint8)
        >>> lossless = select_patches(image, None, tolerance=0)  # each row of cells repeats its first cell
        >>> lossless.num_tokens, np.array_equal(reconstruct(image, lossless), image)
        (4, True)
    """
    arr, (lo, hi) = check_image(image, channels_first, value_range)
    p = check_int("patch_size", patch_size, 1)
    if not isinstance(selection, Selection):
        raise TypeError(f"selection must be a Selection, got {type(selection).__name__}")
    fill = check_real("fill", fill, low=0, high=1)
    if arr.ndim > 3:
        raise ValueError(f"reconstruct takes one image at a time, got shape {arr.shape}")
    out = _render(arr, selection, p, fill, (lo, hi))
    out = out if arr.ndim == 3 else out[..., 0]
    if channels_first:
        out = np.moveaxis(out, -1, 0)
    out = like_input(out, image)
    return out.to(image.dtype) if is_torch(image) else out
