"""``select_patches(..., downscale=)``: the core's own down-scaling before a budget selection
(Pillow's bicubic to multiples of the cell), shown by ``reconstruct`` at the image's size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import event, given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data
from strategies import images

from entropy_prune import _downscale, detail_maps, entropy_maps, reconstruct, select_patches
from entropy_prune.visualize import render_selection

BT601 = np.array([0.299, 0.587, 0.114], np.float32)


def value_range(img: np.ndarray) -> tuple[float, float]:
    return (0.0, 1.0) if img.dtype.kind == "f" else (0.0, float(np.iinfo(img.dtype).max))


def pil_resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Pillow's bicubic per channel, in float32 for all but 8-bit, rounded / clipped back."""
    planes = img[..., None] if img.ndim == 2 else img
    lo, hi = value_range(img)
    out = []
    for c in range(planes.shape[2]):
        plane = np.ascontiguousarray(planes[..., c])
        if img.dtype == np.uint8:
            out.append(np.asarray(Image.fromarray(plane, "L").resize((w, h), Image.BICUBIC)))
            continue
        small = np.asarray(Image.fromarray(plane.astype(np.float32), "F").resize((w, h), Image.BICUBIC))
        out.append(np.clip(np.rint(small) if img.dtype.kind in "ui" else small, lo, hi).astype(img.dtype))
    out = np.stack(out, -1)
    return out if img.ndim == 3 else out[..., 0]


def luma(img: np.ndarray) -> np.ndarray:
    """(h, w) float32 luma in 8-bit levels of the image's range."""
    lo, hi = value_range(img)
    x = img.astype(np.float32)
    y = x if img.ndim == 2 else x[..., 0] if img.shape[2] == 1 else x[..., :3] @ BT601
    return (y - lo) * np.float32(255 / (hi - lo))


def luma_errors(img, size, budget, alpha, p, **kw):
    """Squared luma error per cell of ``img`` (those cut by its edge summing what they hold) of the
    plain selection of ``budget`` cells on ``img`` resized to ``size``, shown by ``reconstruct``
    and brought back bilinearly (torch); and that selection."""
    small = img if size == img.shape[:2] else pil_resize(img, *size)
    cells = -(-size[0] // p) * -(-size[1] // p)
    a = min(budget / cells, 1.0) if budget else alpha
    sel = select_patches(small, "budget", a, patch_size=p, **kw)
    shown = torch.from_numpy(reconstruct(luma(small), sel, p, value_range=(0.0, 255.0)))[None, None]
    shown = F.interpolate(shown, img.shape[:2], mode="bilinear", align_corners=False)[0, 0].double()
    sq = (shown - torch.from_numpy(luma(img)).double()) ** 2
    h, w = img.shape[:2]
    rows, cols = -(-h // p), -(-w // p)
    sq = F.pad(sq, (0, cols * p - w, 0, rows * p - h))
    return sq.reshape(rows, p, cols, p).sum((1, 3)).numpy(), sel


def luma_error(img, size, budget, alpha, p, **kw):
    """:func:`luma_errors` summed."""
    errors, sel = luma_errors(img, size, budget, alpha, p, **kw)
    return float(errors.sum()), sel


def size_of(sel, img):
    return img.shape[:2] if sel.resized is None else sel.resized[1]


@settings(deadline=None)
@given(img=images(max_side=64, dtypes=("uint8", "uint16", "float32")), p=st.integers(1, 8),
       alpha=st.floats(0.02, 1.0), rule=st.sampled_from([True, "least_error", "balanced"]),
       tolerance=st.sampled_from([None, 0, 3]), mode=st.sampled_from(["multiscale", "drop", "halves"]),
       num_scales=st.integers(1, 3))
def test_downscale_invariants(img, p, alpha, rule, tolerance, mode, num_scales):
    """The plain selection on a smaller size of the same family (each side a multiple of p or the
    image's own below p, no side longer and the area smaller than the image's), within the budget
    of the image's cells, deterministic, numpy == torch, shown at the image's size;
    "least_error"'s error no larger than at either end (no down-scaling, ``True``'s size);
    "balanced" as in :func:`check_balanced`. ``mode`` "halves": multiscale with shapes="halves"."""
    shapes = "halves" if mode == "halves" else "squares"
    mode = "multiscale" if mode == "halves" else mode
    kw = dict(patch_size=p, tolerance=tolerance, mode=mode, num_scales=num_scales, shapes=shapes)
    sel = select_patches(img, "budget", alpha, downscale=rule, **kw)
    again = select_patches(img, "budget", alpha, downscale=rule, **kw)
    assert np.array_equal(sel.label_map, again.label_map) and sel.resized == again.resized
    h, w = img.shape[:2]
    budget = math.floor(alpha * -(-h // p) * -(-w // p) + 0.5)
    size = size_of(sel, img)
    if sel.resized is not None:
        assert sel.resized[0] == (h, w) and all(n % p == 0 or n == m < p for n, m in zip(size, (h, w), strict=True))
        assert size[0] * size[1] < h * w and size[0] <= h and size[1] <= w
    event("down-scaled" if sel.resized else "kept its size")
    assert sel.num_tokens <= budget or not sel.budget_met
    err, plain = luma_error(img, size, budget, alpha, p, tolerance=tolerance, mode=mode, num_scales=num_scales,
                            shapes=shapes)
    assert np.array_equal(plain.label_map, sel.label_map) and plain.num_tokens == sel.num_tokens
    shown = reconstruct(img, sel, p)
    assert shown.shape == img.shape and shown.dtype == img.dtype
    lo, hi = value_range(img)
    assert lo <= shown.min() and shown.max() <= hi
    if img.dtype != np.uint16:
        t = select_patches(torch.from_numpy(img), "budget", alpha, downscale=rule, **kw)
        assert np.array_equal(t.label_map, sel.label_map) and t.resized == sel.resized
        assert np.array_equal(reconstruct(torch.from_numpy(img), t, p).numpy(), shown)
    if rule == "least_error":
        fit = select_patches(img, "budget", alpha, downscale=True, **kw)
        ends = [luma_error(img, s, budget, alpha, p, tolerance=tolerance, mode=mode, num_scales=num_scales,
                           shapes=shapes) for s in ((h, w), size_of(fit, img))]
        fitting = [e for e, s in ends if s.num_tokens <= budget]
        if fitting:
            assert sel.num_tokens <= budget
            assert err <= min(fitting) * (1 + 1e-6) + 1e-6
    if rule == "balanced":
        check_balanced(img, sel, budget, alpha, kw)


CLOSE = 10 ** 0.02  # balanced: worst cells within 0.2 dB of the least count as equally good


def check_balanced(img, sel, budget, alpha, kw):
    """Where least_error's error is at least 0.2 dB below uniform down-scaling's (``img`` at the
    family's size for the budget, every cell kept), balanced's error is below that too; its worst
    cell is within 0.2 dB of the least among least_error's and either end's (no down-scaling,
    ``True``'s size) that fit the budget and clear the bar, and of those whose worst cell is
    below balanced's none is smaller (balanced takes the smallest of the close ones). Where it is
    not, balanced is least_error."""
    p = kw["patch_size"]
    rest = {k: v for k, v in kw.items() if k != "patch_size"}
    h, w = img.shape[:2]
    least = select_patches(img, "budget", alpha, downscale="least_error", **kw)
    uniform = select_patches(img, "budget", alpha, patch_size=p, downscale=True)  # no tolerance: uniform
    if budget < 1 or uniform.resized is None:
        return
    bar = luma_error(img, size_of(uniform, img), budget, alpha, p)[0] * 10 ** -0.02
    errors = luma_errors(img, size_of(sel, img), budget, alpha, p, **rest)[0]
    least_errors = luma_errors(img, size_of(least, img), budget, alpha, p, **rest)[0]
    if least_errors.sum() <= bar * (1 - 1e-6):
        area = math.prod(size_of(sel, img))
        event("least_error clears the bar" + (" and balanced chose another size" if sel.resized != least.resized
                                              else ""))
        assert errors.sum() <= bar * (1 + 1e-6) + 1e-6
        known = [(least_errors, size_of(least, img))]
        for size in ((h, w), size_of(select_patches(img, "budget", alpha, downscale=True, **kw), img)):
            end, end_sel = luma_errors(img, size, budget, alpha, p, **rest)
            if end_sel.num_tokens <= budget and end.sum() <= bar * (1 - 1e-6):
                known.append((end, size))
        assert errors.max() <= min(e.max() for e, _ in known) * CLOSE * (1 + 1e-6) + 1e-6
        for e, size in known:
            if e.max() < errors.max() * (1 - 1e-6) - 1e-6:
                event("a known size has a less bad worst cell")
                assert math.prod(size) >= area
    elif least_errors.sum() > bar * (1 + 1e-6) + 1e-6:
        assert sel.resized == least.resized and np.array_equal(sel.label_map, least.label_map)


@given(base=st.floats(0, 1e6), made=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40), st.floats(1, 1.1)),
                                              min_size=1, max_size=8))
def test_balanced_takes_the_smallest_close_worst_cell(base, made):
    """balanced's last step, on made-up candidates (h, w) with made-up cell errors (worst cells
    ``base`` times 1 to 1.1): the first of the fewest pixels among those whose worst cell is
    within 0.2 dB (x 1.047) of the least."""
    scored = [((h, w), None, np.array([0.0, base * f, base * f / 3])) for h, w, f in made]
    chosen = _downscale._smallest_of_least_worst(scored, lambda image: image)
    least = min(c[2].max() for c in scored)
    close = [c for c in scored if c[2].max() <= least * CLOSE]
    by_area = sorted(close, key=lambda c: c[0][0] * c[0][1])  # stable: first of equals
    event(f"{len(close)} close, {len({c[0][0] * c[0][1] for c in close})} areas")
    assert chosen is by_area[0]


@settings(deadline=None)
@given(name=st.sampled_from(["astronaut", "coffee", "page", "text", "camera"]), top=st.floats(0, 1),
       left=st.floats(0, 1), h=st.integers(56, 280), w=st.integers(56, 280), p=st.sampled_from([14, 28]),
       alpha=st.floats(0.05, 0.8), tolerance=st.sampled_from([None, 0]), shapes=st.sampled_from(["squares", "halves"]))
def test_balanced_on_photographs_and_pages(name, top, left, h, w, p, alpha, tolerance, shapes):
    """:func:`check_balanced` on crops of skimage photographs and scanned text, where down-scaling
    is common (the tiny images above rarely leave a choice)."""
    full = getattr(data, name)()
    h, w = min(h, full.shape[0]), min(w, full.shape[1])
    y, x = int(top * (full.shape[0] - h)), int(left * (full.shape[1] - w))
    img = np.ascontiguousarray(full[y:y + h, x:x + w])
    kw = dict(patch_size=p, tolerance=tolerance, shapes=shapes)
    sel = select_patches(img, "budget", alpha, downscale="balanced", **kw)
    budget = math.floor(alpha * -(-h // p) * -(-w // p) + 0.5)
    assert sel.num_tokens <= budget or not sel.budget_met
    check_balanced(img, sel, budget, alpha, kw)


@given(img=images(max_side=64), p=st.integers(1, 8), alpha=st.floats(0.02, 1.0),
       tolerance=st.sampled_from([None, 0]))
def test_true_keeps_the_size_where_the_cells_fit(img, p, alpha, tolerance):
    """``downscale=True`` shrinks only where the cells that ``tolerance`` leaves exceed the budget."""
    h, w = img.shape[:2]
    cells = -(-h // p) * -(-w // p)
    budget = math.floor(alpha * cells + 0.5)
    left = cells - (0 if tolerance is None else int(select_patches(img, None, patch_size=p, tolerance=0)
                                                    .predicted.sum()))
    sel = select_patches(img, "budget", alpha, patch_size=p, tolerance=tolerance, downscale=True)
    if left <= budget or budget == 0:
        assert sel.resized is None


def test_a_page_is_shown_whole_at_a_smaller_size():
    """A page of text lines: at 30% of its cells, ``True`` with ``tolerance=0`` shows every cell it
    keeps at full resolution on a smaller page, within the budget; least_error keeps at least as
    much of it (luma error) as no down-scaling."""
    rng = np.random.default_rng(0)
    img = np.full((560, 448, 3), 255, np.uint8)
    for r in range(20, 540, 26):  # text-like bands of noise, 12 px tall, ragged right
        width = int(rng.integers(200, 392))
        img[r:r + 12, 28:28 + width] = rng.integers(0, 160, (12, width, 1), dtype=np.uint8)
    cells, budget = 20 * 16, math.floor(0.3 * 20 * 16 + 0.5)
    sel = select_patches(img, "budget", 0.3, tolerance=0, downscale=True)
    assert sel.resized is not None and sel.resized[1][0] * sel.resized[1][1] < 560 * 448
    assert sel.num_tokens <= budget and (sel.regions[:, 0] == 1).all()
    plain = select_patches(img, "budget", 0.3, tolerance=0)
    assert (plain.regions[:, 0] > 1).any() and plain.num_tokens <= budget < cells
    best = select_patches(img, "budget", 0.3, tolerance=0, downscale="least_error")
    errors = [luma_error(img, size_of(s, img), budget, 0.3, 28, tolerance=0)[0] for s in (best, plain)]
    assert errors[0] <= errors[1]


def test_true_without_tolerance_is_uniform_down_scaling():
    """A photograph without ``tolerance``: ``True`` is the image resized (Pillow's bicubic) to the
    largest size of the family whose cells fit the budget, every cell kept, brought back
    bilinearly: uniform down-scaling."""
    img = np.asarray(Image.fromarray(np.ascontiguousarray(np.random.default_rng(2).integers(
        0, 256, (64, 48, 3), dtype=np.uint8))).resize((500, 610), Image.BICUBIC))  # 610 x 500: cells cut by the edge
    sel = select_patches(img, "budget", 0.3, downscale=True)
    cells = 22 * 18
    assert sel.resized is not None
    h, w = sel.resized[1]
    assert h % 28 == 0 and w % 28 == 0 and (h // 28) * (w // 28) <= math.floor(0.3 * cells + 0.5)
    assert (sel.label_map == 1).all() and sel.num_tokens == (h // 28) * (w // 28)
    small = torch.from_numpy(pil_resize(img, h, w).astype(np.float32)).permute(2, 0, 1)[None]
    back = F.interpolate(small, img.shape[:2], mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    assert np.abs(reconstruct(img, sel).astype(int) - back.round().numpy().astype(int)).max() <= 1


def test_rgb_is_resized_as_pillow_resizes_rgb():
    """8-bit RGB is resized in one Pillow call: the same pixels as plane by plane."""
    img = np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    sel = select_patches(img, "budget", 0.1, patch_size=7, downscale=True)
    h, w = sel.resized[1]
    assert np.array_equal(np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC)), pil_resize(img, h, w))
    assert np.array_equal(luma_error(img, (h, w), sel.budget, 0.1, 7)[1].label_map, sel.label_map)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(downscale="fit"), ValueError, "downscale must be True, False, 'least_error' or 'balanced', got 'fit'"),
    (dict(downscale=1), TypeError, "downscale must be True, False, 'least_error' or 'balanced', got 1"),
    (dict(downscale=None), TypeError, "downscale must be True, False, 'least_error' or 'balanced', got None"),
    (dict(downscale=True, method="v2", alpha=1.0), ValueError, "needs method 'budget'"),
    (dict(downscale="least_error", method=None), ValueError, "needs method 'budget'"),
])
def test_bad_downscale_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        select_patches(np.zeros((56, 56), np.uint8), **{"method": "budget", "alpha": 0.3, **kwargs})


def test_downscale_needs_pixels_and_the_same_image():
    img = np.random.default_rng(1).integers(0, 256, (112, 140, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="downscale needs the image, not precomputed score maps"):
        select_patches(detail_maps(img), "budget", 0.3, downscale=True)
    sel = select_patches(img, "budget", 0.2, downscale=True)
    assert sel.resized[0] == (112, 140) and sel.resized[1][0] < 112
    with pytest.raises(ValueError, match=r"selection was made on a 112x140 image \(downscale\), got a 112x112"):
        reconstruct(img[:, :112], sel)
    with pytest.raises(ValueError, match=r"selection was made on a 112x140 image \(downscale\), got a 112x112"):
        render_selection(img[:, :112], sel, np.zeros(sel.label_map.shape))
    picture = render_selection(img, sel, np.zeros(sel.label_map.shape))
    assert picture.shape[1] >= 2 * sel.resized[1][1]


def test_render_selection_scores_a_downscale_selection_by_name():
    """A score's name draws the level-1 score of the image as it was selected on (resized): the same
    picture as that image's maps; the original image's maps get a message saying what to pass."""
    img = np.random.default_rng(2).integers(0, 256, (140, 196, 3), dtype=np.uint8)
    img[:, 98:] //= 16
    sel = select_patches(img, "budget", 0.2, downscale=True)
    (h, w) = sel.resized[1]
    assert h < 140
    small = detail_maps(pil_resize(img, h, w))
    assert np.array_equal(render_selection(img, sel, "detail"), render_selection(img, sel, small))
    unshrunk = select_patches(img, "budget", 0.2)
    assert np.array_equal(render_selection(img, unshrunk, "entropy"),
                          render_selection(img, unshrunk, entropy_maps(img)))
    shrunk = rf"got \(5, 7\) \(the selection was made on the image downscaled to {h}x{w} px; pass the score's name"
    with pytest.raises(ValueError, match=shrunk):
        render_selection(img, sel, detail_maps(img))
    with pytest.raises(ValueError, match=r"scores must be score maps or one of \('entropy', 'detail'\), got 'detial'"):
        render_selection(img, sel, "detial")


def test_batches_are_refused():
    with pytest.raises(ValueError, match="one image at a time"):
        select_patches(np.zeros((2, 56, 56, 3), np.uint8), "budget", 0.3, downscale=True)
