"""``python -m entropy_prune``: token counts per method on an image, and a picture of one selection."""

from __future__ import annotations

import argparse
import os
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from PIL import Image

from ._downscale import units
from .scores import SCORES, score_maps
from .selection import METHODS, MODES, SHAPES, check_settings, default_score, select_patches
from .visualize import MAX_SIDE, render_selection

__all__ = ["main"]

_SWEEP = [("none", None), ("v1", None), ("v2", 0.5), ("v2", 1.0), ("v2", 1.5),
         ("budget", 0.1), ("budget", 0.2), ("budget", 0.3), ("budget", 0.5), ("budget", 1.0)]


def _default_image() -> np.ndarray:
    """The bundled 448 x 448 photograph (NASA astronaut portrait, public domain) as uint8 (H, W, 3)."""
    with resources.files("entropy_prune").joinpath("data/astronaut.jpg").open("rb") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def _load_image(path: Path) -> tuple[np.ndarray, tuple[float, float] | None, str]:
    """Read an image file as (pixels, value_range, description of the range).

    8-bit modes become uint8 RGB on [0, 255] (value_range None, description ""); 16-bit gray
    (PIL "I;16*") stays uint16 on [0, 65535]; 32-bit integer ("I") and float ("F") gray are
    scored on their own min..max, since they have no nominal range. Raises ValueError with a
    one-line reason for anything that is not a readable image (PIL's UserWarnings about
    truncated or corrupt data count as unreadable).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            with Image.open(path) as im:
                im.load()
                mode = im.mode
                arr = np.asarray(im) if mode.startswith(("I", "F")) else np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not an image file") from None
    except (OSError, SyntaxError, ValueError, EOFError, UserWarning, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    if mode.startswith("I;16"):
        return arr.astype(np.uint16), None, "16-bit gray, scored on [0, 65535]"
    if mode in ("I", "F"):
        arr = arr.astype(np.float64 if mode == "F" else np.int64)
        lo, hi = float(arr.min()), float(arr.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"{path}: the image contains NaN or inf")
        kind = "32-bit integer" if mode == "I" else "float"
        return arr, (lo, hi if hi > lo else lo + 1.0), f"{kind} gray, scored on its range [{lo:g}, {hi:g}]"
    return arr, None, ""


def _check_out(out: Path) -> None:
    """Raise ValueError now, before any output, if ``out`` cannot be the PNG written at the end."""
    if out.suffix.lower() != ".png":
        raise ValueError(f"must name a .png file, got '{out}'")
    if out.is_dir():
        raise ValueError(f"'{out}' is a directory")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"cannot create '{out}': '{parent}' is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ValueError(f"'{out}' is not writable")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entropy-prune", description=__doc__)
    parser.add_argument("--image", type=Path,
                        help="image file (default: the bundled photograph); 16-bit, 32-bit and float gray images "
                             "are scored on their own range")
    parser.add_argument("--method", default="budget", choices=[m for m in METHODS if m])
    parser.add_argument("--alpha", type=float, default=0.3,
                        help="budget: fraction of tokens kept, in (0, 1]; v2: multiple of the mean score, >= 0; "
                             "unused by v1 and none")
    parser.add_argument("--mode", default="multiscale", choices=MODES)
    parser.add_argument("--score", choices=SCORES, help="default: detail for budget, entropy otherwise")
    parser.add_argument("--patch-size", type=int, default=28, help="base cell side in pixels, >= 1")
    parser.add_argument("--tolerance", type=float,
                        help="also remove cells their left / upper neighbours predict within this many 8-bit levels "
                             "per pixel value, in [0, 255] (0: exactly); default: off")
    parser.add_argument("--downscale", nargs="?", const=True, default=False, choices=["least_error", "balanced"],
                        help="budget only: first shrink the image until the cells it must show fit the budget "
                             "(bare flag; for text), or to the size of least error between none and that "
                             "('least_error'; for photographs), or the smallest of least worst-cell error (within "
                             "0.2 dB) among those clearly better than uniform down-scaling ('balanced'; mixed "
                             "content); default: off")
    parser.add_argument("--shapes", default="squares", choices=SHAPES,
                        help="budget, multiscale: 'halves' lets a region also split in two across either side "
                             "(1x2, 2x1, 2x4, 4x2 cells as one token; keeps more per token on photographs); "
                             "default: squares")
    parser.add_argument("--out", type=Path, default=Path("selection.png"),
                        help="PNG to write: the image with the kept regions outlined, a heatmap of the score and a "
                             f"legend, scaled down to at most {MAX_SIDE} px on its long side (default: selection.png)")
    return parser


def _fail(parser: argparse.ArgumentParser, argument: str, message: Any) -> NoReturn:
    """One line on stderr and exit code 2, before any output."""
    parser.exit(2, f"{parser.prog}: error: argument {argument}: {message}\n")


def _checked_input(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[np.ndarray, Any, str]:
    """Check every argument before any output; return the image, its value_range and its description."""
    if args.patch_size < 1:
        _fail(parser, "--patch-size", f"must be an integer >= 1, got {args.patch_size}")
    try:
        check_settings(args.method, args.alpha, None, 3, args.mode, args.score)
    except ValueError as e:
        _fail(parser, "--alpha", e)
    try:
        check_settings(args.method, args.alpha, None, 3, args.mode, args.score, args.tolerance)
    except ValueError as e:
        _fail(parser, "--tolerance", e)
    if args.downscale and METHODS[args.method] != "budget":
        _fail(parser, "--downscale", f"needs --method budget (it fits the image to the budget), got {args.method}")
    try:
        check_settings(args.method, args.alpha, None, 3, args.mode, args.score, args.tolerance, args.shapes)
    except ValueError as e:
        _fail(parser, "--shapes", e)
    try:
        _check_out(args.out)
    except ValueError as e:
        _fail(parser, "--out", e)
    try:
        return _load_image(args.image) if args.image else (_default_image(), None, "")
    except ValueError as e:
        _fail(parser, "--image", e)


def _settings_used(method: str, args: argparse.Namespace, sel: Any) -> str:
    """The settings ``method`` uses, as echoed after its name: alpha, or v1's threshold(s)."""
    if method in ("budget", "v2"):
        return f" alpha={args.alpha:g}"
    if method == "v1" and args.mode == "multiscale":
        return f" thresholds={sel.threshold[0]:g},{sel.threshold[1]:g}"
    if method == "v1":  # drop mode uses the first threshold only
        return f" threshold={sel.threshold[0]:g}"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    method = METHODS[args.method]
    image, value_range, described = _checked_input(parser, args)
    h, w = image.shape[:2]
    cache: dict = {}

    def maps_for(name: str):
        score = args.score or default_score(name)
        if score not in cache:
            cache[score] = score_maps(image, score, patch_size=args.patch_size, value_range=value_range)
        return score, cache[score]

    def select(name: str, alpha: float):
        """Selection, score name and the maps it was made on; from the cached maps unless cells are
        predicted from pixels or the image is shrunk first."""
        score, maps = maps_for(name)
        downscale = args.downscale if name == "budget" else False
        shapes = args.shapes if name == "budget" else "squares"
        if args.tolerance is None and not downscale and shapes == "squares":
            return select_patches(maps, name, alpha, mode=args.mode), score, maps
        sel = select_patches(image, name, alpha, patch_size=args.patch_size, mode=args.mode, score=score,
                             value_range=value_range, tolerance=args.tolerance, downscale=downscale, shapes=shapes)
        return sel, score, (score if sel.resized is not None else maps)  # a name: scored as selected

    removes = "" if args.tolerance is None else f", predictable cells removed (tolerance {args.tolerance:g})"
    shrinks = "" if not args.downscale else f", budget rows downscale={args.downscale!r}"
    shrinks += "" if args.shapes == "squares" else f", budget rows shapes={args.shapes!r}"
    print(f"image {w}x{h} px{f' ({described})' if described else ''}, base cell {args.patch_size} px, "
          f"mode {args.mode}{removes}{shrinks}")
    cells = units((h, w), args.patch_size)
    print(f"{'method':<8} {'alpha':>6} {'score':>8} {'tokens':>7} {'of':>6} {'kept':>6}"
          + ("  selected on" if args.downscale else ""))
    for name, alpha in _SWEEP:
        sel, score, _ = select(name, alpha if alpha is not None else 0.3)
        shown = "-" if alpha is None else f"{alpha:g}"
        size = sel.resized[1] if sel.resized else (h, w)
        print(f"{name:<8} {shown:>6} {score:>8} {sel.num_tokens:>7} {cells:>6} {sel.num_tokens / cells:>6.1%}"
              + (f"  {size[1]}x{size[0]} px" if args.downscale else ""))
    sel, score, maps = select(method, args.alpha)
    used = _settings_used(method, args, sel) + ("" if args.tolerance is None else f" tolerance={args.tolerance:g}")
    used += f" downscale={args.downscale!r}" if args.downscale else ""
    used += f" shapes={args.shapes!r}" if args.shapes != "squares" else ""
    setting = f"{args.method}{used} score={score}: {sel.num_tokens} of {cells} tokens"
    picture = render_selection(image, sel, maps, args.patch_size,
                               title=f"{setting} ({sel.num_tokens / cells:.1%})", value_range=value_range)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(args.out)
    print(f"{setting} -> wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
