"""Device checks (skipped without CUDA): the adapter on a GPU model with GPU inputs, fp32 and bf16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from entropy_prune.qwen import REGIONS_KEY, VIDEO_REGIONS_KEY, patch_model, wrap_processor  # noqa: E402
from entropy_prune.qwen.testing import FAMILIES, beams, make_model, make_processor, textured_image  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def batch(proc, family):
    images = [textured_image(112, 168, 0), textured_image(84, 84, 1)]
    videos = [np.stack([textured_image(84, 112, s) for s in range(5)]), np.stack([textured_image(56, 84, 9)] * 2)]
    contents = [
        [{"type": "image"}, {"type": "video"}, {"type": "image"}, {"type": "text", "text": "Describe."}],
        [{"type": "video"}, {"type": "text", "text": "And this?"}],
    ]
    texts = [proc.apply_chat_template([{"role": "user", "content": c}], add_generation_prompt=True) for c in contents]
    return proc(images=images, videos=videos, text=texts, return_tensors="pt", padding=True).to("cuda")


@pytest.mark.parametrize("family", FAMILIES)
def test_on_cuda(family):
    proc = make_processor(family=family)
    model = make_model(proc.tokenizer, family).to("cuda")
    stock = batch(proc, family)
    with torch.no_grad():
        reference = model(**stock).logits
    tokens = model.generate(**stock, max_new_tokens=3, do_sample=False)
    patch_model(model)
    keep_all = batch(wrap_processor(proc, alpha=1.0), family)
    with torch.no_grad():
        assert torch.equal(model(**keep_all).logits, reference)
    assert torch.equal(model.generate(**keep_all, max_new_tokens=3, do_sample=False), tokens)
    for dtype in (torch.float32, torch.bfloat16):
        model.to(dtype)
        for mode in ("multiscale", "drop"):
            pruned = batch(wrap_processor(proc, alpha=0.3, mode=mode), family)
            assert pruned[REGIONS_KEY].is_cuda and pruned[VIDEO_REGIONS_KEY].is_cuda
            with torch.no_grad():
                out = model(**pruned).logits
            assert out.is_cuda and torch.isfinite(out.float()).all()
            length = pruned["input_ids"].shape[1]
            out = beams(model, pruned)  # None where transformers < 5.19 refuses beams (checked inside)
            assert out is None or out.shape == (2, length + 3)


def test_processor_on_cuda():
    """The torchvision image processor run on the GPU (``device="cuda"``): keep-all is stock, and
    the pruned rows of full-resolution regions are the stock GPU rows of those units."""
    proc = make_processor("torchvision")
    images = [textured_image(112, 168, 0), textured_image(84, 84, 1)]
    stock = proc.image_processor(images, device="cuda", return_tensors="pt")
    keep_all = wrap_processor(proc, alpha=1.0).image_processor(images, device="cuda", return_tensors="pt")
    assert keep_all["pixel_values"].is_cuda and torch.equal(keep_all["pixel_values"], stock["pixel_values"])
    out = wrap_processor(proc, alpha=0.3).image_processor(images, device="cuda", return_tensors="pt")
    regions = out[REGIONS_KEY].cpu()
    assert out["pixel_values"].is_cuda and out["pixel_values"].shape[0] == 4 * len(regions)
    assert (regions[:, 1] > 1).any()
    grids = stock["image_grid_thw"].cpu()
    starts = torch.cumsum(grids.prod(-1), 0) - grids.prod(-1)
    for n, (i, level, _, r, c) in enumerate(regions.tolist()):
        if level == 1:
            unit = int(starts[i]) + 4 * (r * int(grids[i, 2]) // 2 + c)
            assert torch.equal(out["pixel_values"][4 * n : 4 * n + 4], stock["pixel_values"][unit : unit + 4])
