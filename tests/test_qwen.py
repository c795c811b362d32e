"""Qwen2-VL adapter: offline tiny random model, in-memory tokenizer, both image-processor backends."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernels import kernels, needs_numba

pytest.importorskip("transformers")

from transformers import AutoProcessor  # noqa: E402

from entropy_prune import _compiled, select_patches  # noqa: E402
from entropy_prune.qwen import (  # noqa: E402
    REGIONS_KEY,
    VIDEO_REGIONS_KEY,
    patch_model,
    prepare_inputs,
    unpatch_model,
    wrap_processor,
)
from entropy_prune.qwen._compat import MM_ENCODER_OUTPUTS  # noqa: E402
from entropy_prune.qwen._units import cut_regions  # noqa: E402
from entropy_prune.qwen.testing import (  # noqa: E402
    beams,
    greedy,
    logits,
    make_model,
    make_processor,
    textured_image,
)

BACKENDS = ("torchvision", "pil")
PROMPTS = [
    [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare these two."}],
    [{"type": "image"}, {"type": "text", "text": "What is it?"}],
]


@pytest.fixture(scope="module")
def processors():
    return {b: make_processor(b) for b in BACKENDS}


@pytest.fixture(scope="module")
def model(processors):
    return make_model(processors["torchvision"].tokenizer)


@pytest.fixture
def patched(model):
    patch_model(model)
    yield model
    unpatch_model(model)


@pytest.fixture(scope="module")
def images():
    # Three sizes; the processor resizes them to 4x6, 3x3 and 5x2 merge units.
    return [textured_image(112, 168, 0), textured_image(84, 84, 1), textured_image(140, 56, 2)]


@pytest.fixture(scope="module")
def texts(processors):
    proc = processors["torchvision"]
    return [proc.apply_chat_template([{"role": "user", "content": c}], add_generation_prompt=True) for c in PROMPTS]


def run(proc, images, texts, **kwargs):
    return proc(images=images, text=texts, return_tensors="pt", padding=True, **kwargs)


def item_frames(rows, grid, p=14, m=2):
    """One image's stock rows (grid (1, h, w) patches) -> its (2, 3, H, W) frames (the temporal copies)."""
    _, h, w = (int(v) for v in grid)
    x = torch.as_tensor(rows).reshape(h // m, w // m, m, m, 3, 2, p, p)  # (hu, wu, mh, mw, C, T, ph, pw)
    return x.permute(5, 4, 0, 2, 6, 1, 3, 7).reshape(2, 3, h * p, w * p)


def raw_images(proc, images):
    """Resized uint8 images as the stock processor produced them, rebuilt from un-normalised rows
    (independent of the adapter's de-normalisation)."""
    out = proc.image_processor(images, do_rescale=False, do_normalize=False, return_tensors="pt")
    p, m = proc.image_processor.patch_size, proc.image_processor.merge_size
    rows, start, result = out["pixel_values"], 0, []
    for grid in out["image_grid_thw"].tolist():
        n = grid[0] * grid[1] * grid[2]
        x = item_frames(rows[start : start + n], grid, p, m)[0].permute(1, 2, 0)
        start += n
        result.append(x.round().to(torch.uint8).numpy())
    return result


# ---------------------------------------------------------------- keep-all equals stock


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "settings",
    [
        dict(patch_selection_method=None),
        dict(patch_selection_method="none"),
        dict(patch_selection_method="budget", alpha=1.0),
    ],
)
def test_keep_all_equals_stock(processors, patched, images, texts, backend, settings):
    proc = processors[backend]
    stock = run(proc, images, texts)
    assert (stock["attention_mask"] == 0).any(), "the batch must exercise left padding"
    unpatch_model(patched)
    ref_logits, ref_tokens = logits(patched, stock), greedy(patched, stock)
    patch_model(patched)
    ours = run(wrap_processor(proc, **settings), images, texts)
    if settings["patch_selection_method"] in (None, "none"):
        assert set(ours) == set(stock)
        assert all(torch.equal(ours[k], stock[k]) for k in stock)
    else:
        assert torch.equal(ours["pixel_values"], stock["pixel_values"])
        assert torch.equal(ours["input_ids"], stock["input_ids"])
        assert (ours[REGIONS_KEY][:, 1] == 1).all()
    assert torch.equal(logits(patched, ours), ref_logits)
    assert torch.equal(greedy(patched, ours), ref_tokens)


# ---------------------------------------------------------------- channels-last resize


@settings(max_examples=30, deadline=None)
@given(
    st.integers(20, 90), st.integers(20, 90), st.integers(20, 120), st.integers(20, 120),
    st.sampled_from(["BICUBIC", "BILINEAR", "NEAREST", "LANCZOS"]), st.integers(0, 2**32 - 1),
)
def test_uint8_resize_is_the_same_on_channels_last_pixels(h, w, new_h, new_w, mode, seed):
    """What the wrapped torchvision processor relies on to skip the stock channels-first copy."""
    tvF = pytest.importorskip("torchvision.transforms.v2.functional")
    hwc = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    kw = dict(interpolation=getattr(tvF.InterpolationMode, mode), antialias=True)
    try:
        first = tvF.resize(hwc.permute(2, 0, 1).contiguous(), [new_h, new_w], **kw)
    except NotImplementedError:  # a mode this torchvision lacks for tensors (Lanczos in 0.21)
        with pytest.raises(NotImplementedError):
            tvF.resize(hwc.permute(2, 0, 1), [new_h, new_w], **kw)
        return
    last = tvF.resize(hwc.permute(2, 0, 1), [new_h, new_w], **kw)
    assert torch.equal(first, last)


@pytest.mark.parametrize(
    "settings", [dict(patch_selection_method=None), dict(patch_selection_method="budget", alpha=1.0)]
)
def test_resized_inputs_of_every_kind_equal_stock(processors, texts, settings):
    """numpy and PIL (RGB, RGBA, gray) images that the torchvision processor really resizes (sides
    not multiples of 28 px) give the stock rows; the caller's array is neither changed nor shared."""
    from PIL import Image

    proc = processors["torchvision"]
    base = textured_image(101, 150, 3)
    array = base.copy()
    rgba = np.dstack([textured_image(90, 70, 4), np.full((90, 70), 200, np.uint8)])
    cases = [  # three images each, as the two prompts of ``texts`` take
        [array, Image.fromarray(textured_image(75, 120, 5)), Image.fromarray(rgba)],
        [Image.fromarray(textured_image(66, 99, 6)[..., 0]), textured_image(90, 61, 7), array],
    ]
    for images in cases:
        stock = run(proc, images, texts)
        ours = run(wrap_processor(proc, **settings), images, texts)
        assert torch.equal(ours["pixel_values"], stock["pixel_values"])
        assert torch.equal(ours["input_ids"], stock["input_ids"])
    assert np.array_equal(array, base)
    assert not np.shares_memory(ours["pixel_values"].numpy(), array)


# ---------------------------------------------------------------- pruned budgets


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["multiscale", "drop"])
def test_budget_counts_match_core_and_features(processors, patched, images, texts, backend, mode):
    proc = processors[backend]
    wrapped = wrap_processor(proc, patch_selection_method="budget", alpha=0.3, mode=mode)
    inputs = run(wrapped, images, texts)
    regions = inputs[REGIONS_KEY]
    per_image = torch.bincount(regions[:, 0], minlength=len(images)).tolist()
    selections = [
        select_patches(img, method="budget", alpha=0.3, patch_size=28, mode=mode) for img in raw_images(proc, images)
    ]
    core = [sel.num_tokens for sel in selections]
    for i, sel in enumerate(selections):  # scored on exactly the resized image the processor made
        assert regions[regions[:, 0] == i][:, [1, 3, 4]].tolist() == sel.regions.tolist()
    features = [len(f) for f in prepare_inputs(patched, inputs)["mm_encoder_outputs"]["image"].pooler_output]
    image_id = patched.config.image_token_id
    pads = (inputs["input_ids"] == image_id).sum(1).tolist()
    assert per_image == core == features
    assert pads == [core[0] + core[1], core[2]]
    assert inputs["pixel_values"].shape[0] == 4 * sum(core)
    assert torch.equal(inputs["image_grid_thw"], run(proc, images, texts)["image_grid_thw"])
    out = logits(patched, inputs)
    assert out.shape[:2] == inputs["input_ids"].shape and torch.isfinite(out).all()
    length = inputs["input_ids"].shape[1]
    assert greedy(patched, inputs).shape == (2, length + 3)
    out = beams(patched, inputs)
    assert out is None or out.shape == (2, length + 3)


def test_pruning_reduces_prompt(processors, images, texts):
    proc = processors["torchvision"]
    stock, ours = run(proc, images, texts), run(wrap_processor(proc), images, texts)
    assert ours["attention_mask"].sum() < stock["attention_mask"].sum()
    assert ours["pixel_values"].shape[0] < stock["pixel_values"].shape[0]


def test_unpruned_video_alongside_pruned_images(processors, patched, images):
    proc = processors["torchvision"]
    video = np.stack([textured_image(84, 112, s) for s in range(4)])
    content = [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "and?"}]
    text = [proc.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)]
    stock = proc(images=images[:1], videos=[video], text=text, return_tensors="pt")
    unpatch_model(patched)
    reference = logits(patched, stock)
    patch_model(patched)
    keep_all = wrap_processor(proc, alpha=1.0)(images=images[:1], videos=[video], text=text, return_tensors="pt")
    assert torch.equal(logits(patched, keep_all), reference)
    pruned = wrap_processor(proc, alpha=0.3)(
        images=images[:1], videos=[video], text=text, return_tensors="pt",
        videos_kwargs={"patch_selection_method": None},
    )
    assert torch.equal(pruned["pixel_values_videos"], stock["pixel_values_videos"]) and VIDEO_REGIONS_KEY not in pruned
    assert len(pruned[REGIONS_KEY]) < len(keep_all[REGIONS_KEY])
    out = beams(patched, pruned)
    assert out is None or out.shape[1] == pruned["input_ids"].shape[1] + 3


def test_size_only_token_counts_refused_while_pruning(processors):
    proc = processors["torchvision"]
    stock = proc._get_num_multimodal_tokens(image_sizes=[(112, 168)])
    keep_all = wrap_processor(proc, patch_selection_method=None)
    assert keep_all._get_num_multimodal_tokens(image_sizes=[(112, 168)]) == stock
    with pytest.raises(ValueError, match="content"):
        wrap_processor(proc)._get_num_multimodal_tokens(image_sizes=[(112, 168)])


# ---------------------------------------------------------------- positions, independent of our code


def top_rows_image(k: int, rows: int, cols: int) -> np.ndarray:
    """Noise in the top k unit rows, flat grey below; exactly (28 rows, 28 cols) px."""
    img = np.full((28 * rows, 28 * cols, 3), 90, dtype=np.uint8)
    img[: 28 * k] = np.random.default_rng(7).integers(0, 256, (28 * k, 28 * cols, 3))
    return img


@pytest.mark.parametrize("backend", BACKENDS)
def test_drop_top_rows_equals_stock_on_cropped_grid(processors, patched, backend):
    proc = processors[backend]
    k, rows, cols = 2, 4, 6
    image = top_rows_image(k, rows, cols)
    assert np.array_equal(raw_images(proc, [image])[0], image)  # already 28-aligned: no resampling
    text = [proc.apply_chat_template([{"role": "user", "content": PROMPTS[1]}], add_generation_prompt=True)]
    wrapped = wrap_processor(proc, patch_selection_method="budget", alpha=k / rows, mode="drop")
    ours = run(wrapped, [image], text)
    expected = [[0, 1, 0, r, c, 1, 1] for r in range(k) for c in range(cols)]
    assert ours[REGIONS_KEY].tolist() == expected
    stock_full = run(proc, [image], text)
    assert torch.equal(stock_full["image_grid_thw"], torch.tensor([[1, 2 * rows, 2 * cols]]))
    cropped = dict(ours)
    del cropped[REGIONS_KEY]
    cropped["image_grid_thw"] = torch.tensor([[1, 2 * k, 2 * cols]])
    assert torch.equal(ours["pixel_values"], stock_full["pixel_values"][: 4 * k * cols])
    unpatch_model(patched)
    reference = logits(patched, cropped)
    patch_model(patched)
    assert torch.equal(logits(patched, ours), reference)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "settings",
    [
        dict(patch_selection_method=None, tolerance=0),
        dict(patch_selection_method="budget", alpha=0.5, tolerance=0),
        dict(patch_selection_method="budget", alpha=0.3, mode="drop", tolerance=2),
    ],
)
def test_tolerance_removes_predictable_units(processors, patched, texts, backend, settings):
    """Predictable units are left out as the core selects them on the resized image; kept
    level-1 units are the stock rows; the model runs on the result."""
    proc = processors[backend]
    images = [top_rows_image(1, 4, 6), textured_image(84, 84, 1), top_rows_image(2, 3, 3)]
    stock = run(proc, images, texts)
    wrapped = wrap_processor(proc, **settings)
    ours = run(wrapped, images, texts)
    regions = ours[REGIONS_KEY]
    core_kw = {k: v for k, v in settings.items() if k != "patch_selection_method"}
    stock_rows, start, ours_start, total = stock["pixel_values"], 0, 0, 0
    for i, (raw, grid) in enumerate(zip(raw_images(proc, images), stock["image_grid_thw"].tolist(), strict=True)):
        sel = select_patches(raw, settings["patch_selection_method"], patch_size=28, **core_kw)
        mine = regions[regions[:, 0] == i]
        assert mine[:, [1, 3, 4]].tolist() == sel.regions.tolist()
        assert sel.predicted.any() or i == 1  # the flat images lose units, the gradient one need not
        n = grid[1] * grid[2]
        units = stock_rows[start : start + n].reshape(grid[1] // 2, grid[2] // 2, 4, -1)
        rows = ours["pixel_values"][ours_start : ours_start + 4 * len(mine)].reshape(len(mine), 4, -1)
        for (_, level, _, r, c, _, _), row in zip(mine.tolist(), rows, strict=True):
            if level == 1:
                assert torch.equal(row, units[r, c])
        start, ours_start, total = start + n, ours_start + 4 * len(mine), total + n // 4
    assert len(regions) < total
    assert torch.equal(ours["image_grid_thw"], stock["image_grid_thw"])
    assert (ours["input_ids"] == patched.config.image_token_id).sum() == len(regions)
    assert torch.isfinite(logits(patched, ours)).all()
    per_call = run(wrap_processor(proc), images, texts, images_kwargs=settings)
    assert torch.equal(per_call[REGIONS_KEY], regions) and torch.equal(per_call["pixel_values"], ours["pixel_values"])
    with pytest.raises(ValueError, match="content"):
        wrapped._get_num_multimodal_tokens(image_sizes=[(112, 168)])


def stock_frames(out):
    """Stock image output of one image -> its (T, C, H, W) frames, float64."""
    return item_frames(out["pixel_values"], out["image_grid_thw"][0]).numpy().astype(np.float64)


def expected_units(full, regions, unit=28):
    """Rows each region should get: its block of ``full`` area-averaged down to one unit."""
    for _, _, _, r, c, bh, bw in regions.tolist():
        block = full[:, :, r * unit : (r + bh) * unit, c * unit : (c + bw) * unit]
        small = block.reshape(2, 3, unit, bh, unit, bw).mean(axis=(3, 5))  # (T, C, 28, 28)
        yield small.reshape(2, 3, 2, 14, 2, 14).transpose(2, 4, 1, 0, 3, 5).reshape(4, -1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_scales, alpha, shapes", [(3, 0.2, "squares"), (5, 0.035, "squares"),
                                                       (3, 0.2, "halves"), (5, 0.035, "halves")])
def test_coarse_region_is_area_average(processors, images, backend, num_scales, alpha, shapes):
    """Coarse units (also 16 x 16 blocks, whose 8-bit pixel sums outgrow int16, and halves'
    oblong regions) are the area average of the stock normalised pixels; every level-1 row is
    bit-identical to its stock row."""
    proc = processors[backend]
    big = np.tile(images[0], (4, 3, 1))  # 16 x 18 units: a block of 16 x 16 units exists
    kw = dict(size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 288}, return_tensors="pt")
    wrapped = wrap_processor(proc, patch_selection_method="budget", alpha=alpha, num_scales=num_scales, shapes=shapes)
    out = wrapped.image_processor([big], **kw)
    full = stock_frames(proc.image_processor([big], **kw))
    regions = out[REGIONS_KEY]
    assert (regions[:, 1] == num_scales).any()
    oblong = regions[:, 5] != regions[:, 6]
    assert oblong.any() == (shapes == "halves")
    if shapes == "halves":  # oblong regions cut from pixels (1 x 2, 2 x 1: here at 3 scales) and from 2 x 2 px sums
        short = regions[oblong, 5:].min(1).values
        assert (short > 1).any() and ((short == 1).any() or num_scales == 5)
    for n, expect in enumerate(expected_units(full, regions)):
        got = out["pixel_values"][4 * n : 4 * n + 4].numpy()
        if regions[n, 1] == 1:
            assert np.array_equal(got, expect.astype(np.float32))
        else:
            np.testing.assert_allclose(got, expect, rtol=0, atol=1e-5)


@needs_numba
@pytest.mark.parametrize("channels_last", [False, True])
@given(st.integers(1, 2), st.sampled_from([1, 3]), st.integers(1, 9), st.integers(1, 9), st.integers(1, 4),
       st.sampled_from(["squares", "halves"]), st.floats(0.05, 1.0), st.integers(0, 2**32 - 1))
def test_compiled_cut_is_the_torch_cut_bit_for_bit(channels_last, frames, channels, rows, cols, k, shapes, alpha,
                                                   seed):
    """8-bit frames (1 or 2, planar or channels-last memory) cut in one compiled pass give the torch
    path's rows exactly, for squares of every level and halves; regions past the frames' edge and
    float frames are left to torch."""
    rng = np.random.default_rng(seed)
    m, p = 2, 2
    s = m * p
    shape = (frames, rows * s, cols * s, channels)  # whole units, as the processor resizes
    pixels = (rng.integers(0, 4, shape) * 85).astype(np.uint8)  # few levels: flat areas and ties
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2)  # channels-last memory
    x = x if channels_last else x.contiguous()
    sel = select_patches(x[0].numpy(), "budget", alpha, patch_size=s, num_scales=k, channels_first=True, shapes=shapes)
    regions, sizes = np.asarray(sel.regions, np.int64), np.asarray(sel.sizes)
    assert _compiled.cut_units(x.numpy(), regions[:, 1], regions[:, 2], sizes, s) is not None
    compiled = cut_regions(x, regions, m, p, 2, None, sizes)
    with kernels(False):
        assert torch.equal(compiled, cut_regions(x, regions, m, p, 2, None, sizes))
        assert torch.equal(compiled, cut_regions(x, regions, m, p, 2, None, None if shapes == "squares" else sizes))
    assert _compiled.cut_units(x.numpy().astype(np.float32), regions[:, 1], regions[:, 2], sizes, s) is None
    assert _compiled.cut_units(x.numpy()[..., :-1], regions[:, 1], regions[:, 2], sizes, s) is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_pixels_without_rescale_or_normalisation(processors, images, backend):
    """do_rescale=False, do_normalize=False: the stock rows are the 8-bit pixel values (torchvision:
    uint8; PIL: float32); pruned rows keep that dtype, level-1 rows equal the stock ones and
    coarse units are area means (rounded in uint8)."""
    proc = processors[backend]
    kw = dict(do_rescale=False, do_normalize=False, return_tensors="pt")
    stock = proc.image_processor(images[:1], **kw)
    out = wrap_processor(proc, alpha=0.3).image_processor(images[:1], **kw)
    assert out["pixel_values"].dtype == stock["pixel_values"].dtype
    keep_all = wrap_processor(proc, alpha=1.0).image_processor(images[:1], **kw)
    assert torch.equal(keep_all["pixel_values"], stock["pixel_values"])
    regions = out[REGIONS_KEY]
    assert (regions[:, 1] > 1).any()
    integer = not stock["pixel_values"].is_floating_point()
    assert integer == (backend == "torchvision")
    for n, expect in enumerate(expected_units(stock_frames(stock), regions)):
        got = out["pixel_values"][4 * n : 4 * n + 4].double().numpy()
        np.testing.assert_allclose(got, np.round(expect) if integer else expect, rtol=0, atol=0 if integer else 1e-4)


def test_integer_video_rows_without_rescale_or_normalisation(processors):
    """Videos whose stock rows are uint8 (no rescale, no normalisation): pruned rows stay uint8,
    keep-all is stock and full-resolution rows are the stock rows of their units."""
    proc = processors["torchvision"]
    video = np.stack([textured_image(84, 112, s) for s in range(4)])
    kw = dict(do_rescale=False, do_normalize=False, return_tensors="pt")
    stock = proc.video_processor([video], **kw)
    keep_all = wrap_processor(proc, alpha=1.0).video_processor([video], **kw)
    assert torch.equal(keep_all["pixel_values_videos"], stock["pixel_values_videos"])
    out = wrap_processor(proc, alpha=0.3).video_processor([video], **kw)
    rows, regions = out["pixel_values_videos"], out[VIDEO_REGIONS_KEY]
    assert rows.dtype == torch.uint8 and (regions[:, 1] > 1).any()
    t, h, w = stock["video_grid_thw"][0].tolist()
    for n, (_, level, ti, r, c, _, _) in enumerate(regions.tolist()):
        if level == 1:
            unit = ti * h * w + 4 * (r * (w // 2) + c)
            assert torch.equal(rows[4 * n : 4 * n + 4], stock["pixel_values_videos"][unit : unit + 4])


@pytest.mark.parametrize("shapes", ["squares", "halves"])
def test_positions_of_coarse_regions(processors, model, images, texts, shapes):
    """LLM positions follow the documented rule: region (r, c) of bh x bw units ->
    (r + (bh-1)//2, c + (bw-1)//2) offset by the text before it, and text continues after
    max(grid) / 2 units."""
    proc = processors["torchvision"]
    inputs = run(wrap_processor(proc, alpha=0.3, shapes=shapes), images[:1], texts[1:])
    pos = prepare_inputs(model, inputs)["position_ids"]
    ids = inputs["input_ids"][0]
    is_img = ids == model.config.image_token_id
    start = int(is_img.nonzero()[0])
    regions = inputs[REGIONS_KEY]
    assert (regions[:, 5] != regions[:, 6]).any() == (shapes == "halves")
    off_r, off_c = (regions[:, 5] - 1) // 2, (regions[:, 6] - 1) // 2
    expect = torch.stack([torch.zeros_like(off_r), regions[:, 3] + off_r, regions[:, 4] + off_c]) + start
    assert torch.equal(pos[1:, 0, is_img], expect)
    assert torch.equal(pos[0, 0], torch.arange(ids.numel()))
    after = int(is_img.nonzero()[-1]) + 1
    _, gh, gw = inputs["image_grid_thw"][0].tolist()
    assert (pos[1:, 0, after] == start + max(gh, gw) // 2).all()


@pytest.mark.parametrize("shapes", ["squares", "halves"])
def test_vision_positions_of_coarse_units(processors, model, images, texts, shapes):
    """Each patch of a coarse unit sits inside the sub-block of its region that it averages, one
    position from its neighbours (the in-unit spacing of training); level 1 keeps stock positions."""
    captured = {}

    def hook(module, args, kwargs):
        captured.update(kwargs)

    handle = model.model.visual.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        inputs = run(wrap_processor(processors["torchvision"], alpha=0.3, shapes=shapes), images, texts)
        prepare_inputs(model, inputs)
    finally:
        handle.remove()
    pos = captured["position_ids"].reshape(-1, 2, 2, 2)  # (unit, mh, mw, [h, w])
    regions = inputs[REGIONS_KEY]
    assert (regions[:, 1] == 2).any() and (regions[:, 1] == 1).any()
    assert (regions[:, 5] != regions[:, 6]).any() == (shapes == "halves")
    for (_, level, _, r, c, bh, bw), p in zip(regions.tolist(), pos, strict=True):
        for mh in range(2):
            for mw in range(2):
                h, w = p[mh, mw].tolist()
                assert 2 * r + mh * bh <= h < 2 * r + (mh + 1) * bh
                assert 2 * c + mw * bw <= w < 2 * c + (mw + 1) * bw
        assert (p[1, :, 0] - p[0, :, 0] == 1).all() and (p[:, 1, 1] - p[:, 0, 1] == 1).all()
        if level == 1:
            stock_positions = [[2 * r, 2 * c], [2 * r, 2 * c + 1], [2 * r + 1, 2 * c], [2 * r + 1, 2 * c + 1]]
            assert p.reshape(4, 2).tolist() == stock_positions


# ---------------------------------------------------------------- settings: three ways, save/load


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_ways_agree(processors, images, texts, backend):
    proc = processors[backend]
    settings = dict(patch_selection_method="v2", alpha=1.0)
    by_constructor = run(wrap_processor(proc, **settings), images, texts)
    attr = wrap_processor(proc)
    attr.image_processor.patch_selection_method = "v2"
    attr.image_processor.alpha = 1.0
    by_attribute = run(attr, images, texts)
    by_call = run(wrap_processor(proc), images, texts, images_kwargs=settings)
    by_flat = run(wrap_processor(proc), images, texts, **settings)
    default = run(wrap_processor(proc), images, texts)
    for other in (by_attribute, by_call, by_flat):
        for key in ("pixel_values", REGIONS_KEY, "input_ids"):
            assert torch.equal(other[key], by_constructor[key])
    assert not torch.equal(default[REGIONS_KEY], by_constructor[REGIONS_KEY])


def test_save_load_round_trip(processors, images, texts, tmp_path):
    wrapped = wrap_processor(processors["torchvision"], patch_selection_method="v1", thresholds=[2.5, 1.5],
                             mode="multiscale")
    wrapped.save_pretrained(tmp_path)
    expected = run(wrapped, images, texts)
    loaded = type(wrapped).from_pretrained(tmp_path)
    rewrapped = wrap_processor(AutoProcessor.from_pretrained(tmp_path))
    for proc in (loaded, rewrapped):
        assert proc.image_processor.selection_settings == wrapped.image_processor.selection_settings
        got = run(proc, images, texts)
        assert all(torch.equal(got[k], expected[k]) for k in expected)
    ip_dir = tmp_path / "image_processor"
    wrapped.image_processor.save_pretrained(ip_dir)
    ip = type(wrapped.image_processor).from_pretrained(ip_dir, alpha=0.7, patch_selection_method="budget")
    assert (ip.patch_selection_method, ip.alpha, ip.thresholds) == ("budget", 0.7, [2.5, 1.5])
    clone = pickle.loads(pickle.dumps(wrapped.image_processor))
    assert clone.selection_settings == wrapped.image_processor.selection_settings


def test_wrapping_leaves_original_untouched(processors, images, texts):
    proc = processors["pil"]
    before = run(proc, images, texts)
    wrapped = wrap_processor(proc, alpha=0.5)
    wrapped.image_processor.alpha = 0.2
    after = run(proc, images, texts)
    assert type(proc.image_processor).__name__ == type(wrapped.image_processor).__name__
    assert isinstance(wrapped, type(proc)) and isinstance(wrapped.image_processor, type(proc.image_processor))
    assert not hasattr(proc.image_processor, "alpha") and REGIONS_KEY not in after
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_bare_image_processor_and_numpy_output(processors, images):
    tv = wrap_processor(processors["torchvision"].image_processor, alpha=0.4)
    pil = wrap_processor(processors["pil"].image_processor, alpha=0.4)
    a, b = tv(images), pil(images)
    assert isinstance(b["pixel_values"], np.ndarray) and isinstance(b[REGIONS_KEY], np.ndarray)
    assert torch.equal(a[REGIONS_KEY], torch.from_numpy(b[REGIONS_KEY]))
    np.testing.assert_allclose(a["pixel_values"].numpy(), b["pixel_values"], atol=1e-5)


def test_chat_template_and_decode(processors, patched, images):
    wrapped = wrap_processor(processors["torchvision"], alpha=0.3)
    from PIL import Image

    content = [{"type": "image", "image": Image.fromarray(images[0])}, {"type": "text", "text": "hi"}]
    messages = [{"role": "user", "content": content}]
    inputs = wrapped.apply_chat_template(messages, tokenize=True, return_dict=True, add_generation_prompt=True,
                                         return_tensors="pt")
    assert int((inputs["input_ids"] == patched.config.image_token_id).sum()) == len(inputs[REGIONS_KEY])
    tokens = greedy(patched, inputs)
    text = wrapped.batch_decode(tokens[:, inputs["input_ids"].shape[1] :])
    assert isinstance(text, list) and len(text) == 1


# ---------------------------------------------------------------- patching


def test_patch_idempotent_and_passthrough(processors, model, images, texts):
    stock = run(processors["torchvision"], images, texts)
    reference = logits(model, stock)
    stock_class = type(model)
    patch_model(model)
    patched_class = type(model)
    assert patched_class is not stock_class and patched_class.__name__ == stock_class.__name__
    assert patch_model(model) is model and type(model) is patched_class
    try:
        assert torch.equal(logits(model, stock), reference)
    finally:
        unpatch_model(model)
    assert type(model) is stock_class and "forward" not in model.__dict__ and "generate" not in model.__dict__
    assert unpatch_model(model) is model and type(model) is stock_class


@pytest.mark.skipif(not MM_ENCODER_OUTPUTS,
                    reason="the stock forward takes mm_encoder_outputs from transformers 5.19 on")
def test_prepare_inputs_without_patching(processors, model, images, texts):
    inputs = run(wrap_processor(processors["torchvision"], alpha=0.3), images, texts)
    plain = logits(model, prepare_inputs(model, inputs))
    tokens = model.generate(**prepare_inputs(model, inputs), max_new_tokens=3, do_sample=False)
    patch_model(model)
    try:
        assert torch.equal(logits(model, inputs), plain)
        assert torch.equal(greedy(model, inputs), tokens)
        rest = {k: v for k, v in inputs.items() if k != "input_ids"}
        assert torch.equal(model(inputs["input_ids"], **rest).logits, plain)
    finally:
        unpatch_model(model)


def test_patch_base_model(processors, model, images, texts):
    """``*Model`` (no LM head, no generate) is patched too and matches the full model."""
    inputs = run(wrap_processor(processors["torchvision"], alpha=0.3), images, texts)
    patch_model(model)
    try:
        expected = logits(model, inputs)
        assert torch.equal(logits(model, prepare_inputs(model, inputs)), expected)
    finally:
        unpatch_model(model)
    base = patch_model(model.model)
    try:
        with torch.no_grad():
            hidden = base(**inputs).last_hidden_state
        assert torch.equal(model.lm_head(hidden), expected)
    finally:
        unpatch_model(base)


def test_image_with_no_kept_token(processors, patched, images, texts):
    """Drop mode with a budget that rounds to 0 for the smallest image still runs end to end."""
    wrapped = wrap_processor(processors["torchvision"], alpha=0.05, mode="drop")
    inputs = run(wrapped, images, texts)
    counts = torch.bincount(inputs[REGIONS_KEY][:, 0], minlength=3).tolist()
    assert 0 in counts
    assert torch.isfinite(logits(patched, inputs)).all()
    out = beams(patched, inputs)
    assert out is None or out.shape[0] == 2


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "settings, error, match",
    [
        (dict(patch_selection_method="fancy"), ValueError, "budget"),
        (dict(alpha=0.0), ValueError, "alpha"),
        (dict(alpha=1.5), ValueError, "alpha"),
        (dict(alpha="0.3"), TypeError, "alpha"),
        (dict(patch_selection_method="v1", thresholds=[1.0, 2.0, 3.0]), ValueError, "thresholds"),
        (dict(mode="sparse"), ValueError, "mode"),
        (dict(score="edges"), ValueError, "score"),
        (dict(budget=3), TypeError, "budget"),
        (dict(tolerance=-1), ValueError, r"tolerance must be in \[0, 255\]"),
        (dict(tolerance=256), ValueError, r"tolerance must be in \[0, 255\]"),
        (dict(tolerance="0"), TypeError, "tolerance"),
    ],
)
def test_bad_settings(processors, images, texts, settings, error, match):
    proc = processors["torchvision"]
    with pytest.raises(error, match=match):
        wrap_processor(proc, **settings)
    known = {k: v for k, v in settings.items() if k != "budget"}
    if known:
        with pytest.raises(error, match=match):
            run(wrap_processor(proc), images, texts, images_kwargs=known)
        wrapped = wrap_processor(proc)
        for k, v in known.items():
            setattr(wrapped.image_processor, k, v)
        with pytest.raises(error, match=match):
            run(wrapped, images, texts)


def test_bad_models_and_processors(processors):
    with pytest.raises(TypeError, match="Qwen"):
        patch_model(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="Qwen"):
        prepare_inputs(torch.nn.Linear(2, 2), {})
    with pytest.raises(TypeError, match="Qwen"):
        wrap_processor(processors["torchvision"].tokenizer)


def test_mismatched_regions_rejected(processors, patched, images, texts):
    inputs = run(wrap_processor(processors["torchvision"], alpha=0.3), images, texts)
    regions = inputs[REGIONS_KEY]

    def variant(**changes):
        return {**inputs, **changes}

    def with_regions(r):
        return variant(**{REGIONS_KEY: r})

    overlap = regions.clone()
    i = int((regions[:-1, 1] >= 2).nonzero()[0])
    image, _, t, r, c, _, _ = regions[i].tolist()
    overlap[i + 1] = torch.tensor([image, 1, t, r, c + 1, 1, 1])  # still sorted, but inside region i
    squashed = regions.clone()
    squashed[i, 5] = 3  # h x w no longer a shape of its level
    ids = inputs["input_ids"].clone()
    ids[0, (ids[0] == patched.config.image_token_id).nonzero()[0]] = 65
    cases = [
        (variant(pixel_values=inputs["pixel_values"][:-4]), ValueError, "pixel_values has"),
        (with_regions(regions[1:]), ValueError, "pixel_values has"),
        (with_regions(regions[:, :5]), ValueError, "shape"),
        (with_regions(regions.flip(0)), ValueError, "sorted"),
        (with_regions(regions + torch.tensor([0, 0, 0, 50, 0, 0, 0])), ValueError, "inside"),
        (with_regions(regions + torch.tensor([5, 0, 0, 0, 0, 0, 0])), ValueError, "image indices"),
        (with_regions(regions.float()), TypeError, "integer"),
        (with_regions(overlap), ValueError, "overlapping"),
        (with_regions(squashed), ValueError, "on a side and the other side the same or half"),
        (variant(input_ids=ids), ValueError, "placeholder"),
        (variant(position_ids=torch.zeros(3, 2, ids.shape[1], dtype=torch.long)), ValueError, "position_ids"),
    ]
    for bad, error, match in cases:
        with pytest.raises(error, match=match):
            logits(patched, bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float_images_without_rescale(processors, patched, images, texts, backend):
    """[0, 1] float images with do_rescale=False: scored from the float image before
    normalisation; counts, rows and features still line up, and alpha=1 stays stock."""
    proc = processors[backend]
    floats = [x.astype(np.float32) / 255 for x in images]
    stock = run(proc, floats, texts, do_rescale=False)
    full = run(wrap_processor(proc, alpha=1.0), floats, texts, do_rescale=False)
    assert torch.equal(full["pixel_values"], stock["pixel_values"])
    assert torch.equal(full["input_ids"], stock["input_ids"])
    ours = run(wrap_processor(proc, alpha=0.3), floats, texts, do_rescale=False)
    regions = ours[REGIONS_KEY]
    counts = torch.bincount(regions[:, 0], minlength=len(images)).tolist()
    assert ours["pixel_values"].shape[0] == 4 * len(regions)
    assert (ours["input_ids"] == patched.config.image_token_id).sum(1).tolist() == [counts[0] + counts[1], counts[2]]
    assert [len(f) for f in prepare_inputs(patched, ours)["mm_encoder_outputs"]["image"].pooler_output] == counts
    grid = stock["image_grid_thw"]
    assert sum(counts) < int((grid[:, 1] * grid[:, 2] // 4).sum())


@pytest.mark.parametrize("call, where", [
    (lambda proc, images, texts: run(proc, images, texts, alhpa=0.3),
     r"'alhpa' in a Qwen2VLProcessor call \(did you mean 'alpha'\?\)"),
    (lambda proc, images, texts: run(proc, images, texts, images_kwargs={"alhpa": 0.3}),
     r"'alhpa' in images_kwargs \(did you mean 'alpha'\?\)"),
    (lambda proc, images, texts: run(proc, images, texts, images_kwargs={"colour": 1}),
     r"'colour' in images_kwargs\."),
    (lambda proc, images, texts: run(proc, images, texts, videos_kwargs={"temporal_treshold": 0.1}),
     r"'temporal_treshold' in videos_kwargs \(did you mean 'temporal_threshold'\?\)"),
    (lambda proc, images, texts: proc.image_processor(images, patch_selection_metod="v1"),
     r"did you mean 'patch_selection_method'"),
])
def test_misspelt_settings_raise(processors, images, texts, call, where):
    """A typo in a per-call setting names the setting and the valid ones, instead of running with the default."""
    with pytest.raises(TypeError, match=where + r".*Selection settings: \['alpha', 'downscale', 'mode'"):
        call(wrap_processor(processors["torchvision"]), images, texts)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_raise(processors, images, bad):
    image = images[0].astype(np.float32) / 255
    image[3, 4, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        wrap_processor(processors["torchvision"]).image_processor([image], do_rescale=False, return_tensors="pt")


FORK_SCRIPT = """
import multiprocessing, numpy as np
from entropy_prune.qwen.testing import make_processor
from entropy_prune.qwen import wrap_processor
proc = wrap_processor(make_processor("pil"), alpha=0.5)
proc.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": 1024 * 1024}
image = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
def kept(_):
    return len(proc.image_processor([image], return_tensors="pt")["image_kept_regions"])
parent = kept(0)  # torch's OpenMP pool now runs in this process
with multiprocessing.get_context("fork").Pool(2) as pool:
    assert pool.map_async(kept, range(2)).get(timeout=60) == [parent] * 2
print("ok")
"""


def test_fork_after_use_does_not_hang():
    """A fork-based pool (multiprocessing, datasets.map) after the wrapped processor ran in the
    parent: the children finish (they hung in torch's intra-op pool)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", FORK_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


DTYPES = {  # numpy dtypes the stock image processors accept, with the arguments they need
    "uint16": (lambda x: x.astype(np.uint16) * 257, {}),
    "uint32": (lambda x: x.astype(np.uint32), {}),
    "int64": (lambda x: x.astype(np.int64), {}),
    "int8": (lambda x: (x // 2).astype(np.int8), {}),
    "bool": (lambda x: x > 128, {}),
    "float16": (lambda x: x.astype(np.float16) / 255, {"do_rescale": False}),
    "float64": (lambda x: x.astype(np.float64) / 255, {"do_rescale": False}),
    "complex64": (lambda x: x.astype(np.complex64) / 255, {"do_rescale": False}),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_the_stock_processor_takes(processors, images, backend, dtype):
    """Keep-all rows equal the stock ones; pruned coarse units are area averages of the stock rows."""
    proc = processors[backend]
    convert, kw = DTYPES[dtype]
    image = convert(images[0])
    try:
        stock = proc.image_processor([image], return_tensors="pt", **kw)
    except ValueError:  # e.g. the PIL backend refuses values outside [0, 255]
        pytest.skip(f"the stock {backend} processor refuses {dtype} images")
    keep_all = wrap_processor(proc, alpha=1.0).image_processor([image], return_tensors="pt", **kw)
    assert torch.equal(keep_all["pixel_values"], stock["pixel_values"])
    out = wrap_processor(proc, alpha=0.3).image_processor([image], return_tensors="pt", **kw)
    regions = out[REGIONS_KEY]
    assert (regions[:, 1] > 1).any() and out["pixel_values"].dtype == stock["pixel_values"].dtype
    full = item_frames(stock["pixel_values"], stock["image_grid_thw"][0]).numpy().astype(np.complex128)
    for n, expect in enumerate(expected_units(full, regions)):
        got = out["pixel_values"][4 * n : 4 * n + 4].numpy().astype(np.complex128)
        np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-2 if dtype == "float16" else 1e-5)
