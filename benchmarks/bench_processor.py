"""Wrapped vs stock Qwen2-VL processor: time per call and image tokens.

    python benchmarks/bench_processor.py [--sizes 1 4] [--backends pil torchvision]
                                         [--photo astronaut] [--alpha 0.3] [--repeats 30]

One full ``Qwen2VLProcessor`` call (chat text + one photograph, ``return_tensors="pt"``) per
measurement, stock vs ``wrap_processor(stock, "budget", alpha)`` (default score), for each
image-processor backend and image size (megapixels). ``max_pixels`` is Qwen2-VL's own (16384
units of 28 px), so 4 MP images are not downscaled. Stock and wrapped calls alternate (the order
flips every repeat) so drift hits both; medians over ``--repeats`` pairs after 2 warm-up pairs,
all in this process, torch at its default thread count.
"""

from __future__ import annotations

import argparse
import statistics
import time

import _qwen_setup as setup
import torch

from entropy_prune.qwen import wrap_processor


def timed(fn) -> tuple[float, object]:
    """(wall ms, result) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1e3, out


def measure(backend: str, megapixels: float, photo: str, alpha: float, repeats: int) -> dict:
    """Interleaved stock/wrapped timings (ms) and token counts for one backend and size."""
    stock = setup.make_stock_processor(backend)
    wrapped = wrap_processor(stock, patch_selection_method="budget", alpha=alpha)
    image, source = setup.photo(photo, megapixels)
    text = [setup.prompt(stock)]
    calls = {
        "stock": lambda: stock(images=[image], text=text, return_tensors="pt"),
        "wrapped": lambda: wrapped(images=[image], text=text, return_tensors="pt"),
    }
    times = {"stock": [], "wrapped": []}
    outputs = {}
    for i in range(repeats + 2):
        order = ("stock", "wrapped") if i % 2 == 0 else ("wrapped", "stock")
        for name in order:
            ms, outputs[name] = timed(calls[name])
            if i >= 2:
                times[name].append(ms)
    before, after = setup.image_tokens(outputs["stock"]), setup.image_tokens(outputs["wrapped"])
    placeholders = int((outputs["wrapped"]["input_ids"] == stock.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum())
    assert placeholders == after, (placeholders, after)
    stock_ms, wrapped_ms = statistics.median(times["stock"]), statistics.median(times["wrapped"])
    return dict(
        backend=backend, mp=megapixels, photo=source, px=f"{image.shape[1]}x{image.shape[0]}",
        stock_ms=stock_ms, wrapped_ms=wrapped_ms, ratio=wrapped_ms / stock_ms, before=before, after=after,
    )


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=setup.positive_float, nargs="+", default=[1.0, 4.0], help="image sizes in megapixels")
    parser.add_argument("--backends", nargs="+", choices=["pil", "torchvision"], default=["pil", "torchvision"])
    parser.add_argument("--photo", choices=setup.PHOTOS, default="astronaut", help="skimage.data photograph")
    parser.add_argument("--alpha", type=setup.unit_float, default=0.3, help="budget alpha (0 < alpha <= 1)")
    parser.add_argument("--repeats", type=setup.positive_int, default=30, help="timed stock/wrapped pairs per row")
    args = parser.parse_args(argv)
    if args.alpha > 1:
        parser.error(f"--alpha must be in (0, 1], got {args.alpha}")
    print(f"wrapped (budget alpha={args.alpha}, default score) vs stock Qwen2VLProcessor; "
          f"median of {args.repeats} interleaved calls; torch threads {torch.get_num_threads()}")
    print(f"{'backend':<12} {'MP':>4} {'pixels':>10} {'stock ms':>9} {'wrapped ms':>11} {'ratio':>6} {'tokens':>7} {'kept':>6}")
    rows = []
    for backend in args.backends:
        for mp in args.sizes:
            r = measure(backend, mp, args.photo, args.alpha, args.repeats)
            rows.append(r)
            print(f"{backend:<12} {mp:>4g} {r['px']:>10} {r['stock_ms']:>9.1f} {r['wrapped_ms']:>11.1f} "
                  f"{r['ratio']:>6.3f} {r['before']:>7} {r['after']:>6}", flush=True)
    print(f"photograph: {rows[0]['photo']} (skimage.data), resized bicubic to the given size")
    return rows


if __name__ == "__main__":
    main()
