"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: images + videos through the same adapter (offline tiny models)."""

from __future__ import annotations

import copy
import pickle
import re

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from entropy_prune import select_patches  # noqa: E402
from entropy_prune.qwen import (  # noqa: E402
    REGIONS_KEY,
    VIDEO_REGIONS_KEY,
    patch_model,
    prepare_inputs,
    unpatch_model,
    wrap_processor,
)
from entropy_prune.qwen._compat import MM_ENCODER_OUTPUTS  # noqa: E402
from entropy_prune.qwen.testing import (  # noqa: E402
    IMAGE,
    QWEN3_LIKE,
    TEXT,
    VIDEO,
    batch,
    beams,
    family_media,
    greedy,
    logits,
    make_model,
    make_processor,
    prompts,
    textured_image,
)


@pytest.fixture(scope="module")
def media(family):
    return family_media(family[0])


def test_one_frame_video_like_stock(family):
    name, proc, _ = family
    video = [textured_image(56, 84, 9)[None]]
    if name in QWEN3_LIKE:
        for p in (proc, wrap_processor(proc)):
            with pytest.raises(ValueError, match="temporal_factor"):
                p.video_processor(video)
    else:
        out = wrap_processor(proc).video_processor(video, return_tensors="pt")
        assert out["video_grid_thw"][0, 0] == 1 and (out[VIDEO_REGIONS_KEY][:, 2] == 0).all()


def run(proc, images, videos, texts, **kwargs):
    return proc(images=images, videos=videos, text=texts, return_tensors="pt", padding=True, **kwargs)


def placeholder_runs(ids, token_id):
    """Lengths of the runs of ``token_id`` in a 1-D id tensor."""
    text = "".join("x" if int(i) == token_id else "." for i in ids)
    return [len(r) for r in re.findall("x+", text)]


def test_keep_all_equals_stock(family, media):
    name, proc, model = family
    stock = batch(proc, media)
    assert (stock["attention_mask"] == 0).any()
    reference, tokens = logits(model, stock), greedy(model, stock)
    ours = batch(wrap_processor(proc, alpha=1.0), media)
    assert torch.equal(ours["pixel_values_videos"], stock["pixel_values_videos"])
    assert torch.equal(ours["input_ids"], stock["input_ids"])
    patch_model(model)
    try:
        assert torch.equal(logits(model, ours), reference)
        assert torch.equal(greedy(model, ours), tokens)
    finally:
        unpatch_model(model)


@pytest.mark.parametrize("mode, shapes", [("multiscale", "squares"), ("drop", "squares"), ("multiscale", "halves")])
def test_budget_counts_per_image_and_video(family, media, mode, shapes):
    name, proc, model = family
    inputs = batch(wrap_processor(proc, alpha=0.3, mode=mode, shapes=shapes), media)
    oblong = [bool((inputs[key][:, 5] != inputs[key][:, 6]).any()) for key in (REGIONS_KEY, VIDEO_REGIONS_KEY)]
    assert any(oblong) == (shapes == "halves")
    encoded = prepare_inputs(model, inputs)["mm_encoder_outputs"]
    cfg = model.config
    for key, modality, token in (
        (REGIONS_KEY, "image", cfg.image_token_id),
        (VIDEO_REGIONS_KEY, "video", cfg.video_token_id),
    ):
        regions = inputs[key]
        counts = torch.bincount(regions[:, 0], minlength=2).tolist()
        assert [len(f) for f in encoded[modality].pooler_output] == counts
        if name.startswith("qwen3_vl") and MM_ENCODER_OUTPUTS:  # split per item, as the stock forward takes them
            assert all(len(ds) == 2 and [len(x) for x in ds] == counts for ds in encoded[modality].deepstack_features)
        elif name.startswith("qwen3_vl"):  # before transformers 5.19: whole
            assert all(len(ds) == sum(counts) for ds in encoded[modality].deepstack_features)
        pads = (inputs["input_ids"] == token).sum(1).tolist()
        assert pads == ([counts[0] + counts[1], 0] if modality == "image" else counts)
    # Video placeholders come per temporal patch where the prompt has groups (Qwen3-VL timestamps).
    video = inputs[VIDEO_REGIONS_KEY]
    per_group = [int(((video[:, 0] == 0) & (video[:, 2] == t)).sum()) for t in range(3)]
    runs = placeholder_runs(inputs["input_ids"][0], cfg.video_token_id)
    assert runs == ([n for n in per_group if n] if name in QWEN3_LIKE else [sum(per_group)])
    length = inputs["input_ids"].shape[1]
    patch_model(model)
    try:
        assert torch.isfinite(logits(model, inputs)).all()
        assert greedy(model, inputs).shape == (2, length + 3)
        out = beams(model, inputs)
        assert out is None or out.shape == (2, length + 3)
    finally:
        unpatch_model(model)


def test_static_video_groups_match_core_on_the_frame(family):
    """Identical frames: each temporal patch's selection is the core selection of that frame."""
    name, proc, model = family
    frame = textured_image(84, 112, 3)
    wrapped = wrap_processor(proc, alpha=0.4)
    out = wrapped.video_processor([np.stack([frame] * 4)], return_tensors="pt")
    ip = proc.image_processor
    raw = proc.video_processor([np.stack([frame] * 4)], do_rescale=False, do_normalize=False, return_tensors="pt")
    t, h, w = raw["video_grid_thw"][0].tolist()
    p, m = ip.patch_size, ip.merge_size
    rows = raw["pixel_values_videos"].reshape(t, h // m, w // m, m, m, 3, 2, p, p)[0, ..., 0, :, :]
    image = rows.permute(0, 2, 5, 1, 3, 6, 4).reshape(h * p, w * p, 3).round().to(torch.uint8).numpy()
    expected = select_patches(image, method="budget", alpha=0.4, patch_size=p * m).regions.tolist()
    regions = out[VIDEO_REGIONS_KEY]
    for ti in range(t):
        assert regions[regions[:, 2] == ti][:, [1, 3, 4]].tolist() == expected


def top_rows_image(k: int, rows: int, cols: int, unit: int) -> np.ndarray:
    img = np.full((unit * rows, unit * cols, 3), 90, dtype=np.uint8)
    img[: unit * k] = np.random.default_rng(7).integers(0, 256, (unit * k, unit * cols, 3))
    return img


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl"])
def test_drop_top_rows_equals_stock_on_cropped_grid_with_windows(name):
    """Qwen2.5-VL's 4x4-unit windows: 10 units wide = 3 windows (last one ragged), kept rows 0..2
    sit in the first window row. Qwen3-VL is excluded by design: its learned position embedding is
    interpolated over the whole grid, so a cropped grid is a different input."""
    proc = make_processor(family=name)
    model = make_model(proc.tokenizer, name)
    k, rows, cols = 3, 6, 10
    image = top_rows_image(k, rows, cols, 28)
    text = prompts(proc, [[IMAGE, TEXT]])
    ours = wrap_processor(proc, alpha=k / rows, mode="drop")(images=[image], text=text, return_tensors="pt")
    assert ours[REGIONS_KEY].tolist() == [[0, 1, 0, r, c, 1, 1] for r in range(k) for c in range(cols)]
    cropped = {key: v for key, v in ours.items() if key != REGIONS_KEY}
    cropped["image_grid_thw"] = torch.tensor([[1, 2 * k, 2 * cols]])
    reference = logits(model, cropped)
    patch_model(model)
    assert torch.equal(logits(model, ours), reference)


def test_temporal_group_with_nothing_kept(family):
    """A flat middle temporal patch keeps no unit in drop mode; the prompt stays valid."""
    name, proc, model = family
    noisy = [textured_image(84, 112, s) for s in range(4)]
    flat = np.full((84, 112, 3), 120, dtype=np.uint8)
    video = np.stack([noisy[0], noisy[1], flat, flat, noisy[2], noisy[3]])
    wrapped = wrap_processor(proc, patch_selection_method="v1", thresholds=[1.0, 1.0], mode="drop")
    inputs = run(wrapped, None, [video], prompts(proc, [[VIDEO, TEXT]]))
    regions = inputs[VIDEO_REGIONS_KEY]
    counts = [int((regions[:, 2] == t).sum()) for t in range(3)]
    assert counts[1] == 0 and counts[0] > 0 and counts[2] > 0
    if name in QWEN3_LIKE:
        decoded = proc.tokenizer.decode(inputs["input_ids"][0])
        assert re.search(r"<[0-9.]+ seconds><\|vision_start\|><\|vision_end\|>", decoded)
    patch_model(model)
    try:
        assert torch.isfinite(logits(model, inputs)).all()
        out = beams(model, inputs)
        assert out is None or out.shape[1] == inputs["input_ids"].shape[1] + 3
    finally:
        unpatch_model(model)


def test_nothing_kept_at_all(family):
    """Drop mode with a budget of 0 for every image: no tower run, prompt without placeholders."""
    name, proc, model = family
    inputs = run(wrap_processor(proc, alpha=0.01, mode="drop"), [textured_image(84, 84, 1)], None,
                 prompts(proc, [[IMAGE, TEXT]]))
    assert inputs[REGIONS_KEY].shape == (0, 7) and inputs["pixel_values"].shape[0] == 0
    assert not (inputs["input_ids"] == model.config.image_token_id).any()
    patch_model(model)
    try:
        assert torch.isfinite(logits(model, inputs)).all()
        assert greedy(model, inputs).shape[1] == inputs["input_ids"].shape[1] + 3
    finally:
        unpatch_model(model)


def test_video_settings_three_ways_and_save_load(family, media, tmp_path):
    name, proc, _ = family
    _, videos = media
    text = prompts(proc, [[VIDEO, TEXT]])
    settings = dict(patch_selection_method="v2", alpha=1.0, mode="drop")
    by_constructor = run(wrap_processor(proc, **settings), None, videos[:1], text)
    attr = wrap_processor(proc)
    for k, v in settings.items():
        setattr(attr.video_processor, k, v)
    by_attribute = run(attr, None, videos[:1], text)
    by_call = run(wrap_processor(proc), None, videos[:1], text, videos_kwargs=settings)
    wrapped = wrap_processor(proc, **settings)
    wrapped.save_pretrained(tmp_path)
    loaded = type(wrapped).from_pretrained(tmp_path)
    assert loaded.video_processor.selection_settings == wrapped.video_processor.selection_settings
    by_loaded = run(loaded, None, videos[:1], text)
    for other in (by_attribute, by_call, by_loaded):
        for key in ("pixel_values_videos", VIDEO_REGIONS_KEY, "input_ids"):
            assert torch.equal(other[key], by_constructor[key])


# ---------------------------------------------------------------- temporal score


def panning_clip(num_static: int, num_moving: int, size: int = 224, step: int = 16) -> np.ndarray:
    """Real photo (skimage astronaut): a static shot, then the camera pans right ``step`` px/frame."""
    data = pytest.importorskip("skimage.data")
    photo = data.astronaut()
    frames = [photo[100 : 100 + size, 100 : 100 + size]] * num_static
    frames += [photo[100 : 100 + size, 100 + step * (i + 1) : 100 + step * (i + 1) + size] for i in range(num_moving)]
    return np.stack(frames)


def test_temporal_score_spends_fewer_tokens_on_static_patches():
    video_processor = make_processor().video_processor
    clip = panning_clip(num_static=8, num_moving=8)
    size = {"shortest_edge": 56 * 56, "longest_edge": 224 * 224}  # 8 x 8 units per frame
    settings = dict(patch_selection_method="v1", thresholds=[3.0, 2.0])
    plain = wrap_processor(video_processor, **settings)([clip], size=size, return_tensors="pt")
    moved = wrap_processor(video_processor, temporal_threshold=0.02, **settings)([clip], size=size, return_tensors="pt")

    def per_group(out):
        return torch.bincount(out[VIDEO_REGIONS_KEY][:, 2], minlength=8).tolist()

    a, b = per_group(plain), per_group(moved)
    assert b[0] == a[0]  # nothing before the first temporal patch
    assert all(y <= x for x, y in zip(a, b, strict=True))
    assert sum(b[1:4]) < sum(a[1:4])  # static shot: later patches barely change
    assert sum(b) < sum(a)


@pytest.mark.parametrize("shapes", ["squares", "halves"])
def test_temporal_score_on_frames_smaller_than_the_coarsest_region(family, shapes):
    # 3 x 4 units per frame: no 4 x 4-unit (level 3) region fits; the temporal score skips that
    # level (it raised in avg_pool2d) and the count matches the same selection without it.
    _, proc, _ = family
    clip = np.stack([textured_image(84, 112, s) for s in range(4)])
    size = {"shortest_edge": 56 * 56, "longest_edge": 84 * 112} if family[0] not in QWEN3_LIKE else None
    kwargs = {"size": size} if size else {}
    out = wrap_processor(proc.video_processor, alpha=0.5, temporal_threshold=0.05, shapes=shapes)(
        [clip], return_tensors="pt", **kwargs)
    grid = out["video_grid_thw"][0].tolist()
    assert grid[0] == 2 and (grid[1] // 2 < 4 or grid[2] // 2 < 4)
    counts = torch.bincount(out[VIDEO_REGIONS_KEY][:, 2], minlength=2)
    assert bool((counts > 0).all())


def test_bad_temporal_threshold(family):
    _, proc, _ = family
    for bad, error in ((0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError), ("0.1", TypeError)):
        with pytest.raises(error, match="temporal_threshold"):
            wrap_processor(proc, temporal_threshold=bad)


# ---------------------------------------------------------------- a patched model is an ordinary model


def compile_noise(model, inputs) -> float:
    """Largest logit change that ``torch.compile(backend="eager")`` makes on the stock ``model``: 0 where
    Dynamo keeps every float operation; not always (torch 2.11 with 16 threads, Qwen3.5: 2.4e-7)."""
    stock = unpatch_model(copy.deepcopy(model))
    return (logits(torch.compile(stock, backend="eager"), inputs) - logits(stock, inputs)).abs().max().item()


def test_patched_model_survives_deepcopy_and_pickle(family, media, tmp_path):
    """Copies and pickles (torch.save/load) of a patched model run patched, with their own weights;
    the original unpatches independently of its copy."""
    name, proc, model = family
    inputs = batch(wrap_processor(proc, alpha=0.3), media)
    patch_model(model)
    try:
        expected = logits(model, inputs)
        copy_ = copy.deepcopy(model)
        assert torch.equal(logits(copy_, inputs), expected)
        with torch.no_grad():
            copy_.lm_head.weight.mul_(2)  # the copy's own weights drive its output
        assert not torch.equal(logits(copy_, inputs), expected)
        assert torch.equal(logits(model, inputs), expected)
        torch.save(model, tmp_path / "model.pt")
        loaded = torch.load(tmp_path / "model.pt", weights_only=False)
        assert type(loaded) is type(model) and torch.equal(logits(loaded, inputs), expected)
        assert torch.equal(logits(pickle.loads(pickle.dumps(model)), inputs), expected)
        unpatch_model(copy_)
        with pytest.raises(ValueError, match="patch_model"):
            logits(copy_, inputs)
        assert torch.equal(logits(model, inputs), expected)
    finally:
        unpatch_model(model)


def test_compiled_patched_model_runs_patched(family, media):
    """A compiled copy (``torch.compile``, eager backend) of a patched model gives its logits: exactly,
    where Dynamo keeps the stock model's float operations, else within 4x the stock model's own
    compile difference. Skipped where Dynamo cannot compile the stock model either (torch 2.6 with
    transformers 5.16.1)."""
    name, proc, model = family
    # Dynamo tracing costs ~1 s per graph break here: one image keeps the test short
    content = dict(images=media[0][:1], text=prompts(proc, [[IMAGE, TEXT]]), return_tensors="pt")
    one, stock_one = wrap_processor(proc, alpha=0.3)(**content), proc(**content)
    torch._dynamo.reset()  # no compiled frames or recompile counts left by other tests
    patch_model(model)
    try:
        want = logits(model, one)
        try:
            got = logits(torch.compile(copy.deepcopy(model), backend="eager"), one)
        except Exception:
            try:
                compile_noise(model, stock_one)
            except Exception as stock_error:
                pytest.skip(f"Dynamo cannot compile the stock model here either: {stock_error!r}"[:300])
            raise
        if not torch.equal(got, want):
            assert (got - want).abs().max() <= 4 * compile_noise(model, stock_one)
    finally:
        unpatch_model(model)


def test_unpatched_model_says_to_call_patch_model(family, media):
    name, proc, model = family
    inputs = batch(wrap_processor(proc, alpha=0.3), media)
    for call in (lambda: logits(model, inputs), lambda: greedy(model, inputs), lambda: logits(model.model, inputs)):
        with pytest.raises(ValueError, match=r"not patched: call entropy_prune\.qwen\.patch_model\(model\)"):
            call()
    stock = batch(proc, media)  # stock inputs to an unpatched model: untouched
    assert torch.isfinite(logits(model, stock)).all()


def test_pruning_off_is_stock(family, media, tmp_path):
    """With the method None a wrapped processor is indistinguishable from stock: outputs,
    model_input_names, to_dict() and saved files."""
    name, proc, _ = family
    off = wrap_processor(proc, patch_selection_method=None)
    stock_out, off_out = batch(proc, media), batch(off, media)
    assert stock_out.keys() == off_out.keys()
    assert all(torch.equal(stock_out[k], off_out[k]) for k in stock_out)
    assert off.model_input_names == proc.model_input_names
    for sub in ("image_processor", "video_processor"):
        assert getattr(off, sub).model_input_names == getattr(proc, sub).model_input_names
        assert getattr(off, sub).to_dict() == getattr(proc, sub).to_dict()
    proc.save_pretrained(tmp_path / "stock")
    off.save_pretrained(tmp_path / "off")
    saved = sorted(p.name for p in (tmp_path / "stock").iterdir())
    assert saved == sorted(p.name for p in (tmp_path / "off").iterdir())
    for file in saved:
        assert (tmp_path / "stock" / file).read_bytes() == (tmp_path / "off" / file).read_bytes(), file
    on = wrap_processor(proc, alpha=0.3)
    assert sorted(on.model_input_names) == sorted([*proc.model_input_names, REGIONS_KEY, VIDEO_REGIONS_KEY])


def test_size_only_token_counts(family):
    """Exact where the settings keep every unit; a ValueError saying what to call elsewhere."""
    name, proc, _ = family
    sizes = {"image_sizes": [(112, 168), (84, 84)], "video_sizes": [(4, 84, 112)]}
    if not hasattr(proc.video_processor, "get_number_of_video_patches"):  # stock video counts fail before 5.17
        sizes["video_sizes"] = None
    stock = proc._get_num_multimodal_tokens(**sizes)
    for settings in ({"patch_selection_method": None}, {"patch_selection_method": "budget", "alpha": 1.0}):
        assert wrap_processor(proc, **settings)._get_num_multimodal_tokens(**sizes) == stock
    wrapped = wrap_processor(proc, alpha=0.3)
    assert wrapped._get_num_multimodal_tokens(**sizes, alpha=1.0) == stock
    assert wrapped._get_num_multimodal_tokens(**sizes, images_kwargs={"patch_selection_method": None},
                                              videos_kwargs={"patch_selection_method": None}) == stock
    for settings in ({"alpha": 0.3}, {"patch_selection_method": "v2", "alpha": 1.0}):
        with pytest.raises(ValueError, match=r"depends on the images' content.*image_kept_regions"):
            wrap_processor(proc, **settings)._get_num_multimodal_tokens(image_sizes=sizes["image_sizes"])
    with pytest.raises(ValueError, match=r"videos' content.*video_kept_regions"):
        wrapped._get_num_multimodal_tokens(video_sizes=[(4, 84, 112)])
