"""Selection on what the model sees: scoring images, one selection per image or temporal patch,
and the pruned batch (rows, full grids, kept-regions table).

Video selection: one per temporal patch (a row holds ``temporal_patch_size`` consecutive frames);
a region's score is the larger of its scores on the frames of the pair. With
``temporal_threshold`` set, scores are also scaled by ``min(1, change / temporal_threshold)``,
``change`` = the region's mean absolute luma change (in [0, 1] units) from the previous temporal
patch, so regions that barely changed score low and cost fewer tokens. With ``shapes="halves"``
the per-shape squared errors take the place of scores (the larger over the frames) and are scaled
by the square of that factor, as a score is the root of such an error.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BatchFeature

from .. import _halves
from .._image import BT601
from ..scores import score_maps
from ..selection import _check_method, _check_tolerance, _halves_from_errors, _predictable, _select_maps, default_score
from ._compat import NORM_KEYS
from ._downscale import shrink_and_select
from ._units import cat, cut_regions


def scoring_image(frame: torch.Tensor, norm: dict) -> np.ndarray:
    """Normalised (C, H, W) pixels of one video frame -> (C, H, W) image for the core scores.

    Returns uint8 when rescaling was 8-bit (factor 1/255): the resized frame was uint8 and
    undoing normalisation in float32 lands within 1e-2 of integers (float32 round-off is ~1e-4
    here, far below 0.5), so rounding recovers it exactly. Otherwise a [0, 1] float image,
    clipped because bicubic resizing of float inputs can overshoot (scores then see saturated
    values).
    """
    scale = float(norm["rescale_factor"]) if norm["do_rescale"] else 1.0
    shape = (-1,) + (1,) * (frame.ndim - 1)
    if norm["do_normalize"]:
        mean = torch.as_tensor(norm["image_mean"], dtype=torch.float32).reshape(shape)
        std = torch.as_tensor(norm["image_std"], dtype=torch.float32).reshape(shape)
        x = torch.addcmul(mean / scale, frame.to("cpu", torch.float32), std / scale)
    else:
        x = frame.to("cpu", torch.float32) / scale
    if norm["do_rescale"] and abs(scale * 255.0 - 1.0) < 1e-9:
        r = x.round()
        if float((x - r).abs_().max()) < 1e-2 and float(r.min()) >= 0 and float(r.max()) <= 255:
            return r.to(torch.uint8).numpy()
    return raw_image(x, norm)


def raw_image(raw: torch.Tensor, norm: dict) -> np.ndarray:
    """Resized (C, H, W) image before rescaling -> image for the core scores: uint8 as it is,
    other dtypes rescaled to [0, 1] and clipped (bicubic resizing can overshoot). ValueError for
    NaN or inf."""
    if raw.dtype == torch.uint8:
        return raw.cpu().numpy()
    x = raw.to("cpu", torch.float32) * (float(norm["rescale_factor"]) if norm["do_rescale"] else 1.0)
    if not bool(torch.isfinite(x).all()):  # checked before clipping, which would turn inf into 1
        raise ValueError("images and videos must hold finite pixel values; got NaN or inf")
    return x.clamp_(0.0, 1.0).numpy()


def _luma01(image: np.ndarray) -> np.ndarray:
    """(H, W) BT.601 luma in [0, 1] of a (3, H, W) scoring image (uint8 or [0, 1] float)."""
    y = np.tensordot(np.array(BT601), image.astype(np.float64), axes=1)
    return y / 255.0 if image.dtype == np.uint8 else y


def removed_units(image: np.ndarray, tolerance: float, unit_px: int) -> np.ndarray:
    """bool (rows, cols), cells cut by the edge included: the units of a (C, H, W) scoring image
    (uint8, or float in [0, 1]; several frames: their channels stacked) that their neighbours
    predict within ``tolerance`` (8-bit levels). Compared in contiguous channels-last memory,
    several times faster than strided (a no-op copy for channels-last images)."""
    pixels = np.ascontiguousarray(np.moveaxis(image, 0, -1))
    scale = 255.0 if pixels.dtype == np.uint8 else 1.0
    shape = (-(-image.shape[-2] // unit_px), -(-image.shape[-1] // unit_px))
    return _predictable(pixels, unit_px, tolerance * scale / 255.0, shape)


def select_group(images: list[np.ndarray], previous: list[np.ndarray] | None, settings: dict, unit_px: int,
                 removed: np.ndarray | None = None):
    """Core selection for one temporal patch.

    Args:
        images: (C, H, W) scoring images of this temporal patch's distinct frames (uint8, or
            float in [0, 1]); ``tolerance`` compares units on all of them.
        previous: the previous temporal patch's scoring images, or None.
        removed: the units ``tolerance`` removes, where already known (bool (rows, cols)).
    Returns:
        the :class:`entropy_prune.Selection` on the unit grid.
    """
    method, alpha = _check_method(settings["patch_selection_method"], settings["alpha"], settings["mode"])
    tolerance = _check_tolerance(settings["tolerance"])

    def predictable() -> np.ndarray:
        """Units the tolerance removes (or drop mode drops first among ties), on every frame's values."""
        if removed is not None:
            return removed
        return removed_units(images[0] if len(images) == 1 else np.concatenate(images), tolerance or 0.0, unit_px)

    halves = settings["shapes"] == "halves"
    maps = _halves_maps(images, unit_px, settings["num_scales"]) if halves else _score_maps(images, settings, unit_px)
    tau = settings["temporal_threshold"]
    if tau is not None and previous is not None:
        now = np.mean([_luma01(x) for x in images], axis=0)
        before = np.mean([_luma01(x) for x in previous], axis=0)
        diff = torch.from_numpy(np.abs(now - before).astype(np.float64))[None, None]
        for k, (block, m) in enumerate(maps):
            if not m.size:  # a frame smaller than this region's block has no such region
                continue
            change = F.avg_pool2d(diff, (unit_px * block[0], unit_px * block[1]))[0, 0].numpy()
            change = change[: m.shape[0], : m.shape[1]]
            factor = np.minimum(1.0, change / tau)
            maps[k] = (block, m * (factor * factor if halves else factor))  # halves: squared errors
    if halves:
        return _halves_from_errors(dict(maps), images[0].shape[-2:], unit_px, settings["num_scales"], alpha,
                                   tolerance, predictable)
    levels = [m for _, m in maps]
    return _select_maps(levels, method, alpha, settings["thresholds"], settings["mode"], tolerance, predictable)


def _score_maps(images: list[np.ndarray], settings: dict, unit_px: int) -> list[tuple[tuple[int, int], np.ndarray]]:
    """((b, b) units, float64 map) per level of the score, the largest over the frames."""
    score = default_score(settings["patch_selection_method"]) if settings["score"] is None else settings["score"]
    kw = dict(patch_size=unit_px, num_scales=settings["num_scales"], channels_first=True)
    levels = [np.asarray(x, dtype=np.float64) for x in score_maps(images[0], score, **kw).levels]
    for image in images[1:]:
        levels = [np.maximum(a, b) for a, b in zip(levels, score_maps(image, score, **kw).levels, strict=True)]
    return [((1 << k, 1 << k), m) for k, m in enumerate(levels)]


def _halves_maps(images: list[np.ndarray], unit_px: int, num_scales: int) -> list[tuple[tuple[int, int], np.ndarray]]:
    """((h, w) units, float64 map) per region shape of ``shapes="halves"``: each region's squared
    error as one token (:func:`entropy_prune._halves.region_errors`), the largest over the frames."""
    out = None
    for image in images:
        rng = (0.0, 255.0) if image.dtype == np.uint8 else (0.0, 1.0)
        errors = _halves.image_errors(np.moveaxis(image, 0, -1), unit_px, num_scales, rng)
        out = errors if out is None else {s: np.maximum(out[s], e) for s, e in errors.items()}
    return list(out.items())


def prune_image(raw: torch.Tensor, settings: dict, norm: dict, normalize, p: int, m: int, tp: int,
                min_pixels: int | None = None):
    """Prune one image: score and cut its resized pixels, then rescale/normalise only the cut units.

    Args:
        raw: (C, H, W) resized image before rescaling and normalisation.
        normalize: (units, raw dtype) -> the units as the stock pipeline turns pixels of that
            dtype into rows (see :func:`cut_regions`).
        min_pixels: the processor's lower bound on H * W; with ``downscale`` the image is first
            shrunk (:func:`shrink_and_select`), never below it.
    Returns:
        rows ((num_kept * m*m, C*tp*p*p), the stock dtype), regions int64 (num_kept, 6):
        (level, t, row, col, h, w), and the (h, w) in patches of the image they were cut from.
    """
    def select(x: torch.Tensor, a: float, gone: np.ndarray | None = None):
        return select_group([raw_image(x, norm)], None, {**settings, "alpha": a}, m * p, gone)

    if settings["downscale"]:
        tolerance = settings["tolerance"]

        def removed_of(x: torch.Tensor) -> np.ndarray | None:
            return None if tolerance is None else removed_units(raw_image(x, norm), tolerance, m * p)

        raw, sel = shrink_and_select(raw, settings["downscale"], removed_of, select, lambda x: raw_image(x, norm),
                                     float(settings["alpha"]), m * p, min_pixels)
    else:
        sel = select(raw, settings["alpha"])
    regions = np.asarray(sel.regions, dtype=np.int64)
    rows = cut_regions(raw[None], regions, m, p, tp, lambda units: normalize(units, raw.dtype), sel.sizes)
    grid = (raw.shape[-2] // p, raw.shape[-1] // p)
    return rows, np.column_stack([regions[:, 0], np.zeros(len(regions), np.int64), regions[:, 1:], sel.sizes]), grid


def prune_rows(rows: torch.Tensor, grid: tuple[int, int, int], settings: dict, norm: dict, p: int, m: int, tp: int):
    """Prune one video's stock patch rows ((t*h*w, C*tp*p*p), order [t][unit_row][unit_col][mh][mw]).

    One selection per temporal patch, on its frames recovered from the rows (level-1 units are
    copies of their stock rows). Returns kept rows and regions int64 (num_kept, 6): (level, t, row,
    col, h, w).
    """
    t, h, w = grid
    ch = rows.shape[1] // (tp * p * p)
    units = rows.reshape(t, h // m, w // m, m, m, ch, tp, p, p)
    kept_rows, kept_regions, previous = [], [], None
    integer = lambda x: x.round().to(rows.dtype)  # noqa: E731  (rows of integer frames: rounded means)
    for ti in range(t):
        frames = units[ti].permute(5, 4, 0, 2, 6, 1, 3, 7).reshape(tp, ch, h * p, w * p)
        distinct = any(not torch.equal(frames[i], frames[0]) for i in range(1, tp))
        frames = frames if distinct else frames[:1]
        images = [scoring_image(x, norm) for x in frames]
        sel = select_group(images, previous, settings, m * p)
        regions = np.asarray(sel.regions, dtype=np.int64)
        previous = images
        kept_rows.append(cut_regions(frames, regions, m, p, tp, None if rows.is_floating_point() else integer,
                                     sel.sizes))
        kept_regions.append(np.column_stack([regions[:, 0], np.full(len(regions), ti), regions[:, 1:], sel.sizes]))
    return cat(kept_rows), np.concatenate(kept_regions).astype(np.int64)


def prune_batch(
    output: BatchFeature,
    keys: tuple[str, str, str],
    settings: dict,
    kwargs: dict,
    raws: list[torch.Tensor] | None = None,
    normalize=None,
) -> BatchFeature:
    """Stock (image or video) processor output -> pruned pixel rows, full grid, kept-regions tensor.

    ``keys`` = (pixel key, grid key, regions key); ``kwargs`` are the ``_preprocess`` arguments.
    Videos: the stock rows are pruned. Images: ``raws`` are the resized (C, H, W) images handed
    to ``patchify`` before rescaling and normalisation, in any order (matched to items by size,
    in order within a size: both backends keep that order); the stock output holds no rows for
    them, and ``normalize`` rescales and normalises the units cut from them.
    """
    pixel_key, grid_key, regions_key = keys
    pixel_values, grids = output[pixel_key], output[grid_key]
    norm = {k: kwargs[k] for k in NORM_KEYS}
    geometry = (kwargs["patch_size"], kwargs["merge_size"], kwargs["temporal_patch_size"])
    as_numpy = isinstance(pixel_values, np.ndarray)
    pv = torch.as_tensor(pixel_values)
    grid_list = [tuple(int(v) for v in g) for g in torch.as_tensor(grids).tolist()]
    by_size: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for raw in raws or []:
        by_size.setdefault(tuple(raw.shape[-2:]), []).append(raw)
    min_pixels = None
    if settings["downscale"]:
        if not kwargs.get("do_resize"):
            raise ValueError(f"downscale={settings['downscale']!r} resizes the images further and needs do_resize=True")
        min_pixels = kwargs["size"]["shortest_edge"]
    start, rows_out, regions_out = 0, [], []
    for i, grid in enumerate(grid_list):
        if raws is None:
            n = grid[0] * grid[1] * grid[2]
            rows, regions = prune_rows(pv[start : start + n], grid, settings, norm, *geometry)
            start += n
        else:
            queue = by_size.get((grid[1] * geometry[0], grid[2] * geometry[0]))
            if not queue:
                raise RuntimeError(f"no image of {grid[1:]} patches went through patchify for item {i}")
            rows, regions, (h, w) = prune_image(queue.pop(0), settings, norm, normalize, *geometry, min_pixels)
            grid_list[i] = (1, h, w)
        rows_out.append(rows)
        regions_out.append(np.column_stack([np.full(len(regions), i, dtype=np.int64), regions]))
    pruned = cat(rows_out) if rows_out else pv[:0]
    regions = np.concatenate(regions_out) if regions_out else np.zeros((0, 7), np.int64)
    data = dict(output.data)
    data[pixel_key] = pruned.numpy() if as_numpy else pruned
    data[regions_key] = regions if as_numpy else torch.from_numpy(regions)
    if settings["downscale"]:  # the grids the rows were cut from, in the stock output's type
        new = np.array(grid_list, dtype=np.int64).reshape(-1, 3)
        data[grid_key] = (torch.from_numpy(new).to(grids.device) if isinstance(grids, torch.Tensor)
                          else new.astype(grids.dtype) if isinstance(grids, np.ndarray) else new.tolist())
    return BatchFeature(data=data, tensor_type=kwargs.get("return_tensors"))
