"""Processor side: prune Qwen-VL `pixel_values` by whole merge units and emit matching placeholders.

One LLM token = one merge unit = ``merge_size x merge_size`` patches (2 x 2 x 14 px = 28 px for
Qwen2-VL). The core selection runs with ``patch_size = patch_size * merge_size`` so its base cell
is exactly one unit, on the resized image the model sees.

A kept level-k region (``b = 2^(k-1)`` units on a side) becomes ONE unit (``_units``); what is
kept is chosen on what the model sees (``_prune``).

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
"""

from __future__ import annotations

import copy
import os
import re
import threading
from typing import Any, TypedDict

import numpy as np
import PIL.Image
import torch
from transformers import BatchFeature, Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen3VLProcessor
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import ChannelDimension, infer_channel_dimension_format
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor
from transformers.processing_utils import ProcessorMixin

from . import _compat, _settings
from ._compat import NORM_KEYS
from ._prune import prune_batch
from ._settings import SETTINGS, UNSET, check_call_keywords, is_stock, keeps_all

__all__ = ["REGIONS_KEY", "VIDEO_REGIONS_KEY", "wrap_processor"]

_IMAGE_PROCESSORS = (Qwen2VLImageProcessor, Qwen2VLImageProcessorPil)
_VIDEO_PROCESSORS = (Qwen2VLVideoProcessor, Qwen3VLVideoProcessor)
_PROCESSORS = (Qwen2VLProcessor, Qwen2_5_VLProcessor, Qwen3VLProcessor)

_CAPTURE = threading.local()  # per thread, while an image processor prunes: ``raws``, the
# resized images patchify was handed (rescaling and normalisation pass them through)

REGIONS_KEY = "image_kept_regions"
"""Processor output key: int64 (num_kept, 7) rows (image, level, t, row, col, h, w), row/col of the
region's top-left unit and its size (h x w) in merge units, sorted by (image, t, row, col)."""
VIDEO_REGIONS_KEY = "video_kept_regions"
"""Same for videos: rows (video, level, t, row, col, h, w), t = temporal patch index."""
_KEYS = {"images": REGIONS_KEY, "videos": VIDEO_REGIONS_KEY}


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


class _Pruning:
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
    tolerance = SETTINGS["tolerance"]
    downscale = SETTINGS["downscale"]

    def __init__(self, **kwargs: Any) -> None:
        ours = {k: kwargs.pop(k) for k in SETTINGS if k in kwargs}
        super().__init__(**kwargs)
        for k, v in ours.items():
            setattr(self, k, v)
        _settings.check(self.selection_settings)

    @property
    def selection_settings(self) -> dict:
        """The current selection settings (attribute values)."""
        return {k: getattr(self, k) for k in SETTINGS}

    def to_dict(self) -> dict[str, Any]:
        """Stock, plus the selection settings unless they prune nothing (method ``None``, no
        ``tolerance``: then exactly stock)."""
        out = super().to_dict()
        if is_stock(self.selection_settings):
            for key in SETTINGS:
                out.pop(key, None)
        return out

    def __call__(self, *args, **kwargs):
        check_call_keywords(kwargs, set(self.valid_kwargs.__annotations__), f"a {type(self).__name__} call", False)
        return super().__call__(*args, **kwargs)

    def _preprocess(self, *args, **kwargs):
        settings = {k: kwargs.pop(k, getattr(self, k)) for k in SETTINGS}
        if is_stock(settings):
            return super()._preprocess(*args, **kwargs)
        _settings.check(settings)
        _fork_safe_threads()
        return self._prune(lambda: super(_Pruning, self)._preprocess(*args, **kwargs), settings, kwargs)


class _PruningImageProcessor(_Pruning):
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
        return prune_batch(
            output, self.keys, settings, kwargs, raws, lambda x, dtype: self._normalize_units(x, dtype, *norm)
        )

    def _normalize_units(
        self, x: torch.Tensor, dtype: torch.dtype, do_rescale, rescale_factor, do_normalize, image_mean, image_std
    ):
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
        pixels = (
            _rgb8_channels_last(self, image, **kwargs) if not args and _compat.is_torchvision_backend(self) else None
        )
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
            return super().patchify(
                images, patch_size=patch_size, merge_size=merge_size, temporal_patch_size=temporal_patch_size
            )
        numpy_in = isinstance(images, np.ndarray)
        batch = torch.from_numpy(images) if numpy_in else images
        group = batch if batch.ndim == 4 else batch[None]
        raws.extend(group.unbind(0))
        b, c, h, w = group.shape
        d = c * temporal_patch_size * patch_size * patch_size
        empty = np.empty((0, d), np.float32) if numpy_in else group.new_empty((b, 0, d), dtype=torch.float32)
        return empty, h // patch_size, w // patch_size


class _PruningVideoProcessor(_Pruning):
    keys = ("pixel_values_videos", "video_grid_thw", VIDEO_REGIONS_KEY)

    def _prune(self, stock, settings: dict, kwargs: dict) -> BatchFeature:
        return prune_batch(stock(), self.keys, {**settings, "downscale": False}, kwargs)  # images only


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


class _PruningProcessor:
    """Mixed in front of a stock Qwen-VL processor class: its image and video processors prune,
    and each item gets exactly as many placeholder tokens as it has kept regions."""

    def __init__(self, image_processor=None, tokenizer=None, video_processor=None, chat_template=None, **kwargs):
        if image_processor is not None and not isinstance(image_processor, _Pruning):
            image_processor = _as_pruning(image_processor, {})
        if isinstance(video_processor, _VIDEO_PROCESSORS) and not isinstance(video_processor, _Pruning):
            video_processor = _as_pruning(video_processor, {})
        super().__init__(image_processor, tokenizer, video_processor, chat_template=chat_template, **kwargs)

    def __call__(self, *args, **kwargs):
        """Stock, after checking the selection settings' names (flat and in ``images_kwargs`` /
        ``videos_kwargs``): a misspelt one raises a TypeError instead of being ignored."""
        valid = set()
        for name, sub in (("images_kwargs", "image_processor"), ("videos_kwargs", "video_processor")):
            processor = getattr(self, sub, None)
            names = set(processor.valid_kwargs.__annotations__) if isinstance(processor, _Pruning) else set()
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
        for sizes, name, sub in (
            (image_sizes, "images", "image_processor"),
            (video_sizes, "videos", "video_processor"),
        ):
            processor = getattr(self, sub, None)
            nested = kwargs.get(f"{name}_kwargs")
            if nested is not None:
                kwargs[f"{name}_kwargs"] = {k: v for k, v in nested.items() if k not in SETTINGS}
            if sizes is None or not isinstance(processor, _Pruning):
                continue
            settings = {
                **processor.selection_settings,
                **flat,
                **{k: v for k, v in (nested or {}).items() if k in SETTINGS},
            }
            _settings.check(settings)
            if not keeps_all(settings):
                method = settings["patch_selection_method"]
                raise ValueError(
                    f"with patch_selection_method={method!r} (alpha={settings['alpha']!r}, "
                    f"tolerance={settings['tolerance']!r}) the number of "
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
    instance whose default settings prune."""

    def __init__(self, stock: list[str], key: str) -> None:
        self.stock, self.key = list(stock), key

    def __get__(self, obj: Any, cls: type) -> list[str]:
        if obj is None or is_stock(obj.selection_settings):
            return list(self.stock)
        return [*self.stock, self.key]


_CLASSES: dict[str, type] = {}


def _pruning_class(base: type) -> type:
    """Subclass ``mixin + base`` named like ``base`` (so saved configs name the stock class and
    load anywhere); reachable for pickle as ``entropy_prune.qwen.processing.Pruning<base>``."""
    if issubclass(base, (_Pruning, _PruningProcessor)):
        return base
    if issubclass(base, _IMAGE_PROCESSORS):
        mixin = _PruningImageProcessor
    elif issubclass(base, _VIDEO_PROCESSORS):
        mixin = _PruningVideoProcessor
    else:
        mixin = _PruningProcessor
    qualname = f"Pruning{base.__name__}"
    if qualname not in _CLASSES:
        namespace = {"__module__": __name__, "__qualname__": qualname}
        if mixin is not _PruningProcessor:
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
    supported = _IMAGE_PROCESSORS + _VIDEO_PROCESSORS + _PROCESSORS
    if isinstance(stock, type) and issubclass(stock, supported):
        return _pruning_class(stock)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _as_pruning(processor: Any, given: dict) -> Any:
    """Copy of a Qwen-VL image or video processor as its pruning subclass. Settings: ``given``
    first, then values it already carries (e.g. loaded from a saved wrapped processor), then defaults."""
    if not isinstance(processor, _IMAGE_PROCESSORS + _VIDEO_PROCESSORS):
        names = ", ".join(c.__name__ for c in _IMAGE_PROCESSORS + _VIDEO_PROCESSORS)
        raise TypeError(f"expected a Qwen-VL image or video processor ({names}), got {type(processor).__name__}")
    new = copy.deepcopy(processor)
    new.__class__ = _pruning_class(type(processor))
    for key, default in SETTINGS.items():
        value = given[key] if key in given else processor.__dict__.get(key, default)
        setattr(new, key, value)
    _compat.set_valid_kwargs(new)
    _settings.check(new.selection_settings)
    return new


def wrap_processor(processor: Any, patch_selection_method: Any = UNSET, alpha: Any = UNSET, **settings: Any) -> Any:
    """Return a pruning copy of a Qwen-VL processor, or of a bare image (either backend) or video processor.

    The copy is an instance of a subclass of the wrapped class: same call signature,
    ``BatchFeature`` output, ``apply_chat_template``, ``batch_decode``, ``save_pretrained``;
    ``type(wrapped).from_pretrained(path, **settings)`` loads a pruning processor. Its output adds
    ``image_kept_regions`` (int64 (num_kept, 7): image, level, t, row, col, h, w in merge units), prunes
    ``pixel_values`` to 4 rows per kept region, keeps the full ``image_grid_thw`` (with
    ``downscale``: the down-scaled image's), and (full
    processor) puts one ``<|image_pad|>`` per kept region; videos likewise with
    ``video_kept_regions``, ``pixel_values_videos`` and ``<|video_pad|>`` (per temporal patch).

    Settings (``patch_selection_method``, ``alpha``, ``thresholds``, ``num_scales``, ``mode``,
    ``score``, ``tolerance``, see :func:`entropy_prune.select_patches`; ``temporal_threshold`` for
    videos, see the module docstring) apply to images and videos and can be set here, as attributes of
    ``wrapped.image_processor`` / ``wrapped.video_processor``, or per call (``images_kwargs`` /
    ``videos_kwargs``, or flat kwargs for both). Unset ones come from values the processor already
    carries (a saved wrapped processor reloaded with ``AutoProcessor``), else default to
    ``"budget"``, ``alpha=0.3``, ``num_scales=3``, ``"multiscale"``, ``score=None`` (the core's
    default for the method), no temporal score, ``tolerance=None`` (no cell removed as
    predictable). Method ``None`` / ``"none"`` without ``tolerance`` returns the stock output
    unchanged; with it, only predictable units are removed.

    ``downscale=True`` (method ``"budget"``, images only): before selecting, shrink each resized
    image further, as a smaller ``max_pixels`` would (smart_resize, antialiased bicubic, never
    below ``min_pixels``), until its units that ``tolerance`` does not remove (all of them without
    it) fit the budget, floor(alpha * units + 0.5) of the processor's grid: the image is then
    shown whole at the largest size found, within ``tolerance``. Each of at most 4 steps aims at
    ``units * budget / unremoved`` units. Tokens: at most the budget (fewer where the unremoved
    units fit with room to spare). Best on documents and screenshots with ``tolerance=0``; without
    ``tolerance`` it is Qwen's own down-scaling to the budget. ``downscale="least_error"``: try
    the processor's size, that size and up to 5 sizes between (units spaced geometrically), select
    each at the budget, and keep the one whose ``reconstruct`` (luma, bilinear back to the
    processor's size) has the least squared error. Best on photographs (never below uniform
    down-scaling at equal tokens in ``bench_fidelity``), worse than ``True`` on text; costs up
    to 7 selections and renderings per image (about 0.12 s at 1 MP, 4-11x a stock torchvision
    call: docs/benchmarks.md). ``downscale="balanced"``: the same sizes; of those whose error is
    at least 0.2 dB below uniform down-scaling's at the budget, the smallest whose worst unit
    loses least within 0.2 dB (least_error's choice where none is). For mixed or unknown
    content: near least_error on photographs, near ``True`` on text (with ``tolerance=0`` and
    ``shapes="halves"``: docs/benchmarks.md).

    Raises:
        TypeError: not a Qwen-VL processor, or an unknown setting.
        ValueError: a setting :func:`entropy_prune.select_patches` rejects.

    >>> from entropy_prune.qwen.testing import make_processor, textured_image
    >>> processor = wrap_processor(make_processor(), alpha=0.5, mode="drop")
    >>> out = processor.image_processor([textured_image(112, 112, 0)], return_tensors="pt")
    >>> len(out["image_kept_regions"]), tuple(out["pixel_values"].shape)  # 8 of 16 units, 4 rows each
    (8, (32, 1176))
    """
    given = dict(settings)
    if patch_selection_method is not UNSET:
        given["patch_selection_method"] = patch_selection_method
    if alpha is not UNSET:
        given["alpha"] = alpha
    check_call_keywords(given, set(SETTINGS), "wrap_processor's settings", True)
    if isinstance(processor, ProcessorMixin):
        if not isinstance(processor, _PROCESSORS):
            raise TypeError(
                f"expected a Qwen-VL processor ({', '.join(c.__name__ for c in _PROCESSORS)}), "
                f"got {type(processor).__name__}"
            )
        new = copy.copy(processor)
        new.__class__ = _pruning_class(type(processor))
        new.image_processor = _as_pruning(processor.image_processor, given)
        if isinstance(getattr(processor, "video_processor", None), _VIDEO_PROCESSORS):
            new.video_processor = _as_pruning(processor.video_processor, given)
        return new
    if isinstance(processor, BaseImageProcessor):
        return _as_pruning(processor, given)
    raise TypeError(f"expected a Qwen-VL processor, image or video processor, got {type(processor).__name__}")
