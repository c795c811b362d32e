"""Processor side: prune Qwen-VL `pixel_values` by whole merge units and emit matching placeholders.

One LLM token = one merge unit = ``merge_size x merge_size`` patches (2 x 2 x 14 px = 28 px for
Qwen2-VL). The core selection runs with ``patch_size = patch_size * merge_size`` so its base cell
is exactly one unit, on the resized image recovered from ``pixel_values`` (what the model sees).

A kept level-k region (``b = 2^(k-1)`` units on a side) becomes ONE unit: level 1 keeps its rows
untouched; a coarse region's pixels (normalised values, both temporal frames, all channels) are
box-averaged by ``b`` down to one unit and cut into its ``merge_size^2`` patch rows in the
processor's layout. Normalisation is affine per channel, so averaging normalised values equals
normalising averaged pixels.
"""

from __future__ import annotations

import copy
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.processing_utils import ProcessorMixin

from ..selection import select_patches
from .families import IMAGE_PROCESSOR_CLASSES, PROCESSOR_CLASSES

REGIONS_KEY = "image_kept_regions"
"""Processor output key: int64 (num_kept, 5) rows (image, level, t, row, col), row/col of the
region's top-left unit in merge-unit coordinates, sorted by (image, t, row, col)."""

SETTINGS = {
    "patch_selection_method": "budget",
    "alpha": 0.3,
    "thresholds": None,
    "num_scales": 3,
    "mode": "multiscale",
    "score": "entropy",
}
"""Selection settings a wrapped processor accepts (per call, as attributes, or at construction),
with their defaults. Values are validated by :func:`entropy_prune.select_patches`."""


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET = _Unset()


def is_none_method(method: Any) -> bool:
    return method is None or (isinstance(method, str) and method == "none")


def core_kwargs(settings: dict, unit_px: int) -> dict:
    """Arguments of :func:`select_patches` for ``settings`` with base cell = one merge unit."""
    return dict(
        method=settings["patch_selection_method"],
        alpha=settings["alpha"],
        thresholds=settings["thresholds"],
        num_scales=settings["num_scales"],
        mode=settings["mode"],
        score=settings["score"],
        patch_size=unit_px,
    )


def check_settings(settings: dict) -> None:
    """Raise ValueError/TypeError now for settings the core selection would reject."""
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise TypeError(f"unknown selection setting(s) {sorted(unknown)}; valid: {sorted(SETTINGS)}")
    probe = np.zeros((16, 16, 3), dtype=np.uint8)
    select_patches(probe, **core_kwargs(settings, unit_px=4))


def scoring_image(frame: torch.Tensor, norm: dict) -> np.ndarray:
    """(C, H, W) normalised frame -> (H, W, C) image for the core scores.

    Undoes normalisation and rescaling. With 8-bit rescaling (factor 1/255) the resized image was
    uint8, so the values are integers up to float32 round-off (< 1e-2, far below 0.5); rounding
    recovers it exactly. Otherwise a [0, 1] float image is returned, clipped to [0, 1] because
    bicubic resizing of float inputs can overshoot: scores then see saturated values.
    """
    x = frame.detach().to("cpu", torch.float64)
    if norm["do_normalize"]:
        mean = torch.as_tensor(norm["image_mean"], dtype=torch.float64).reshape(-1, 1, 1)
        std = torch.as_tensor(norm["image_std"], dtype=torch.float64).reshape(-1, 1, 1)
        x = x * std + mean
    scale = float(norm["rescale_factor"]) if norm["do_rescale"] else 1.0
    if norm["do_rescale"]:
        x = x / scale
        if abs(scale * 255.0 - 1.0) < 1e-9:
            r = x.round()
            if float((x - r).abs().max()) < 1e-2 and float(r.min()) >= 0 and float(r.max()) <= 255:
                return r.permute(1, 2, 0).numpy().astype(np.uint8)
        x = x * scale
    return x.clamp(0.0, 1.0).permute(1, 2, 0).numpy()


def _patchify(frames: torch.Tensor, m: int, p: int) -> torch.Tensor:
    """(T, C, H, W) -> (H/(m p), W/(m p), m*m, C*T*p*p) unit rows in the processor's layout."""
    tp, c, h, w = frames.shape
    x = frames.reshape(tp, c, h // (m * p), m, p, w // (m * p), m, p)
    x = x.permute(2, 5, 3, 6, 1, 0, 4, 7)
    return x.reshape(h // (m * p), w // (m * p), m * m, c * tp * p * p)


def prune_item(
    rows: torch.Tensor, grid: tuple[int, int, int], settings: dict, norm: dict, p: int, m: int, tp: int
) -> tuple[torch.Tensor, np.ndarray]:
    """Prune one image's patch rows.

    Args:
        rows: (t*h*w, C*T*p*p) rows of one item, order [t][unit_row][unit_col][mh][mw].
        grid: (t, h, w) in patches.
    Returns:
        kept rows ((num_kept * m*m, C*T*p*p)) and regions int64 (num_kept, 4): (level, t, row, col).
    """
    t, h, w = grid
    hu, wu = h // m, w // m
    d = rows.shape[1]
    c = d // (tp * p * p)
    units = rows.reshape(t, hu, wu, m * m, d)
    frames = rows.reshape(t, hu, wu, m, m, c, tp, p, p).permute(0, 6, 5, 1, 3, 7, 2, 4, 8)
    frames = frames.reshape(t, tp, c, hu * m * p, wu * m * p)
    kept_rows, kept_regions = [], []
    for ti in range(t):
        sel = select_patches(scoring_image(frames[ti, 0], norm), **core_kwargs(settings, m * p))
        regions = np.asarray(sel.regions, dtype=np.int64)
        out = rows.new_empty((len(regions), m * m, d))
        for level in np.unique(regions[:, 0]):
            pick = np.nonzero(regions[:, 0] == level)[0]
            b = 1 << (int(level) - 1)
            r = torch.from_numpy(regions[pick, 1] // b)
            cc = torch.from_numpy(regions[pick, 2] // b)
            if b == 1:
                out[pick] = units[ti, r, cc]
            else:
                coarse = F.avg_pool2d(frames[ti], kernel_size=b, stride=b)
                coarse = coarse[..., : (hu // b) * m * p, : (wu // b) * m * p]
                out[pick] = _patchify(coarse, m, p)[r, cc]
        kept_rows.append(out.reshape(-1, d))
        kept_regions.append(np.column_stack([regions[:, 0], np.full(len(regions), ti), regions[:, 1:]]))
    return torch.cat(kept_rows), np.concatenate(kept_regions).astype(np.int64)


def prune_batch(
    output: BatchFeature, settings: dict, norm: dict, p: int, m: int, tp: int, return_tensors: Any
) -> BatchFeature:
    """Stock image-processor output -> pruned ``pixel_values``, full grid, kept-regions tensor."""
    pixel_values, grids = output["pixel_values"], output["image_grid_thw"]
    as_numpy = isinstance(pixel_values, np.ndarray)
    pv = torch.as_tensor(pixel_values)
    grid_list = [tuple(int(v) for v in g) for g in torch.as_tensor(grids).tolist()]
    start, rows_out, regions_out = 0, [], []
    for i, grid in enumerate(grid_list):
        n = grid[0] * grid[1] * grid[2]
        rows, regions = prune_item(pv[start : start + n], grid, settings, norm, p, m, tp)
        start += n
        rows_out.append(rows)
        regions_out.append(np.column_stack([np.full(len(regions), i, dtype=np.int64), regions]))
    pruned = torch.cat(rows_out) if rows_out else pv[:0]
    regions = np.concatenate(regions_out) if regions_out else np.zeros((0, 5), np.int64)
    data = dict(output.data)
    data["pixel_values"] = pruned.numpy() if as_numpy else pruned
    data[REGIONS_KEY] = regions if as_numpy else torch.from_numpy(regions)
    return BatchFeature(data=data, tensor_type=return_tensors)


class PruningImageProcessorMixin:
    """Mixed in front of a stock Qwen-VL image processor class (either backend).

    Adds the selection settings as attributes (class defaults = :data:`SETTINGS`), constructor
    arguments and per-call kwargs, and prunes the stock output in ``_preprocess``.
    """

    patch_selection_method = SETTINGS["patch_selection_method"]
    alpha = SETTINGS["alpha"]
    thresholds = SETTINGS["thresholds"]
    num_scales = SETTINGS["num_scales"]
    mode = SETTINGS["mode"]
    score = SETTINGS["score"]

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

    def _preprocess(self, images, **kwargs):
        settings = {k: kwargs.pop(k, getattr(self, k)) for k in SETTINGS}
        output = super()._preprocess(images, **kwargs)
        if is_none_method(settings["patch_selection_method"]):
            return output
        norm = {k: kwargs[k] for k in ("do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")}
        geometry = (kwargs["patch_size"], kwargs["merge_size"], kwargs["temporal_patch_size"])
        return prune_batch(output, settings, norm, *geometry, kwargs.get("return_tensors"))


class PruningProcessorMixin:
    """Mixed in front of a stock Qwen-VL processor class: its image processor prunes, and each
    image gets exactly as many placeholder tokens as it has kept regions."""

    def __init__(self, image_processor=None, tokenizer=None, video_processor=None, chat_template=None, **kwargs):
        if image_processor is not None and not isinstance(image_processor, PruningImageProcessorMixin):
            image_processor = as_pruning_image_processor(image_processor, {})
        super().__init__(image_processor, tokenizer, video_processor, chat_template=chat_template, **kwargs)

    def _get_num_multimodal_tokens(self, image_sizes=None, video_sizes=None, **kwargs):
        """Stock size-only token counts, refused for images while pruning (counts depend on content)."""
        if image_sizes is not None:
            images_kwargs = self._merge_kwargs(**kwargs)["images_kwargs"]
            method = images_kwargs.get("patch_selection_method", self.image_processor.patch_selection_method)
            if not is_none_method(method):
                raise ValueError(
                    "with patch selection the number of image tokens depends on the image content; "
                    "run the processor on the images to get it"
                )
        return super()._get_num_multimodal_tokens(image_sizes=image_sizes, video_sizes=video_sizes, **kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        regions = image_inputs.get(REGIONS_KEY)
        if regions is None:
            return super().replace_image_token(image_inputs, image_idx, **kwargs)
        return self.image_token * int((regions[:, 0] == image_idx).sum())


_CLASSES: dict[str, type] = {}


def _pruning_class(base: type, mixin: type) -> type:
    """Subclass ``mixin + base`` named like ``base`` (so saved configs name the stock class and
    load anywhere); reachable for pickle as ``entropy_prune.qwen.processing.Pruning<base>``."""
    if issubclass(base, mixin):
        return base
    qualname = f"Pruning{base.__name__}"
    if qualname not in _CLASSES:
        namespace = {"__module__": __name__, "__qualname__": qualname}
        if mixin is PruningImageProcessorMixin:
            fields = {k: Any for k in SETTINGS}
            namespace["valid_kwargs"] = TypedDict(
                f"{qualname}Kwargs", {**base.valid_kwargs.__annotations__, **fields}, total=False
            )
            namespace["model_input_names"] = [*base.model_input_names, REGIONS_KEY]
        _CLASSES[qualname] = type(base.__name__, (mixin, base), namespace)
    return _CLASSES[qualname]


def __getattr__(name: str) -> type:
    """Recreate a pruning class on first lookup (unpickling in a fresh process)."""
    import transformers

    stock = getattr(transformers, name.removeprefix("Pruning"), None) if name.startswith("Pruning") else None
    if isinstance(stock, type) and issubclass(stock, IMAGE_PROCESSOR_CLASSES):
        return _pruning_class(stock, PruningImageProcessorMixin)
    if isinstance(stock, type) and issubclass(stock, PROCESSOR_CLASSES):
        return _pruning_class(stock, PruningProcessorMixin)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def as_pruning_image_processor(image_processor: Any, given: dict) -> Any:
    """Copy of ``image_processor`` as its pruning subclass. Settings: ``given`` first, then values
    the processor already carries (e.g. loaded from a saved wrapped processor), then defaults."""
    if not isinstance(image_processor, IMAGE_PROCESSOR_CLASSES):
        raise TypeError(
            "expected a Qwen-VL image processor "
            f"({', '.join(c.__name__ for c in IMAGE_PROCESSOR_CLASSES)}), got {type(image_processor).__name__}"
        )
    new = copy.deepcopy(image_processor)
    new.__class__ = _pruning_class(type(image_processor), PruningImageProcessorMixin)
    for key, default in SETTINGS.items():
        value = given[key] if key in given else image_processor.__dict__.get(key, default)
        setattr(new, key, value)
    new._valid_kwargs_names = list(new.valid_kwargs.__annotations__)
    check_settings(new.selection_settings)
    return new


def wrap_processor(processor: Any, patch_selection_method: Any = UNSET, alpha: Any = UNSET, **settings: Any) -> Any:
    """Return a pruning copy of a Qwen-VL processor or bare image processor (either backend).

    The copy is an instance of a subclass of the wrapped class: same call signature,
    ``BatchFeature`` output, ``apply_chat_template``, ``batch_decode``, ``save_pretrained``;
    ``type(wrapped).from_pretrained(path, **settings)`` loads a pruning processor. Its output adds
    ``image_kept_regions`` (int64 (num_kept, 5): image, level, t, row, col in merge units), prunes
    ``pixel_values`` to 4 rows per kept region, keeps the full ``image_grid_thw``, and (full
    processor) puts one ``<|image_pad|>`` per kept region.

    Settings (``patch_selection_method``, ``alpha``, ``thresholds``, ``num_scales``, ``mode``,
    ``score``; see :func:`entropy_prune.select_patches`) can be set here, as attributes of
    ``wrapped.image_processor`` (or of the wrapped image processor), or per call
    (``images_kwargs={...}`` or flat kwargs). Unset ones come from values the processor already
    carries (a saved wrapped processor reloaded with ``AutoProcessor``), else default to
    ``"budget"``, ``alpha=0.3``, ``num_scales=3``, ``"multiscale"``, ``"entropy"``.
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
        new.__class__ = _pruning_class(type(processor), PruningProcessorMixin)
        new.image_processor = as_pruning_image_processor(processor.image_processor, given)
        return new
    if isinstance(processor, BaseImageProcessor):
        return as_pruning_image_processor(processor, given)
    raise TypeError(f"expected a Qwen-VL processor or image processor, got {type(processor).__name__}")

