"""Every touch of transformers internals the adapter makes, in one place.

Supported: transformers >= 5.16.1, < 5.25 (``SUPPORTED``). Each name below says what it relies on;
``tests/test_compat.py`` checks each against the installed transformers, so an upgrade that moves
one fails a test that names it instead of silently shifting tokens.

Methods the adapter overrides by name in stock subclasses (see ``processing.py``), with the
behaviour it relies on:

* image processors (torchvision and PIL backends): ``_preprocess(images, **kwargs)`` receives
  every keyword in ``PREPROCESS_KEYS`` and calls, per resized image group, the backend's
  ``rescale_and_normalize`` (torchvision) or ``rescale`` then ``normalize`` (PIL), then
  ``patchify(images, patch_size=, merge_size=, temporal_patch_size=)`` returning
  ``(rows, grid_h, grid_w)`` with rows laid out [unit_row][unit_col][mh][mw] x (C, tp, p, p);
  ``process_image(image, do_convert_rgb=, input_data_format=, device=, do_resize=, ...)``
  turns one input into a channels-first tensor (torchvision backend);
* video processors: ``_preprocess`` as above, rows [t][unit_row][unit_col][mh][mw];
* processors: ``replace_image_token(image_inputs, image_idx)`` /
  ``replace_video_token(video_inputs, video_idx)`` return one item's placeholder text;
  ``_get_num_multimodal_tokens(image_sizes=, video_sizes=, **kwargs)`` returns size-only counts;
* models: ``forward`` takes explicit M-RoPE ``position_ids`` (4, B, L) (text, t, h, w) and sets
  no ``rope_deltas`` of its own when given them; the vision tower ``visual(pixels, grid_thw=,
  **TOWER_KEYWORDS)`` takes precomputed rotary positions / segments / interpolation and
  returns ``pooler_output`` (and, Qwen3-VL, ``deepstack_features``) row-aligned with the units.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import transformers

SUPPORTED = (">=5.16.1", "<5.25")
"""The transformers versions the adapter is tested with (each release in between is supported)."""


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("+")[0].split(".")[:3] if part.isdigit())


def check_version(version: str = transformers.__version__) -> None:
    """ImportError for a transformers older than ``SUPPORTED`` (names it are missing there), a
    warning for a newer one (untested), both naming the supported range."""
    low, high = _version(SUPPORTED[0][2:]), _version(SUPPORTED[1][1:])
    found = _version(version)
    advice = f"entropy_prune.qwen supports transformers{','.join(SUPPORTED)}; found {version}."
    if found < low:
        raise ImportError(f"{advice} Upgrade: pip install 'transformers{','.join(SUPPORTED)}'")
    if found >= high:
        warnings.warn(
            f"{advice} Newer releases are untested: check token counts and keep-all outputs "
            f"before relying on them, or pip install 'transformers{','.join(SUPPORTED)}'",
            stacklevel=2,
        )


check_version()  # before the imports below, which older releases may lack

import transformers.image_transforms  # noqa: E402
from transformers import Qwen2VLModel  # noqa: E402
from transformers.image_processing_backends import TorchvisionBackend  # noqa: E402
from transformers.vision_utils import get_vision_interpolation_indices_and_weights  # noqa: E402

PREPROCESS_KEYS = (
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "patch_size",
    "merge_size",
    "temporal_patch_size",
    "return_tensors",
)
"""Keywords the stock ``_preprocess`` receives that the adapter reads: the rescale and
normalisation arguments (in the order the stock methods take them), the geometry, the tensor type."""
NORM_KEYS = PREPROCESS_KEYS[:5]

_QWEN3_TOWER = ("position_ids", "cu_seqlens", "interp_indices", "interp_weights")
TOWER_KEYWORDS = {
    "Qwen2-VL": ("position_ids", "cu_seqlens"),
    "Qwen2.5-VL": ("position_ids", "cu_seqlens", "window_index", "cu_window_seqlens"),
    **dict.fromkeys(("Qwen3-VL", "Qwen3-VL-MoE", "Qwen3.5", "Qwen3.5-MoE"), _QWEN3_TOWER),
}
"""Keywords through which each family's vision tower takes precomputed inputs instead of
deriving them from the full grid (``transformers.vision_utils`` reads them from ``kwargs``)."""

MM_ENCODER_OUTPUTS = "mm_encoder_outputs" in inspect.signature(Qwen2VLModel.forward).parameters
"""transformers >= 5.19: ``forward``/``generate`` take precomputed ``mm_encoder_outputs``
({"image"/"video": tower output}) whose ``pooler_output`` and (Qwen3-VL) every entry of
``deepstack_features`` are tuples of per-item tensors. Before 5.19 the stock ``forward`` calls
``get_image_features`` / ``get_video_features`` whenever pixels are passed and takes
``deepstack_features`` as whole tensors; :func:`encoder_outputs_call` bridges both."""


def is_torchvision_backend(image_processor: Any) -> bool:
    """The image processor runs the torchvision backend (``rescale_and_normalize`` on tensors)."""
    return isinstance(image_processor, TorchvisionBackend)


def rgb_array(image_processor: Any, image: Any, do_convert_rgb: bool | None) -> np.ndarray:
    """(H, W, C) array of a PIL image, converted to RGB as the torchvision backend's
    ``process_image`` converts it: transformers >= 5.23 composites transparency onto white
    (``image_transforms.convert_to_rgb(image, return_numpy=True)``); earlier versions call
    the processor's ``convert_to_rgb`` (PIL ``convert("RGB")``)."""
    if not do_convert_rgb:
        return np.array(image)
    if _CONVERT_TO_NUMPY:
        return transformers.image_transforms.convert_to_rgb(image, return_numpy=True)
    return np.array(image_processor.convert_to_rgb(image))


_CONVERT_TO_NUMPY = "return_numpy" in inspect.signature(transformers.image_transforms.convert_to_rgb).parameters


def set_valid_kwargs(processor: Any) -> None:
    """Image/video processors filter call kwargs by the instance list ``_valid_kwargs_names``,
    built from the class's ``valid_kwargs`` TypedDict at construction; refresh it for a
    processor whose class gained keys."""
    processor._valid_kwargs_names = list(processor.valid_kwargs.__annotations__)


def interpolation(
    visual: torch.nn.Module, grid_thw: torch.Tensor, merge_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen3-VL position-embedding interpolation (indices, weights) for every patch of the full
    grids, in the tower's row order, as the stock tower computes it (its attributes
    ``num_grid_per_side``, ``interpolation_mode``, ``interpolation_align_corners``)."""
    return get_vision_interpolation_indices_and_weights(
        grid_thw.to(visual.device),
        num_grid_per_side=visual.num_grid_per_side,
        mode=visual.interpolation_mode,
        align_corners=visual.interpolation_align_corners,
        spatial_merge_size=merge_size,
    )


def split_deepstack(features: list[torch.Tensor], counts: list[int]) -> list[Any]:
    """Qwen3-VL deepstack features as the installed ``forward`` consumes them: split per item
    (>= 5.19) or whole (earlier)."""
    return [torch.split(f, counts) for f in features] if MM_ENCODER_OUTPUTS else list(features)


@contextlib.contextmanager
def _features_returned(base: torch.nn.Module, mm: dict[str, Any]) -> Iterator[None]:
    """While open, ``base.get_image_features`` / ``get_video_features`` return the precomputed
    outputs in ``mm`` (instance attributes, removed on exit)."""
    names = [f"get_{name}_features" for name in mm]
    for name, out in zip(names, mm.values(), strict=True):
        setattr(base, name, lambda *args, _out=out, **kwargs: _out)
    try:
        yield
    finally:
        for name in names:
            base.__dict__.pop(name, None)


def encoder_outputs_call(method: Any, base: torch.nn.Module, kwargs: dict, expand: int = 1) -> Any:
    """Call the stock ``forward``/``generate`` ``method`` with ``kwargs["mm_encoder_outputs"]``
    ({"image"/"video": tower output}) on a transformers without that keyword (< 5.19): a
    zero-size tensor stands for each modality's pixels (so the stock code takes its multimodal
    branch) while ``base``'s feature getters return the precomputed outputs. ``expand``: how
    many sequences ``generate`` makes per prompt; there, more than one would split pixels by
    full grids, and is refused with a ValueError naming the version to upgrade to.
    """
    kwargs = dict(kwargs)
    mm = kwargs.pop("mm_encoder_outputs")
    if mm and expand > 1:
        raise ValueError(
            f"beam search or num_return_sequences > 1 on pruned inputs needs transformers >= 5.19 "
            f"(found {transformers.__version__}); upgrade transformers, or generate one sequence per prompt"
        )
    for name in mm:
        kwargs[_PIXEL_KEYS[name]] = torch.empty(0)
    with _features_returned(base, mm):
        return method(**kwargs)


_PIXEL_KEYS = {"image": "pixel_values", "video": "pixel_values_videos"}
