"""``downscale``: images shrunk until their unpredicted units fit the budget (``True``) or to the size
of least error (``"least_error"``), with true grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")

from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize  # noqa: E402

from entropy_prune import reconstruct, select_patches  # noqa: E402
from entropy_prune.qwen import REGIONS_KEY, VIDEO_REGIONS_KEY, patch_model, unpatch_model, wrap_processor  # noqa: E402
from entropy_prune.qwen.modeling import _check_regions  # noqa: E402
from entropy_prune.qwen.testing import family_media, logits, make_model, make_processor, textured_image  # noqa: E402

UNIT, MIN_PIXELS = 28, 56 * 56
PAGE_SIZE = {"shortest_edge": MIN_PIXELS, "longest_edge": UNIT * UNIT * 2000}
PROMPT = [{"type": "image"}, {"type": "image"}, {"type": "image"}, {"type": "text", "text": "Read it."}]


@pytest.fixture(scope="module")
def processor():
    return make_processor("torchvision")


@pytest.fixture(scope="module")
def model(processor):
    return make_model(processor.tokenizer)


def page(h: int, w: int, seed: int, lines: int = 12) -> np.ndarray:
    """uint8 (h, w, 3) white page with ``lines`` dark noisy text-like bands (8-14 px tall) at
    random places: blank units repeat their neighbours, text units do not."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 255, np.uint8)
    for _ in range(lines):
        th, tw = int(rng.integers(8, 15)), int(rng.integers(w // 6, w // 2 + 1))
        r, c = int(rng.integers(0, h - th)), int(rng.integers(0, w - tw))
        img[r : r + th, c : c + tw] = rng.integers(0, 160, (th, tw, 1), dtype=np.uint8)
    return img


def resized(processor, image, **size):
    """The processor's resized uint8 (3, H, W) image, from its un-normalised rows."""
    out = processor.image_processor([image], do_rescale=False, do_normalize=False, return_tensors="pt", **size)
    _, h, w = out["image_grid_thw"][0].tolist()
    x = out["pixel_values"].reshape(h // 2, w // 2, 2, 2, 3, 2, 14, 14)[..., 0, :, :]  # first temporal copy
    return x.permute(4, 0, 2, 5, 1, 3, 6).reshape(3, h * 14, w * 14).round().to(torch.uint8)


def shrink(raw: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return F.interpolate(raw[None], (h, w), mode="bicubic", antialias=True, align_corners=False)[0]


def test_without_tolerance_it_is_qwens_own_downscaling(processor, model):
    """No tolerance: each image is what the stock processor makes of the resized image under
    max_pixels = budget units (same rows, grid and placeholders), and the patched model gives the
    stock model's logits on that, i.e. the true positions of the smaller grid."""
    images = [textured_image(112, 168, 0), textured_image(84, 84, 1), textured_image(168, 140, 2)]
    text = [processor.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True)]
    ours = wrap_processor(processor, alpha=0.5, downscale=True)(images=images, text=text, return_tensors="pt")
    smaller = []
    for image in images:
        raw = resized(processor, image)
        units = raw.shape[1] // UNIT * (raw.shape[2] // UNIT)
        h, w = smart_resize(raw.shape[1], raw.shape[2], UNIT, MIN_PIXELS, math.floor(0.5 * units + 0.5) * UNIT * UNIT)
        assert h * w < raw.shape[1] * raw.shape[2]
        smaller.append(shrink(raw, h, w).permute(1, 2, 0).numpy())
    stock = processor(images=smaller, text=text, return_tensors="pt")
    assert torch.equal(ours["image_grid_thw"], stock["image_grid_thw"])
    assert torch.equal(ours["pixel_values"], stock["pixel_values"])
    assert torch.equal(ours["input_ids"], stock["input_ids"])
    assert (ours[REGIONS_KEY][:, 1] == 1).all()
    patch_model(model)
    try:
        got = logits(model, ours)
    finally:
        unpatch_model(model)
    assert torch.equal(got, logits(model, stock))


@pytest.mark.parametrize("backend", ["torchvision", "pil"])
@pytest.mark.parametrize("alpha", [0.2, 0.4])
def test_a_page_is_shown_whole_at_a_smaller_size(backend, alpha):
    """tolerance=0 on a page: a smaller grid whose every unpredicted unit is kept at full
    resolution (as the core selects them on the down-scaled image), at most the budget."""
    proc = make_processor(backend).image_processor
    image = page(840, 560, 0, lines=60)  # 380 of 600 units unpredicted
    full = wrap_processor(proc, alpha=alpha, tolerance=0)([image], return_tensors="pt", size=PAGE_SIZE)
    ours = wrap_processor(proc, alpha=alpha, tolerance=0, downscale=True)([image], return_tensors="pt", size=PAGE_SIZE)
    stock_grid, grid = full["image_grid_thw"][0].tolist(), ours["image_grid_thw"][0].tolist()
    budget = math.floor(alpha * stock_grid[1] * stock_grid[2] / 4 + 0.5)
    regions = ours[REGIONS_KEY]
    assert grid[1] < stock_grid[1] and grid[2] < stock_grid[2]
    assert len(regions) <= budget and (regions[:, 1] == 1).all()
    assert budget - 2 <= len(full[REGIONS_KEY]) <= budget and (full[REGIONS_KEY][:, 1] > 1).any()  # text merged
    if backend == "torchvision":
        small = shrink(resized(make_processor(backend), image, size=PAGE_SIZE), grid[1] * 14, grid[2] * 14)
        sel = select_patches(small, None, channels_first=True, tolerance=0)
        assert regions[:, [1, 3, 4]].tolist() == sel.regions.tolist()
    _check_regions(regions, ours["pixel_values"], ours["image_grid_thw"], 2)


def test_videos_are_not_downscaled(processor):
    media = family_media("qwen2_vl")
    plain = wrap_processor(processor, alpha=0.4, tolerance=0).video_processor(videos=media[1], return_tensors="pt")
    ours = wrap_processor(processor, alpha=0.4, tolerance=0, downscale=True).video_processor(
        videos=media[1], return_tensors="pt")
    for key in ("pixel_values_videos", "video_grid_thw", VIDEO_REGIONS_KEY):
        assert torch.equal(ours[key], plain[key])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(downscale="yes"), ValueError, "downscale must be True, False, 'least_error' or 'balanced', got 'yes'"),
        (dict(downscale=1), TypeError, "downscale must be True, False, 'least_error' or 'balanced', got 1"),
        (dict(patch_selection_method="v1", downscale=True), ValueError, "downscale=True needs patch_selection_method"),
        (dict(patch_selection_method=None, downscale=True), ValueError, "downscale=True needs patch_selection_method"),
        (dict(patch_selection_method="v1", downscale="least_error"), ValueError,
         "downscale='least_error' needs patch_selection_method"),
    ],
)
def test_bad_downscale_settings(processor, kwargs, error, match):
    with pytest.raises(error, match=match):
        wrap_processor(processor, **kwargs)
    with pytest.raises(error, match=match):
        wrap_processor(processor).image_processor([textured_image(84, 84, 0)], **kwargs)


@pytest.mark.parametrize("downscale", [True, "least_error", "balanced"])
def test_downscale_needs_resizing(processor, downscale):
    with pytest.raises(ValueError, match="do_resize=True"):
        wrap_processor(processor, downscale=downscale).image_processor([textured_image(84, 84, 0)], do_resize=False)


@settings(deadline=None)
@given(
    h=st.integers(56, 400), w=st.integers(56, 400), seed=st.integers(0, 2**16), lines=st.integers(0, 20),
    alpha=st.floats(0.01, 1.0), tolerance=st.sampled_from([None, 0, 3]), mode=st.sampled_from(["multiscale", "drop"]),
)
def test_downscale_invariants(processor, h, w, seed, lines, alpha, tolerance, mode):
    """The core's selection, at the budget of the processor's grid, on the image shrunk to a grid
    no larger; at most the budget where the budget is met; valid for the model; deterministic; a
    budget that already holds every unpredicted unit changes nothing."""
    image = page(h, w, seed, lines)
    proc = wrap_processor(processor.image_processor, alpha=alpha, tolerance=tolerance, mode=mode)
    plain = proc([image], return_tensors="pt", size=PAGE_SIZE)
    ours = proc([image], return_tensors="pt", size=PAGE_SIZE, downscale=True)
    again = proc([image], return_tensors="pt", size=PAGE_SIZE, downscale=True)
    assert all(torch.equal(ours[k], again[k]) for k in ours)
    stock_grid, grid = plain["image_grid_thw"][0].tolist(), ours["image_grid_thw"][0].tolist()
    budget = math.floor(alpha * stock_grid[1] * stock_grid[2] / 4 + 0.5)
    assert grid[1] <= stock_grid[1] and grid[2] <= stock_grid[2]
    assert grid == stock_grid or grid[1] * grid[2] * 14 * 14 >= MIN_PIXELS  # never below min_pixels
    _check_regions(ours[REGIONS_KEY], ours["pixel_values"], ours["image_grid_thw"], 2)
    raw = resized(processor, image, size=PAGE_SIZE)
    need = select_patches(raw, None, channels_first=True, tolerance=tolerance).num_tokens
    event("kept as is" if need <= budget or budget == 0 else "down-scaled" if grid != stock_grid else "no smaller grid")
    if need <= budget or budget == 0:
        assert grid == stock_grid and torch.equal(ours[REGIONS_KEY], plain[REGIONS_KEY])
        return
    small = shrink(raw, grid[1] * 14, grid[2] * 14)
    sel = select_patches(small, "budget", min(budget / (grid[1] * grid[2] / 4), 1.0), mode=mode, channels_first=True,
                         tolerance=tolerance)
    assert ours[REGIONS_KEY][:, [1, 3, 4]].tolist() == sel.regions.tolist()
    assert len(sel.regions) <= budget or not sel.budget_met


@pytest.mark.parametrize("downscale", [True, "least_error", "balanced"])
@pytest.mark.parametrize("backend", ["torchvision", "pil"])
def test_numpy_output_and_saved_setting(backend, downscale, tmp_path):
    """Without return_tensors the grids come back in the stock output's type; the setting is
    saved and reloaded like the others."""
    proc = wrap_processor(make_processor(backend).image_processor, alpha=0.3, tolerance=0, downscale=downscale)
    image = page(840, 560, 0, lines=60)
    tensors = proc([image], return_tensors="pt", size=PAGE_SIZE)
    plain = proc([image], size=PAGE_SIZE)
    stock = make_processor(backend).image_processor([image], size=PAGE_SIZE)
    assert type(plain["image_grid_thw"]) is type(stock["image_grid_thw"])
    assert np.asarray(plain["image_grid_thw"]).tolist() == tensors["image_grid_thw"].tolist()
    assert np.array_equal(np.asarray(plain[REGIONS_KEY]), tensors[REGIONS_KEY].numpy())
    proc.save_pretrained(tmp_path)
    loaded = type(proc).from_pretrained(tmp_path)
    assert loaded.downscale == downscale and loaded.selection_settings == proc.selection_settings
    again = loaded([image], return_tensors="pt", size=PAGE_SIZE)
    assert all(torch.equal(again[k], tensors[k]) for k in tensors)


def luma_errors(raw: torch.Tensor, grid: list[int], budget: int, alpha: float, **kw) -> tuple[np.ndarray, object]:
    """Squared luma error (8-bit levels) per unit of ``raw`` of the core's selection of ``budget``
    units (``alpha`` where 0) on ``raw`` (uint8 (3, H, W)) shrunk to ``grid`` (patches), shown by
    ``reconstruct`` and brought back bilinearly; and the selection."""
    same = grid[1] * 14 == raw.shape[1] and grid[2] * 14 == raw.shape[2]
    small = raw if same else shrink(raw, grid[1] * 14, grid[2] * 14)
    a = min(budget / (grid[1] * grid[2] / 4), 1.0) if budget else alpha
    sel = select_patches(small, "budget", a, channels_first=True, **kw)
    luma = lambda x: np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), x.numpy().astype(np.float32), 1)  # noqa: E731
    shown = torch.from_numpy(reconstruct(luma(small), sel, UNIT, value_range=(0.0, 255.0)))[None, None]
    shown = F.interpolate(shown, raw.shape[1:], mode="bilinear", align_corners=False)[0, 0]
    sq = (shown.double() - torch.from_numpy(luma(raw)).double()) ** 2
    rows, cols = raw.shape[1] // UNIT, raw.shape[2] // UNIT
    return sq.reshape(rows, UNIT, cols, UNIT).sum((1, 3)).numpy(), sel


def luma_error(raw: torch.Tensor, grid: list[int], budget: int, alpha: float, **kw) -> tuple[float, object]:
    """:func:`luma_errors` summed."""
    errors, sel = luma_errors(raw, grid, budget, alpha, **kw)
    return float(errors.sum()), sel


PAGES_OR_PHOTOS = dict(  # hypothesis strategies: a page or a textured image, its budget and tolerance
    h=st.integers(56, 336), w=st.integers(56, 336), seed=st.integers(0, 2**16), lines=st.integers(0, 20),
    photo=st.booleans(), alpha=st.floats(0.05, 1.0), tolerance=st.sampled_from([None, 0]),
)


def rule_outputs(processor, image, rule, alpha: float, **settings):
    """The wrapped processor's outputs without ``downscale``, with True and with ``rule``, and
    their grids and budget, after checking that ``rule`` is deterministic, on a grid between the
    other two, and valid for the model."""
    proc = wrap_processor(processor.image_processor, alpha=alpha, **settings)
    plain, fit, ours, again = (proc([image], return_tensors="pt", size=PAGE_SIZE, downscale=d)
                               for d in (False, True, rule, rule))
    assert all(torch.equal(ours[k], again[k]) for k in ours)
    stock_grid, fit_grid, grid = (x["image_grid_thw"][0].tolist() for x in (plain, fit, ours))
    budget = math.floor(alpha * (stock_grid[1] * stock_grid[2] // 4) + 0.5)
    assert fit_grid[1] * fit_grid[2] <= grid[1] * grid[2] <= stock_grid[1] * stock_grid[2]
    assert grid[1] <= stock_grid[1] and grid[2] <= stock_grid[2]
    _check_regions(ours[REGIONS_KEY], ours["pixel_values"], ours["image_grid_thw"], 2)
    return ours, (stock_grid, fit_grid, grid), budget


@settings(deadline=None)
@given(**PAGES_OR_PHOTOS, mode=st.sampled_from(["multiscale", "drop"]))
def test_least_error_invariants(processor, h, w, seed, lines, photo, alpha, tolerance, mode):
    """downscale="least_error": the core's selection at the budget on a grid between the
    processor's and downscale=True's, at most the budget, valid for the model, deterministic, and
    its error no larger than at either end (the processor's grid, downscale=True's grid)."""
    image = textured_image(h, w, seed) if photo else page(h, w, seed, lines)
    ours, (stock_grid, fit_grid, grid), budget = rule_outputs(processor, image, "least_error", alpha,
                                                              tolerance=tolerance, mode=mode)
    raw = resized(processor, image, size=PAGE_SIZE)
    err, sel = luma_error(raw, grid, budget, alpha, tolerance=tolerance, mode=mode)
    assert ours[REGIONS_KEY][:, [1, 3, 4]].tolist() == sel.regions.tolist()
    ends = [luma_error(raw, g, budget, alpha, tolerance=tolerance, mode=mode) for g in (stock_grid, fit_grid)]
    fitting = [e for e, s in ends if s.num_tokens <= budget]
    event(f"{'stock' if grid == stock_grid else 'fit' if grid == fit_grid else 'between'} grid; "
          f"{len(fitting)} ends fit the budget")
    if fitting:
        assert len(sel.regions) <= budget
        assert err <= min(fitting) * (1 + 1e-6) + 1e-6


@settings(deadline=None)
@given(**PAGES_OR_PHOTOS, shapes=st.sampled_from(["squares", "halves"]))
def test_balanced_invariants(processor, h, w, seed, lines, photo, alpha, tolerance, shapes):
    """downscale="balanced": the core's selection at the budget on a grid between the processor's
    and downscale=True's, valid for the model, deterministic; where least_error's error is at
    least 0.2 dB below uniform down-scaling's (the image at smart_resize's grid for the budget,
    every unit kept), an error below that too, a worst unit within 0.2 dB of the least among
    least_error's and either end's (the processor's grid, downscale=True's) that fit the budget and
    clear the bar, and none of those with a less bad worst unit on a smaller grid; where it is
    not, least_error's grid."""
    image = textured_image(h, w, seed) if photo else page(h, w, seed, lines)
    kw = dict(tolerance=tolerance, shapes=shapes)
    ours, (stock_grid, fit_grid, grid), budget = rule_outputs(processor, image, "balanced", alpha, **kw)
    least = wrap_processor(processor.image_processor, alpha=alpha, **kw)([image], return_tensors="pt",
                                                                         size=PAGE_SIZE, downscale="least_error")
    least_grid = least["image_grid_thw"][0].tolist()
    raw = resized(processor, image, size=PAGE_SIZE)
    errors, sel = luma_errors(raw, grid, budget, alpha, **kw)
    assert ours[REGIONS_KEY][:, [1, 3, 4]].tolist() == sel.regions.tolist()
    uh, uw = smart_resize(raw.shape[1], raw.shape[2], UNIT, MIN_PIXELS, max(budget, 1) * UNIT * UNIT)
    if uh * uw >= raw.shape[1] * raw.shape[2]:
        event("no uniform down-scaling")
        return
    uniform, _ = luma_error(raw, [1, uh // 14, uw // 14], 0, 1.0)
    bar = uniform * 10 ** -0.02
    least_errors, _ = luma_errors(raw, least_grid, budget, alpha, **kw)
    if least_errors.sum() <= bar * (1 - 1e-6):
        event("least_error clears the bar" + (" and balanced chose another grid" if grid != least_grid else ""))
        assert errors.sum() <= bar * (1 + 1e-6)
        known = [(least_errors, least_grid)]
        for end_grid in (stock_grid, fit_grid):
            end, end_sel = luma_errors(raw, end_grid, budget, alpha, **kw)
            if len(end_sel.regions) <= budget and end.sum() <= bar * (1 - 1e-6):
                known.append((end, end_grid))
        assert errors.max() <= min(e.max() for e, _ in known) * 10 ** 0.02 * (1 + 1e-6) + 1e-6
        for e, g in known:
            if e.max() < errors.max() * (1 - 1e-6) - 1e-6:
                event("a known grid has a less bad worst unit")
                assert g[1] * g[2] >= grid[1] * grid[2]
    elif least_errors.sum() > bar * (1 + 1e-6):
        event("no grid clears the bar")
        assert grid == least_grid and torch.equal(ours[REGIONS_KEY], least[REGIONS_KEY])


@given(rows=st.integers(1, 60), cols=st.integers(1, 60), frac=st.floats(0.0, 1.0))
def test_core_sizes_are_smart_resize_on_whole_units(rows, cols, frac):
    """On an image of whole units (every processor output), the core's size family is
    smart_resize's under ``max_pixels`` = that many units (one unit as the floor)."""
    from entropy_prune._downscale import size_under

    cells = rows * cols
    assume(cells > 1 and max(rows, cols) / min(rows, cols) <= 200)  # smart_resize refuses more
    n = 1 + int(frac * (cells - 2))  # 1 .. cells - 1: a smaller size
    h, w = rows * UNIT, cols * UNIT
    assert size_under(h, w, UNIT, n) == smart_resize(h, w, UNIT, UNIT * UNIT, n * UNIT * UNIT)


@pytest.mark.parametrize("backend", ["torchvision", "pil"])
def test_least_error_on_float_images(backend):
    """[0, 1] float pixels (do_rescale=False) go the same way as 8-bit ones: a grid no larger
    than the processor's, at most the budget, rows valid for the model."""
    proc = wrap_processor(make_processor(backend).image_processor, alpha=0.3, downscale="least_error")
    images = [textured_image(252, 336, 0), page(336, 252, 1, lines=20)]
    floats = [x.astype(np.float32) / 255 for x in images]
    ours = proc(floats, return_tensors="pt", size=PAGE_SIZE, do_rescale=False)
    stock = make_processor(backend).image_processor(floats, return_tensors="pt", size=PAGE_SIZE, do_rescale=False)
    _check_regions(ours[REGIONS_KEY], ours["pixel_values"], ours["image_grid_thw"], 2)
    for i, (grid, full) in enumerate(zip(ours["image_grid_thw"].tolist(), stock["image_grid_thw"].tolist(),
                                         strict=True)):
        assert grid[1] <= full[1] and grid[2] <= full[2]
        assert (ours[REGIONS_KEY][:, 0] == i).sum() <= math.floor(0.3 * full[1] * full[2] / 4 + 0.5)
    assert ours["pixel_values"].dtype == stock["pixel_values"].dtype
