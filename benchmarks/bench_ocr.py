"""A real reader on what the kept tokens show: Tesseract OCR of document pages at a token budget.

    python -m benchmarks.bench_ocr [--quick | --other-pages] [--alphas 0.3 0.5]
                                   [--resizes checkpoint cap1280] [--tolerance T]
                                   [--downscale [least_error|balanced]] [--shapes halves] [--jobs 2]

Needs the ``tesseract`` command and the DejaVu Sans font (Debian: tesseract-ocr tesseract-ocr-eng
fonts-dejavu-core). Pages (:data:`PAGES`) are rendered by ``benchmarks._documents`` from the
system's licence texts in DejaVu Sans, three pages per type at different text sizes (10-16 px),
page sizes and text: body text, dense pages of small text, two columns, tables, slides, GUI-like
screenshots and skimage photographs with captions. ``--other-pages`` reads :data:`OTHER_PAGES`
instead: two more per type, other text sizes and text, rendered after the 21 to check
``downscale="balanced"`` on pages its rule was not made on. Each page is resized like the
Qwen2-VL processor (smart_resize to multiples of 28 px, bicubic) under two settings:
``checkpoint`` (max_pixels 16384 x 28 x 28, the released Qwen2-VL checkpoints' preprocessor
config: these pages keep their size, to 28 px) and ``cap1280`` (max_pixels 1280 x 28 x 28, the
common cap, which is also transformers' Qwen2VLImageProcessor default). Conditions, all at the
resized size:
  full    - the resized page (every 28 px cell, one token each);
  library - ``select_patches(page, "budget", alpha)`` with the library's defaults (``--tolerance``
            adds that setting), shown by ``reconstruct``; with ``--downscale``, the wrapped
            processor's ``downscale=True``: the page shrunk until its unremoved units fit the
            budget, selected there, shown by ``reconstruct`` and scaled back up (bilinear);
            ``--downscale least_error``: its ``downscale="least_error"`` (the size of least error);
            ``--downscale balanced``: its ``downscale="balanced"``;
            ``--shapes halves``: regions may also split in halves (the library condition only);
  entropy - the same with score="entropy", its budget searched so its count equals the library's;
  uniform - Qwen's own down-scaling: smart_resize at the largest max_pixels whose grid has at most
            the library's token count, bicubic down, bilinear back up;
  random  - the budget selection driven by seeded random scores (the same quadtree, no score),
            count matched like entropy, shown by ``reconstruct``.
Every text region of a page is cut from the shown image (its ink box + 2 px), turned gray,
upscaled 2x (bicubic), given a 16 px white border and read by ``tesseract --psm 6`` (a block) or
``--psm 7`` (a one-line region: table cells, buttons, titles); the reader is told where the text
is, so layout analysis is not measured. Metrics per page (pooled over its regions): character
error rate (Levenshtein distance / reference length, on whitespace-normalised text, typographic
quotes and dashes read as ASCII) and word recall (reference words, as a multiset, found in the
output). Tables: means per page type, and the goal checks of issue 15 per alpha and resize:
mean CER (over page types) of library <= 0.8 x uniform, and word recall >= uniform on every type.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFont, ImageOps
from tqdm import tqdm
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from benchmarks._documents import Region, render_page
from benchmarks._qwen_setup import DOWNSCALE, downscaled
from entropy_prune import detail_maps, reconstruct, select_patches
from entropy_prune.selection import SHAPES

UNIT = 28  # px per LLM token side in Qwen2-VL (14 px patches, 2 x 2 merge)
MIN_PIXELS = 56 * 56
RESIZES = {"checkpoint": 16384 * UNIT * UNIT, "cap1280": 1280 * UNIT * UNIT}  # max_pixels
CONDITIONS = ("full", "library", "entropy", "uniform", "random")
FONT = "DejaVuSans.ttf"
PAD, SCALE, BORDER = 2, 2, 16  # crop margin (px of the shown image), OCR upscale, white border (px)
APT = "apt-get install -y tesseract-ocr tesseract-ocr-eng fonts-dejavu-core"


@dataclass(frozen=True)
class PageSpec:
    name: str
    layout: str
    h: int
    w: int
    text_px: int
    offset: int  # first word of the licence texts


PAGES = (  # three per type: one page's word recall moves by 0.01-0.02 between neighbouring sizes
    PageSpec("body-10", "body", 1400, 1000, 10, 0),
    PageSpec("body-13", "body", 1400, 1000, 13, 3000),
    PageSpec("body-16", "body", 1400, 1000, 16, 6000),
    PageSpec("dense-10", "dense", 1400, 1000, 10, 9000),
    PageSpec("dense-11", "dense", 1120, 840, 11, 26000),
    PageSpec("dense-12", "dense", 1400, 1000, 12, 28500),
    PageSpec("columns-10", "columns", 1400, 1000, 10, 31000),
    PageSpec("columns-12", "columns", 1400, 1000, 12, 14000),
    PageSpec("columns-14", "columns", 1120, 840, 14, 34000),
    PageSpec("table-12", "table", 1100, 1400, 12, 36000),
    PageSpec("table-14", "table", 1100, 1400, 14, 18000),
    PageSpec("table-16", "table", 840, 1120, 16, 37000),
    PageSpec("slide-12", "slide", 720, 1280, 12, 38000),
    PageSpec("slide-14", "slide", 1080, 1920, 14, 38500),
    PageSpec("slide-16", "slide", 1080, 1920, 16, 19000),
    PageSpec("screenshot-11", "screenshot", 900, 1440, 11, 39000),
    PageSpec("screenshot-13", "screenshot", 1080, 1920, 13, 20000),
    PageSpec("screenshot-14", "screenshot", 1080, 1920, 14, 41000),
    PageSpec("photos-11", "photos", 1120, 840, 11, 43000),
    PageSpec("photos-13", "photos", 1400, 1000, 13, 24000),
    PageSpec("photos-15", "photos", 1400, 1000, 15, 45000),
)
OTHER_PAGES = (  # two per type, other text sizes, page sizes and text: a check on pages a rule was not made on
    PageSpec("other-body-11", "body", 1120, 840, 11, 1500),
    PageSpec("other-body-14", "body", 1400, 1000, 14, 4500),
    PageSpec("other-dense-10", "dense", 1120, 840, 10, 7500),
    PageSpec("other-dense-13", "dense", 1400, 1000, 13, 11000),
    PageSpec("other-columns-11", "columns", 1400, 1000, 11, 12500),
    PageSpec("other-columns-13", "columns", 1120, 840, 13, 16000),
    PageSpec("other-table-13", "table", 840, 1120, 13, 21500),
    PageSpec("other-table-15", "table", 1100, 1400, 15, 22500),
    PageSpec("other-slide-13", "slide", 1080, 1920, 13, 29500),
    PageSpec("other-slide-15", "slide", 720, 1280, 15, 32500),
    PageSpec("other-screenshot-12", "screenshot", 1080, 1920, 12, 35000),
    PageSpec("other-screenshot-15", "screenshot", 900, 1440, 15, 40000),
    PageSpec("other-photos-12", "photos", 1400, 1000, 12, 42000),
    PageSpec("other-photos-14", "photos", 1120, 840, 14, 44000),
)
QUICK_PAGES = (PageSpec("body-12", "body", 700, 560, 12, 0), PageSpec("table-14", "table", 448, 700, 14, 18000))

_ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})


# --- metrics ---------------------------------------------------------------------------------------

def normalise(text: str) -> str:
    """NFKC, typographic quotes and dashes as ASCII, runs of whitespace as one space, stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).translate(_ASCII).split())


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each), by Myers' and
    Hyyro's bit-parallel algorithm on Python integers: O(len(a) * len(b) / word size)."""
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, ch in enumerate(b):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    mask, top = (1 << m) - 1, 1 << (m - 1)
    pv, mv, score = mask, 0, m
    for ch in a:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & mask)
        mh = pv & xh
        score += bool(ph & top) - bool(mh & top)
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = mh | (~(xv | ph) & mask)
        mv = ph & xv
    return score


def cer(ocr: str, ref: str) -> float:
    """Character error rate of ``ocr`` against ``ref``, both normalised (0 = exact; can exceed 1)."""
    ocr, ref = normalise(ocr), normalise(ref)
    return levenshtein(ocr, ref) / max(len(ref), 1)


def word_recall(ocr: str, ref: str) -> float:
    """Fraction of the reference's words (a multiset) that the OCR output contains."""
    want, got = Counter(normalise(ref).split()), Counter(normalise(ocr).split())
    return sum((want & got).values()) / max(sum(want.values()), 1)


# --- conditions -------------------------------------------------------------------------------------

def resize(img: np.ndarray, h: int, w: int, resample: int = Image.BICUBIC) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((w, h), resample))


def qwen_resize(page: np.ndarray, max_pixels: int) -> np.ndarray:
    """The page as the Qwen2-VL processor resizes it (smart_resize to multiples of 28 px, bicubic)."""
    h, w = smart_resize(page.shape[0], page.shape[1], UNIT, MIN_PIXELS, max_pixels)
    return resize(page, h, w)


def uniform(img: np.ndarray, tokens: int) -> tuple[np.ndarray, int]:
    """Qwen's own down-scaling to the largest grid smart_resize gives with at most ``tokens``
    units (max_pixels raised a unit at a time until one more would exceed it), bilinear back up."""
    h, w = img.shape[:2]
    size = best = None
    for units in range(max(tokens, 1), (h // UNIT) * (w // UNIT) + 1):
        size = smart_resize(h, w, UNIT, UNIT * UNIT, units * UNIT * UNIT)
        if (size[0] // UNIT) * (size[1] // UNIT) > tokens:
            break
        best = size
    sh, sw = best or (UNIT, UNIT)
    return resize(resize(img, sh, sw), h, w, Image.BILINEAR), (sh // UNIT) * (sw // UNIT)


def matched(image, tokens: int, cells: int, **kwargs):
    """A budget selection of ``image`` (an image or score maps) with exactly ``tokens`` tokens where
    a budget of tokens .. tokens + 3 gives it (multiscale may fall up to 2 short), else the closest below."""
    best = None
    for budget in range(tokens, min(tokens + 3, cells) + 1):
        sel = select_patches(image, "budget", budget / cells, **kwargs)
        if sel.num_tokens == tokens:
            return sel
        if sel.num_tokens < tokens and (best is None or sel.num_tokens > best.num_tokens):
            best = sel
    return best or sel


def conditions(img: np.ndarray, alpha: float, seed: int = 0, downscale: bool | str = False,
               **library) -> dict[str, tuple[np.ndarray, int]]:
    """Every condition's shown image (at the size of ``img``) and token count; ``library``: extra
    keywords of the library's ``select_patches`` call (e.g. tolerance); ``downscale``: the library
    condition as the wrapped processor's ``downscale`` (True, "least_error" or "balanced",
    ``_qwen_setup.downscaled``)."""
    cells = (img.shape[0] // UNIT) * (img.shape[1] // UNIT)
    if downscale:
        shown = downscaled(img, alpha, UNIT, MIN_PIXELS, downscale, **library)
    else:
        lib = select_patches(img, "budget", alpha, **library)
        shown = reconstruct(img, lib, UNIT), lib.num_tokens
    tokens = shown[1]
    ent = matched(img, tokens, cells, score="entropy", **{k: v for k, v in library.items() if k != "shapes"})
    rng = np.random.default_rng(seed)
    noise = [rng.random(np.asarray(m).shape) for m in detail_maps(img, UNIT)]
    rand = matched(noise, tokens, cells)
    return {"full": (img, cells), "library": shown,
            "entropy": (reconstruct(img, ent, UNIT), ent.num_tokens), "uniform": uniform(img, tokens),
            "random": (reconstruct(img, rand, UNIT), rand.num_tokens)}


# --- reading ----------------------------------------------------------------------------------------

def ocr_input(gray: Image.Image, region: Region, sy: float, sx: float) -> Image.Image:
    """The region cut from the shown image in gray (page box scaled by sy, sx), upscaled, bordered."""
    x0, y0, x1, y1 = region.box
    box = (max(math.floor(x0 * sx) - PAD, 0), max(math.floor(y0 * sy) - PAD, 0),
           min(math.ceil(x1 * sx) + PAD, gray.width), min(math.ceil(y1 * sy) + PAD, gray.height))
    crop = gray.crop(box)
    crop = crop.resize((crop.width * SCALE, crop.height * SCALE), Image.BICUBIC)
    return ImageOps.expand(crop, BORDER, fill=255)


def psm(region: Region) -> int:
    """Tesseract page segmentation mode: 7 (one line) for one-line regions, else 6 (a block)."""
    return 7 if "\n" not in region.text else 6


def tesseract(images: list[Image.Image], mode: int, workdir: Path) -> list[str]:
    """Tesseract's text of each image, read by one process (the outputs are split at its page separator)."""
    paths = []
    for i, img in enumerate(images):
        paths.append(workdir / f"{mode}-{i}.pgm")
        img.save(paths[-1])
    listing = workdir / f"list-{mode}.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    out = subprocess.run(["tesseract", str(listing), "stdout", "--psm", str(mode)], capture_output=True,
                         text=True, check=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"}).stdout
    texts = out.split("\f")
    if len(texts) != len(images):
        raise RuntimeError(f"tesseract returned {len(texts)} pages for {len(images)} images")
    return texts


def read_page(shown: dict, regions: tuple[Region, ...], page_hw: tuple[int, int]) -> dict:
    """(CER, word recall) per key of ``shown`` (key -> image of the page), pooled over its regions."""
    keys = list(shown)
    by_mode: dict[int, list] = {}  # psm -> (key, region) pairs
    for region in regions:
        by_mode.setdefault(psm(region), []).extend((key, region) for key in keys)
    texts: dict = {key: [] for key in keys}  # key -> (OCR text, reference) per region
    gray = {key: Image.fromarray(img).convert("L") for key, img in shown.items()}
    with tempfile.TemporaryDirectory(prefix="bench_ocr_") as tmp:
        for mode, jobs in by_mode.items():
            images = []
            for key, region in jobs:
                img = gray[key]
                images.append(ocr_input(img, region, img.height / page_hw[0], img.width / page_hw[1]))
            for (key, region), text in zip(jobs, tesseract(images, mode, Path(tmp)), strict=True):
                texts[key].append((text, region.text))
    result = {}
    for key, pairs in texts.items():
        refs = [normalise(ref) for _, ref in pairs]
        errors = sum(levenshtein(normalise(text), ref) for (text, _), ref in zip(pairs, refs, strict=True))
        words = sum(len(ref.split()) for ref in refs)
        found = sum(word_recall(text, ref) * len(ref.split()) for (text, _), ref in zip(pairs, refs, strict=True))
        result[key] = (errors / max(sum(map(len, refs)), 1), found / max(words, 1))
    return result


def evaluate(spec: PageSpec, resize: str, alphas: list[float], library: dict) -> list[dict]:
    """One row per alpha and condition of one page at one resize setting."""
    page = render_page(spec.layout, spec.h, spec.w, spec.text_px, spec.offset, font=FONT)
    img = qwen_resize(page.image, RESIZES[resize])
    shown, tokens = {}, {}
    for alpha in alphas:
        for cond, (out, n) in conditions(img, alpha, **library).items():
            key = (alphas[0], cond) if cond == "full" else (alpha, cond)  # full: the same at every alpha
            shown[key], tokens[key] = out, n
    scores = read_page(shown, page.regions, page.image.shape[:2])
    rows = []
    for alpha in alphas:
        for cond in CONDITIONS:
            key = (alphas[0], cond) if cond == "full" else (alpha, cond)
            rows.append(dict(page=spec.name, type=spec.layout, resize=resize, size=f"{img.shape[1]}x{img.shape[0]}",
                             alpha=alpha, condition=cond, tokens=tokens[key], cer=scores[key][0],
                             recall=scores[key][1]))
    return rows


# --- report -----------------------------------------------------------------------------------------

def _mean(rows: list[dict], key: str, **match) -> float:
    return statistics.fmean(r[key] for r in rows if all(r[k] == v for k, v in match.items()))


def type_means(rows: list[dict], resize: str, alpha: float) -> dict[str, dict[str, tuple[float, float]]]:
    """page type -> condition -> (mean CER, mean word recall) over that type's pages."""
    types = list(dict.fromkeys(r["type"] for r in rows))
    return {t: {c: (_mean(rows, "cer", type=t, resize=resize, alpha=alpha, condition=c),
                    _mean(rows, "recall", type=t, resize=resize, alpha=alpha, condition=c)) for c in CONDITIONS}
            for t in types}


def report(rows: list[dict], alphas: list[float], resizes: list[str]) -> list[dict]:
    """Print the markdown tables and the goal checks; return one dict per check."""
    print("\nTokens per page (full = every cell; library / entropy / uniform / random):\n")
    print("| page | resize | size | full | " + " | ".join(f"alpha {a}" for a in alphas) + " |")
    print("|---|---|---|---|" + "---|" * len(alphas))
    for page in dict.fromkeys(r["page"] for r in rows):
        for name in resizes:
            sub = {(r["alpha"], r["condition"]): r for r in rows if r["page"] == page and r["resize"] == name}
            counts = [" / ".join(str(sub[a, c]["tokens"]) for c in CONDITIONS[1:]) for a in alphas]
            size, full = sub[alphas[0], "full"]["size"], sub[alphas[0], "full"]["tokens"]
            print(f"| {page} | {name} | {size} | {full} | " + " | ".join(counts) + " |")
    print("\nPer page: CER / word recall\n")
    print("| page | resize | alpha | " + " | ".join(CONDITIONS) + " |")
    print("|---|---|---|" + "---|" * len(CONDITIONS))
    for page in dict.fromkeys(r["page"] for r in rows):
        for name in resizes:
            for alpha in alphas:
                sub = {r["condition"]: r for r in rows if (r["page"], r["resize"], r["alpha"]) == (page, name, alpha)}
                print(f"| {page} | {name} | {alpha} | "
                      + " | ".join(f"{sub[c]['cer']:.3f} / {sub[c]['recall']:.3f}" for c in CONDITIONS) + " |")
    checks = []
    for name in resizes:
        for alpha in alphas:
            means = type_means(rows, name, alpha)
            print(f"\nResize {name}, alpha {alpha}: CER (lower is better) / word recall, mean per page type:\n")
            print("| page type | pages | " + " | ".join(CONDITIONS) + " |")
            print("|---|---|" + "---|" * len(CONDITIONS))
            for t, by_cond in means.items():
                pages = len({r["page"] for r in rows if r["type"] == t})
                cells = [f"{by_cond[c][0]:.3f} / {by_cond[c][1]:.3f}" for c in CONDITIONS]
                print(f"| {t} | {pages} | " + " | ".join(cells) + " |")
            overall = {c: (statistics.fmean(m[c][0] for m in means.values()),
                           statistics.fmean(m[c][1] for m in means.values())) for c in CONDITIONS}
            print("| **mean of types** | | " + " | ".join(f"{overall[c][0]:.3f} / {overall[c][1]:.3f}"
                                                     for c in CONDITIONS) + " |")
            lib, uni = overall["library"][0], overall["uniform"][0]
            checks.append(dict(resize=name, alpha=alpha, goal="mean CER library <= 0.8 x uniform",
                               ok=lib <= 0.8 * uni, detail=f"{lib:.4f} vs 0.8 x {uni:.4f} = {0.8 * uni:.4f}"))
            worse = [f"{t} {m['library'][1]:.4f} < {m['uniform'][1]:.4f}" for t, m in means.items()
                     if m["library"][1] < m["uniform"][1]]
            checks.append(dict(resize=name, alpha=alpha, goal="word recall library >= uniform, every type",
                               ok=not worse, detail="; ".join(worse) or f"all {len(means)} types"))
    print("\nGoal checks (issue 15):\n")
    for c in checks:
        print(f"- {'PASS' if c['ok'] else 'FAIL'} {c['resize']}, alpha {c['alpha']}: {c['goal']}: {c['detail']}")
    return checks


def missing_reader() -> str | None:
    """What reading pages lacks here (the tesseract command or the font) with the command that
    installs it, or None."""
    if shutil.which("tesseract") is None:
        return f"the tesseract command: {APT}"
    try:
        ImageFont.truetype(FONT, 10)
    except OSError:
        return f"the {FONT} font: {APT}"
    return None


def need_reader(prog: str) -> None:
    """Exit, saying what to install, where :func:`missing_reader` finds something missing."""
    missing = missing_reader()
    if missing:
        sys.exit(f"{prog} needs {missing}")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_ocr", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two small pages, alpha 0.3, checkpoint resize (CI)")
    parser.add_argument("--other-pages", action="store_true",
                        help="read OTHER_PAGES (14 pages, two per type) instead of the 21 PAGES")
    parser.add_argument("--alphas", type=float, nargs="+", help="budget alphas (default 0.3 0.5; quick: 0.3)")
    parser.add_argument("--resizes", nargs="+", choices=list(RESIZES), help="resize settings (quick: checkpoint)")
    parser.add_argument("--tolerance", type=float, help="the library's select_patches tolerance (default: off)")
    parser.add_argument("--downscale", nargs="?", const="fit", choices=list(DOWNSCALE),
                        help="the library condition as the wrapped processor's downscale=True (fit), "
                             "downscale='least_error' or downscale='balanced'")
    parser.add_argument("--shapes", choices=SHAPES, default="squares",
                        help="the library's region shapes (the entropy and random conditions keep squares)")
    parser.add_argument("--jobs", type=int, default=2, help="pages read at once (one tesseract process each)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    need_reader("bench_ocr")
    alphas = args.alphas or ([0.3] if args.quick else [0.3, 0.5])
    if any(not 0 < a <= 1 for a in alphas):
        parser.error(f"--alphas must be in (0, 1], got {alphas}")
    resizes = args.resizes or (["checkpoint"] if args.quick else list(RESIZES))
    if args.quick and args.other_pages:
        parser.error("--quick and --other-pages are two page sets; give one")
    specs = QUICK_PAGES if args.quick else OTHER_PAGES if args.other_pages else PAGES
    library = {} if args.tolerance is None else {"tolerance": args.tolerance}
    if args.downscale:
        library["downscale"] = DOWNSCALE[args.downscale]
    if args.shapes != "squares":
        library["shapes"] = args.shapes
    start = time.perf_counter()
    jobs = [(s, name) for s in specs for name in resizes]
    with ThreadPoolExecutor(args.jobs) as pool:
        parts = pool.map(lambda job: evaluate(*job, alphas, library), jobs)
        rows = [r for part in tqdm(parts, "bench_ocr", len(jobs), unit="page x resize") for r in part]
    version = subprocess.run(["tesseract", "--version"], capture_output=True, text=True).stdout.split()[1]
    print(f"{len(specs)} pages, alphas {alphas}, resizes {resizes}, library {library or 'defaults'}: "
          f"{time.perf_counter() - start:.0f} s ({args.jobs} at once), tesseract {version}")
    report(rows, alphas, resizes)
    return rows


if __name__ == "__main__":
    main()
