"""Wrapped vs stock Qwen2-VL processor: time per call and image tokens.

    python -m benchmarks.bench_processor [--sizes 1 4] [--backends pil torchvision]
                                         [--photo astronaut|page] [--alpha 0.3] [--repeats 30]
                                         [--tolerance T] [--downscale [least_error|balanced]] [--shapes halves]
                                         [--fresh-processes N] [--without-numba]

One full ``Qwen2VLProcessor`` call (chat text + one photograph, ``return_tensors="pt"``) per
measurement, stock vs ``wrap_processor(stock, "budget", alpha)`` (default score), for each
image-processor backend and image size (megapixels). ``max_pixels`` is Qwen2-VL's own (16384
units of 28 px), so 4 MP images are not downscaled. With torchvision a third processor, *prune
only*, is the wrapped one with the stock ``process_image`` (a channels-first copy before
resizing): the cost of pruning alone, without the wrapped processor's faster resize.
``--photo page`` takes a rendered text page instead of a photograph; ``--tolerance`` and
``--downscale`` (``downscale=True``; ``--downscale least_error`` / ``balanced``: that ``downscale``)
and ``--shapes halves`` add those settings to the wrapped processor. Calls
alternate (the order rotates every repeat) so drift hits all; medians over ``--repeats`` rounds
after 2 warm-up rounds, all in this process, torch at its default thread count. Where numba is
installed the library runs its compiled kernels, and with torchvision a fourth processor, prune
only with them off, joins the rotation; ``--without-numba`` turns them off throughout (as
installed without the ``fast`` extra).

``--fresh-processes N`` adds a second table: each processor alone in N fresh processes (what a
data-loader worker sees), median of the per-process medians, and minor page faults per call.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import multiprocessing
import resource
import statistics
import time
from unittest import mock

import torch

from benchmarks import _qwen_setup as setup
from entropy_prune import _compiled
from entropy_prune.qwen import wrap_processor
from entropy_prune.qwen.processing import _PruningImageProcessor
from entropy_prune.selection import SHAPES


def timed(fn) -> tuple[float, object]:
    """(wall ms, result) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1e3, out


def prune_only(wrapped):
    """Copy of a wrapped torchvision processor whose image processor keeps the stock
    ``process_image`` (channels-first copy before resizing)."""

    class StockLayout(type(wrapped.image_processor)):
        def process_image(self, image, *args, **kwargs):
            return super(_PruningImageProcessor, self).process_image(image, *args, **kwargs)

    new = copy.copy(wrapped)
    new.image_processor = copy.copy(wrapped.image_processor)
    new.image_processor.__class__ = StockLayout
    return new


def load(name: str, megapixels: float):
    """(uint8 (H, W, 3) image, source name): a rendered page (``"page"``) or a photograph."""
    return setup.page(megapixels) if name == "page" else setup.photo(name, megapixels)


def measure(backend: str, megapixels: float, photo: str, alpha: float, repeats: int, settings: dict,
            numpy_too: bool = False) -> dict:
    """Interleaved timings (ms) and token counts for one backend and size; ``settings``: the
    wrapped processor's other selection settings; ``numpy_too``: with torchvision, also prune only
    with the library's numba kernels off."""
    stock = setup.make_stock_processor(backend)
    wrapped = wrap_processor(stock, patch_selection_method="budget", alpha=alpha, **settings)
    image, source = load(photo, megapixels)
    text = [setup.prompt(stock)]
    procs = {"stock": stock, "wrapped": wrapped}
    if backend == "torchvision":
        procs["prune only"] = prune_only(wrapped)
        if numpy_too:
            procs["prune only, numpy"] = prune_only(wrapped)
    names, times, outputs = list(procs), {name: [] for name in procs}, {}
    for i in range(repeats + 2):
        for name in names[i % len(names):] + names[: i % len(names)]:
            with numba_off(name == "prune only, numpy"):
                ms, outputs[name] = timed(lambda name=name: procs[name](images=[image], text=text, return_tensors="pt"))
            if i >= 2:
                times[name].append(ms)
    before, after = setup.image_tokens(outputs["stock"]), setup.image_tokens(outputs["wrapped"])
    pad_id = stock.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    placeholders = int((outputs["wrapped"]["input_ids"] == pad_id).sum())
    assert placeholders == after, (placeholders, after)
    for name in names[2:]:
        assert all(torch.equal(outputs[name][k], outputs["wrapped"][k]) for k in outputs["wrapped"]), name
    ms = {name: statistics.median(t) for name, t in times.items()}
    only, numpy_only = ms.get("prune only"), ms.get("prune only, numpy")
    return dict(
        backend=backend, mp=megapixels, photo=source, px=f"{image.shape[1]}x{image.shape[0]}",
        stock_ms=ms["stock"], wrapped_ms=ms["wrapped"], ratio=ms["wrapped"] / ms["stock"],
        only_ms=only, only_ratio=None if only is None else only / ms["stock"], before=before, after=after,
        numpy_only_ms=numpy_only, numpy_only_ratio=None if numpy_only is None else numpy_only / ms["stock"],
    )


def numba_off(off: bool):
    """A context in which the library runs its numpy code even where numba is installed (``off``)."""
    return mock.patch.object(_compiled, "_kernels", lambda: None) if off else contextlib.nullcontext()


def alone(backend: str, megapixels: float, photo: str, alpha: float, repeats: int, kind: str,
          settings: dict, without_numba: bool = False) -> tuple[float, float]:
    """(median ms, median minor page faults) per call of one processor, alone in this process."""
    with numba_off(without_numba):
        return _alone(backend, megapixels, photo, alpha, repeats, kind, settings)


def _alone(backend: str, megapixels: float, photo: str, alpha: float, repeats: int, kind: str,
           settings: dict) -> tuple[float, float]:
    stock = setup.make_stock_processor(backend)
    wrapped = wrap_processor(stock, patch_selection_method="budget", alpha=alpha, **settings)
    proc = {"stock": stock, "wrapped": wrapped}[kind] if kind != "prune only" else prune_only(wrapped)
    image, _ = load(photo, megapixels)
    text = [setup.prompt(stock)]
    times, faults = [], []
    for i in range(repeats + 2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        ms, _ = timed(lambda: proc(images=[image], text=text, return_tensors="pt"))
        if i >= 2:
            times.append(ms)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(times), statistics.median(faults)


def fresh_processes(args) -> None:
    """Print the table of each processor alone in ``args.fresh_processes`` fresh processes."""
    print(f"\neach processor alone in {args.fresh_processes} fresh processes, {args.repeats} calls each: "
          "median [min-max] of per-process medians (ms), median page faults per call")
    ctx = multiprocessing.get_context("spawn")
    for backend in args.backends:
        kinds = ["stock", "wrapped"] + (["prune only"] if backend == "torchvision" else [])
        for mp in args.sizes:
            cells, base = [], None
            for kind in kinds:
                runs = []
                for _ in range(args.fresh_processes):
                    with ctx.Pool(1) as pool:
                        runs.append(pool.apply(alone, (backend, mp, args.photo, args.alpha, args.repeats, kind,
                                                       settings(args), args.without_numba)))
                ms = statistics.median(r[0] for r in runs)
                base = base or ms
                cells.append(f"{kind} {ms:.1f} [{min(r[0] for r in runs):.1f}-{max(r[0] for r in runs):.1f}] "
                             f"x{ms / base:.3f}, {statistics.median(r[1] for r in runs):.0f} faults")
            print(f"{backend:<12} {mp:>4g}  " + " | ".join(cells), flush=True)


def settings(args) -> dict:
    """The wrapped processor's settings besides method and alpha, from the command line."""
    return {**({} if args.tolerance is None else {"tolerance": args.tolerance}),
            **({"downscale": setup.DOWNSCALE[args.downscale]} if args.downscale else {}),
            **({"shapes": args.shapes} if args.shapes != "squares" else {})}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=setup.positive_float, nargs="+", default=[1.0, 4.0],
                        help="image sizes in megapixels")
    parser.add_argument("--backends", nargs="+", choices=["pil", "torchvision"], default=["pil", "torchvision"])
    parser.add_argument("--photo", choices=(*setup.PHOTOS, "page"), default="astronaut",
                        help="skimage.data photograph, or a rendered text page")
    parser.add_argument("--alpha", type=setup.unit_float, default=0.3, help="budget alpha (0 < alpha <= 1)")
    parser.add_argument("--repeats", type=setup.positive_int, default=30, help="timed stock/wrapped pairs per row")
    parser.add_argument("--tolerance", type=float, default=None, help="the wrapped processor's tolerance")
    parser.add_argument("--downscale", nargs="?", const="fit", choices=list(setup.DOWNSCALE),
                        help="the wrapped processor's downscale=True (fit), downscale='least_error' or 'balanced'")
    parser.add_argument("--shapes", choices=SHAPES, default="squares",
                        help="the wrapped processor's region shapes")
    parser.add_argument("--fresh-processes", type=setup.positive_int, default=None,
                        help="also time each processor alone in this many fresh processes")
    parser.add_argument("--without-numba", action="store_true",
                        help="the library's numpy code even where numba is installed")
    args = parser.parse_args(argv)
    if args.alpha > 1:
        parser.error(f"--alpha must be in (0, 1], got {args.alpha}")
    compiled = "off" if args.without_numba or _compiled._kernels() is None else "on"
    print(f"wrapped (budget alpha={args.alpha}, default score, {settings(args) or 'no other setting'}) vs stock "
          f"Qwen2VLProcessor; median of {args.repeats} interleaved calls; torch threads {torch.get_num_threads()}; "
          f"numba kernels {compiled}")
    numpy_too = compiled == "on"
    print(f"{'backend':<12} {'MP':>4} {'pixels':>10} {'stock ms':>9} {'wrapped ms':>11} {'ratio':>6} "
          f"{'prune-only ms':>14} {'ratio':>6} {'tokens':>7} {'kept':>6}"
          + (f" {'prune-only, numba off ms':>25} {'ratio':>6}" if numpy_too else ""))
    rows = []
    for backend in args.backends:
        for mp in args.sizes:
            with numba_off(args.without_numba):
                r = measure(backend, mp, args.photo, args.alpha, args.repeats, settings(args), numpy_too)
            rows.append(r)
            only = ("-", "-") if r["only_ms"] is None else (f"{r['only_ms']:.1f}", f"{r['only_ratio']:.3f}")
            numpy_only = ("" if r["numpy_only_ms"] is None
                          else f" {r['numpy_only_ms']:>25.1f} {r['numpy_only_ratio']:>6.3f}")
            print(f"{backend:<12} {mp:>4g} {r['px']:>10} {r['stock_ms']:>9.1f} {r['wrapped_ms']:>11.1f} "
                  f"{r['ratio']:>6.3f} {only[0]:>14} {only[1]:>6} {r['before']:>7} {r['after']:>6}{numpy_only}",
                  flush=True)
    print(f"image: {rows[0]['photo']}" + ("" if args.photo == "page" else " (skimage.data), resized bicubic"))
    if args.fresh_processes:
        fresh_processes(args)
    return rows


if __name__ == "__main__":
    main()
