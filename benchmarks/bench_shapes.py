"""Which region shapes could reach issue 15's mean gain? The best tiling of each family of shapes.

    python -m benchmarks.bench_shapes [--alphas 0.2 0.3 0.5] [--quick]

Issue 15 asks for +1.5 dB mean PSNR over Qwen's uniform down-scaling at alpha 0.3; the library's
quadtree with the best choice of size reaches +1.34 (bench_fidelity's best_size rows). This asks
whether that is the quadtree's limit and what other shapes of region would give, before building
any. For each family, the tiling with the least squared RGB error at the budget: dynamic
programming over how each region is shown or split, with a Lagrange weight per token (optimal
for its own token count), bisected to the largest count at most the budget (a few tokens short
of it where the best error per count is not convex). A region is shown as
`reconstruct` shows a coarse region: its pixels area-averaged to its tokens (28 px each), brought
back inside the region bilinearly. This runs on the processor's size and on every smaller size
smart_resize gives the image (resized as bench_fidelity's best_size resizes), and the best size
is the one of highest true PSNR whose tiling fits the budget, against uniform down-scaling at
the same count (bench_fidelity's `uniform`). Families, in units of 28 px:

  quadtree - b x b regions, b in 1, 2, 4, aligned to their size, one token each (the library's);
  thirds   - the quadtree plus 3 x 3 regions shown as 2 x 2 tokens (a 2/3 down-scale, the same
             both ways) or one token, and 6 x 6 regions as one token, in 12 x 12 blocks that split
             into 6 x 6 or 4 x 4 (a 6 x 6 into 3 x 3 or 2 x 2);
  halves   - a region may split in two across either side: h x w, h and w in 1, 2, 4, neither
             side more than twice the other (1x2, 2x1, 2x4, 4x2 besides the quadtree's), one token each;
  halves4  - halves plus 1x4 and 4x1.

The top-level blocks are the library's (4 x 4 where whole, then 2 x 2, then single units;
thirds first takes 12 x 12 blocks, so each family has every quadtree tiling). A non-square
region as one token is squashed by 2 (or 4) along one side, and thirds' 2 x 2 tokens of a 3 x 3
region sit 1.5 units apart; neither is built (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks import bench_fidelity as fidelity
from benchmarks.bench_fidelity import PHOTOS, SMALL, UNIT, load, load_small, quality, resize, uniform
from entropy_prune._downscale import units

Shape = tuple[int, int]


@dataclass(frozen=True)
class Family:
    """Region shapes (h x w units) with how each may be shown (``leaves``: token grids, e.g. (1, 1) one
    token) and split (``splits``: k x m children of h/k x w/m), and the top-level blocks in order."""

    leaves: dict[Shape, tuple[Shape, ...]]
    splits: dict[Shape, tuple[Shape, ...]]
    top: tuple[int, ...] = (4, 2, 1)


def _halves(most: int) -> Family:
    shapes = [(h, w) for h in (1, 2, 4) for w in (1, 2, 4) if max(h, w) <= most * min(h, w)]
    return Family({s: ((1, 1),) for s in shapes},
                  {(h, w): tuple(k for k, child in (((2, 1), (h // 2, w)), ((1, 2), (h, w // 2))) if child in shapes)
                   for h, w in shapes})


FAMILIES = {
    "quadtree": Family({(1, 1): ((1, 1),), (2, 2): ((1, 1),), (4, 4): ((1, 1),)},
                       {(2, 2): ((2, 2),), (4, 4): ((2, 2),)}),
    "thirds": Family({(1, 1): ((1, 1),), (2, 2): ((1, 1),), (3, 3): ((1, 1), (2, 2)), (4, 4): ((1, 1),),
                      (6, 6): ((1, 1),), (12, 12): ()},
                     {(2, 2): ((2, 2),), (3, 3): ((3, 3),), (4, 4): ((2, 2),), (6, 6): ((2, 2), (3, 3)),
                      (12, 12): ((2, 2), (3, 3))}, top=(12, 4, 2, 1)),
    "halves": _halves(2),
    "halves4": _halves(4),
}


def _area(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) exact area-average weights (each output pixel the mean of the input it covers)."""
    edges = torch.arange(n_out + 1, dtype=torch.float64) * (n_in / n_out)
    pixel = torch.arange(n_in, dtype=torch.float64)
    overlap = (torch.minimum(edges[1:, None], pixel + 1) - torch.maximum(edges[:-1, None], pixel)).clamp(min=0)
    return (overlap / (n_in / n_out)).float()


def views(img: np.ndarray, family: Family) -> dict[tuple[Shape, Shape], tuple[np.ndarray, np.ndarray]]:
    """(H, W, 3) uint8 -> {(shape, leaf): (float64 (nr, nc) squared error, float32 (nr, nc, 28 h, 28 w, 3)
    shown)} for every whole aligned region of each shape: its pixels area-averaged to the leaf's
    token grid (28 px per token), brought back inside the region bilinearly."""
    x = torch.from_numpy(img.astype(np.float32))
    out = {}
    for (h, w), leaves in family.leaves.items():
        nr, nc = img.shape[0] // (UNIT * h), img.shape[1] // (UNIT * w)
        if nr == 0 or nc == 0:
            continue
        ref = x[:nr * UNIT * h, :nc * UNIT * w].reshape(nr, UNIT * h, nc, UNIT * w, 3).permute(0, 2, 4, 1, 3)
        for th, tw in leaves:
            token = torch.einsum("ip,rcdpq,jq->rcdij", _area(UNIT * h, UNIT * th), ref, _area(UNIT * w, UNIT * tw))
            shown = F.interpolate(token.reshape(-1, 3, UNIT * th, UNIT * tw), size=(UNIT * h, UNIT * w),
                                  mode="bilinear", align_corners=False).reshape(ref.shape)
            out[((h, w), (th, tw))] = (((shown - ref) ** 2).sum((2, 3, 4)).double().numpy(),
                                       shown.permute(0, 1, 3, 4, 2).numpy())
    return out


def top_blocks(family: Family, rows: int, cols: int) -> list[tuple[Shape, int, int]]:
    """The top-level tiling of a rows x cols grid: the family's block sides in order, each where whole
    and free (the library's: 4 x 4, then 2 x 2, then units), as (shape, row, col in blocks of that shape)."""
    taken = np.zeros((rows, cols), bool)
    blocks = []
    for b in family.top:
        for r in range(rows // b):
            for c in range(cols // b):
                if not taken[r * b:(r + 1) * b, c * b:(c + 1) * b].any():
                    taken[r * b:(r + 1) * b, c * b:(c + 1) * b] = True
                    blocks.append(((b, b), r, c))
    return blocks


def tiling(regions: dict, family: Family, lam: float, rows: int, cols: int) -> list[tuple[Shape, int, int, Shape]]:
    """The tiling minimising squared error + ``lam`` x tokens: [(shape, row, col in blocks of that shape,
    leaf)]; its tokens are the sum of the leaves' h x w."""
    cost, how = {}, {}
    for shape in sorted(family.splits.keys() | family.leaves.keys(), key=lambda s: s[0] * s[1]):
        options = [(("leaf", leaf), regions[(shape, leaf)][0] + lam * leaf[0] * leaf[1])
                   for leaf in family.leaves.get(shape, ()) if (shape, leaf) in regions]
        nr, nc = options[0][1].shape if options else (rows // shape[0], cols // shape[1])
        for k, m in family.splits.get(shape, ()):
            child = cost.get((shape[0] // k, shape[1] // m))
            if child is not None and nr and nc:
                parts = (child[i:k * nr:k, j:m * nc:m] for i in range(k) for j in range(m))
                options.append((("split", (k, m)), sum(parts)))
        if not options or not nr or not nc:
            continue
        totals = np.stack([t for _, t in options])
        cost[shape], how[shape] = totals.min(0), ([o for o, _ in options], totals.argmin(0))
    out = []

    def walk(shape: Shape, r: int, c: int) -> None:
        kind, arg = how[shape][0][how[shape][1][r, c]]
        if kind == "leaf":
            out.append((shape, r, c, arg))
            return
        k, m = arg
        for i in range(k):
            for j in range(m):
                walk((shape[0] // k, shape[1] // m), k * r + i, m * c + j)

    for block in top_blocks(family, rows, cols):
        walk(*block)
    return out


def tokens(tiles: list) -> int:
    return sum(th * tw for *_, (th, tw) in tiles)


def paint(regions: dict, tiles: list, height: int, width: int) -> np.ndarray:
    """The tiles' shown pixels as one (height, width, 3) uint8 image."""
    out = np.empty((height, width, 3), np.float32)
    for (h, w), r, c, leaf in tiles:
        out[r * UNIT * h:(r + 1) * UNIT * h, c * UNIT * w:(c + 1) * UNIT * w] = regions[((h, w), leaf)][1][r, c]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def within(regions: dict, family: Family, budget: int, rows: int, cols: int) -> list:
    """The optimal tiling with the most tokens at most ``budget`` (the coarsest if even it has more, as the
    library's budget keeps)."""
    lo, hi = 1e-3, 1e13
    found = tiling(regions, family, hi, rows, cols)
    if tokens(found) >= budget:
        return found
    for _ in range(48):
        mid = (lo * hi) ** 0.5
        tiles = tiling(regions, family, mid, rows, cols)
        lo, hi, found = (lo, mid, tiles) if tokens(tiles) <= budget else (mid, hi, found)
    return found


def best_size(img: np.ndarray, alpha: float, family: str) -> tuple[tuple[float, int], tuple[float, int], int]:
    """((gain over uniform in dB, tokens) of the family's best tiling at the budget on the processor's
    size, the same at the best of that size and every smaller size smart_resize gives whose tiling
    fits the budget, budget)."""
    height, width = img.shape[:2]
    budget = max(int(np.floor(alpha * units((height, width), UNIT) + 0.5)), 1)
    sizes = fidelity.smaller_sizes(height, width)
    below = [s for s in sizes if units(s, UNIT) <= budget]
    found = {}  # (height, width) or "best" -> (PSNR, tokens)
    for h, w in [s for s in sizes if units(s, UNIT) > budget] + below[-1:]:
        small = fidelity.shrunk(img, h, w)
        regions = views(small, FAMILIES[family])
        tiles = within(regions, FAMILIES[family], budget, h // UNIT, w // UNIT)
        if tokens(tiles) > budget and (h, w) != (height, width):  # only the processor's size may keep more
            continue
        shown = paint(regions, tiles, h, w)
        shown = shown if (h, w) == (height, width) else resize(shown, height, width, Image.BILINEAR)
        result = (quality(img, shown)[0], tokens(tiles))
        if (h, w) == (height, width):
            found[(h, w)] = result
        if "best" not in found or result[0] > found["best"][0]:
            found["best"] = result

    def gain(psnr: float, count: int) -> tuple[float, int]:
        return psnr - quality(img, uniform(img, count)[0])[0], count

    return gain(*found[(height, width)]), gain(*found["best"]), budget


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_shapes", description=__doc__.split("\n")[0])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.2, 0.3, 0.5])
    parser.add_argument("--quick", action="store_true", help="3 photographs and 2 small images at alpha 0.3 (CI)")
    args = parser.parse_args(argv)
    if any(not 0 < a <= 1 for a in args.alphas):
        parser.error(f"--alphas must be in (0, 1], got {args.alphas}")
    alphas = [0.3] if args.quick else args.alphas
    sets = [("photographs", PHOTOS[:3] if args.quick else PHOTOS), ("small images", SMALL[:2] if args.quick else SMALL)]
    rows = []
    print("best tiling at the budget: gain over uniform down-scaling, PSNR dB, mean / worst image")
    print(f"{'set':<13} {'alpha':>5}  {'family':<9} {'processor size':>26}  {'best size':>26}")
    for label, names in sets:
        images = {name: load_small(name) if "@" in name else load(name) for name in names}
        for alpha in alphas:
            for family in FAMILIES:
                found = {n: best_size(img, alpha, family) for n, img in images.items()}
                cells = []
                for sizes in (False, True):
                    gains = {n: f[sizes][0] for n, f in found.items()}
                    worst = min(gains, key=gains.get)
                    cells.append(f"{statistics.fmean(gains.values()):+6.2f} / {gains[worst]:+6.2f} {worst[:12]:<12}")
                    rows += [dict(set=label, alpha=alpha, family=family, sizes=sizes, image=n, gain=f[sizes][0],
                                  tokens=f[sizes][1], budget=f[2]) for n, f in found.items()]
                print(f"{label:<13} {alpha:>5.2f}  {family:<9} " + "  ".join(cells), flush=True)
    return rows


if __name__ == "__main__":
    main()
