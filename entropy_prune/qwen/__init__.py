"""Qwen-VL adapter: prune image and video tokens before the vision encoder.

Needs ``pip install "entropy-prune[qwen]"``. Supported with transformers 5.23.0: Qwen2-VL,
Qwen2.5-VL and Qwen3-VL (``*ForConditionalGeneration`` and ``*Model``), images and videos, both
image-processor backends (torchvision and PIL). The family is detected from the objects.

    processor = wrap_processor(AutoProcessor.from_pretrained(path), patch_selection_method="budget", alpha=0.3)
    model = patch_model(AutoModelForImageTextToText.from_pretrained(path))
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    out = model.generate(**inputs)

Kept regions travel in the processor output as ``image_kept_regions`` / ``video_kept_regions``:
int64 (num_kept, 5) (item, level, t, row, col) in merge-unit coordinates; the pixel rows hold
merge_size^2 rows per kept region and each item gets one placeholder token per kept region.
"""

from .modeling import patch_model, prepare_inputs, unpatch_model
from .processing import REGIONS_KEY, SETTINGS, VIDEO_REGIONS_KEY, wrap_processor

__all__ = ["REGIONS_KEY", "SETTINGS", "VIDEO_REGIONS_KEY", "patch_model", "prepare_inputs", "unpatch_model", "wrap_processor"]
