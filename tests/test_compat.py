"""Contract tests: each transformers internal listed in ``entropy_prune.qwen._compat`` still behaves
as the adapter assumes on the installed release (run by CI on 5.16.1, 5.20.2 and 5.24.0)."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import PIL.Image
import pytest
import torch

pytest.importorskip("transformers")

from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil  # noqa: E402
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor  # noqa: E402

from entropy_prune.qwen import _compat  # noqa: E402
from entropy_prune.qwen._units import cut_regions  # noqa: E402
from entropy_prune.qwen.families import family_of, full_grid_regions  # noqa: E402
from entropy_prune.qwen.modeling import _mrope_positions  # noqa: E402
from entropy_prune.qwen.testing import (  # noqa: E402
    batch,
    family_media,
    make_model,
    make_processor,
    textured_image,
)


def test_version_check_names_the_range():
    _compat.check_version("5.16.1")
    _compat.check_version("5.24.0")
    with pytest.raises(ImportError, match=r"transformers>=5\.16\.1,<5\.25; found 5\.15\.1"):
        _compat.check_version("5.15.1")
    with pytest.warns(UserWarning, match=r"transformers>=5\.16\.1,<5\.25; found 5\.25\.0"):
        _compat.check_version("5.25.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _compat.check_version()  # the installed one is supported


class Recorder:
    """Records the image-processor methods the stock ``_preprocess`` calls, and its keywords."""

    inside = False  # within rescale_and_normalize, whose own steps the adapter never sees

    def _preprocess(self, *args, **kwargs):
        self.calls, self.keywords = [], kwargs
        return super()._preprocess(*args, **kwargs)

    def rescale_and_normalize(self, *args, **kwargs):
        self.calls.append("rescale_and_normalize")
        self.inside = True
        try:
            return super().rescale_and_normalize(*args, **kwargs)
        finally:
            self.inside = False

    def rescale(self, *args, **kwargs):
        self.calls += [] if self.inside else ["rescale"]
        return super().rescale(*args, **kwargs)

    def normalize(self, *args, **kwargs):
        self.calls += [] if self.inside else ["normalize"]
        return super().normalize(*args, **kwargs)

    def patchify(self, *args, **kwargs):
        self.calls.append("patchify")
        return super().patchify(*args, **kwargs)


@pytest.mark.parametrize("stock, steps", [
    (Qwen2VLImageProcessor, ["rescale_and_normalize", "patchify"]),
    (Qwen2VLImageProcessorPil, ["rescale", "normalize", "patchify"]),
])
def test_preprocess_keywords_and_call_order(stock, steps):
    """``_preprocess`` gets every keyword in PREPROCESS_KEYS and, per image, rescales, normalises,
    then patchifies (by keyword: patch_size, merge_size, temporal_patch_size)."""
    recorder = type("Recorded", (Recorder, stock), {})(size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 64})
    recorder([textured_image(84, 84, 0), textured_image(112, 56, 1)], return_tensors="pt")
    assert set(_compat.PREPROCESS_KEYS) <= set(recorder.keywords)
    assert recorder.calls == steps * 2
    assert _compat.is_torchvision_backend(recorder) == (stock is Qwen2VLImageProcessor)
    assert set(inspect.signature(stock.patchify).parameters) >= {"patch_size", "merge_size", "temporal_patch_size"}


@pytest.mark.parametrize("backend", ["torchvision", "pil"])
def test_patchify_row_layout(backend):
    """Stock rows are [unit_row][unit_col][mh][mw] x (C, tp, p, p): what the adapter cuts."""
    image_processor = make_processor(backend).image_processor
    image = textured_image(84, 112, 3)  # 28-aligned: no resampling
    out = image_processor(image, do_rescale=False, do_normalize=False, return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 6, 8]]
    raw = torch.from_numpy(image).permute(2, 0, 1)[None]
    regions = np.array([(1, r, c) for r in range(3) for c in range(4)])
    ours = cut_regions(raw, regions, m=2, p=14, tp=2)
    assert torch.equal(ours.to(out["pixel_values"].dtype), out["pixel_values"])


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "LA"])
def test_rgb_array_is_what_process_image_converts(mode):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)
    image = PIL.Image.fromarray(pixels, "RGBA").convert(mode)
    stock = Qwen2VLImageProcessor()
    expected = stock.process_image(image, do_convert_rgb=True)
    assert torch.equal(torch.from_numpy(_compat.rgb_array(stock, image, True)).permute(2, 0, 1), expected)
    unconverted = stock.process_image(image.convert("RGB"), do_convert_rgb=False)
    rgb = _compat.rgb_array(stock, image.convert("RGB"), False)
    assert torch.equal(torch.from_numpy(rgb).permute(2, 0, 1), unconverted)


def test_valid_kwargs_names_filter_call_kwargs():
    stock = Qwen2VLImageProcessor()
    assert stock._valid_kwargs_names == list(stock.valid_kwargs.__annotations__)
    _compat.set_valid_kwargs(stock)
    assert stock._valid_kwargs_names == list(stock.valid_kwargs.__annotations__)


def test_mm_encoder_outputs_flag_matches_the_signatures(family):
    name, _, model = family
    for cls in family_of(model).model_classes:
        assert ("mm_encoder_outputs" in inspect.signature(cls.forward).parameters) == _compat.MM_ENCODER_OUTPUTS


def test_deepstack_layout_matches_the_stock_getter():
    proc = make_processor(family="qwen3_vl")
    model = make_model(proc.tokenizer, "qwen3_vl")
    out = proc.image_processor([textured_image(64, 96, 0), textured_image(96, 64, 1)], return_tensors="pt")
    with torch.no_grad():
        stock = model.model.get_image_features(out["pixel_values"], out["image_grid_thw"], return_dict=True)
    counts = [len(x) for x in stock.pooler_output]
    whole = [torch.cat(f) if isinstance(f, tuple) else f for f in stock.deepstack_features]
    ours = _compat.split_deepstack(whole, counts)
    assert [type(f) for f in ours] == [type(f) for f in stock.deepstack_features]
    for a, b in zip(ours, stock.deepstack_features, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)) if isinstance(a, tuple) else torch.equal(a, b)


def perturbed(key: str, value: torch.Tensor) -> torch.Tensor:
    """A value of a tower keyword the tower must not ignore."""
    if key in ("cu_seqlens", "cu_window_seqlens"):  # one more segment boundary
        mid = (value[0] + value[-1]) // 2
        return torch.sort(torch.cat([value, mid.reshape(1).to(value.dtype)])).values
    if key == "window_index":
        return value.flip(0)
    if key == "interp_weights":
        return value.flip(-1)
    return value.roll(1, 0) if key == "interp_indices" else value + 1


def test_tower_reads_each_precomputed_keyword(family):
    """Full-grid keywords reproduce the stock tower exactly; changing any one changes the output."""
    name, proc, model = family
    strategy, base = family_of(model), model.model
    out = proc.image_processor([textured_image(112, 168, 0), textured_image(84, 84, 1)], return_tensors="pt")
    pixels, grid = out["pixel_values"], out["image_grid_thw"]
    kwargs = strategy.tower_kwargs(base, grid, full_grid_regions(grid, strategy.merge_size(base)))
    assert tuple(kwargs) == _compat.TOWER_KEYWORDS[strategy.name]
    with torch.no_grad():
        stock = base.visual(pixels, grid_thw=grid).pooler_output
        assert torch.equal(base.visual(pixels, grid_thw=grid, **kwargs).pooler_output, stock)
        for key in kwargs:
            changed = base.visual(pixels, grid_thw=grid, **{**kwargs, key: perturbed(key, kwargs[key])}).pooler_output
            assert not torch.equal(changed, stock), key


def test_mrope_positions_equal_stock_get_rope_index(family):
    """On full grids (images and videos, a left-padded batch) the adapter's M-RoPE positions are the
    stock ``get_rope_index``'s."""
    name, proc, model = family
    inputs = batch(proc, family_media(name))
    assert (inputs["attention_mask"] == 0).any()
    strategy, base = family_of(model), model.model
    m = strategy.merge_size(base)
    items, token_ids = {}, {}
    for code, modality in ((1, "image"), (2, "video")):
        grid = inputs[f"{modality}_grid_thw"]
        items[code] = strategy.items(base, modality, grid, full_grid_regions(grid, m), inputs)
        token_ids[code] = getattr(base.config, f"{modality}_token_id")
    ours, deltas = _mrope_positions(inputs["input_ids"], inputs["attention_mask"], token_ids, items)
    names = inspect.signature(base.get_rope_index).parameters
    stock, stock_deltas = base.get_rope_index(**{k: v for k, v in inputs.items() if k in names})
    mask = inputs["attention_mask"].bool()
    assert torch.equal(ours[1:][:, mask], stock[:, mask])
    assert torch.equal(deltas.reshape(-1), stock_deltas.reshape(-1))
