"""How far one page's OCR moves with the size it is shown at: a yardstick for ``bench_ocr``'s
per-page differences.

    python -m benchmarks.ocr_sizes PAGE [--resize checkpoint] [--alpha 0.3]
                                        [--downscale fit|least_error|balanced] [--shapes halves]

PAGE is a name from ``bench_ocr``'s :data:`~benchmarks.bench_ocr.PAGES` (e.g. photos-13). Reads
the page as ``bench_ocr`` reads it, shown by the library's ``downscale=True, tolerance=0``
(``--downscale``, ``--shapes``: that rule, those shapes; the size it chose is printed), by
uniform down-scaling at the library's count (``bench_ocr``'s uniform), and by uniform
down-scaling to the library's own shrunk size and to the sizes one 28 px unit smaller or larger
on each side. Prints CER / word recall for each. Needs what ``bench_ocr`` needs.
"""

from __future__ import annotations

import argparse

from PIL import Image

from benchmarks import bench_ocr as bo
from benchmarks._documents import render_page
from benchmarks._qwen_setup import DOWNSCALE, scaled_back, shrunk
from entropy_prune.selection import SHAPES

STEPS = ((0, 0), (-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1))  # units added to (h, w) of the library's size


def sizes(spec: bo.PageSpec, resize: str, alpha: float, downscale: bool | str = True,
          shapes: str = "squares") -> list[tuple[str, int, float, float]]:
    """(condition, tokens, CER, word recall) of ``spec`` at ``resize`` and ``alpha``; the library
    with ``downscale`` (the wrapped processor's value), ``shapes`` and ``tolerance=0``."""
    page = render_page(spec.layout, spec.h, spec.w, spec.text_px, spec.offset, font=bo.FONT)
    img = bo.qwen_resize(page.image, bo.RESIZES[resize])
    small, sel = shrunk(img, alpha, bo.UNIT, bo.MIN_PIXELS, downscale, tolerance=0, shapes=shapes)
    library, tokens = scaled_back(small, sel, img.shape[:2], bo.UNIT), sel.num_tokens
    uniform, matched = bo.uniform(img, tokens)
    shown = {f"library (shrunk to {small.shape[0]}x{small.shape[1]} px)": (library, tokens),
             "uniform at the library's count": (uniform, matched)}
    for dh, dw in STEPS:
        h, w = small.shape[0] + dh * bo.UNIT, small.shape[1] + dw * bo.UNIT
        back = bo.resize(bo.resize(img, h, w), *img.shape[:2], Image.BILINEAR)
        shown[f"uniform at {h}x{w} px"] = (back, (h // bo.UNIT) * (w // bo.UNIT))
    scores = bo.read_page({k: v[0] for k, v in shown.items()}, page.regions, page.image.shape[:2])
    return [(k, n, *scores[k]) for k, (_, n) in shown.items()]


def main(argv: list[str] | None = None) -> list[tuple[str, int, float, float]]:
    names = {s.name: s for s in (*bo.PAGES, *bo.OTHER_PAGES, *bo.QUICK_PAGES)}
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ocr_sizes", description=__doc__.split("\n\n")[0])
    parser.add_argument("page", choices=sorted(names), metavar="PAGE", help=f"one of {', '.join(names)}")
    parser.add_argument("--resize", choices=sorted(bo.RESIZES), default="checkpoint")
    parser.add_argument("--alpha", type=float, default=0.3, help="budget alpha (default 0.3)")
    parser.add_argument("--downscale", choices=list(DOWNSCALE), default="fit",
                        help="the library's downscale rule (default fit: downscale=True)")
    parser.add_argument("--shapes", choices=SHAPES, default="squares", help="the library's region shapes")
    args = parser.parse_args(argv)
    if not 0 < args.alpha <= 1:
        parser.error(f"--alpha must be in (0, 1], got {args.alpha}")
    bo.need_reader("ocr_sizes")
    rows = sizes(names[args.page], args.resize, args.alpha, DOWNSCALE[args.downscale], args.shapes)
    print(f"{args.page}, {args.resize}, alpha {args.alpha}, downscale {args.downscale}, {args.shapes}:\n")
    print("| shown as | tokens | CER | word recall |\n|---|---|---|---|")
    for name, tokens, cer, recall in rows:
        print(f"| {name} | {tokens} | {cer:.3f} | {recall:.3f} |")
    return rows


if __name__ == "__main__":
    main()
