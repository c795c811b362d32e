"""benchmarks/bench_shapes.py: its tilings are optimal (against every tiling), its quadtree renders like
`reconstruct`, and a quick run."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

pytest.importorskip("skimage")
pytest.importorskip("transformers")

from skimage import data

from benchmarks import bench_shapes as bs
from benchmarks.bench_fidelity import UNIT, resize
from benchmarks.bench_rescale import coarsest_count
from entropy_prune import reconstruct, select_patches
from entropy_prune._resample import bilinear


def blocky(rows: int, cols: int, seed: int) -> np.ndarray:
    """Random pixel blocks of random sizes, so that regions of every shape differ in error."""
    rng = np.random.default_rng(seed)
    img = np.zeros((rows * UNIT, cols * UNIT, 3), np.uint8)
    for step in (56, 28, 14, 7):
        noise = rng.integers(0, 64, (-(-rows * UNIT // step), -(-cols * UNIT // step), 3), dtype=np.uint8)
        img += np.repeat(np.repeat(noise, step, 0), step, 1)[:rows * UNIT, :cols * UNIT] * (rng.random() < 0.8)
    return img


def every_tiling(regions: dict, family: bs.Family, shape: bs.Shape, r: int, c: int) -> list[list]:
    """All tilings of one region the family can reach by showing or splitting it, by enumeration."""
    h, w = shape
    found = [[(shape, r, c, leaf)] for leaf in family.leaves.get(shape, ())]
    for k, m in family.splits.get(shape, ()):
        children = [((h // k, w // m), k * r + i, m * c + j) for i in range(k) for j in range(m)]
        for parts in itertools.product(*(every_tiling(regions, family, *child) for child in children)):
            found.append([tile for part in parts for tile in part])
    return found


def cost(regions: dict, tiles: list, lam: float) -> float:
    return sum(regions[(shape, leaf)][0][r, c] for shape, r, c, leaf in tiles) + lam * bs.tokens(tiles)


GRIDS = {"quadtree": ((6, 8), [(4, 4)] * 2 + [(2, 2)] * 4), "halves": ((6, 8), [(4, 4)] * 2 + [(2, 2)] * 4),
         "halves4": ((6, 8), [(4, 4)] * 2 + [(2, 2)] * 4), "thirds": ((6, 8), [(6, 6)] + [(2, 2)] * 3)}


@pytest.mark.parametrize("name", list(bs.FAMILIES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiling_is_the_least_cost_of_every_tiling(name, seed):
    """At every weight where the best tiling of a block changes (just below and above it), the dynamic
    programme's tiling covers the grid once and costs what the best of every tiling costs."""
    family, ((rows, cols), top) = bs.FAMILIES[name], GRIDS[name]
    if name == "thirds":  # every tiling of a 12 x 12 block is too many to list: its 6 x 6 blocks alone
        family = dataclasses.replace(family, top=(6, 2, 1))
    regions = bs.views(blocky(rows, cols, seed), family)
    blocks = bs.top_blocks(family, rows, cols)
    assert [b[0] for b in blocks] == top
    lines = [np.array([(cost(regions, t, 0.0), bs.tokens(t)) for t in every_tiling(regions, family, *b)])
             for b in blocks]
    changes = set()
    for line in lines:
        least = {n: line[line[:, 1] == n, 0].min() for n in np.unique(line[:, 1])}
        changes |= {(least[a] - least[b]) / (b - a) for a, b in itertools.combinations(sorted(least), 2)}
    weights = [0.0, 1e12] + [w * f for w in changes if w > 0 for f in (1 - 1e-6, 1 + 1e-6)]
    for lam in weights:
        tiles = bs.tiling(regions, family, lam, rows, cols)
        covered = np.zeros((rows, cols), int)
        for (h, w), r, c, _ in tiles:
            covered[r * h:(r + 1) * h, c * w:(c + 1) * w] += 1
        assert (covered == 1).all()
        least = sum((line[:, 0] + lam * line[:, 1]).min() for line in lines)
        assert cost(regions, tiles, lam) == pytest.approx(least, rel=1e-9)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_more_shapes_cost_less(seed):
    """halves reaches every quadtree tiling (two halvings make a quarter), halves4 every halves tiling, and
    each does better on rows of one value (a region one unit high loses nothing); thirds reaches every
    quadtree tiling (a 12 x 12 block splits into 4 x 4 ones)."""
    rows, cols = 14, 13
    lines = np.random.default_rng(seed).integers(0, 256, (rows * UNIT, 1, 3), dtype=np.uint8)
    img = np.repeat(lines, cols * UNIT, 1)
    names = ("quadtree", "halves", "halves4", "thirds")
    regions = {n: bs.views(img, bs.FAMILIES[n]) for n in names}
    for lam in np.quantile(regions["quadtree"][((2, 2), (1, 1))][0], [0.2, 0.6, 0.95]):
        costs = [cost(regions[n], bs.tiling(regions[n], bs.FAMILIES[n], lam, rows, cols), lam) for n in names]
        assert costs[0] > costs[1] > costs[2] and costs[0] >= costs[3] * (1 - 1e-9)


def test_area_average():
    """Whole factors give block means; 3 units as 2 tokens weigh each pixel by the length it covers."""
    x = torch.arange(12.0)
    assert torch.allclose(bs._area(12, 4) @ x, x.reshape(4, 3).mean(1))
    two = bs._area(3, 2)
    assert torch.allclose(two, torch.tensor([[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]]))
    assert torch.allclose(bs._area(84, 56).sum(1), torch.ones(56))


def test_quadtree_renders_as_reconstruct():
    rows, cols = 6, 9
    img = resize(data.astronaut(), rows * UNIT, cols * UNIT)
    quadtree = bs.FAMILIES["quadtree"]
    regions = bs.views(img, quadtree)
    coarsest = bs.tiling(regions, quadtree, 1e13, rows, cols)
    assert bs.tokens(coarsest) == coarsest_count(rows, cols)
    sel = select_patches(img, "v1", thresholds=[1e9, 1e9], patch_size=UNIT)
    shown = bs.paint(regions, coarsest, rows * UNIT, cols * UNIT).astype(int)
    assert np.abs(shown - reconstruct(img, sel, UNIT).astype(int)).max() <= 1
    assert np.array_equal(bs.paint(regions, bs.tiling(regions, quadtree, 0.0, rows, cols), *img.shape[:2]), img)


def test_thirds_show_a_region_as_two_by_two_tokens():
    """A 3 x 3 region shown as 2 x 2 tokens: its 84 px area-averaged to 56 (each half pixel counted once in
    the 3 that make an output pixel), brought back bilinearly; on content constant over each 1.5-unit
    quarter it loses less than half of what one token loses, and a budget of 64 on a 12 x 12 grid uses it."""
    rows = cols = 12
    quarters = np.random.default_rng(7).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = np.repeat(np.repeat(quarters, 42, 0), 42, 1)
    img[::5] -= img[::5] // 8  # and some detail inside them
    thirds = bs.FAMILIES["thirds"]
    regions = bs.views(img, thirds)
    region = img[84:168, :84].astype(np.float64)
    halves = np.repeat(np.repeat(region, 2, 0), 2, 1)
    token = halves.reshape(56, 3, 56, 3, 3).mean((1, 3))
    shown = bilinear(token, (84, 84))
    err, drawn = regions[((3, 3), (2, 2))]
    assert np.allclose(drawn[1, 0], shown, atol=1e-3)
    assert err[1, 0] == pytest.approx(((shown - region) ** 2).sum(), rel=1e-5)
    assert (regions[((3, 3), (2, 2))][0] < regions[((3, 3), (1, 1))][0] / 2).all()
    tiles = bs.within(regions, thirds, 64, rows, cols)
    assert 60 <= bs.tokens(tiles) <= 64 and sum(t[0] == (3, 3) and t[3] == (2, 2) for t in tiles) >= 8


def test_thirds_split_twelve_units_both_ways():
    """A 12 x 12 block splits into 6 x 6 or 4 x 4 regions: content constant over 4 x 4 units is shown
    exactly with 9 tokens only through the latter."""
    blocks = np.random.default_rng(8).integers(0, 256, (3, 3, 3), dtype=np.uint8)
    img = np.repeat(np.repeat(blocks, 4 * UNIT, 0), 4 * UNIT, 1)
    thirds = bs.FAMILIES["thirds"]
    regions = bs.views(img, thirds)
    tiles = bs.within(regions, thirds, 9, 12, 12)
    assert bs.tokens(tiles) == 9 and {t[0] for t in tiles} == {(4, 4)}
    assert np.array_equal(bs.paint(regions, tiles, *img.shape[:2]), img)


def test_within_keeps_at_most_the_budget():
    rows, cols = 8, 8
    halves = bs.FAMILIES["halves"]
    regions = bs.views(blocky(rows, cols, 5), halves)
    assert bs.tokens(bs.within(regions, halves, 1, rows, cols)) == 4  # the coarsest tiling, as the library keeps
    for budget in (4, 5, 13, 40, 64):
        tiles = bs.within(regions, halves, budget, rows, cols)
        assert min(budget, 64) - 2 <= bs.tokens(tiles) <= budget


def test_best_size_keeps_the_budget_where_it_can():
    """A smaller size is only taken when its tiling fits the budget; the processor's size keeps its coarsest."""
    img = resize(data.astronaut(), 4 * UNIT, 4 * UNIT)
    processor, _, budget = bs.best_size(img, 0.2, "quadtree")
    assert (processor[1], budget) == (1, 3)  # one 4 x 4 block
    for family in bs.FAMILIES:
        for alpha in (0.2, 0.3, 0.5):
            _, (gain, tokens), budget = bs.best_size(img, alpha, family)
            assert tokens <= budget and np.isfinite(gain)


def test_quick_run(capsys):
    rows = bs.main(["--quick"])
    assert len(rows) == len(bs.FAMILIES) * 2 * 5
    assert all(np.isfinite(r["gain"]) and r["tokens"] <= r["budget"] for r in rows)
    assert "halves4" in capsys.readouterr().out


def test_alphas_outside_the_budget_range_are_refused(capsys):
    with pytest.raises(SystemExit):
        bs.main(["--alphas", "0.3", "1.5"])
    assert "--alphas must be in (0, 1]" in capsys.readouterr().err
