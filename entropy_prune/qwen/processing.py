"""Processor side: prune Qwen-VL `pixel_values` by whole merge units and emit matching placeholders.

One LLM token = one merge unit = ``merge_size x merge_size`` patches (2 x 2 x 14 px = 28 px for
Qwen2-VL). The core selection runs with ``patch_size = patch_size * merge_size`` so its base cell
is exactly one unit, on the resized image the model sees.

A kept level-k region (``b = 2^(k-1)`` units on a side) becomes ONE unit: its pixels (every
distinct temporal frame, all channels) box-averaged by ``b`` down to one unit (level 1: the unit
itself) and cut into its ``merge_size^2`` patch rows in the processor's layout.

Images: while pruning, the stock ``_preprocess`` resizes as usual, but its rescale and
normalisation pass the pixels through and ``patchify`` keeps the resized image instead of
cutting rows. That image is scored, the kept regions are cut from it, and only their units are
rescaled and normalised, by the stock methods. Those are elementwise and affine per channel, so
level-1 rows are bit-identical to the stock ones and averaging pixels before normalising equals
averaging normalised values. Most of the image is never normalised or cut, which is why the
wrapped processor can be faster than the stock one; with the torchvision backend it also resizes
8-bit RGB images from their channels-last memory (same pixels, about 2x faster).
Videos: the stock rows are cut as usual; each temporal patch's frames are recovered from them,
the scoring image by undoing normalisation.

Video selection: one per temporal patch (a row holds ``temporal_patch_size`` consecutive frames);
a region's score is the larger of its scores on the frames of the pair. With
``temporal_threshold`` set, scores are also scaled by ``min(1, change / temporal_threshold)``,
``change`` = the region's mean absolute luma change (in [0, 1] units) from the previous temporal
patch, so regions that barely changed score low and cost fewer tokens.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import threading
from typing import Any, TypedDict

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import ChannelDimension, infer_channel_dimension_format
from transformers.processing_utils import ProcessorMixin

from .._image import BT601
from ..scores import score_maps
from ..selection import check_settings as check_selection
from ..selection import default_score, select_patches
from . import _compat
from ._compat import NORM_KEYS
from .families import IMAGE_PROCESSOR_CLASSES, PROCESSOR_CLASSES, VIDEO_PROCESSOR_CLASSES

_CAPTURE = threading.local()  # per thread, while an image processor prunes: ``raws``, the
# resized images patchify was handed (rescaling and normalisation pass them through)

REGIONS_KEY = "image_kept_regions"
"""Processor output key: int64 (num_kept, 5) rows (image, level, t, row, col), row/col of the
region's top-left unit in merge-unit coordinates, sorted by (image, t, row, col)."""
VIDEO_REGIONS_KEY = "video_kept_regions"
"""Same for videos: rows (video, level, t, row, col), t = temporal patch index."""
_KEYS = {"images": REGIONS_KEY, "videos": VIDEO_REGIONS_KEY}

SETTINGS = {
    "patch_selection_method": "budget",
    "alpha": 0.3,
    "thresholds": None,
    "num_scales": 3,
    "mode": "multiscale",
    "score": None,
    "temporal_threshold": None,
}
"""Selection settings a wrapped processor accepts (per call, as attributes, or at construction),
with their defaults. Values are validated by :func:`entropy_prune.select_patches`."""


_HEAP_SEEN = False


def keep_buffers_in_heap() -> None:
    """Once per process: allocate and free one 24 MiB buffer.

    glibc's malloc sizes its mmap and trim thresholds to the largest buffer freed so far. A
    process that only runs pruning calls frees nothing bigger than one call's output, so the
    heap is often trimmed after every call and ~16 MB of fresh pages faulted in by the next
    (about 4100 page faults, +4 ms per 1 MP call, in a third of fresh processes on the 2-core VM).
    After one 24 MiB buffer, as the stock processor's own output or any model leaves behind, the
    buffers stay in the heap. Other allocators just see one short allocation.
    """
    global _HEAP_SEEN
    if not _HEAP_SEEN:
        torch.empty(24 << 20, dtype=torch.uint8)
        _HEAP_SEEN = True


_FORK_HANDLER = False


def _fork_safe_threads() -> None:
    """Once per process, at the first pruning call: children forked later (multiprocessing or
    ``datasets.map`` pools) run torch with one intra-op thread. The pruning ops ran torch's
    OpenMP pool in the parent; GNU OpenMP cannot rebuild it after ``fork``, so the child's first
    parallel op hung (torch's DataLoader workers do the same for the same reason)."""
    global _FORK_HANDLER
    if not _FORK_HANDLER:
        os.register_at_fork(after_in_child=lambda: torch.set_num_threads(1))
        _FORK_HANDLER = True


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET = _Unset()


def is_none_method(method: Any) -> bool:
    return method is None or (isinstance(method, str) and method == "none")


def check_call_keywords(kwargs: dict, valid: set[str], where: str, strict: bool) -> None:
    """TypeError for a keyword of a call that the processor would drop or choke on: with
    ``strict`` any keyword outside ``valid`` (the ``images_kwargs`` / ``videos_kwargs`` dicts, whose
    stock typed-dict error names no setting), else one that is not valid but resembles a selection
    setting (a typo the stock processor only logs, then runs with the default)."""
    for key in kwargs:
        close = difflib.get_close_matches(key, SETTINGS, n=1, cutoff=0.75)
        if key in valid or not (strict or close):
            continue
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TypeError(f"unknown setting {key!r} in {where}{hint}. Selection settings: {sorted(SETTINGS)}"
                        + (f"; other valid keys: {sorted(valid - set(SETTINGS))}" if strict else ""))


def keeps_all(settings: dict) -> bool:
    """Valid ``settings`` keep every unit of every item, whatever the content."""
    method = settings["patch_selection_method"]
    return is_none_method(method) or (method == "budget" and float(settings["alpha"]) == 1.0)


def check_settings(settings: dict) -> None:
    """Raise ValueError/TypeError now for settings the core selection would reject."""
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise TypeError(f"unknown selection setting(s) {sorted(unknown)}; valid: {sorted(SETTINGS)}")
    keys = ("patch_selection_method", "alpha", "thresholds", "num_scales", "mode", "score")
    check_selection(*(settings[k] for k in keys))
    tau = settings["temporal_threshold"]
    if tau is not None:
        if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)):
            raise TypeError(f"temporal_threshold must be a real number or None, got {tau!r}")
        if not (np.isfinite(tau) and tau > 0):
            raise ValueError(f"temporal_threshold must be a finite number > 0 (luma change in [0, 1] units), got {tau}")


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


def select_group(images: list[np.ndarray], previous: list[np.ndarray] | None, settings: dict, unit_px: int):
    """Core selection for one temporal patch.

    Args:
        images: (C, H, W) scoring images of this temporal patch's distinct frames.
        previous: the previous temporal patch's scoring images, or None.
    Returns:
        the :class:`entropy_prune.Selection` on the unit grid.
    """
    score = default_score(settings["patch_selection_method"]) if settings["score"] is None else settings["score"]
    kw = dict(patch_size=unit_px, num_scales=settings["num_scales"], channels_first=True)
    levels = [np.asarray(x, dtype=np.float64) for x in score_maps(images[0], score, **kw).levels]
    for image in images[1:]:
        levels = [np.maximum(a, b) for a, b in zip(levels, score_maps(image, score, **kw).levels)]
    tau = settings["temporal_threshold"]
    if tau is not None and previous is not None:
        now = np.mean([_luma01(x) for x in images], axis=0)
        before = np.mean([_luma01(x) for x in previous], axis=0)
        diff = torch.from_numpy(np.abs(now - before).astype(np.float64))[None, None]
        for k in range(len(levels)):
            change = F.avg_pool2d(diff, unit_px << k)[0, 0].numpy()[: levels[k].shape[0], : levels[k].shape[1]]
            levels[k] = levels[k] * np.minimum(1.0, change / tau)
    keys = ("alpha", "thresholds", "mode")
    return select_patches(levels, method=settings["patch_selection_method"], **{k: settings[k] for k in keys})


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat without the copy for a single part (one image: its rows are already new)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def pool_sums(frames: torch.Tensor, unit_px: int, wide: torch.dtype) -> torch.Tensor:
    """Sums of (..., H, W) pixels over 2 x 2 px blocks, over whole blocks of 2 x 2 units of
    ``unit_px``, in dtype ``wide``: pixel sums of one level -> the next coarser level's (each
    sum covers 4x as many pixels). Strided adds: on CPU several times faster than ``avg_pool2d``."""
    block = 2 * unit_px
    h, w = frames.shape[-2] // block * block, frames.shape[-1] // block * block
    pairs = frames[..., :h, :w].unflatten(-2, (h // 2, 2))
    rows = pairs[..., 0, :].to(wide, copy=True)
    second = pairs[..., 1, :]
    rows += second if second.dtype in _PROMOTES else second.to(wide)  # torch adds no bool/uint16+
    return rows[..., 0::2] + rows[..., 1::2]  # contiguous: faster to gather from and pool again


def unit_blocks(frames: torch.Tensor, r: np.ndarray, c: np.ndarray, s: int) -> torch.Tensor:
    """(F, C, H, W) frames -> (K, F, C, s, s): the s x s px units at unit rows r, cols c (K,)."""
    hu, wu = frames.shape[-2] // s, frames.shape[-1] // s
    grid = frames[..., : hu * s, : wu * s].unflatten(-1, (wu, s)).unflatten(-3, (hu, s))  # (F, C, hu, s, wu, s)
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


def cut_regions(frames: torch.Tensor, regions: np.ndarray, m: int, p: int, tp: int, normalize=None) -> torch.Tensor:
    """Rows of one temporal patch's kept regions.

    A level-k region (b = 2^(k-1) units on a side) becomes ONE unit, its pixels area-averaged
    by b: level 2 from the image's 2 x 2 px sums, deeper levels by pooling those sums further
    within the kept regions only.

    Args:
        frames: (F, C, H, W) pixels of the temporal patch (F = 1: tp copies, or tp).
        regions: int (K, 3) (level, row, col) in units.
        normalize: float (N, C, s, s) units (integer pixels converted exactly, all levels in
            one call) -> the same in the stock rows' values and dtype (None: identity).
    Returns:
        (K * m*m, C*tp*p*p) rows in region order.
    """
    f, ch = frames.shape[:2]
    s = m * p
    work = frames.dtype if frames.is_floating_point() or frames.is_complex() else torch.float32
    order = np.argsort(regions[:, 0], kind="stable")  # level by level, raster order within a level
    units = torch.empty((len(regions), f, ch, s, s), dtype=work, device=frames.device)
    top = int(regions[:, 0].max(initial=1))
    pairs = pool_sums(frames, s, sum_dtype(frames.dtype, top)) if top > 1 else None  # 2 x 2 px sums
    start = 0
    for level in range(1, top + 1):
        pick = order[start : start + int((regions[:, 0] == level).sum())]
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
    if normalize is not None:
        units = normalize(units.flatten(0, 1)).unflatten(0, (len(regions), f))
    back = torch.from_numpy(np.argsort(order)).to(frames.device)  # region order
    return block_rows(units, m, p, tp).index_select(0, back).reshape(len(regions) * m * m, ch * tp * p * p)


def prune_image(raw: torch.Tensor, settings: dict, norm: dict, normalize, p: int, m: int, tp: int):
    """Prune one image: score and cut its resized pixels, then rescale/normalise only the cut units.

    Args:
        raw: (C, H, W) resized image before rescaling and normalisation.
        normalize: (units, raw dtype) -> the units as the stock pipeline turns pixels of that
            dtype into rows (see :func:`cut_regions`).
    Returns:
        rows ((num_kept * m*m, C*tp*p*p), the stock dtype) and regions int64 (num_kept, 4):
        (level, t, row, col).
    """
    sel = select_group([raw_image(raw, norm)], None, settings, m * p)
    regions = np.asarray(sel.regions, dtype=np.int64)
    rows = cut_regions(raw[None], regions, m, p, tp, lambda units: normalize(units, raw.dtype))
    return rows, np.column_stack([regions[:, 0], np.zeros(len(regions), np.int64), regions[:, 1:]])


def prune_rows(rows: torch.Tensor, grid: tuple[int, int, int], settings: dict, norm: dict, p: int, m: int, tp: int):
    """Prune one video's stock patch rows ((t*h*w, C*tp*p*p), order [t][unit_row][unit_col][mh][mw]).

    One selection per temporal patch, on its frames recovered from the rows (level-1 units are
    copies of their stock rows). Returns kept rows and regions int64 (num_kept, 4): (level, t, row, col).
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
        regions = np.asarray(select_group(images, previous, settings, m * p).regions, dtype=np.int64)
        previous = images
        kept_rows.append(cut_regions(frames, regions, m, p, tp, None if rows.is_floating_point() else integer))
        kept_regions.append(np.column_stack([regions[:, 0], np.full(len(regions), ti), regions[:, 1:]]))
    return _cat(kept_rows), np.concatenate(kept_regions).astype(np.int64)


def prune_batch(output: BatchFeature, keys: tuple[str, str, str], settings: dict, kwargs: dict,
                raws: list[torch.Tensor] | None = None, normalize=None) -> BatchFeature:
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
            rows, regions = prune_image(queue.pop(0), settings, norm, normalize, *geometry)
        rows_out.append(rows)
        regions_out.append(np.column_stack([np.full(len(regions), i, dtype=np.int64), regions]))
    pruned = _cat(rows_out) if rows_out else pv[:0]
    regions = np.concatenate(regions_out) if regions_out else np.zeros((0, 5), np.int64)
    data = dict(output.data)
    data[pixel_key] = pruned.numpy() if as_numpy else pruned
    data[regions_key] = regions if as_numpy else torch.from_numpy(regions)
    return BatchFeature(data=data, tensor_type=kwargs.get("return_tensors"))


def _rgb8_channels_last(
    processor: Any, image: Any, do_convert_rgb=None, input_data_format=None, device=None, do_resize=None, **_
) -> torch.Tensor | None:
    """(3, H, W) uint8 view of the channels-last pixels the torchvision backend's ``process_image``
    would copy to channels-first memory, for an (H, W, 3) uint8 array or a PIL image that
    converts to one the stock way, resized on the CPU (so no output shares its memory); else None."""
    if not do_resize or (device is not None and torch.device(device).type != "cpu"):
        return None
    if isinstance(image, PIL.Image.Image):
        image = _compat.rgb_array(processor, image, do_convert_rgb)
        input_data_format = ChannelDimension.LAST
    elif not isinstance(image, np.ndarray):
        return None
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        return None
    if input_data_format is None:
        input_data_format = infer_channel_dimension_format(image, num_channels=(1, 3, 4))
    return torch.from_numpy(image).permute(2, 0, 1) if input_data_format == ChannelDimension.LAST else None


class PruningMixin:
    """Mixed in front of a stock Qwen-VL image or video processor class.

    Adds the selection settings as attributes (class defaults = :data:`SETTINGS`), constructor
    arguments and per-call kwargs, and prunes the stock output in ``_preprocess``.
    """

    keys: tuple[str, str, str]  # (pixel key, grid key, regions key)
    patch_selection_method = SETTINGS["patch_selection_method"]
    alpha = SETTINGS["alpha"]
    thresholds = SETTINGS["thresholds"]
    num_scales = SETTINGS["num_scales"]
    mode = SETTINGS["mode"]
    score = SETTINGS["score"]
    temporal_threshold = SETTINGS["temporal_threshold"]

    def __init__(self, **kwargs: Any) -> None:
        ours = {k: kwargs.pop(k) for k in SETTINGS if k in kwargs}
        super().__init__(**kwargs)
        for k, v in ours.items():
            setattr(self, k, v)
        check_settings(self.selection_settings)

    @property
    def selection_settings(self) -> dict:
        """The current selection settings (attribute values)."""
        return {k: getattr(self, k) for k in SETTINGS}

    def to_dict(self) -> dict[str, Any]:
        """Stock, plus the selection settings unless the method is ``None`` (then exactly stock)."""
        out = super().to_dict()
        if is_none_method(self.patch_selection_method):
            for key in SETTINGS:
                out.pop(key, None)
        return out

    def __call__(self, *args, **kwargs):
        check_call_keywords(kwargs, set(self.valid_kwargs.__annotations__), f"a {type(self).__name__} call", False)
        return super().__call__(*args, **kwargs)

    def _preprocess(self, *args, **kwargs):
        settings = {k: kwargs.pop(k, getattr(self, k)) for k in SETTINGS}
        if is_none_method(settings["patch_selection_method"]):
            return super()._preprocess(*args, **kwargs)
        check_settings(settings)
        keep_buffers_in_heap()
        _fork_safe_threads()
        return self._prune(lambda: super(PruningMixin, self)._preprocess(*args, **kwargs), settings, kwargs)


class PruningImageProcessorMixin(PruningMixin):
    """Images: rescale / normalise / patchify step aside while pruning (see the module docstring)."""

    keys = ("pixel_values", "image_grid_thw", REGIONS_KEY)

    def _prune(self, stock, settings: dict, kwargs: dict) -> BatchFeature:
        """``stock()`` runs the stock ``_preprocess`` with ``kwargs``; prune its output."""
        _CAPTURE.raws = []
        try:
            output = stock()
            raws = _CAPTURE.raws
        finally:
            _CAPTURE.raws = None
        norm = [kwargs[k] for k in NORM_KEYS]
        return prune_batch(output, self.keys, settings, kwargs, raws, lambda x, dtype: self._normalize_units(x, dtype, *norm))

    def _normalize_units(self, x: torch.Tensor, dtype: torch.dtype, do_rescale, rescale_factor, do_normalize, image_mean, image_std):
        """What the stock pipeline makes of (N, C, s, s) float pixels (exact values of a
        ``dtype`` image) on their way to rows: its rescale and normalisation (elementwise),
        then the dtype its patchify gives (torchvision: the image's own if neither step runs,
        integers rounded; PIL: float32)."""
        stock = super()
        if _compat.is_torchvision_backend(self):  # channels at dim -3
            if not (do_rescale or do_normalize):
                return (x if dtype.is_floating_point or dtype.is_complex else x.round()).to(dtype)
            return stock.rescale_and_normalize(x, do_rescale, rescale_factor, do_normalize, image_mean, image_std)
        n, c, s, _ = x.shape  # PIL backend: numpy, one (C, H, W) image
        y = x.permute(1, 0, 2, 3).reshape(c, n * s, s).numpy()
        if do_rescale:
            y = stock.rescale(y, rescale_factor)
        if do_normalize:
            y = stock.normalize(y, image_mean, image_std)
        return torch.from_numpy(np.asarray(y, dtype=np.float32)).reshape(c, n, s, s).permute(1, 0, 2, 3)

    def process_image(self, image, *args, **kwargs):
        """Stock, except (torchvision backend) for an 8-bit RGB image, numpy or PIL, that will be
        resized on the CPU: it stays in its channels-last memory, as a (3, H, W) view, where the
        stock method copies it to channels-first memory. torch's uint8 antialiased resize is
        about 2x faster on channels-last pixels (it repacks channels-first ones) and gives the
        same values; skipping the copy as well saves ~3 ms per MP."""
        pixels = _rgb8_channels_last(self, image, **kwargs) if not args and _compat.is_torchvision_backend(self) else None
        return pixels if pixels is not None else super().process_image(image, *args, **kwargs)

    def rescale_and_normalize(self, images, *args, **kwargs):
        """Stock (torchvision backend); passes the images through while pruning."""
        if getattr(_CAPTURE, "raws", None) is not None:
            return images
        return super().rescale_and_normalize(images, *args, **kwargs)

    def rescale(self, image, *args, **kwargs):
        """Stock; passes the image through while pruning (PIL backend)."""
        if getattr(_CAPTURE, "raws", None) is not None:
            return image
        return super().rescale(image, *args, **kwargs)

    def normalize(self, image, *args, **kwargs):
        """Stock; passes the image through while pruning (PIL backend)."""
        if getattr(_CAPTURE, "raws", None) is not None:
            return image
        return super().normalize(image, *args, **kwargs)

    def patchify(self, images, patch_size: int, merge_size: int, temporal_patch_size: int):
        """Stock patchify, except while pruning: then the resized (C, H, W) images (torchvision:
        a (B, C, H, W) group; PIL: one image) are kept and no rows are cut (``prune_batch`` cuts
        the kept regions'); the grid is returned as usual."""
        raws = getattr(_CAPTURE, "raws", None)
        if raws is None:
            return super().patchify(images, patch_size=patch_size, merge_size=merge_size, temporal_patch_size=temporal_patch_size)
        numpy_in = isinstance(images, np.ndarray)
        batch = torch.from_numpy(images) if numpy_in else images
        group = batch if batch.ndim == 4 else batch[None]
        raws.extend(group.unbind(0))
        b, c, h, w = group.shape
        d = c * temporal_patch_size * patch_size * patch_size
        empty = np.empty((0, d), np.float32) if numpy_in else group.new_empty((b, 0, d), dtype=torch.float32)
        return empty, h // patch_size, w // patch_size


class PruningVideoProcessorMixin(PruningMixin):
    keys = ("pixel_values_videos", "video_grid_thw", VIDEO_REGIONS_KEY)

    def _prune(self, stock, settings: dict, kwargs: dict) -> BatchFeature:
        return prune_batch(stock(), self.keys, settings, kwargs)


def _with_counts(stock: str, token: str, counts: list[int]) -> str:
    """Rewrite the stock placeholder text: its runs of ``token`` get ``counts`` tokens (one count
    for a single run, or one per run, e.g. Qwen3-VL's timestamped groups per temporal patch)."""
    parts = re.split(f"((?:{re.escape(token)})+)", stock)
    runs = parts[1::2]
    if len(runs) != len(counts):
        counts = [sum(counts)] if len(runs) == 1 else counts
    if len(runs) != len(counts):
        raise ValueError(f"cannot place {len(counts)} token counts into {len(runs)} placeholder runs")
    parts[1::2] = [token * n for n in counts]
    return "".join(parts)


class PruningProcessorMixin:
    """Mixed in front of a stock Qwen-VL processor class: its image and video processors prune,
    and each item gets exactly as many placeholder tokens as it has kept regions."""

    def __init__(self, image_processor=None, tokenizer=None, video_processor=None, chat_template=None, **kwargs):
        if image_processor is not None and not isinstance(image_processor, PruningMixin):
            image_processor = as_pruning(image_processor, {})
        if isinstance(video_processor, VIDEO_PROCESSOR_CLASSES) and not isinstance(video_processor, PruningMixin):
            video_processor = as_pruning(video_processor, {})
        super().__init__(image_processor, tokenizer, video_processor, chat_template=chat_template, **kwargs)

    def __call__(self, *args, **kwargs):
        """Stock, after checking the selection settings' names (flat and in ``images_kwargs`` /
        ``videos_kwargs``): a misspelt one raises a TypeError instead of being ignored."""
        valid = set()
        for name, sub in (("images_kwargs", "image_processor"), ("videos_kwargs", "video_processor")):
            processor = getattr(self, sub, None)
            names = set(processor.valid_kwargs.__annotations__) if isinstance(processor, PruningMixin) else set()
            if names and isinstance(kwargs.get(name), dict):
                check_call_keywords(kwargs[name], names, name, True)
            valid |= names
        check_call_keywords(kwargs, valid, f"a {type(self).__name__} call", False)
        return super().__call__(*args, **kwargs)

    def _get_num_multimodal_tokens(self, image_sizes=None, video_sizes=None, **kwargs):
        """Size-only token counts: the stock ones where the settings keep every unit (method
        ``None``, or ``"budget"`` with alpha 1); a ValueError elsewhere, where they depend on the
        content. Settings as for a call: flat kwargs, then ``images_kwargs`` / ``videos_kwargs``."""
        flat = {k: kwargs.pop(k) for k in SETTINGS if k in kwargs}
        for sizes, name, sub in ((image_sizes, "images", "image_processor"), (video_sizes, "videos", "video_processor")):
            processor = getattr(self, sub, None)
            nested = kwargs.get(f"{name}_kwargs")
            if nested is not None:
                kwargs[f"{name}_kwargs"] = {k: v for k, v in nested.items() if k not in SETTINGS}
            if sizes is None or not isinstance(processor, PruningMixin):
                continue
            settings = {**processor.selection_settings, **flat, **{k: v for k, v in (nested or {}).items() if k in SETTINGS}}
            check_settings(settings)
            if not keeps_all(settings):
                method = settings["patch_selection_method"]
                raise ValueError(
                    f"with patch_selection_method={method!r} (alpha={settings['alpha']!r}) the number of "
                    f"{name[:-1]} tokens depends on the {name}' content; run the processor on the {name} and "
                    f"count the rows of output[{_KEYS[name]!r}] per item instead"
                )
        return super()._get_num_multimodal_tokens(image_sizes=image_sizes, video_sizes=video_sizes, **kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        stock = super().replace_image_token(image_inputs, image_idx, **kwargs)
        regions = image_inputs.get(REGIONS_KEY)
        if regions is None:
            return stock
        return _with_counts(stock, self.image_token, [int((regions[:, 0] == image_idx).sum())])

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        stock = super().replace_video_token(video_inputs, video_idx, **kwargs)
        regions = video_inputs.get(VIDEO_REGIONS_KEY)
        if regions is None:
            return stock
        t = int(video_inputs["video_grid_thw"][video_idx][0])
        mine = regions[regions[:, 0] == video_idx]
        return _with_counts(stock, self.video_token, [int((mine[:, 2] == ti).sum()) for ti in range(t)])


class _InputNames:
    """``model_input_names`` of a pruning class: the stock names, plus the kept-regions key on an
    instance whose default method prunes."""

    def __init__(self, stock: list[str], key: str) -> None:
        self.stock, self.key = list(stock), key

    def __get__(self, obj: Any, cls: type) -> list[str]:
        if obj is None or is_none_method(obj.patch_selection_method):
            return list(self.stock)
        return [*self.stock, self.key]


_CLASSES: dict[str, type] = {}


def _pruning_class(base: type) -> type:
    """Subclass ``mixin + base`` named like ``base`` (so saved configs name the stock class and
    load anywhere); reachable for pickle as ``entropy_prune.qwen.processing.Pruning<base>``."""
    if issubclass(base, (PruningMixin, PruningProcessorMixin)):
        return base
    if issubclass(base, IMAGE_PROCESSOR_CLASSES):
        mixin = PruningImageProcessorMixin
    elif issubclass(base, VIDEO_PROCESSOR_CLASSES):
        mixin = PruningVideoProcessorMixin
    else:
        mixin = PruningProcessorMixin
    qualname = f"Pruning{base.__name__}"
    if qualname not in _CLASSES:
        namespace = {"__module__": __name__, "__qualname__": qualname}
        if mixin is not PruningProcessorMixin:
            fields = {k: Any for k in SETTINGS}
            namespace["valid_kwargs"] = TypedDict(
                f"{qualname}Kwargs", {**base.valid_kwargs.__annotations__, **fields}, total=False
            )
            namespace["model_input_names"] = _InputNames(base.model_input_names, mixin.keys[2])
        _CLASSES[qualname] = type(base.__name__, (mixin, base), namespace)
    return _CLASSES[qualname]


def __getattr__(name: str) -> type:
    """Recreate a pruning class on first lookup (unpickling in a fresh process)."""
    import transformers

    stock = getattr(transformers, name.removeprefix("Pruning"), None) if name.startswith("Pruning") else None
    supported = IMAGE_PROCESSOR_CLASSES + VIDEO_PROCESSOR_CLASSES + PROCESSOR_CLASSES
    if isinstance(stock, type) and issubclass(stock, supported):
        return _pruning_class(stock)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def as_pruning(processor: Any, given: dict) -> Any:
    """Copy of a Qwen-VL image or video processor as its pruning subclass. Settings: ``given``
    first, then values it already carries (e.g. loaded from a saved wrapped processor), then defaults."""
    if not isinstance(processor, IMAGE_PROCESSOR_CLASSES + VIDEO_PROCESSOR_CLASSES):
        names = ", ".join(c.__name__ for c in IMAGE_PROCESSOR_CLASSES + VIDEO_PROCESSOR_CLASSES)
        raise TypeError(f"expected a Qwen-VL image or video processor ({names}), got {type(processor).__name__}")
    new = copy.deepcopy(processor)
    new.__class__ = _pruning_class(type(processor))
    for key, default in SETTINGS.items():
        value = given[key] if key in given else processor.__dict__.get(key, default)
        setattr(new, key, value)
    _compat.set_valid_kwargs(new)
    check_settings(new.selection_settings)
    return new


def wrap_processor(processor: Any, patch_selection_method: Any = UNSET, alpha: Any = UNSET, **settings: Any) -> Any:
    """Return a pruning copy of a Qwen-VL processor, or of a bare image (either backend) or video processor.

    The copy is an instance of a subclass of the wrapped class: same call signature,
    ``BatchFeature`` output, ``apply_chat_template``, ``batch_decode``, ``save_pretrained``;
    ``type(wrapped).from_pretrained(path, **settings)`` loads a pruning processor. Its output adds
    ``image_kept_regions`` (int64 (num_kept, 5): image, level, t, row, col in merge units), prunes
    ``pixel_values`` to 4 rows per kept region, keeps the full ``image_grid_thw``, and (full
    processor) puts one ``<|image_pad|>`` per kept region; videos likewise with
    ``video_kept_regions``, ``pixel_values_videos`` and ``<|video_pad|>`` (per temporal patch).

    Settings (``patch_selection_method``, ``alpha``, ``thresholds``, ``num_scales``, ``mode``,
    ``score``, see :func:`entropy_prune.select_patches`; ``temporal_threshold`` for videos, see
    the module docstring) apply to images and videos and can be set here, as attributes of
    ``wrapped.image_processor`` / ``wrapped.video_processor``, or per call (``images_kwargs`` /
    ``videos_kwargs``, or flat kwargs for both). Unset ones come from values the processor already
    carries (a saved wrapped processor reloaded with ``AutoProcessor``), else default to
    ``"budget"``, ``alpha=0.3``, ``num_scales=3``, ``"multiscale"``, ``score=None`` (the core's
    default for the method), no temporal score.
    Method ``None`` / ``"none"`` returns the stock output unchanged.

    Raises:
        TypeError: not a Qwen-VL processor, or an unknown setting.
        ValueError: a setting :func:`entropy_prune.select_patches` rejects.
    """
    given = dict(settings)
    if patch_selection_method is not UNSET:
        given["patch_selection_method"] = patch_selection_method
    if alpha is not UNSET:
        given["alpha"] = alpha
    unknown = set(given) - set(SETTINGS)
    if unknown:
        raise TypeError(f"unknown selection setting(s) {sorted(unknown)}; valid: {sorted(SETTINGS)}")
    if isinstance(processor, ProcessorMixin):
        if not isinstance(processor, PROCESSOR_CLASSES):
            raise TypeError(
                f"expected a Qwen-VL processor ({', '.join(c.__name__ for c in PROCESSOR_CLASSES)}), "
                f"got {type(processor).__name__}"
            )
        new = copy.copy(processor)
        new.__class__ = _pruning_class(type(processor))
        new.image_processor = as_pruning(processor.image_processor, given)
        if isinstance(getattr(processor, "video_processor", None), VIDEO_PROCESSOR_CLASSES):
            new.video_processor = as_pruning(processor.video_processor, given)
        return new
    if isinstance(processor, BaseImageProcessor):
        return as_pruning(processor, given)
    raise TypeError(f"expected a Qwen-VL processor, image or video processor, got {type(processor).__name__}")

