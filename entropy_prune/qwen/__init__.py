"""Qwen-VL adapter: prune image and video tokens before the vision encoder.

Needs ``pip install "entropy-prune[qwen]"``. Supported with transformers >= 5.16.1, < 5.25: Qwen2-VL,
Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE, Qwen3.5 and Qwen3.5-MoE (``*ForConditionalGeneration`` and
``*Model``), images and videos, both image-processor backends (torchvision and PIL). The family is
detected from the objects.

    processor = wrap_processor(AutoProcessor.from_pretrained(path), patch_selection_method="budget", alpha=0.3)
    model = patch_model(AutoModelForImageTextToText.from_pretrained(path))
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    out = model.generate(**inputs)

Kept regions travel in the processor output as ``image_kept_regions`` / ``video_kept_regions``:
int64 (num_kept, 7) (item, level, t, row, col, h, w) in merge-unit coordinates; the pixel rows hold
merge_size^2 rows per kept region and each item gets one placeholder token per kept region.
"""

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ImportError as err:  # the core needs neither; say how to get the adapter's extra
    raise ImportError("entropy_prune.qwen needs torch and transformers: pip install 'entropy-prune[qwen]'") from err

from ._compat import SUPPORTED  # noqa: E402  (checks the transformers version first)
from .modeling import patch_model, prepare_inputs, unpatch_model  # noqa: E402
from .processing import REGIONS_KEY, SETTINGS, VIDEO_REGIONS_KEY, wrap_processor  # noqa: E402

__all__ = [
    "REGIONS_KEY",
    "SETTINGS",
    "SUPPORTED",
    "VIDEO_REGIONS_KEY",
    "patch_model",
    "prepare_inputs",
    "unpatch_model",
    "wrap_processor",
]
