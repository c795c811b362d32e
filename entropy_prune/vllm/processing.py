"""vLLM multimodal processors that prune: the adapter's wrapped HF processor, kept regions as
fields of each item, and one placeholder per kept region.

Each image or video item carries ``{modality}_kept_regions`` (int64 (n_i, 7): item, level, t,
row, col, h, w; the item column is rewritten on the model side, where items of several requests meet)
and ``{modality}_kept_count`` (n_i), and its pixel rows are ``n_i * merge_size**2``. Items that
keep every unit (method none or alpha 1, no tolerance) carry level-1 regions of the full grid and
exactly the stock rows. Settings come from ``mm_processor_kwargs`` (engine-wide or per request) and are
checked before the HF processor runs, so a bad one is a :class:`VLLMValidationError` naming it.
The profiling (dummy) inputs are never pruned: pruning only removes tokens, so the stock maximum
counts stay valid upper bounds.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from vllm.exceptions import VLLMValidationError
from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLMultiModalProcessor, Qwen2_5_VLProcessingInfo
from vllm.model_executor.models.qwen2_vl import Qwen2VLMultiModalProcessor, Qwen2VLProcessingInfo
from vllm.model_executor.models.qwen3_vl import Qwen3VLMultiModalProcessor, Qwen3VLProcessingInfo
from vllm.multimodal.inputs import MultiModalFieldConfig

from ..qwen import REGIONS_KEY, SETTINGS, VIDEO_REGIONS_KEY, wrap_processor
from ..qwen._settings import check, check_call_keywords
from ..qwen.families import full_grid_regions

__all__ = [
    "PruningQwen2VLProcessor",
    "PruningQwen2_5_VLProcessor",
    "PruningQwen3VLProcessor",
    "check_settings",
]

_KEYS = {  # modality: (pixel key, grid key, regions key, count key, scoped kwargs)
    "image": ("pixel_values", "image_grid_thw", REGIONS_KEY, "image_kept_count", "images_kwargs"),
    "video": ("pixel_values_videos", "video_grid_thw", VIDEO_REGIONS_KEY, "video_kept_count", "videos_kwargs"),
}
_CAPTURE = threading.local()  # Qwen3-VL: kept regions of the per-video HF calls of one request


def check_settings(given: Mapping[str, Any], where: str) -> None:
    """VLLMValidationError naming the first selection setting in ``given`` (settings mixed with
    other processor kwargs) that is misspelt or that the selection rejects."""
    for key, value in given.items():
        if key not in SETTINGS:
            try:
                check_call_keywords({key: value}, set(), where, False)
            except TypeError as err:
                raise VLLMValidationError(str(err), parameter=key, value=value) from err
    settings = dict(SETTINGS)
    for key in SETTINGS:  # one at a time, so the error names the setting that breaks
        if key in given:
            settings[key] = given[key]
            try:
                check(settings)
            except (TypeError, ValueError) as err:
                raise VLLMValidationError(f"{where}: {err}", parameter=key, value=given[key]) from err


def numbered(per_item: list[torch.Tensor]) -> torch.Tensor:
    """(sum n_i, 7) regions of several items, each item's column 0 set to its index in the list
    (the column a single HF call wrote is stale once items of several calls meet)."""
    return torch.cat([torch.cat([torch.full_like(r[:, :1], i), r[:, 1:]], 1) for i, r in enumerate(per_item)])


def selection_kwargs(merged: Mapping[str, Any], scope: str) -> dict[str, Any]:
    """The settings and other keys a modality's HF call gets: its scope over the flat keys."""
    flat = {k: v for k, v in merged.items() if not isinstance(v, Mapping)}
    return {**flat, **dict(merged.get(scope) or {})}


class _PruningInfo:
    """Mixed in front of a stock ProcessingInfo: its HF processor is the adapter's wrapped one."""

    _wrapped: dict[int, tuple[Any, Any]]

    def get_hf_processor(self, **kwargs: object) -> Any:
        """The wrapped stock processor (one per stock instance; settings are call keywords)."""
        for key in SETTINGS:
            kwargs.pop(key, None)
        for scope in ("images_kwargs", "videos_kwargs"):
            if isinstance(kwargs.get(scope), Mapping):
                kwargs[scope] = {k: v for k, v in kwargs[scope].items() if k not in SETTINGS}
        stock = super().get_hf_processor(**kwargs)
        cache = self.__dict__.setdefault("_wrapped", {})
        if id(stock) not in cache:
            wrapped = wrap_processor(stock)
            if isinstance(self, Qwen3VLProcessingInfo):
                wrapped.__class__ = _recording_class(type(wrapped))
            cache[id(stock)] = (stock, wrapped)  # holding ``stock`` keeps its id unique
        return cache[id(stock)][1]


_RECORDING: dict[type, type] = {}


def _recording_class(cls: type) -> type:
    """``cls`` whose calls on videos hand their kept regions to ``_CAPTURE.videos`` while a
    Qwen3-VL request is processed (its processor calls the HF processor once per video and keeps
    only the stock fields of each output)."""
    if cls not in _RECORDING:

        def __call__(self, *args, **kwargs):
            out = cls.__call__(self, *args, **kwargs)
            sink = getattr(_CAPTURE, "videos", None)
            if sink is not None and kwargs.get("videos") is not None:
                sink.append(out.get(VIDEO_REGIONS_KEY))
            return out

        _RECORDING[cls] = type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__})
    return _RECORDING[cls]


class _PruningProcessor:
    """Mixed in front of a stock Qwen-VL multimodal processor."""

    def apply(self, inputs, timing_ctx):
        """Stock, after checking the request's selection settings (merged with the engine's)."""
        merged = self.info._merge_and_resolve_mm_processor_kwargs(inputs.hf_processor_mm_kwargs)
        for modality, keys in _KEYS.items():
            if inputs.mm_data_items.get_count(modality, strict=False):
                check_settings(selection_kwargs(merged, keys[4]), f"mm_processor_kwargs for {modality}s")
        return super().apply(inputs, timing_ctx)

    def get_dummy_inputs(self, seq_len, mm_counts, mm_options):
        """Stock profiling inputs, never pruned (method none and no tolerance override any engine
        default)."""
        inputs = super().get_dummy_inputs(seq_len, mm_counts, mm_options)
        kwargs = {**inputs.hf_processor_mm_kwargs, "patch_selection_method": None, "tolerance": None}
        return dataclasses.replace(inputs, hf_processor_mm_kwargs=kwargs)

    def _apply_hf_processor_main(self, mm_items, hf_kwargs):
        return self._complete(super()._apply_hf_processor_main(mm_items, hf_kwargs), hf_kwargs)

    def _complete(self, out, hf_kwargs):
        """Adds full-grid regions to items the HF processor kept whole, and per-item counts."""
        m = self.info.get_hf_config().vision_config.spatial_merge_size
        merged = self.info._merge_and_resolve_mm_processor_kwargs(hf_kwargs)
        for modality, (_, grid_key, key, count_key, scope) in _KEYS.items():
            grid = out.get(grid_key)
            if grid is None:
                continue
            if out.get(key) is None:
                out[key] = full_grid_regions(grid, m)
            out[count_key] = torch.bincount(out[key][:, 0], minlength=len(grid))
            _check_nonempty(out[count_key], modality, selection_kwargs(merged, scope))
        return out

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs):
        fields = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        m = self.info.get_hf_config().vision_config.spatial_merge_size
        for modality, (pixel_key, _, key, count_key, _) in _KEYS.items():
            if count_key in hf_inputs:
                counts = hf_inputs[count_key]
                fields[pixel_key] = MultiModalFieldConfig.flat_from_sizes(modality, counts * m * m)
                fields[key] = MultiModalFieldConfig.flat_from_sizes(modality, counts, keep_on_cpu=True)
                fields[count_key] = MultiModalFieldConfig.batched(modality, keep_on_cpu=True)
        return fields

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        return [
            dataclasses.replace(u, replacement=partial(self._replacement, u.modality, out_mm_kwargs))
            for u in updates
        ]

    def _replacement(self, modality: str, out_mm_kwargs, item_idx: int) -> Any:
        """One placeholder per kept region of the item."""
        item = out_mm_kwargs[modality][item_idx]
        config = self.info.get_hf_config()
        return [getattr(config, f"{modality}_token_id")] * int(item[_KEYS[modality][3]].data)


def _check_nonempty(counts: torch.Tensor, modality: str, settings: Mapping[str, Any]) -> None:
    """VLLMValidationError for an item with no kept token (vLLM needs a placeholder per item)."""
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        alpha = settings.get("alpha", SETTINGS["alpha"])
        raise VLLMValidationError(
            f"{modality} {empty[0]} keeps no token with these settings (alpha={alpha!r}, "
            f"mode={settings.get('mode', SETTINGS['mode'])!r}); raise alpha or use mode 'multiscale'",
            parameter="alpha",
            value=alpha,
        )


class PruningQwen2VLProcessingInfo(_PruningInfo, Qwen2VLProcessingInfo):
    pass


class PruningQwen2_5_VLProcessingInfo(_PruningInfo, Qwen2_5_VLProcessingInfo):
    pass


class PruningQwen3VLProcessingInfo(_PruningInfo, Qwen3VLProcessingInfo):
    pass


class PruningQwen2VLProcessor(_PruningProcessor, Qwen2VLMultiModalProcessor):
    """Qwen2-VL, pruning."""


class PruningQwen2_5_VLProcessor(_PruningProcessor, Qwen2_5_VLMultiModalProcessor):
    """Qwen2.5-VL, pruning."""


class PruningQwen3VLProcessor(_PruningProcessor, Qwen3VLMultiModalProcessor):
    """Qwen3-VL, pruning: videos are processed one by one, and each timestamped frame group
    gets the placeholders of its temporal patch's kept regions."""

    def _apply_hf_processor_main(self, mm_items, hf_kwargs):
        _CAPTURE.videos = []
        try:
            out = Qwen3VLMultiModalProcessor._apply_hf_processor_main(self, mm_items, hf_kwargs)
            captured = _CAPTURE.videos
        finally:
            _CAPTURE.videos = None
        if captured and all(r is not None for r in captured):
            out[VIDEO_REGIONS_KEY] = numbered(captured)
        return self._complete(out, hf_kwargs)

    def _replacement(self, modality, out_mm_kwargs, item_idx):
        if modality == "image":
            return super()._replacement(modality, out_mm_kwargs, item_idx)
        item = out_mm_kwargs[modality][item_idx]
        config = self.info.get_hf_config()
        t = int(item["video_grid_thw"].data[0])
        per_frame = torch.bincount(item[VIDEO_REGIONS_KEY].data[:, 2], minlength=t).tolist()
        return Qwen3VLMultiModalProcessor.get_video_repl(
            tokens_per_frame=per_frame,
            timestamps=item["timestamps"].data,
            tokenizer=self.info.get_tokenizer(),
            vision_start_token_id=config.vision_start_token_id,
            vision_end_token_id=config.vision_end_token_id,
            video_token_id=config.video_token_id,
            select_token_id=True,
        )
