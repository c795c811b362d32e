"""Qwen-VL adapter: prune image tokens before the vision encoder (needs ``pip install entropy-prune[qwen]``).

Supported: Qwen2-VL (transformers 5.23.0), images, both image-processor backends.

    processor = wrap_processor(AutoProcessor.from_pretrained(path), patch_selection_method="budget", alpha=0.3)
    model = patch_model(Qwen2VLForConditionalGeneration.from_pretrained(path))
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    out = model.generate(**inputs)

Kept regions travel in the processor output as ``image_kept_regions``: int64 (num_kept, 5)
(image, level, t, row, col) in merge-unit coordinates; ``pixel_values`` holds 4 rows per kept
region and each image gets one ``<|image_pad|>`` per kept region.
"""

from .modeling import patch_model, prepare_inputs, unpatch_model
from .processing import REGIONS_KEY, SETTINGS, VIDEO_REGIONS_KEY, wrap_processor

__all__ = ["REGIONS_KEY", "SETTINGS", "VIDEO_REGIONS_KEY", "patch_model", "prepare_inputs", "unpatch_model", "wrap_processor"]
