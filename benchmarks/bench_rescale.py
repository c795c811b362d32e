"""Would choosing a global down-scale as well make the budget never worse than uniform down-scaling?

    python -m benchmarks.bench_rescale [--alphas 0.2 0.3 0.5] [--grids 4]

Issue 15's suggested way to "never worse than Qwen's uniform down-scaling": besides the budget
on the processor's grid, consider the image resized (bicubic, like the processor under
``max_pixels``) to a smaller grid of the same aspect, with the same number of tokens spent there
by the budget, and take the option with the smallest error. Counts must stay exact and monotone in
alpha, so a smaller grid is a candidate only where its budget reaches exactly the token count T
of the budget on the processor's grid (a quadtree reaches its coarsest tiling's count plus
multiples of 3); the ``--grids`` smallest such grids with at least T cells and the image's
aspect (within 15%) are tried. For each image of ``bench_fidelity`` (and its small images) and
alpha this prints the gain over uniform (PSNR dB, mean and worst image) of:

  budget     - the budget on the processor's grid (the library's selection);
  oracle     - the best of all candidates by their true PSNR (the most this family can give);
  predicted  - the candidate with the smallest predicted error: the ``detail`` score's error of
               each budget (sum of the squared scores of the regions it leaves unsplit, what
               area-averaged blocks lose) plus, for a smaller grid, the measured squared error
               of resizing the image's luma to it and back (bilinear), scaled to the full size.
"""

from __future__ import annotations

import argparse
import math
import statistics

import numpy as np
from PIL import Image

from benchmarks.bench_fidelity import PHOTOS, SMALL, UNIT, load, load_small, quality, resize, uniform
from entropy_prune import reconstruct, select_patches
from entropy_prune.scores import detail_maps


def coarsest_count(rows: int, cols: int) -> int:
    """Tokens of the coarsest 3-level tiling of a rows x cols grid."""
    b4, b2 = (rows // 4) * (cols // 4), (rows // 2) * (cols // 2)
    return b4 + (b2 - 4 * b4) + (rows * cols - 4 * b2)


def candidate_grids(rows: int, cols: int, tokens: int, limit: int) -> list[tuple[int, int]]:
    """Smaller grids of about the image's aspect on which a budget keeps exactly ``tokens``."""
    found = set()
    for r in range(1, rows + 1):
        for c in {max(1, round(cols * r / rows) + d) for d in (-1, 0, 1)}:
            cells = r * c
            if not (tokens <= cells < rows * cols and c <= cols) or abs(math.log(r * cols / (c * rows))) > 0.15:
                continue
            start = coarsest_count(r, c)
            if start <= tokens and (tokens - start) % 3 == 0:
                found.add((cells, r, c))
    return [(r, c) for _, r, c in sorted(found)[:limit]]


def box_error(maps, sel) -> float:
    """Squared error (gray levels^2, summed over pixels) the detail score predicts for a budget:
    every level-k block inside a region of level >= k adds its squared score times p^2."""
    total = 0.0
    for k in range(2, len(maps) + 1):
        b = 1 << (k - 1)
        rk, ck = maps[k - 1].shape
        inside = sel.label_map[::b, ::b][:rk, :ck] >= k
        total += float((np.asarray(maps[k - 1]) ** 2 * inside).sum()) * UNIT * UNIT
    return total


def luma(img: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(img).convert("L"))


def evaluate(img: np.ndarray, alpha: float, limit: int) -> dict:
    h, w = img.shape[:2]
    maps = detail_maps(img, UNIT)
    sel = select_patches(maps, "budget", alpha)
    tokens = sel.num_tokens
    uni, _ = uniform(img, tokens)
    base = quality(img, uni)[0]
    options = [(box_error(maps, sel), quality(img, reconstruct(img, sel, UNIT))[0])]
    gray = luma(img).astype(np.float64)
    for r, c in candidate_grids(h // UNIT, w // UNIT, tokens, limit):
        small = resize(img, r * UNIT, c * UNIT)
        small_maps = detail_maps(small, UNIT)
        small_sel = select_patches(small_maps, "budget", tokens / (r * c))
        assert small_sel.num_tokens == tokens
        back = np.asarray(Image.fromarray(luma(small)).resize((w, h), Image.BILINEAR)).astype(np.float64)
        predicted = float(((back - gray) ** 2).sum()) + box_error(small_maps, small_sel) * (h * w) / (r * c * UNIT**2)
        shown = resize(reconstruct(small, small_sel, UNIT), h, w, Image.BILINEAR)
        options.append((predicted, quality(img, shown)[0]))
    return dict(budget=options[0][1] - base, oracle=max(q for _, q in options) - base,
                predicted=min(options)[1] - base, candidates=len(options) - 1)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_rescale", description=__doc__.split("\n")[0])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.2, 0.3, 0.5])
    parser.add_argument("--grids", type=int, default=4, help="smaller grids tried per image and alpha")
    parser.add_argument("--quick", action="store_true", help="3 photographs and 2 small images (CI)")
    args = parser.parse_args(argv)
    sets = [("photographs", PHOTOS[:3] if args.quick else PHOTOS), ("small images", SMALL[:2] if args.quick else SMALL)]
    rows = []
    print(f"gain over uniform down-scaling, PSNR dB: mean / worst (image); up to {args.grids} smaller grids each")
    print(f"{'set':<13} {'alpha':>5}  {'budget':>22}  {'oracle':>22}  {'predicted':>22}")
    for label, names in sets:
        images = {name: load_small(name) if "@" in name else load(name) for name in names}
        for alpha in args.alphas:
            results = {name: evaluate(img, alpha, args.grids) for name, img in images.items()}
            cells = []
            for key in ("budget", "oracle", "predicted"):
                worst = min(results, key=lambda n, key=key: results[n][key])
                mean = statistics.fmean(r[key] for r in results.values())
                cells.append(f"{mean:+5.2f} / {results[worst][key]:+5.2f} {worst[:10]:<10}")
            print(f"{label:<13} {alpha:>5.2f}  " + "  ".join(cells))
            rows += [dict(set=label, alpha=alpha, image=n, **r) for n, r in results.items()]
    return rows


if __name__ == "__main__":
    main()
