"""Per-family strategies: how a Qwen-VL family encodes kept units and places them in M-RoPE.

A strategy runs the kept units of all images (or all videos) through the public vision tower with
precomputed rotary positions and attention segments, and gives each visual item's LLM positions.
Region geometry (merge size m, a region of bh x bw units, bh = bw = 2^(level-1) for a square,
top-left unit (r, c)):

* Vision tower: the unit standing for a region keeps its m x m patches one position apart (the
  spacing every unit had in training) and centres them on the region: patch (mh, mw) gets
  (h, w) = (m r + m (bh-1)/2 + mh, m c + m (bw-1)/2 + mw), which lies inside the sub-block of
  the region that the patch averages. Level 1 gives the stock positions.
* LLM: the region's token gets (t, h, w) = (time(t), r + (bh-1)//2, c + (bw-1)//2) relative to
  the item start, i.e. the unit at (or just up-left of) the region centre. Text after the item
  continues from the full grid's extent, as for the unpruned item, so text positions never move.
* Drop mode keeps level-1 units only: their stock positions.

Families: Qwen2-VL (full attention per frame); Qwen2.5-VL (adds window attention: kept units are
ordered by (t, window, row, col) for the tower and un-permuted after; a region belongs to the window
of its representative unit; time positions scaled by ``second_per_grid_ts``); Qwen3-VL (learned
position embedding interpolated for the full grid and gathered at each kept patch's (h, w);
deepstack features split per item like the main features; one video item per temporal group, as
its prompt has one timestamped group per temporal patch); Qwen3-VL-MoE (Qwen3-VL with an MoE LLM);
Qwen3.5 and Qwen3.5-MoE (the Qwen3-VL tower without deepstack, a hybrid linear/full-attention LLM,
which sees the same tokens in the same order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import (
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLModel,
    Qwen2VLForConditionalGeneration,
    Qwen2VLModel,
    Qwen3_5ForConditionalGeneration,
    Qwen3_5Model,
    Qwen3_5MoeForConditionalGeneration,
    Qwen3_5MoeModel,
    Qwen3VLForConditionalGeneration,
    Qwen3VLModel,
    Qwen3VLMoeForConditionalGeneration,
    Qwen3VLMoeModel,
)

from . import _compat

__all__ = [
    "FAMILIES",
    "Qwen3VLMoeFamily",
    "Qwen3_5Family",
    "Qwen3_5MoeFamily",
    "Qwen2VLFamily",
    "Qwen2_5VLFamily",
    "Qwen3VLFamily",
    "VisualItem",
    "family_of",
    "full_grid_regions",
]


@dataclass(frozen=True)
class VisualItem:
    """One image, video, or (Qwen3-VL) video temporal group as the LLM sees it.

    Attributes:
        positions: int64 (3, n) (t, h, w) LLM positions of its n tokens relative to the item start.
        extent: how far text after the item advances (stock: max(grid_h, grid_w) / m).
    """

    positions: torch.Tensor
    extent: int

    @property
    def num_tokens(self) -> int:
        return int(self.positions.shape[1])


def _centre_offsets(regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Units (rows, cols) from each region's top-left unit to its representative unit, the one
    at (or just up-left of) its centre: ((bh - 1) // 2, (bw - 1) // 2) for regions (n, 7) of
    bh x bw units. Gives the region's LLM position and, for Qwen2.5-VL, its window."""
    return (regions[:, 5] - 1) // 2, (regions[:, 6] - 1) // 2


def full_grid_regions(grid_thw: torch.Tensor, m: int) -> torch.Tensor:
    """Level-1 regions (item, level, t, row, col, h, w) of every unit of every (t, h, w) grid, stock order."""
    out = []
    for i, (t, h, w) in enumerate(grid_thw.tolist()):
        tt, rr, cc = torch.meshgrid(torch.arange(t), torch.arange(h // m), torch.arange(w // m), indexing="ij")
        one = torch.ones_like(tt)
        out.append(torch.stack([torch.full_like(tt, i), one, tt, rr, cc, one, one], -1).reshape(-1, 7))
    return torch.cat(out) if out else torch.zeros((0, 7), dtype=torch.long)


class Qwen2VLFamily:
    """Qwen2-VL: full attention per frame in the vision tower, axial 2-D rotary positions."""

    name = "Qwen2-VL"
    model_classes: tuple[type, ...] = (Qwen2VLForConditionalGeneration, Qwen2VLModel)
    base_class: type = Qwen2VLModel

    def base(self, model: torch.nn.Module) -> torch.nn.Module:
        """The ``*Model`` holding ``visual``, ``language_model`` and ``rope_deltas``."""
        return model if isinstance(model, self.base_class) else model.model

    @staticmethod
    def merge_size(base: torch.nn.Module) -> int:
        return int(base.config.vision_config.spatial_merge_size)

    # ------------------------------------------------------------------ LLM positions

    def time_positions(
        self, base: torch.nn.Module, modality: str, index: int, grid_t: int, inputs: dict
    ) -> torch.Tensor:
        """(grid_t,) temporal LLM position of each temporal patch of an item (stock: its index)."""
        return torch.arange(grid_t)

    def items(
        self, base: torch.nn.Module, modality: str, grid_thw: torch.Tensor, regions: torch.Tensor, inputs: dict
    ) -> list[VisualItem]:
        """The LLM items of one modality, in prompt order (one per image / video)."""
        m = self.merge_size(base)
        out = []
        for i, (t, h, w) in enumerate(grid_thw.tolist()):
            mine = regions[regions[:, 0] == i]
            off_r, off_c = _centre_offsets(mine)
            time = self.time_positions(base, modality, i, t, inputs)[mine[:, 2]]
            out.append(VisualItem(torch.stack([time, mine[:, 3] + off_r, mine[:, 4] + off_c]), max(h, w) // m))
        return out

    # ------------------------------------------------------------------ vision tower

    def vision_position_ids(self, m: int, regions: torch.Tensor) -> torch.Tensor:
        """(n * m*m, 2) [h, w] rotary positions of the kept units' patches, rows in pixel order."""
        r, c, bh, bw = regions[:, 3], regions[:, 4], regions[:, 5], regions[:, 6]
        mh = torch.arange(m).repeat_interleave(m)
        mw = torch.arange(m).repeat(m)
        h = (m * r + (m * (bh - 1)) // 2)[:, None] + mh[None]
        w = (m * c + (m * (bw - 1)) // 2)[:, None] + mw[None]
        return torch.stack([h.reshape(-1), w.reshape(-1)], 1)

    @staticmethod
    def segments(keys: torch.Tensor, m: int) -> torch.Tensor:
        """int32 cu_seqlens over patches for runs of equal ``keys`` (consecutive); empty runs vanish."""
        if keys.numel() == 0:
            return torch.zeros(1, dtype=torch.int32)
        _, counts = torch.unique_consecutive(keys, return_counts=True)
        return F.pad((counts * m * m).cumsum(0, dtype=torch.int32), (1, 0))

    def tower_layout(self, base: torch.nn.Module, grid_thw: torch.Tensor, regions: torch.Tensor) -> dict[str, Any]:
        """Where the kept units sit in the tower, from the config alone: rotary ``position_ids``
        (n * m*m, 2) and per-frame ``cu_seqlens`` (Qwen2.5-VL adds its windows). The vLLM plugin
        builds its towers' inputs from this too."""
        m = self.merge_size(base)
        frame = regions[:, 0] * (int(grid_thw[:, 0].max()) if len(grid_thw) else 1) + regions[:, 2]
        return {"position_ids": self.vision_position_ids(m, regions), "cu_seqlens": self.segments(frame, m)}

    def tower_kwargs(self, base: torch.nn.Module, grid_thw: torch.Tensor, regions: torch.Tensor) -> dict[str, Any]:
        """Precomputed keywords of the transformers tower for the kept units."""
        return self.tower_layout(base, grid_thw, regions)

    def encode(
        self, base: torch.nn.Module, pixel_values: torch.Tensor, grid_thw: torch.Tensor, regions: torch.Tensor
    ) -> Any:
        """Run the vision tower on kept units only.

        Args:
            pixel_values: (n * m*m, D) pruned rows, in ``regions`` order.
            grid_thw: (num_items, 3) full grids.
            regions: int64 (n, 7) validated (item, level, t, row, col, h, w).
        Returns:
            the tower output with ``pooler_output`` split into a tuple of (n_i, hidden) per item.
        """
        visual = base.visual
        device = visual.device
        extra = {k: v.to(device) for k, v in self.tower_kwargs(base, grid_thw, regions).items()}
        out = visual(pixel_values.to(device, visual.dtype), grid_thw=grid_thw.to(device), **extra)
        counts = torch.bincount(regions[:, 0], minlength=grid_thw.shape[0]).tolist()
        out.pooler_output = torch.split(out.pooler_output, counts)
        return out


class Qwen2_5VLFamily(Qwen2VLFamily):
    """Qwen2.5-VL: window attention in most tower blocks; video time scaled by seconds per patch."""

    name = "Qwen2.5-VL"
    model_classes = (Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLModel)
    base_class = Qwen2_5_VLModel

    def time_positions(self, base, modality, index, grid_t, inputs):
        if modality == "image":
            return torch.arange(grid_t)
        seconds = inputs.get("second_per_grid_ts")
        second = 1 if seconds is None else seconds[index]
        second = second.cpu() if isinstance(second, torch.Tensor) else second
        return (torch.arange(grid_t) * (base.config.vision_config.tokens_per_second * second)).long()

    def tower_layout(self, base, grid_thw, regions):
        """Adds ``window_index`` (n,), the kept units in (item, t, window, row, col) order, and
        ``cu_window_seqlens`` over patches in that order."""
        kwargs = super().tower_layout(base, grid_thw, regions)
        m = self.merge_size(base)
        cfg = base.config.vision_config
        units = cfg.window_size // m // cfg.patch_size  # window side in units
        off_r, off_c = _centre_offsets(regions)
        wr, wc = (regions[:, 3] + off_r) // units, (regions[:, 4] + off_c) // units
        span = [int(x.max()) + 1 if len(x) else 1 for x in (regions[:, 2], wr, wc, regions[:, 3], regions[:, 4])]
        window = ((regions[:, 0] * span[0] + regions[:, 2]) * span[1] + wr) * span[2] + wc
        order = (window * span[3] + regions[:, 3]) * span[4] + regions[:, 4]
        window_index = torch.argsort(order, stable=True)
        kwargs["window_index"] = window_index
        kwargs["cu_window_seqlens"] = self.segments(window[window_index], m)
        return kwargs


class Qwen3VLFamily(Qwen2VLFamily):
    """Qwen3-VL: learned position embedding + rotary, deepstack features, per-timestamp video groups."""

    name = "Qwen3-VL"
    model_classes = (Qwen3VLForConditionalGeneration, Qwen3VLModel)
    base_class = Qwen3VLModel

    def items(self, base, modality, grid_thw, regions, inputs):
        if modality == "image":
            return super().items(base, modality, grid_thw, regions, inputs)
        # One item per temporal group, each placed like a 1-frame video (stock get_rope_index).
        groups, group_regions = [], []
        for i, (t, h, w) in enumerate(grid_thw.tolist()):
            for ti in range(t):
                sel = (regions[:, 0] == i) & (regions[:, 2] == ti)
                r = regions[sel].clone()
                r[:, 0], r[:, 2] = len(groups), 0
                groups.append((1, h, w))
                group_regions.append(r)
        flat = torch.cat(group_regions) if group_regions else regions
        return super().items(base, modality, torch.tensor(groups, dtype=torch.long).reshape(-1, 3), flat, inputs)

    @staticmethod
    def full_grid_rows(grid_thw: torch.Tensor, regions: torch.Tensor, position_ids: torch.Tensor, m: int):
        """(n * m*m,) row, in the full grids' tower layout, of the patch whose learned position
        embedding each kept patch takes: the patch at its rotary ``position_ids`` (h, w) in its
        item and frame. Full-grid rows are block-major per frame (merge unit, then row in it)."""
        t, h, w = grid_thw[:, 0], grid_thw[:, 1], grid_thw[:, 2]
        start = torch.cumsum(t * h * w, 0) - t * h * w
        item = regions[:, 0].repeat_interleave(m * m)
        frame = regions[:, 2].repeat_interleave(m * m)
        ph, pw = position_ids.unbind(1)
        unit = (ph // m) * (w[item] // m) + pw // m
        return start[item] + frame * h[item] * w[item] + (unit * m + ph % m) * m + pw % m

    def tower_kwargs(self, base, grid_thw, regions):
        kwargs = super().tower_kwargs(base, grid_thw, regions)
        m = self.merge_size(base)
        # On the tower's device, as the stock tower computes it (same float arithmetic).
        indices, weights = _compat.interpolation(base.visual, grid_thw, m)
        row = self.full_grid_rows(grid_thw, regions, kwargs["position_ids"], m).to(indices.device)
        kwargs["interp_indices"], kwargs["interp_weights"] = indices[row], weights[row]
        return kwargs

    deepstack = True  # the tower also returns features of early blocks, added to the LLM's first layers

    def encode(self, base, pixel_values, grid_thw, regions):
        out = super().encode(base, pixel_values, grid_thw, regions)
        if self.deepstack:
            counts = [len(x) for x in out.pooler_output]
            out.deepstack_features = _compat.split_deepstack(out.deepstack_features, counts)
        return out


class Qwen3VLMoeFamily(Qwen3VLFamily):
    """Qwen3-VL-MoE: Qwen3-VL with a mixture-of-experts language model."""

    name = "Qwen3-VL-MoE"
    model_classes = (Qwen3VLMoeForConditionalGeneration, Qwen3VLMoeModel)
    base_class = Qwen3VLMoeModel


class Qwen3_5Family(Qwen3VLFamily):
    """Qwen3.5: the Qwen3-VL tower without deepstack; a hybrid (linear + full attention) LLM."""

    name = "Qwen3.5"
    model_classes = (Qwen3_5ForConditionalGeneration, Qwen3_5Model)
    base_class = Qwen3_5Model
    deepstack = False


class Qwen3_5MoeFamily(Qwen3_5Family):
    """Qwen3.5-MoE: Qwen3.5 with a mixture-of-experts language model."""

    name = "Qwen3.5-MoE"
    model_classes = (Qwen3_5MoeForConditionalGeneration, Qwen3_5MoeModel)
    base_class = Qwen3_5MoeModel


FAMILIES = (
    Qwen2VLFamily(),
    Qwen2_5VLFamily(),
    Qwen3VLFamily(),
    Qwen3VLMoeFamily(),
    Qwen3_5Family(),
    Qwen3_5MoeFamily(),
)


def family_of(model: object) -> Qwen2VLFamily:
    """The strategy for ``model``; TypeError for anything outside the supported Qwen-VL families."""
    for family in FAMILIES:
        if isinstance(model, family.model_classes):
            return family
    names = ", ".join(c.__name__ for f in FAMILIES for c in f.model_classes)
    raise TypeError(f"expected a Qwen-VL model ({names}), got {type(model).__name__}")
