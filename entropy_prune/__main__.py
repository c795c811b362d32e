"""``python -m entropy_prune``: token counts per method on an image, and a picture of one selection."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from .scores import SCORES, score_maps
from .selection import METHODS, MODES, default_score, select_patches
from .visualize import render_selection

SWEEP = [("none", None), ("v1", None), ("v2", 0.5), ("v2", 1.0), ("v2", 1.5),
         ("budget", 0.1), ("budget", 0.2), ("budget", 0.3), ("budget", 0.5), ("budget", 1.0)]


def default_image() -> np.ndarray:
    """The bundled 448 x 448 photograph (NASA astronaut portrait, public domain) as uint8 (H, W, 3)."""
    with resources.files("entropy_prune").joinpath("data/astronaut.jpg").open("rb") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="entropy-prune", description=__doc__)
    parser.add_argument("--image", type=Path, help="image file (default: the bundled photograph)")
    parser.add_argument("--method", default="budget", choices=[m for m in METHODS if m])
    parser.add_argument("--alpha", type=float, default=0.3, help="budget: fraction of tokens kept; v2: multiple of the mean score")
    parser.add_argument("--mode", default="multiscale", choices=MODES)
    parser.add_argument("--score", choices=SCORES, help="default: detail for budget, entropy otherwise")
    parser.add_argument("--patch-size", type=int, default=28, help="base cell side in pixels")
    parser.add_argument("--out", type=Path, default=Path("selection.png"), help="PNG to write")
    args = parser.parse_args(argv)

    image = np.asarray(Image.open(args.image).convert("RGB")) if args.image else default_image()
    h, w = image.shape[:2]
    cache: dict = {}

    def maps_for(method: str):
        score = args.score or default_score(method)
        if score not in cache:
            cache[score] = score_maps(image, score, patch_size=args.patch_size)
        return score, cache[score]

    print(f"image {w}x{h} px, base cell {args.patch_size} px, mode {args.mode}")
    print(f"{'method':<8} {'alpha':>6} {'score':>8} {'tokens':>7} {'of':>6} {'kept':>6}")
    for method, alpha in SWEEP:
        score, maps = maps_for(method)
        sel = select_patches(maps, method, alpha if alpha is not None else 0.3, mode=args.mode)
        shown = "-" if alpha is None else f"{alpha:g}"
        print(f"{method:<8} {shown:>6} {score:>8} {sel.num_tokens:>7} {sel.num_cells:>6} {sel.num_tokens / sel.num_cells:>6.1%}")
    score, maps = maps_for(args.method)
    sel = select_patches(maps, args.method, args.alpha, mode=args.mode)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_selection(image, sel, maps[0], args.patch_size)).save(args.out)
    print(f"{args.method} alpha={args.alpha:g} score={score}: {sel.num_tokens} of {sel.num_cells} tokens -> wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
