"""PixelPrune's selector beside the library's, on documents and photographs: tokens, PSNR, OCR.

    python -m benchmarks.bench_pixelprune [--tau 0 4] [--quick]
    python -m benchmarks.bench_pixelprune --ocr [--tau 0 4] [--resizes checkpoint cap1280] [--quick]

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

With ``--ocr``, the same conditions on ``bench_ocr``'s pages (its :data:`~benchmarks.bench_ocr.PAGES`,
resizes and reader: Tesseract on each text region, upscaled 2x): tokens, CER and word recall of
what each shows, beside the full page. Needs what ``bench_ocr`` needs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from skimage.metrics import peak_signal_noise_ratio

from benchmarks import bench_ocr as bo
from benchmarks._documents import LAYOUTS, render, render_page
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


CONDITIONS = ("pixelprune", "lossless", "library", "first", "uniform")  # shown_by's keys


def shown_by(image: np.ndarray, tau: float) -> dict[str, tuple[np.ndarray, int]]:
    """Condition -> (what it shows of ``image``, its tokens): PixelPrune at ``tau``; the library's
    removal of predictable cells at ``tau`` alone; at PixelPrune's token count the library's budget
    without and with that removal, and uniform down-scaling at the budget's count."""
    keep, shown = pixelprune(to_units(image), tau)
    tokens, cells = int(keep.sum()), keep.size
    alone = select_patches(image, None, patch_size=UNIT, tolerance=tau)
    sel = select_patches(image, "budget", tokens / cells, patch_size=UNIT, score="detail")
    first = select_patches(image, "budget", tokens / cells, patch_size=UNIT, score="detail", tolerance=tau)
    return {"pixelprune": (from_units(shown), tokens),
            "lossless": (reconstruct(image, alone, UNIT), alone.num_tokens),
            "library": (reconstruct(image, sel, UNIT), sel.num_tokens),
            "first": (reconstruct(image, first, UNIT), first.num_tokens),
            "uniform": uniform(image, sel.num_tokens)}


def compare(name: str, image: np.ndarray, tau: float) -> dict:
    """:func:`shown_by`'s tokens and PSNR of each condition."""
    shown = shown_by(image, tau)
    return dict(image=name, tau=tau, cells=(image.shape[0] // UNIT) * (image.shape[1] // UNIT),
                tokens=shown["pixelprune"][1], pixelprune=psnr(image, shown["pixelprune"][0]),
                lossless_tokens=shown["lossless"][1], lossless=psnr(image, shown["lossless"][0]),
                library_tokens=shown["library"][1], library=psnr(image, shown["library"][0]),
                first_tokens=shown["first"][1], first=psnr(image, shown["first"][0]),
                uniform=psnr(image, shown["uniform"][0]))


READ = ("full", *CONDITIONS)


def read(spec: bo.PageSpec, resize: str, taus: list[float]) -> list[dict]:
    """One row per tau and condition (and one for the full page) of one of bench_ocr's pages at one
    of its resizes: tokens, PSNR and Tesseract's CER and word recall of what each condition shows."""
    page = render_page(spec.layout, spec.h, spec.w, spec.text_px, spec.offset, font=bo.FONT)
    img = bo.qwen_resize(page.image, bo.RESIZES[resize])
    shown = {("full", None): (img, (img.shape[0] // UNIT) * (img.shape[1] // UNIT))}
    for tau in taus:
        shown.update({(cond, tau): out for cond, out in shown_by(img, tau).items()})
    scores = bo.read_page({key: out for key, (out, _) in shown.items()}, page.regions, page.image.shape[:2])
    return [dict(page=spec.name, resize=resize, condition=cond, tau=tau, tokens=n, psnr=psnr(img, out),
                 cer=scores[cond, tau][0], recall=scores[cond, tau][1]) for (cond, tau), (out, n) in shown.items()]


def ocr_report(rows: list[dict], taus: list[float], resizes: list[str]) -> None:
    """Per page: tokens and CER / word recall of each condition; then means over pages."""
    names = {"full": "full", "pixelprune": "PixelPrune", "lossless": "library alone", "library": "budget",
             "first": "budget+pred", "uniform": "uniform"}
    print("\nTokens, CER / word recall (Tesseract) per page; budget columns at PixelPrune's count\n")
    print("| page | resize | tau | " + " | ".join(names[c] for c in READ) + " |")
    print("|---|---|---|" + "---|" * len(READ))
    pages = list(dict.fromkeys(r["page"] for r in rows))
    for resize in resizes:
        for tau in taus:
            for name in pages:
                cell = {r["condition"]: r for r in rows if r["page"] == name and r["resize"] == resize
                        and r["tau"] in (tau, None)}
                print(f"| {name} | {resize} | {tau:g} | " + " | ".join(
                    f"{cell[c]['tokens']}: {cell[c]['cer']:.3f} / {cell[c]['recall']:.3f}" for c in READ) + " |")
    print("\nMeans over pages, CER / word recall (tokens kept):\n")
    for resize in resizes:
        for tau in taus:
            sub = [r for r in rows if r["resize"] == resize and r["tau"] in (tau, None)]
            cells = {r["page"]: r["tokens"] for r in sub if r["condition"] == "full"}

            def mean(cond, key, sub=sub):
                return statistics.fmean(r[key] for r in sub if r["condition"] == cond)

            kept = {c: statistics.fmean(r["tokens"] / cells[r["page"]] for r in sub if r["condition"] == c)
                    for c in READ}
            print(f"- {resize}, tau {tau:g}: " + "; ".join(
                f"{names[c]} {mean(c, 'cer'):.3f} / {mean(c, 'recall'):.3f} ({kept[c]:.1%})" for c in READ))


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
    parser.add_argument("--ocr", action="store_true",
                        help="bench_ocr's pages read by Tesseract instead (quick: its two small pages)")
    parser.add_argument("--resizes", nargs="+", choices=list(bo.RESIZES), help="--ocr: resize settings "
                        "(default both; quick: checkpoint)")
    parser.add_argument("--jobs", type=int, help="--ocr: pages read at once (default 2)")
    args = parser.parse_args(argv)
    if any(not np.isfinite(t) or t < 0 for t in args.tau):
        parser.error(f"--tau must be finite numbers >= 0, got {args.tau}")
    if not args.ocr and (args.resizes or args.jobs is not None):
        parser.error("--resizes and --jobs apply to --ocr only")
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.ocr:
        args.jobs = args.jobs or 2
        bo.need_reader("bench_pixelprune --ocr")
        resizes = args.resizes or (["checkpoint"] if args.quick else list(bo.RESIZES))
        specs = bo.QUICK_PAGES if args.quick else bo.PAGES
        start = time.perf_counter()
        with ThreadPoolExecutor(args.jobs) as pool:
            parts = pool.map(lambda job: read(*job, args.tau), [(spec, name) for spec in specs for name in resizes])
            rows = [r for part in parts for r in part]
        print(f"{len(specs)} pages of bench_ocr, resizes {resizes}, tau {args.tau}: "
              f"{time.perf_counter() - start:.0f} s ({args.jobs} at once)")
        ocr_report(rows, args.tau, resizes)
        return rows
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
