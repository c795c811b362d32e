"""Shared setup for the Qwen-VL benchmarks: real photographs, processors, argument types."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from entropy_prune import Selection

ROOT = Path(__file__).resolve().parents[1]

# Qwen2-VL's own max_pixels (16384 units of 28 px): 4 MP images are not downscaled.
MAX_PIXELS = 16384 * 28 * 28
MIN_PIXELS = 56 * 56
DOWNSCALE = {"fit": True, "least_error": "least_error", "balanced": "balanced"}
"""The benchmarks' ``--downscale`` choices -> the wrapped processor's ``downscale``."""
PHOTOS = ("astronaut", "coffee", "retina")


def photo(name: str, megapixels: float) -> tuple[np.ndarray, str]:
    """uint8 (H, W, 3) skimage photograph ``name`` resized (bicubic, aspect kept) to ~``megapixels`` MP.

    Without scikit-image the bundled 448 px astronaut is used instead. Returns (image, source name).
    """
    try:
        from skimage import data

        img, source = getattr(data, name)(), name
    except ImportError:
        bundled = ROOT / "entropy_prune" / "data" / "astronaut.jpg"
        img, source = np.asarray(Image.open(bundled).convert("RGB")), "bundled astronaut"
    h, w = img.shape[:2]
    scale = (megapixels * 1e6 / (h * w)) ** 0.5
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.array(Image.fromarray(img[..., :3]).convert("RGB").resize(size, Image.BICUBIC)), source


def page(megapixels: float) -> tuple[np.ndarray, str]:
    """uint8 (H, W, 3) text page of ~``megapixels`` MP (7:5 portrait, body text 13 px, Pillow's
    bundled font: ``benchmarks._documents``). Returns (image, source name)."""
    from benchmarks._documents import render_page

    w = max(1, round((megapixels * 1e6 / 1.4) ** 0.5))
    return np.array(render_page("body", round(1.4 * w), w, 13).image), "rendered body page"


def shrunk(img: np.ndarray, alpha: float, unit: int = 28, min_pixels: int = MIN_PIXELS,
           downscale: bool | str = True, **library) -> tuple[np.ndarray, Selection]:
    """The wrapped processor's ``downscale`` (True, "least_error" or "balanced") on a resized uint8 (H, W, 3)
    image: shrunk by the adapter's own ``shrink_and_select`` and selected there at the budget of
    (H, W) (``library``: more ``select_patches`` keywords, e.g. tolerance). Returns (uint8 (h, w, 3)
    shrunk image, its Selection)."""
    import torch

    from entropy_prune import select_patches
    from entropy_prune.qwen._downscale import shrink_and_select
    from entropy_prune.qwen._prune import removed_units

    tolerance = library.get("tolerance")
    raw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))

    def removed(x: torch.Tensor) -> np.ndarray | None:
        return None if tolerance is None else removed_units(x.numpy(), tolerance, unit)

    def select(x: torch.Tensor, a: float, gone: np.ndarray | None):
        return select_patches(x.numpy(), "budget", a, patch_size=unit, channels_first=True, **library)

    small, sel = shrink_and_select(raw, downscale, removed, select, lambda x: x.numpy(), alpha, unit, min_pixels)
    return np.ascontiguousarray(small.numpy().transpose(1, 2, 0)), sel


def scaled_back(small: np.ndarray, sel: Selection, size: tuple[int, int], unit: int = 28) -> np.ndarray:
    """:func:`shrunk`'s image and selection shown by ``reconstruct`` and scaled back to ``size``
    (H, W) (bilinear, as the uniform baselines)."""
    from entropy_prune import reconstruct

    return np.asarray(Image.fromarray(reconstruct(small, sel, unit)).resize(size[::-1], Image.BILINEAR))


def downscaled(img: np.ndarray, alpha: float, unit: int = 28, min_pixels: int = MIN_PIXELS,
               downscale: bool | str = True, **library) -> tuple[np.ndarray, int]:
    """:func:`shrunk`'s selection of ``img`` shown at its size (:func:`scaled_back`). Returns
    (shown image, tokens)."""
    small, sel = shrunk(img, alpha, unit, min_pixels, downscale, **library)
    return scaled_back(small, sel, img.shape[:2], unit), sel.num_tokens


def make_stock_processor(backend: str, max_pixels: int = MAX_PIXELS):
    """Stock ``Qwen2VLProcessor`` with Qwen2-VL's image settings (14 px patches, merge 2, CLIP
    mean/std), the given image backend ("pil" or "torchvision") and ``max_pixels``, and the
    in-memory tokenizer and chat template of :mod:`entropy_prune.qwen.testing`."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from entropy_prune.qwen.testing import CHAT_TEMPLATE, make_tokenizer

    size = {"shortest_edge": MIN_PIXELS, "longest_edge": max_pixels}
    image_cls = {"torchvision": Qwen2VLImageProcessor, "pil": Qwen2VLImageProcessorPil}[backend]
    return Qwen2VLProcessor(
        image_processor=image_cls(size=dict(size)),
        tokenizer=make_tokenizer(),
        video_processor=Qwen2VLVideoProcessor(size=dict(size)),
        chat_template=CHAT_TEMPLATE,
    )


def prompt(processor, question: str = "Describe this image.") -> str:
    """Chat-formatted text with one image placeholder and a generation prompt."""
    content = [{"type": "image"}, {"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def image_tokens(output) -> int:
    """Image tokens the LLM sees in a processor output: its kept regions when pruned, else the
    full grids' merge units (2 x 2 patches)."""
    from entropy_prune.qwen import REGIONS_KEY

    if REGIONS_KEY in output:
        return len(output[REGIONS_KEY])
    return int(output["image_grid_thw"].prod(-1).sum()) // 4


# argparse types shared by the benchmarks
def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def unit_float(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value
