"""Time and peak memory of entropy maps (+ budget selection), ours vs two references; the default
selection (detail score) alone, with ``tolerance=0`` and ``tolerance=4`` (compiled where numba is
installed, and on the numpy path), with ``tolerance=0, downscale=True`` (documents), with
``downscale="least_error"`` (photographs) and with ``shapes="halves"``.

    python -m benchmarks.bench_scores [--repeats 20] [--photos]

References, kept here only:
  one-hot  - per scale, a one-hot int64 histogram tensor per pixel (2 KB/pixel), summed over
             each cell: the method of the earlier public implementation.
  histc    - torch.histc over each cell of each scale, one call per cell.
All run on one CPU thread on the same real photograph (skimage astronaut, resized) at 1 MP and
4 MP. Memory: extra peak resident memory of a fresh process over its state just before the
call: the larger of the resident-memory high-water mark (VmHWM, reset just before the call;
sees torch allocations) and tracemalloc's peak (exact for numpy allocations).

``--photos`` adds the five default-selection rows on each of ``bench_fidelity``'s 18
photographs, resized (bicubic) to the first size: the median over photographs of each one's
median time, and the slowest photograph. Removing predictable cells costs more on some content
than on the astronaut.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time

# One thread for every BLAS/OpenMP backend: these must be set before numpy is first imported.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402 - after the thread-count variables above, which numpy reads on import

P, SCALES, BINS = 28, 3, 256


def photo(side: int, name: str = "astronaut") -> np.ndarray:
    """A skimage photograph as uint8 RGB (gray ones repeated), resized (bicubic) to side x side px."""
    from PIL import Image
    from skimage import data

    img = getattr(data, name)()
    img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3]
    return np.array(Image.fromarray(img).resize((side, side), Image.BICUBIC))


def luma_bins(img):
    import torch

    x = torch.from_numpy(img).float()
    g = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    return (g * (BINS / 255.0)).long().clamp_(max=BINS - 1)


def entropy_bits(hist):
    import torch

    prob = hist / hist.sum(-1, keepdim=True)
    return -(prob * torch.log2(prob.clamp_min(1e-30))).sum(-1)


def onehot_reference(img):
    """Entropy maps by one-hot histograms, one scale at a time (the earlier public method)."""
    import torch

    b = luma_bins(img)
    out = []
    for k in range(SCALES):
        s = P << k
        rows, cols = b.shape[0] // s, b.shape[1] // s
        onehot = torch.nn.functional.one_hot(b[: rows * s, : cols * s], BINS)  # (H, W, 256) int64
        hist = onehot.reshape(rows, s, cols, s, BINS).sum((1, 3)).double()
        out.append(entropy_bits(hist))
        del onehot
    return out


def histc_reference(img):
    """Entropy maps with torch.histc, one call per cell of every scale."""
    import torch

    g = luma_bins(img).float()
    out = []
    for k in range(SCALES):
        s = P << k
        rows, cols = g.shape[0] // s, g.shape[1] // s
        m = torch.empty(rows, cols, dtype=torch.float64)
        for i in range(rows):
            for j in range(cols):
                h = torch.histc(g[i * s:(i + 1) * s, j * s:(j + 1) * s], BINS, 0, BINS)
                m[i, j] = entropy_bits(h.double())
        out.append(m)
    return out


def ours_maps(img):
    from entropy_prune import entropy_maps

    return entropy_maps(img, P, SCALES, BINS)


def ours_budget(img):
    from entropy_prune import select_patches

    return select_patches(img, "budget", 0.3, patch_size=P, num_scales=SCALES, score="entropy")


def ours_default(img):
    """The default selection: budget alpha 0.3 on the detail score."""
    from entropy_prune import select_patches

    return select_patches(img, "budget", 0.3, patch_size=P, num_scales=SCALES)


def ours_tolerance(img, tolerance=0):
    """The default selection after removing cells predicted within ``tolerance`` gray levels (at
    tolerance > 0 walked compiled where numba is installed)."""
    from entropy_prune import select_patches

    return select_patches(img, "budget", 0.3, patch_size=P, num_scales=SCALES, tolerance=tolerance)


def ours_tolerance_numpy(img, tolerance=4):
    """:func:`ours_tolerance` on the numpy path, as without numba."""
    from unittest import mock

    from entropy_prune import _compiled

    with mock.patch.object(_compiled, "_kernels", lambda: None):
        return ours_tolerance(img, tolerance)


def ours_downscale(img, downscale=True, tolerance=0):
    """The default selection on the image shrunk first (``downscale``)."""
    from entropy_prune import select_patches

    return select_patches(img, "budget", 0.3, patch_size=P, num_scales=SCALES, tolerance=tolerance,
                          downscale=downscale)


def ours_halves(img):
    """The default selection with regions that split in halves (``shapes="halves"``)."""
    from entropy_prune import select_patches

    return select_patches(img, "budget", 0.3, patch_size=P, num_scales=SCALES, shapes="halves")


METHODS = {"ours: entropy_maps": ours_maps, "ours: maps + budget": ours_budget,
           "ours: detail budget": ours_default, "ours: + tolerance 0": ours_tolerance,
           "ours: + tolerance 4": functools.partial(ours_tolerance, tolerance=4),
           "ours: + tol 4, numpy": ours_tolerance_numpy,
           "ours: + tol0 downscale": ours_downscale,
           "ours: + least_error": functools.partial(ours_downscale, downscale="least_error", tolerance=None),
           "ours: shapes=halves": ours_halves,
           "ref: one-hot": onehot_reference, "ref: torch.histc": histc_reference}


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def median_ms(fn, img: np.ndarray, repeats: int) -> float:
    """Median wall time of ``repeats`` calls ``fn(img)``, in ms."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(img)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def measure(name: str, side: int, repeats: int) -> dict:
    """Run in this process (a fresh child): extra peak memory of one call, then median time."""
    import tracemalloc

    import torch

    torch.set_num_threads(1)
    fn = METHODS[name]
    img = photo(side)
    fn(img[:P * 4, :P * 4].copy())  # load lazily imported code before measuring memory
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    before = status_kb("VmRSS")
    tracemalloc.start()
    fn(img)
    traced = tracemalloc.get_traced_memory()[1] / 1024
    tracemalloc.stop()
    extra = max(status_kb("VmHWM") - before, traced)
    return {"ms": median_ms(fn, img, repeats), "extra_mb": max(extra, 0) / 1024, "image_mb": img.nbytes / 2**20}


SELECTIONS = ("ours: detail budget", "ours: + tolerance 0", "ours: + tolerance 4", "ours: + tol 4, numpy",
              "ours: shapes=halves")


def measure_photos(side: int, repeats: int) -> dict:
    """Run in a fresh child: median ms of each of :data:`SELECTIONS` on each fidelity photograph."""
    import torch

    from benchmarks.bench_fidelity import PHOTOS

    torch.set_num_threads(1)
    out = {}
    for name in SELECTIONS:
        fn, out[name] = METHODS[name], {}
        for photo_name in PHOTOS:
            img = photo(side, photo_name)
            fn(img)
            out[name][photo_name] = median_ms(fn, img, repeats)
    return out


def check_agreement(side: int) -> float:
    """Largest |difference| in bits between ours and the one-hot reference (whole cells)."""
    img = photo(side)
    return max(float(np.abs(a[: b.shape[0], : b.shape[1]] - b.numpy()).max())
               for a, b in zip(ours_maps(img), onehot_reference(img), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls of our code (references: 3)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000], help="square image sides in px")
    parser.add_argument("--photos", action="store_true",
                        help="also time the default selection on the 18 fidelity photographs")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, side, repeats = args.child
        result = measure_photos(int(side), int(repeats)) if name == "photos" else measure(name, int(side), int(repeats))
        print(json.dumps(result))
        return
    print(f"entropy maps, patch {P} px, {SCALES} scales, {BINS} bins; one thread; median of repeated calls")
    print(f"{'image':>10} {'method':<22} {'median ms':>10} {'extra peak MB':>14} {'x image':>8} {'speed-up':>9}")
    for side in args.sizes:
        rows = {}
        for name in METHODS:
            repeats = args.repeats if name.startswith("ours") else 3
            out = subprocess.run([sys.executable, __file__, "--child", name, str(side), str(repeats)],
                                 check=True, capture_output=True, text=True).stdout
            rows[name] = json.loads(out.strip().splitlines()[-1])
        base = rows["ours: maps + budget"]["ms"]
        for name, r in rows.items():
            print(f"{side * side / 1e6:>8.0f}MP {name:<22} {r['ms']:>10.2f} {r['extra_mb']:>14.1f} "
                  f"{r['extra_mb'] / r['image_mb']:>8.2f} {r['ms'] / base:>8.1f}x")
        print(f"{'':>10} max |ours - one-hot| = {check_agreement(side):.2e} bits")
    if args.photos:
        side = args.sizes[0]
        child = [sys.executable, "-m", "benchmarks.bench_scores", "--child", "photos", str(side), str(args.repeats)]
        # (-m: the child imports bench_fidelity's photograph list)
        out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        rows = json.loads(out.strip().splitlines()[-1])
        print(f"\n18 fidelity photographs at {side}x{side} px; one thread; per photograph the median of "
              f"{args.repeats} calls")
        print(f"{'method':<22} {'median ms':>10} {'slowest ms':>11}  slowest photograph; photographs over 10 ms")
        for name, per_photo in rows.items():
            slowest = max(per_photo, key=per_photo.get)
            over = [f"{p} {ms:.1f}" for p, ms in sorted(per_photo.items(), key=lambda x: -x[1]) if ms > 10]
            print(f"{name:<22} {statistics.median(per_photo.values()):>10.2f} {per_photo[slowest]:>11.2f}  "
                  f"{slowest}; {', '.join(over) or 'none'}")


if __name__ == "__main__":
    main()
