"""vLLM model classes that encode kept regions only and give their tokens true M-RoPE positions.

Each is a subclass of vLLM's own class (same weights, same LLM); it runs the vision tower on the
kept units with encoder metadata built from the adapter's tower layout
(:meth:`entropy_prune.qwen.families.Qwen2VLFamily.tower_layout`) and places tokens with the
adapter's positions (``items`` and the sequence walk of :mod:`entropy_prune.qwen.modeling`).
Batches in which every item keeps its full grid take vLLM's stock path unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import vllm
from vllm.exceptions import VLLMValidationError
from vllm.model_executor.layers.attention import MMEncoderAttention
from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLDummyInputsBuilder, Qwen2_5_VLForConditionalGeneration
from vllm.model_executor.models.qwen2_vl import Qwen2VLDummyInputsBuilder, Qwen2VLForConditionalGeneration
from vllm.model_executor.models.qwen3_vl import Qwen3VLDummyInputsBuilder, Qwen3VLForConditionalGeneration
from vllm.multimodal import MULTIMODAL_REGISTRY

from ..qwen.families import Qwen2_5VLFamily, Qwen2VLFamily, Qwen3VLFamily, full_grid_regions
from ..qwen.modeling import _check_regions, _sequence_positions
from . import processing
from ._version import check_version
from .processing import _KEYS, check_settings, numbered, selection_kwargs

__all__ = [
    "EntropyPruneQwen2VLForConditionalGeneration",
    "EntropyPruneQwen2_5_VLForConditionalGeneration",
    "EntropyPruneQwen3VLForConditionalGeneration",
]

check_version(vllm.__version__)
_CODES = {"image": 1, "video": 2}  # modality codes of the adapter's sequence walk


def check_engine(vllm_config: Any) -> None:
    """ValueError at engine start for settings the pruned towers cannot run under, or for bad
    engine-wide selection settings (``mm_processor_kwargs``)."""
    mm = vllm_config.model_config.multimodal_config
    if mm.mm_encoder_tp_mode == "data":
        raise ValueError(
            "entropy_prune's architectures do not support mm_encoder_tp_mode='data' (the data-parallel "
            "encoder shards full grids); use the default 'weights'"
        )
    if mm.is_multimodal_pruning_enabled():
        raise ValueError(
            "entropy_prune's architectures prune before the encoder; turn off vLLM's video pruning "
            "(video_pruning_rate) or use the stock architecture"
        )
    if vllm_config.compilation_config.cudagraph_mm_encoder:
        raise ValueError(
            "entropy_prune's architectures do not support encoder CUDA graphs (they assume full grids); "
            "leave compilation_config.cudagraph_mm_encoder off"
        )
    engine = mm.mm_processor_kwargs or {}
    for scope in ("images_kwargs", "videos_kwargs"):
        try:
            check_settings(selection_kwargs(engine, scope), f"engine mm_processor_kwargs ({scope})")
        except VLLMValidationError as err:
            raise ValueError(str(err)) from err


def _item_regions(regions: Any, counts: Any) -> list[torch.Tensor]:
    """Per-item (n_i, 7) regions from a batch's concatenated field (item column as each HF call
    wrote it)."""
    regions = torch.cat(list(regions)) if isinstance(regions, (list, tuple)) else regions
    counts = torch.as_tensor([int(c) for c in counts]) if isinstance(counts, (list, tuple)) else counts
    return list(torch.as_tensor(regions, dtype=torch.long).split(counts.flatten().tolist()))


def _is_full(regions: list[torch.Tensor], grid_thw: torch.Tensor, m: int) -> bool:
    """Every item keeps every unit (level-1 regions; validated elsewhere)."""
    return all(
        len(r) == int(g.prod()) // (m * m) and bool((r[:, 1] == 1).all())
        for r, g in zip(regions, grid_thw, strict=True)
    )


def _rotary(visual: Any, grid_thw: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n * m*m, D) rotary cos and sin of the kept patches at their (h, w) ``position_ids``."""
    cos, sin = visual.rotary_pos_emb.get_cos_sin(int(grid_thw[:, 1:].max()))
    pos = position_ids.to(cos.device)
    return cos[pos].flatten(1), sin[pos].flatten(1)


def _cu(visual: Any, cu_seqlens: torch.Tensor, device: torch.device) -> dict[str, Any]:
    """cu_seqlens as the tower's attention backend takes them, with their max and lengths."""
    cu = cu_seqlens.numpy()
    return {
        "cu_seqlens": MMEncoderAttention.maybe_recompute_cu_seqlens(
            visual.attn_backend, cu, visual.hidden_size, visual.tp_size, device,
            fp8_padded_hidden_size=visual.fp8_padded_hidden_size,
        ),
        "max_seqlen": torch.tensor(MMEncoderAttention.compute_max_seqlen(visual.attn_backend, cu), dtype=torch.int32),
        "sequence_lengths": MMEncoderAttention.maybe_compute_seq_lens(visual.attn_backend, cu, device),
    }


class _Pruned:
    """Mixed in front of a vLLM Qwen-VL model class."""

    _family: Qwen2VLFamily
    supports_mm_device_do_normalize = False  # kept units are normalised by the processor (see docs)

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        check_engine(vllm_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix)

    # ------------------------------------------------------------------ encoder

    def _parse_and_validate_image_input(self, **kwargs: Any) -> Any:
        return self._with_regions("image", super()._parse_and_validate_image_input, kwargs)

    def _parse_and_validate_video_input(self, **kwargs: Any) -> Any:
        return self._with_regions("video", super()._parse_and_validate_video_input, kwargs)

    def _with_regions(self, modality: str, parse: Any, kwargs: dict) -> Any:
        fields = {k: kwargs.pop(k, None) for keys in _KEYS.values() for k in keys[2:4]}  # not the stock parser's
        regions, counts = (fields[k] for k in _KEYS[modality][2:4])
        out = parse(**kwargs)
        if out is not None and regions is not None and counts is not None:
            out.kept_regions = _item_regions(regions, counts)
        return out

    def _process_image_input(self, image_input: Any) -> tuple[torch.Tensor, ...]:
        return self._encode("image", image_input, super()._process_image_input)

    def _process_video_input(self, video_input: Any) -> tuple[torch.Tensor, ...]:
        return self._encode("video", video_input, super()._process_video_input)

    def _encode(self, modality: str, inputs: Any, stock: Any) -> tuple[torch.Tensor, ...]:
        """Tower output per item: stock unless some item keeps fewer than all its units."""
        pixel_key, grid_key = _KEYS[modality][:2]
        per_item = getattr(inputs, "kept_regions", None)
        grid = inputs[grid_key].to("cpu", torch.long)
        m = self._family.merge_size(self)
        if per_item is None or inputs["type"] != pixel_key or _is_full(per_item, grid, m):
            return stock(inputs)
        pixels = inputs[pixel_key]
        regions = _check_regions(numbered(per_item), pixels, grid, m, modality)
        features = self.visual(pixels, None, encoder_metadata=self._encoder_metadata(grid, regions))
        return features.split([len(r) for r in per_item])

    def _encoder_metadata(self, grid_thw: torch.Tensor, regions: torch.Tensor) -> dict[str, Any]:
        """Qwen2-VL: rotary cos/sin per kept patch, per-frame segments."""
        visual = self.visual
        layout = self._family.tower_layout(self, grid_thw, regions)
        cos, sin = _rotary(visual, grid_thw, layout["position_ids"])
        cu = layout["cu_seqlens"]
        return {
            "rotary_pos_emb_cos": cos,
            "rotary_pos_emb_sin": sin,
            "cu_seqlens": cu.to(visual.device),
            "max_seqlen": visual.compute_attn_mask_seqlen(cu),
        }

    # ------------------------------------------------------------------ M-RoPE

    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list[Any]) -> tuple[torch.Tensor, int]:
        """(3, L) positions and the rope delta of one request: the adapter's item positions."""
        m = self._family.merge_size(self)
        features = []  # (feature, its (1, 3) grid, its regions with item column 0)
        for feature in sorted(mm_features, key=lambda f: f.mm_position.offset):
            _, grid_key, key, _, _ = _KEYS[feature.modality]
            grid = feature.data[grid_key].data.reshape(1, 3).to(torch.long)
            field = feature.data.get(key)
            features.append((feature, grid, full_grid_regions(grid, m) if field is None else numbered([field.data])))
        if all(_is_full([regions], grid, m) for _, grid, regions in features):
            return super().get_mrope_input_positions(input_tokens, mm_features)
        items: dict[int, list] = {code: [] for code in _CODES.values()}
        for feature, grid, regions in features:
            inputs = {}
            if "second_per_grid_ts" in feature.data:
                inputs["second_per_grid_ts"] = [feature.data["second_per_grid_ts"].data]
            items[_CODES[feature.modality]].extend(self._family.items(self, feature.modality, grid, regions, inputs))
        tokens = torch.as_tensor(input_tokens)
        types = torch.zeros_like(tokens)
        for modality, code in _CODES.items():
            types[tokens == getattr(self.config, f"{modality}_token_id")] = code
        positions = _sequence_positions(types, {code: iter(lst) for code, lst in items.items()})
        return positions, int(positions.max()) + 1 - len(input_tokens)


class _PrunedWindows(_Pruned):
    def _encoder_metadata(self, grid_thw, regions):
        """Qwen2.5-VL: units in window order (``window_index``), rotary cos/sin in that order,
        full and window segments."""
        visual = self.visual
        device = visual.device
        layout = self._family.tower_layout(self, grid_thw, regions)
        m = self._family.merge_size(self)
        order = layout["window_index"]

        def windowed(rows: torch.Tensor) -> torch.Tensor:
            return rows.reshape(len(order), m * m, -1)[order.to(rows.device)].flatten(0, 1)

        cos, sin = _rotary(visual, grid_thw, layout["position_ids"])

        full, window = _cu(visual, layout["cu_seqlens"], device), _cu(visual, layout["cu_window_seqlens"], device)
        return {
            "rotary_pos_emb_cos": windowed(cos),
            "rotary_pos_emb_sin": windowed(sin),
            "window_index": order.to(device),
            "reverse_indices": visual.invert_permutation(order).to(device),
            "cu_seqlens": full["cu_seqlens"],
            "cu_window_seqlens": window["cu_seqlens"],
            "max_seqlen_full": full["max_seqlen"],
            "max_seqlen_window": window["max_seqlen"],
            "sequence_lengths_full": full["sequence_lengths"],
            "sequence_lengths_window": window["sequence_lengths"],
        }


class _PrunedQwen3(_Pruned):
    def _encoder_metadata(self, grid_thw, regions):
        """Qwen3-VL: the learned position embedding of the full grids gathered at the kept
        patches, rotary cos/sin, per-frame segments."""
        visual = self.visual
        layout = self._family.tower_layout(self, grid_thw, regions)
        m = self._family.merge_size(self)
        pos_embeds = visual.fast_pos_embed_interpolate(grid_thw.tolist())
        rows = Qwen3VLFamily.full_grid_rows(grid_thw, regions, layout["position_ids"], m)
        cos, sin = _rotary(visual, grid_thw, layout["position_ids"])
        return {
            "pos_embeds": pos_embeds[rows.to(pos_embeds.device)],
            "rotary_pos_emb_cos": cos,
            "rotary_pos_emb_sin": sin,
            **_cu(visual, layout["cu_seqlens"], visual.device),
        }


@MULTIMODAL_REGISTRY.register_processor(
    processing.PruningQwen2VLProcessor,
    info=processing.PruningQwen2VLProcessingInfo,
    dummy_inputs=Qwen2VLDummyInputsBuilder,
)
class EntropyPruneQwen2VLForConditionalGeneration(_Pruned, Qwen2VLForConditionalGeneration):
    """Qwen2-VL that encodes kept regions only (opt in through ``hf_overrides``)."""

    _family = Qwen2VLFamily()


@MULTIMODAL_REGISTRY.register_processor(
    processing.PruningQwen2_5_VLProcessor,
    info=processing.PruningQwen2_5_VLProcessingInfo,
    dummy_inputs=Qwen2_5_VLDummyInputsBuilder,
)
class EntropyPruneQwen2_5_VLForConditionalGeneration(_PrunedWindows, Qwen2_5_VLForConditionalGeneration):
    """Qwen2.5-VL that encodes kept regions only (opt in through ``hf_overrides``)."""

    _family = Qwen2_5VLFamily()


@MULTIMODAL_REGISTRY.register_processor(
    processing.PruningQwen3VLProcessor,
    info=processing.PruningQwen3VLProcessingInfo,
    dummy_inputs=Qwen3VLDummyInputsBuilder,
)
class EntropyPruneQwen3VLForConditionalGeneration(_PrunedQwen3, Qwen3VLForConditionalGeneration):
    """Qwen3-VL that encodes kept regions only (opt in through ``hf_overrides``)."""

    _family = Qwen3VLFamily()

