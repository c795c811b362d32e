"""Per-family strategies: how a model family encodes kept units and places them in M-RoPE.

A strategy is told the kept regions of each visual item and returns vision features through the
public vision tower with precomputed rotary positions / attention segments, and per-item LLM
positions. Region geometry (merge size m, region side b = 2^(level-1) units):

* Vision tower: the unit standing for a region keeps its m x m patches one position apart (the
  spacing every unit had in training) and centres them on the region: patch (mh, mw) of a region
  whose top-left unit is (r, c) gets (h, w) = (m r + m (b-1)/2 + mh, m c + m (b-1)/2 + mw), which
  lies inside the sub-block of the region that patch averages. Level 1 gives the stock positions.
* LLM: the region's token gets (t, h, w) = (t, r + (b-1)//2, c + (b-1)//2) relative to the item
  start, i.e. the unit at (or just up-left of) the region centre. Text after the item continues
  from the full grid's extent, as for the unpruned item, so text positions never move.
* Drop mode keeps level-1 units only: their stock positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLModel,
    Qwen2VLProcessor,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

IMAGE_PROCESSOR_CLASSES = (Qwen2VLImageProcessor, Qwen2VLImageProcessorPil)
PROCESSOR_CLASSES = (Qwen2VLProcessor,)


@dataclass(frozen=True)
class VisualItem:
    """One image (or video) as the LLM sees it.

    Attributes:
        regions: int64 (n, 4) kept regions (level, t, row, col), merge-unit coordinates.
        positions: int64 (3, n) (t, h, w) LLM positions relative to the item start.
        extent: how far text after the item advances (stock: max(grid_h, grid_w) / m).
    """

    regions: torch.Tensor
    positions: torch.Tensor
    extent: int

    @property
    def num_tokens(self) -> int:
        return int(self.regions.shape[0])


class Qwen2VLFamily:
    """Qwen2-VL: full attention per frame in the vision tower, axial 2-D rotary positions."""

    name = "Qwen2-VL"
    model_classes = (Qwen2VLForConditionalGeneration, Qwen2VLModel)
    base_class = Qwen2VLModel

    def base(self, model: torch.nn.Module) -> torch.nn.Module:
        """The ``*Model`` holding ``visual``, ``language_model`` and ``rope_deltas``."""
        return model if isinstance(model, self.base_class) else model.model

    @staticmethod
    def merge_size(base: torch.nn.Module) -> int:
        return int(base.config.vision_config.spatial_merge_size)

    def item(self, base: torch.nn.Module, grid: tuple[int, int, int], regions: torch.Tensor) -> VisualItem:
        """LLM positions of an item's kept regions (level, t, row, col) (see the module docstring)."""
        m = self.merge_size(base)
        level, t, r, c = regions.unbind(1)
        off = ((1 << (level - 1)) - 1) // 2
        positions = torch.stack([t, r + off, c + off])
        return VisualItem(regions, positions, max(grid[1], grid[2]) // m)

    def vision_position_ids(self, base: torch.nn.Module, regions: torch.Tensor) -> torch.Tensor:
        """(n * m*m, 2) [h, w] rotary positions of the kept units' patches, rows in pixel order."""
        m = self.merge_size(base)
        level, r, c = regions[:, 1], regions[:, 3], regions[:, 4]
        off = (m * ((1 << (level - 1)) - 1)) // 2
        mh = torch.arange(m).repeat_interleave(m)
        mw = torch.arange(m).repeat(m)
        h = (m * r + off)[:, None] + mh[None]
        w = (m * c + off)[:, None] + mw[None]
        return torch.stack([h.reshape(-1), w.reshape(-1)], 1)

    def encode_images(
        self, base: torch.nn.Module, pixel_values: torch.Tensor, grid_thw: torch.Tensor, regions: torch.Tensor
    ) -> BaseModelOutputWithPooling:
        """Run the vision tower on kept units only.

        Args:
            pixel_values: (n * m*m, D) pruned rows, in ``regions`` order.
            grid_thw: (num_images, 3) full grids.
            regions: int64 (n, 5) validated (image, level, t, row, col).
        Returns:
            ``pooler_output``: tuple of (n_i, hidden) features per image.
        """
        m = self.merge_size(base)
        visual = base.visual
        device = visual.get_device()
        num_images = grid_thw.shape[0]
        position_ids = self.vision_position_ids(base, regions).to(device)
        # One attention segment per (image, frame), as in the stock tower; empty ones vanish.
        segment = regions[:, 0] * int(grid_thw[:, 0].max()) + regions[:, 2]
        _, seglens = torch.unique_consecutive(segment, return_counts=True)
        cu_seqlens = torch.nn.functional.pad((seglens * m * m).cumsum(0, dtype=torch.int32), (1, 0)).to(device)
        out = visual(
            pixel_values.to(device, visual.dtype),
            grid_thw=grid_thw.to(device),
            position_ids=position_ids,
            cu_seqlens=cu_seqlens,
        )
        counts = torch.bincount(regions[:, 0], minlength=num_images).tolist()
        out.pooler_output = torch.split(out.pooler_output, counts)
        return out


FAMILIES = (Qwen2VLFamily(),)


def family_of(model: object) -> Qwen2VLFamily:
    """The strategy for ``model``; TypeError for anything outside the supported Qwen-VL family."""
    for family in FAMILIES:
        if isinstance(model, family.model_classes):
            return family
    names = ", ".join(c.__name__ for f in FAMILIES for c in f.model_classes)
    raise TypeError(f"expected a Qwen-VL model ({names}), got {type(model).__name__}")
