"""How much of the image survives at a token budget: PSNR / SSIM per score, mode and alpha.

    python -m benchmarks.bench_fidelity [--out fidelity.png] [--alphas 0.2 0.3 0.5]

Every photograph in skimage.data that ships with scikit-image is resized the way the Qwen2-VL
processor resizes it (smart_resize to multiples of 28 px, bicubic) and selected with method
"budget" at each alpha. `reconstruct` (what the encoder sees, back at full size) is compared
with the resized image, next to two baselines with the same token count:
  uniform - Qwen's own down-scaling: smart_resize with max_pixels = tokens x 28 x 28, bicubic
            down like the processor, then bilinear back up to the resized size (the same
            up-scaling kernel `reconstruct` uses for coarse regions, so only what was kept differs);
  random  - the same budget selection driven by random scores (seeded).
Rows of mode "downscale" are the wrapped processor's ``downscale=True`` with ``tolerance=0``
(``_qwen_setup.downscaled``: the image shrunk until its unpredicted units fit the budget), rows
"least_error" its ``downscale="least_error"`` with ``tolerance=0`` (the size of least error
between those two), each against uniform at its own token count. Rows "best_size" are an oracle
for that family: of every size the processor gives the image under some smaller ``max_pixels``,
the one whose budget selection (``tolerance=0``) shows the image with the highest true RGB PSNR
(least_error's choice made with the true error, over every size). Rows "core" are the core's
own ``select_patches(..., downscale="least_error", tolerance=0)`` (Pillow's bicubic, each side a
multiple of 28 px), shown by ``reconstruct`` (which brings it back to size bilinearly). Rows
"halves" and "core_halves" are "least_error" and "core" with ``shapes="halves"`` (regions may
also split in two across either side, one squashed token each); "balanced" and "core_balanced"
the same with ``downscale="balanced"`` (the setting for mixed content: bench_ocr reads it too).
Gains are in dB of PSNR over uniform (positive = the selection keeps more of the image); each
row names its worst image. A second table does the same for small images (a few photographs
resized to 16 x 16 down to 6 x 6 cells), where a quadtree has the least room.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from tqdm import tqdm
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from benchmarks._qwen_setup import downscaled
from entropy_prune import reconstruct, select_patches
from entropy_prune._downscale import alpha_for, units
from entropy_prune.qwen._downscale import resize as shrink
from entropy_prune.scores import SCORES, score_maps

UNIT = 28  # px per LLM token side in Qwen2-VL (14 px patches, 2 x 2 merge)
MIN_PIXELS, MAX_PIXELS = 56 * 56, 28 * 28 * 1280
PHOTOS = ["astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
          "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page", "retina", "rocket", "text"]
MODES = ("multiscale", "drop")
ROWS = (*MODES, "downscale", "least_error", "core", "halves", "core_halves", "balanced", "core_balanced",
        "best_size")  # table order
SETTINGS = {  # row -> the library's downscale and shapes ("core" rows: select_patches; the others: the adapter)
    "downscale": (True, "squares"), "least_error": ("least_error", "squares"), "core": ("least_error", "squares"),
    "halves": ("least_error", "halves"), "core_halves": ("least_error", "halves"),
    "balanced": ("balanced", "halves"), "core_balanced": ("balanced", "halves")}
SMALL_SOURCES = ("astronaut", "chelsea", "coffee")
SMALL_CELLS = (16, 12, 8, 6)  # small images: n x n cells of 28 px, where a quadtree has least room


def resize(img: np.ndarray, h: int, w: int, resample: int = Image.BICUBIC) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((w, h), resample))


def load(name: str) -> np.ndarray:
    """A skimage photograph as uint8 RGB at the size the Qwen2-VL processor would give it."""
    img = getattr(data, name)()
    img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3]
    h, w = smart_resize(img.shape[0], img.shape[1], UNIT, MIN_PIXELS, MAX_PIXELS)
    return resize(img, h, w)


def load_small(name: str) -> np.ndarray:
    """``"photo@n"``: the skimage photograph ``photo`` resized (bicubic) to n x n cells of 28 px."""
    photo, n = name.split("@")
    img = getattr(data, photo)()
    img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3]
    return resize(img, int(n) * UNIT, int(n) * UNIT)


SMALL = [f"{photo}@{n}" for photo in SMALL_SOURCES for n in SMALL_CELLS]


def quality(ref: np.ndarray, img: np.ndarray) -> tuple[float, float]:
    return (peak_signal_noise_ratio(ref, img, data_range=255),
            structural_similarity(ref, img, channel_axis=-1, data_range=255))


def uniform(img: np.ndarray, tokens: int) -> tuple[np.ndarray, int]:
    """Qwen's uniform down-scaling to at most ``tokens`` tokens, brought back to full size."""
    h, w = img.shape[:2]
    sh, sw = smart_resize(h, w, UNIT, UNIT * UNIT, max(tokens, 1) * UNIT * UNIT)
    return resize(resize(img, sh, sw), h, w, Image.BILINEAR), (sh // UNIT) * (sw // UNIT)


def smaller_sizes(h: int, w: int) -> list[tuple[int, int]]:
    """Every size smart_resize gives (h, w) under max_pixels of 1 .. h w / 28^2 units, no larger than
    (h, w), smallest first."""
    cells = units((h, w), UNIT)
    return sorted(s for s in {smart_resize(h, w, UNIT, MIN_PIXELS, n * UNIT * UNIT) for n in range(1, cells + 1)}
                  if s[0] * s[1] <= h * w)


def shrunk(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H, W, 3) uint8 resized to (h, w) with the adapter's kernel, as ``downscale`` resizes (the image
    itself at its own size)."""
    if img.shape[:2] == (h, w):
        return img
    return np.ascontiguousarray(shrink(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), h, w)
                                .numpy().transpose(1, 2, 0))


def best_size(img: np.ndarray, alpha: float) -> tuple[np.ndarray, int]:
    """(shown image, tokens) of the size of highest true RGB PSNR, of every
    size smart_resize gives (H, W) under max_pixels of 1 .. H W / 28^2 units (resized with the
    adapter's kernel, as ``downscale`` resizes), each selected at the budget of (H, W) with
    ``tolerance=0``; sizes whose selection passes the budget (at least 1 token: a 2 x 2 grid
    always fits) are skipped."""
    h, w = img.shape[:2]
    cells = units((h, w), UNIT)
    budget = max(int(np.floor(alpha * cells + 0.5)), 1)
    best = None
    for sh, sw in smaller_sizes(h, w):
        small = shrunk(img, sh, sw)
        sel = select_patches(small, "budget", alpha_for(budget, units((sh, sw), UNIT), alpha), patch_size=UNIT,
                             tolerance=0)
        if sel.num_tokens > budget:
            continue
        shown = resize(reconstruct(small, sel, UNIT), h, w, Image.BILINEAR)
        psnr = peak_signal_noise_ratio(img, shown, data_range=255)
        if best is None or psnr > best[2]:
            best = (shown, sel.num_tokens, psnr)
    return best[:2]


def run(alphas: list[float], seed: int = 0) -> list[dict]:
    rows = []
    jobs = [(name, alpha) for name in PHOTOS + SMALL for alpha in alphas]
    cache = {}
    for name, alpha in tqdm(jobs, desc="fidelity", unit="image x alpha"):
        if name not in cache:
            img = load_small(name) if "@" in name else load(name)
            cache.clear()
            cache[name] = (img, {s: score_maps(img, s, patch_size=UNIT) for s in SCORES})
        img, maps = cache[name]
        rng = np.random.default_rng(seed)
        noise = [rng.random(np.asarray(m).shape) for m in maps["entropy"]]
        for mode in MODES:
            rand = select_patches(noise, "budget", alpha, mode=mode)
            rand_q = quality(img, reconstruct(img, rand, UNIT))
            for rule in ROWS[len(MODES):] if mode == "multiscale" else ():
                if rule == "best_size":
                    shown, tokens = best_size(img, alpha)
                else:
                    downscale, shapes = SETTINGS[rule]
                    if rule.startswith("core"):
                        sel = select_patches(img, "budget", alpha, patch_size=UNIT, tolerance=0, downscale=downscale,
                                             shapes=shapes)
                        shown, tokens = reconstruct(img, sel, UNIT), sel.num_tokens
                    else:
                        shown, tokens = downscaled(img, alpha, UNIT, MIN_PIXELS, downscale, tolerance=0,
                                                   shapes=shapes)
                uni, uni_tokens = uniform(img, tokens)
                q, uq = quality(img, shown), quality(img, uni)
                rows.append(dict(image=name, alpha=alpha, mode=rule, score="detail", tokens=tokens,
                                 cells=rand.num_cells, uniform_tokens=uni_tokens, psnr=q[0], ssim=q[1],
                                 uniform_psnr=uq[0], uniform_ssim=uq[1], random_psnr=rand_q[0],
                                 random_ssim=rand_q[1]))
            for score in SCORES:
                sel = select_patches(maps[score], "budget", alpha, mode=mode)
                uni, uni_tokens = uniform(img, sel.num_tokens)
                q, uq = quality(img, reconstruct(img, sel, UNIT)), quality(img, uni)
                rows.append(dict(image=name, alpha=alpha, mode=mode, score=score, tokens=sel.num_tokens,
                                 cells=sel.num_cells, uniform_tokens=uni_tokens, psnr=q[0], ssim=q[1],
                                 uniform_psnr=uq[0], uniform_ssim=uq[1], random_psnr=rand_q[0],
                                 random_ssim=rand_q[1]))
    return rows


def summary(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    print(f"{'mode':<11} {'score':<8} {'alpha':>5} {'tokens':>7} {'PSNR':>6} {'uniform':>8} {'random':>7} "
          f"{'gain dB':>8} {'min gain':>9} {'worst image':<22} {'SSIM':>5} {'uni':>5} {'rand':>5}")
    keys = sorted({(r["mode"], r["score"], r["alpha"]) for r in rows}, key=lambda k: (ROWS.index(k[0]), k[1], k[2]))
    for mode, score, alpha in keys:
        sub = [r for r in rows if (r["mode"], r["score"], r["alpha"]) == (mode, score, alpha)]
        gains = [r["psnr"] - r["uniform_psnr"] for r in sub]
        worst = min(sub, key=lambda r: r["psnr"] - r["uniform_psnr"])

        def mean(key, sub=sub):  # the default binds this iteration's rows (B023)
            return statistics.fmean(r[key] for r in sub)

        print(f"{mode:<11} {score:<8} {alpha:>5.2f} {mean('tokens') / mean('cells'):>6.1%} {mean('psnr'):>6.2f} "
              f"{mean('uniform_psnr'):>8.2f} {mean('random_psnr'):>7.2f} {statistics.fmean(gains):>+8.2f} "
              f"{min(gains):>+9.2f} {worst['image']:<22} {mean('ssim'):>5.3f} {mean('uniform_ssim'):>5.3f} "
              f"{mean('random_ssim'):>5.3f}")


def per_image(rows: list[dict], alpha: float) -> None:
    print(f"\nper image, multiscale, alpha {alpha}: PSNR gain over uniform (dB)")
    print(f"{'image':<22} {'size':>10} {'tokens':>7} " + " ".join(f"{s:>8}" for s in SCORES))
    for name in PHOTOS:
        sub = {r["score"]: r for r in rows if r["image"] == name and r["alpha"] == alpha and r["mode"] == "multiscale"}
        any_row = next(iter(sub.values()))
        print(f"{name:<22} {any_row['cells']:>10} {any_row['tokens']:>7} "
              + " ".join(f"{sub[s]['psnr'] - sub[s]['uniform_psnr']:>+8.2f}" for s in SCORES))


def plot(rows: list[dict], alpha: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=100)
    x = np.arange(len(PHOTOS))
    width = 0.8 / len(SCORES)
    for i, score in enumerate(SCORES):
        gains = [next(r["psnr"] - r["uniform_psnr"] for r in rows if r["image"] == n and r["alpha"] == alpha
                      and r["mode"] == "multiscale" and r["score"] == score) for n in PHOTOS]
        ax.bar(x + (i - (len(SCORES) - 1) / 2) * width, gains, width, label=f"score={score}")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, PHOTOS, rotation=45, ha="right")
    ax.set_ylabel("PSNR gain over uniform (dB)")
    ax.set_title(f"budget alpha={alpha}, multiscale: quadtree vs Qwen's uniform down-scaling, same tokens")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    print(f"\nwrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.2, 0.3, 0.5])
    parser.add_argument("--out", type=Path, default=Path("fidelity.png"), help="plot of per-image gains")
    args = parser.parse_args()
    rows = run(args.alphas)
    summary([r for r in rows if "@" not in r["image"]], f"{len(PHOTOS)} photographs at the processor's size")
    summary([r for r in rows if "@" in r["image"]],
            f"small images: {', '.join(SMALL_SOURCES)} at {' / '.join(f'{n}x{n}' for n in SMALL_CELLS)} cells")
    focus = 0.3 if 0.3 in args.alphas else args.alphas[0]
    per_image(rows, focus)
    plot(rows, focus, args.out)


if __name__ == "__main__":
    main()
