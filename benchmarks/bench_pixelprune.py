"""PixelPrune's selector beside the library's, on documents and photographs: tokens and PSNR.

    python -m benchmarks.bench_pixelprune [--tau 0 4] [--quick]

PixelPrune (arXiv 2604.00886; OPPO-Mente-Lab/PixelPrune, ``pixelprune/methods/pred_2d.py``) is
re-implemented here from its published description: on the grid of merge units (28 px for
Qwen2-VL), in raster order, each unit X is predicted from already-seen neighbours, A (left),
B (above) and C (above-left): the first row from A, the first column from B, elsewhere from B
if C ~ A and not C ~ B, else from A (LOCO-I's edge rule); X is pruned when it equals its
prediction in L-infinity within ``tau`` (default 0, exact), comparing against the already
reconstructed values, so with tau > 0 every pixel's error stays <= tau. Kept units keep their
positions; pruned ones are shown as their prediction. The unit (0, 0) is always kept.

Per image (resized like the Qwen2-VL processor, <= 1280 tokens): PixelPrune's kept tokens and
PSNR of what it shows; the library's own predictable-cell removal at the same tolerance alone
(``select_patches(image, None, tolerance=tau)``: its kept tokens and PSNR); then at PixelPrune's
token count the library's budget (multiscale, ``detail`` score) without and with that removal
as its first step, and Qwen's uniform down-scaling, as in ``bench_fidelity``.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from skimage.metrics import peak_signal_noise_ratio

from benchmarks._documents import LAYOUTS, render
from benchmarks.bench_fidelity import PHOTOS, UNIT, load, uniform
from entropy_prune import reconstruct, select_patches


def to_units(image: np.ndarray, unit: int = UNIT) -> np.ndarray:
    """(H, W, C) image, H and W multiples of ``unit`` -> (H/unit, W/unit, unit*unit*C) int32 units."""
    h, w, c = image.shape
    grid = image.reshape(h // unit, unit, w // unit, unit, c).swapaxes(1, 2)
    return grid.reshape(h // unit, w // unit, -1).astype(np.int32)


def from_units(units: np.ndarray, unit: int = UNIT) -> np.ndarray:
    """Inverse of :func:`to_units`, as uint8."""
    hu, wu, _ = units.shape
    grid = units.reshape(hu, wu, unit, unit, -1).swapaxes(1, 2)
    return grid.reshape(hu * unit, wu * unit, -1).astype(np.uint8)


def pixelprune(units: np.ndarray, tau: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """PixelPrune's 2-D predictive selection on (h, w, D) units: (keep (h, w) bool, the units as
    shown: kept ones as they are, pruned ones as their prediction from reconstructed neighbours)."""
    h, w, _ = units.shape
    shown = units.copy()
    keep = np.zeros((h, w), dtype=bool)
    keep[0, 0] = True

    def same(x: np.ndarray, y: np.ndarray) -> bool:
        return bool(np.abs(x - y).max() <= tau)

    for r in range(h):
        for c in range(w):
            if r == 0 and c == 0:
                continue
            a = shown[r, c - 1] if c else shown[r - 1, 0]
            if r and c:
                b, cc = shown[r - 1, c], shown[r - 1, c - 1]
                pred = b if same(cc, a) and not same(cc, b) else a
            else:
                pred = a
            if same(units[r, c], pred):
                shown[r, c] = pred
            else:
                keep[r, c] = True
    return keep, shown


def psnr(ref: np.ndarray, img: np.ndarray) -> float:
    """PSNR in dB; inf for identical images."""
    return float("inf") if np.array_equal(ref, img) else float(peak_signal_noise_ratio(ref, img, data_range=255))


def compare(name: str, image: np.ndarray, tau: float) -> dict:
    """PixelPrune at ``tau``; the library's removal of predictable cells at ``tau`` alone; at
    PixelPrune's token count the library's budget without and with that removal, and uniform
    down-scaling."""
    keep, shown = pixelprune(to_units(image), tau)
    tokens, cells = int(keep.sum()), keep.size
    alone = select_patches(image, None, patch_size=UNIT, tolerance=tau)
    sel = select_patches(image, "budget", tokens / cells, patch_size=UNIT, score="detail")
    first = select_patches(image, "budget", tokens / cells, patch_size=UNIT, score="detail", tolerance=tau)
    uni, _ = uniform(image, sel.num_tokens)
    return dict(image=name, tau=tau, cells=cells, tokens=tokens, pixelprune=psnr(image, from_units(shown)),
                lossless_tokens=alone.num_tokens, lossless=psnr(image, reconstruct(image, alone, UNIT)),
                library_tokens=sel.num_tokens, library=psnr(image, reconstruct(image, sel, UNIT)),
                first_tokens=first.num_tokens, first=psnr(image, reconstruct(image, first, UNIT)),
                uniform=psnr(image, uni))


def images(quick: bool) -> list[tuple[str, np.ndarray]]:
    """Rendered document pages (every layout) and skimage photographs, at processor sizes."""
    size = (560, 420) if quick else (1120, 840)
    docs = [(f"doc:{layout}", render(layout, *size)) for layout in LAYOUTS]
    photos = [(name, load(name)) for name in (PHOTOS[:2] if quick else PHOTOS)]
    return (docs[:2] if quick else docs) + photos


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_pixelprune", description=__doc__.split("\n")[0])
    parser.add_argument("--tau", type=float, nargs="+", default=[0.0, 4.0], help="PixelPrune tolerance, gray levels")
    parser.add_argument("--quick", action="store_true", help="2 half-size pages and 2 photographs (CI)")
    args = parser.parse_args(argv)
    if any(not np.isfinite(t) or t < 0 for t in args.tau):
        parser.error(f"--tau must be finite numbers >= 0, got {args.tau}")
    rows = [compare(name, img, tau) for name, img in images(args.quick) for tau in args.tau]
    print("tokens kept (of cells) and PSNR dB of what is shown (inf = exact); budget columns at PixelPrune's count")
    print(f"{'image':<22} {'tau':>4} {'cells':>6} {'PixelPrune':>16} {'library alone':>16} "
          f"{'budget':>7} {'budget+pred':>11} {'uniform':>8}")
    for r in rows:
        print(f"{r['image']:<22} {r['tau']:>4g} {r['cells']:>6} {r['tokens']:>6} {r['pixelprune']:>9.2f} "
              f"{r['lossless_tokens']:>6} {r['lossless']:>9.2f} {r['library']:>7.2f} {r['first']:>11.2f} "
              f"{r['uniform']:>8.2f}")
    for kind, is_doc in (("documents", True), ("photos", False)):
        for tau in args.tau:
            sub = [r for r in rows if r["image"].startswith("doc:") == is_doc and r["tau"] == tau]
            if sub:
                kept = {k: statistics.fmean(r[k] / r["cells"] for r in sub) for k in ("tokens", "lossless_tokens")}
                fewer = sum(r["lossless_tokens"] < r["tokens"] for r in sub)
                medians = {k: statistics.median(r[k] for r in sub)
                           for k in ("pixelprune", "lossless", "library", "first", "uniform")}
                exact = sum(r["pixelprune"] == float("inf") for r in sub)
                print(f"{kind:<10} tau {tau:g}: kept {kept['tokens']:.1%} PixelPrune, {kept['lossless_tokens']:.1%} "
                      f"library alone (mean; fewer on {fewer}/{len(sub)}), PixelPrune exact on {exact}/{len(sub)}; "
                      f"median PSNR PixelPrune {medians['pixelprune']:.2f}, library alone {medians['lossless']:.2f}, "
                      f"budget {medians['library']:.2f}, budget+pred {medians['first']:.2f}, "
                      f"uniform {medians['uniform']:.2f} dB")
    return rows


if __name__ == "__main__":
    main()
