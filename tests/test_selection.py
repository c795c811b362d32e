import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import images, settings_for

from entropy_prune import ScoreMaps, entropy_maps, select_patches
from entropy_prune._image import cells_to_pixels
from entropy_prune.scores import score_maps


def coarsest_level(maps, i, j):
    """Largest level whose whole block around base cell (i, j) exists in the maps."""
    return max(k for k in range(1, len(maps) + 1)
               if k == 1 or (i >> (k - 1) < maps[k - 1].shape[0] and j >> (k - 1) < maps[k - 1].shape[1]))


def coarsest_count(maps):
    rows, cols = maps[0].shape
    sides = [[1 << (coarsest_level(maps, i, j) - 1) for j in range(cols)] for i in range(rows)]
    return sum(1 for i in range(rows) for j in range(cols) if i % sides[i][j] == 0 and j % sides[i][j] == 0)


def check_consistent(sel, maps):
    """label_map == masks == regions, and every region is an aligned block inside its level's grid."""
    rows, cols = sel.label_map.shape
    painted = np.zeros((rows, cols), np.int8)
    hits = np.zeros((rows, cols), int)
    for level, r, c in sel.regions:
        b = 1 << (level - 1)
        assert r % b == 0 and c % b == 0
        assert r // b < maps[level - 1].shape[0] and c // b < maps[level - 1].shape[1]
        painted[r:r + b, c:c + b] = level
        hits[r:r + b, c:c + b] += 1
    assert hits.max(initial=0) <= 1
    assert np.array_equal(painted, sel.label_map)
    from_masks = np.zeros((rows, cols), np.int8)
    for k, m in enumerate(sel.masks, 1):
        assert m.shape == maps[k - 1].shape and m.dtype == bool
        b = 1 << (k - 1)
        for r, c in zip(*np.nonzero(m), strict=True):
            from_masks[r * b:(r + 1) * b, c * b:(c + 1) * b] = k
    assert np.array_equal(from_masks, sel.label_map)
    assert sel.num_tokens == len(sel.regions) == sum(int(m.sum()) for m in sel.masks)
    order = np.lexsort((sel.regions[:, 2], sel.regions[:, 1]))
    assert np.array_equal(order, np.arange(len(order)))
    return hits


@given(images(), st.data())
def test_regions_labels_and_masks_agree_and_multiscale_partitions(img, data):
    kw = settings_for(data.draw)
    sel = select_patches(img, **kw)
    maps = entropy_maps(img, kw["patch_size"], kw["num_scales"])
    hits = check_consistent(sel, maps)
    if kw["mode"] == "multiscale":
        assert (hits == 1).all()
    else:
        assert set(np.unique(sel.label_map)) <= {0, 1}


@given(images(), st.data())
def test_deterministic(img, data):
    kw = settings_for(data.draw)
    a, b = select_patches(img, **kw), select_patches(img.copy(), **kw)
    assert a.num_tokens == b.num_tokens and np.array_equal(a.regions, b.regions)
    assert np.array_equal(a.label_map, b.label_map)


@given(images(), st.integers(1, 5), st.integers(1, 4), st.sampled_from(["entropy", "detail"]), st.floats(0.001, 1.0))
def test_budget_bounds(img, p, k, score, alpha):
    sel = select_patches(img, "budget", alpha, patch_size=p, num_scales=k, score=score)
    maps = entropy_maps(img, p, k)
    cells = maps[0].size
    assert sel.budget == math.floor(alpha * cells + 0.5)
    floor = coarsest_count(maps)
    if sel.budget >= floor:
        assert sel.budget_met
        assert sel.budget - 2 <= sel.num_tokens <= sel.budget
    else:
        assert not sel.budget_met
        assert sel.num_tokens == floor
        coarsest = select_patches(img, "v1", thresholds=[1e9] * (k - 1), patch_size=p, num_scales=k)
        assert np.array_equal(sel.label_map, coarsest.label_map)
    drop = select_patches(img, "budget", alpha, patch_size=p, num_scales=k, score=score, mode="drop")
    assert drop.num_tokens == drop.budget == sel.budget


@given(images(), st.integers(1, 5), st.integers(1, 4), st.sampled_from(["entropy", "detail"]),
       st.sampled_from(["multiscale", "drop"]), st.lists(st.floats(0.001, 1.0), min_size=2, max_size=6))
def test_budget_tokens_non_decreasing_in_alpha(img, p, k, score, mode, alphas):
    counts = [select_patches(img, "budget", a, patch_size=p, num_scales=k, score=score, mode=mode).num_tokens
              for a in sorted(alphas)]
    assert counts == sorted(counts)


@given(images(), st.integers(1, 5), st.integers(1, 4), st.sampled_from(["entropy", "detail"]),
       st.sampled_from(["multiscale", "drop"]), st.lists(st.floats(0.0, 4.0), min_size=2, max_size=6))
def test_v2_tokens_non_increasing_in_alpha(img, p, k, score, mode, alphas):
    counts = [select_patches(img, "v2", a, patch_size=p, num_scales=k, score=score, mode=mode).num_tokens
              for a in sorted(alphas)]
    assert counts == sorted(counts, reverse=True)


@given(st.integers(1, 60), st.integers(1, 60), st.integers(1, 6), st.integers(1, 4),
       st.sampled_from(["v1", "v2"]), st.sampled_from(["entropy", "detail"]), st.floats(0, 1), st.floats(0.0, 2.0))
def test_constant_image_gives_coarsest_tiling(h, w, p, k, method, score, value, alpha):
    img = np.full((h, w, 3), value, np.float32)
    sel = select_patches(img, method, alpha, thresholds=[0.5] * (k - 1) if method == "v1" else None,
                         patch_size=p, num_scales=k, score=score)
    maps = entropy_maps(img, p, k)
    assert sel.num_tokens == coarsest_count(maps)
    for i in range(maps[0].shape[0]):
        for j in range(maps[0].shape[1]):
            assert sel.label_map[i, j] == coarsest_level(maps, i, j)


@given(images(), st.data())
def test_v1_keeps_a_region_coarse_iff_below_its_threshold(img, data):
    kw = settings_for(data.draw, methods=("v1",), modes=("multiscale",))
    sel = select_patches(img, **kw)
    maps = entropy_maps(img, kw["patch_size"], kw["num_scales"]) if kw["score"] == "entropy" else None
    assume(maps is not None)
    thr = kw["thresholds"]
    for level, r, c in sel.regions:
        if level >= 2:
            b = 1 << (level - 1)
            assert maps[level - 1][r // b, c // b] < thr[level - 2]
        # coarsest level first: the block one level up was not coarse-worthy (or does not exist)
        up = level + 1
        if up <= len(maps):
            bu = 1 << (up - 1)
            if r // bu < maps[up - 1].shape[0] and c // bu < maps[up - 1].shape[1]:
                assert maps[up - 1][r // bu, c // bu] >= thr[up - 2]


@given(images(), st.integers(1, 5), st.integers(2, 4), st.floats(0.01, 1.0))
def test_budget_splits_follow_descending_score(img, p, k, alpha):
    """Every split region outranks every coarse region left unsplit (priority = min over ancestors)."""
    maps = entropy_maps(img, p, k)
    sel = select_patches(maps, "budget", alpha)
    eff = {}
    for level in range(k, 1, -1):
        s = maps[level - 1]
        for r in range(s.shape[0]):
            for c in range(s.shape[1]):
                parent = eff.get((level + 1, r // 2, c // 2))
                eff[(level, r, c)] = s[r, c] if parent is None else min(s[r, c], parent)
    split = []
    for (level, r, c), e in eff.items():
        b = 1 << (level - 1)
        if sel.label_map[r * b, c * b] < level:
            split.append(e)
    unsplit = [eff[(lv, r >> (lv - 1), c >> (lv - 1))] for lv, r, c in sel.regions if lv >= 2]
    if split and unsplit:
        assert min(split) >= max(unsplit)


@given(images(), st.integers(1, 5), st.floats(0.01, 1.0), st.sampled_from(["entropy", "detail"]))
def test_drop_budget_keeps_the_top_scoring_cells(img, p, alpha, score):
    sel = select_patches(img, "budget", alpha, patch_size=p, num_scales=1, mode="drop", score=score)
    s = score_maps(img, score, patch_size=p, num_scales=1)[0]
    kept, dropped = s[sel.label_map == 1], s[sel.label_map == 0]
    if kept.size and dropped.size:
        assert kept.min() >= dropped.max()


@given(images(max_side=32), st.data())
def test_numpy_and_torch_images_select_the_same(img, data):
    kw = settings_for(data.draw)
    a = select_patches(img, **kw)
    b = select_patches(torch.from_numpy(img), **kw)
    assert np.array_equal(a.regions, b.regions) and a.num_tokens == b.num_tokens


@given(images(max_side=32), st.data())
def test_precomputed_maps_select_like_the_image(img, data):
    kw = settings_for(data.draw)
    maps = score_maps(img, kw["score"], patch_size=kw["patch_size"], num_scales=kw["num_scales"])
    rest = {key: v for key, v in kw.items() if key not in ("patch_size", "num_scales", "score")}
    a = select_patches(img, **kw)
    b = select_patches(maps, **rest)
    if kw["mode"] == "drop" and kw["method"] == "budget":
        # ties at the budget's edge: the image's pixels say which cells are predictable, maps
        # (no pixels) keep raster order; the kept scores are the same
        s = np.asarray(maps[0])
        assert np.array_equal(np.sort(s[a.label_map == 1]), np.sort(s[b.label_map == 1]))
        a = select_patches(maps, **rest)
    assert np.array_equal(a.regions, b.regions)
    assume(not maps.partial.any())
    c = select_patches([np.asarray(m) for m in maps], **rest)
    assert np.array_equal(a.regions, c.regions)


def test_selection_is_immutable():
    sel = select_patches(np.zeros((56, 56), np.uint8), "none")
    with pytest.raises(ValueError):
        sel.regions[0, 0] = 3
    with pytest.raises(AttributeError):
        sel.num_tokens = 1
    assert sel.num_cells == 4 and sel.num_tokens == 4 and isinstance(sel.num_tokens, int)
    assert isinstance(entropy_maps(np.zeros((56, 56), np.uint8)), ScoreMaps)


@given(images(max_side=32), st.integers(1, 4), st.sampled_from(["multiscale", "drop"]), st.data())
def test_thresholds_as_list_tuple_or_array_select_the_same(img, k, mode, data):
    n = k - 1 if mode == "multiscale" else max(k - 1, 1)
    thr = data.draw(st.lists(st.floats(0.0, 8.0, width=32), min_size=n, max_size=n))
    ref = select_patches(img, "v1", thresholds=thr, num_scales=k, mode=mode)
    for form in (tuple(thr), np.array(thr), np.array(thr, np.float32), torch.tensor(thr, dtype=torch.float64)):
        sel = select_patches(img, "v1", thresholds=form, num_scales=k, mode=mode)
        assert sel.threshold == ref.threshold and all(type(t) is float for t in sel.threshold)
        assert np.array_equal(sel.label_map, ref.label_map)
    whole = [round(t) for t in thr]
    assert np.array_equal(select_patches(img, "v1", thresholds=np.array(whole), num_scales=k, mode=mode).label_map,
                          select_patches(img, "v1", thresholds=whole, num_scales=k, mode=mode).label_map)


@given(st.integers(0, 6), st.integers(0, 6), st.integers(1, 5), st.integers(0, 30), st.integers(0, 30),
       st.integers(0, 2**32 - 1))
def test_cells_to_pixels_repeats_each_cell_and_fills_past_the_grid(rows, cols, p, h, w, seed):
    """The one label-map-to-pixel-mask helper: each cell covers p x p pixels from the top-left,
    pixels past the grid get the fill (whole-block grids), trailing axes ride along."""
    cells = np.random.default_rng(seed).integers(1, 9, (rows, cols, 2))
    expect = np.zeros((max(h, rows * p), max(w, cols * p), 2), cells.dtype)
    expect[: rows * p, : cols * p] = np.repeat(np.repeat(cells, p, 0), p, 1)
    got = cells_to_pixels(cells, p, (h, w))
    assert got.dtype == cells.dtype and np.array_equal(got, expect[:h, :w])


@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40), st.integers(1, 40), st.integers(1, 7))
def test_cells_to_pixels_of_a_scaled_picture(h, w, h2, w2, p):
    """With ``source``: the cell under each pixel of the (H, W) image shown at (h2, w2) px."""
    cells = np.arange(-(-h // p) * -(-w // p)).reshape(-(-h // p), -(-w // p))
    got = cells_to_pixels(cells, p, (h2, w2), source=(h, w))
    for y in range(h2):
        for x in range(w2):
            assert got[y, x] == cells[(y * h // h2) // p, (x * w // w2) // p]
