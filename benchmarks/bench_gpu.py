"""Time to first token of Qwen2-VL-2B / 7B-shaped models, stock vs pruned processor output.

    python -m benchmarks.bench_gpu [--models 2b 7b] [--sizes 1 4] [--alphas 0.5 0.3 0.2]
                                   [--mode multiscale] [--photo astronaut] [--repeats 10] [--warmup 3]
    python -m benchmarks.bench_gpu --tiny      # same code path on CPU with a tiny config (CI smoke test)

Models: the exact Qwen2-VL-2B-Instruct / 7B-Instruct architectures (vision tower depth 32,
embed 1280, 16 heads, mlp ratio 4, merger to the LLM width; LLM widths, depths, heads, KV heads,
vocabularies and M-RoPE sections [16, 24, 24] of the released configs) with random weights, built
directly on the GPU in bf16 with sdpa attention; the compute does not depend on weight values.
The tokenizer is the in-memory one of :mod:`entropy_prune.qwen.testing` (its special-token ids are written
into the config), the image processor Qwen2-VL's with its own max_pixels (4 MP is not downscaled).

Per model x image x setting (stock, then ``wrap_processor(method="budget", alpha, mode)`` with
the default score) it reports: image tokens, TTFT = one forward over the whole prompt returning
the first generated token's logits (vision tower + LLM prefill, ``use_cache=True``,
``logits_to_keep=1``, as in ``generate``; pruned inputs go through ``patch_model``), median ms
over ``--repeats`` after ``--warmup`` calls with device synchronisation, its speed-up over stock,
peak device memory, the processor's median CPU time (``--proc-repeats`` calls) and end to end
(processor + TTFT). Inputs are moved to the device before timing. Batch of one image.
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import time

import torch

from benchmarks import _qwen_setup as setup
from entropy_prune.qwen import patch_model, wrap_processor

VISION_2B_7B = dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4, hidden_act="quick_gelu")
MODELS = {
    # Qwen2-VL-2B-Instruct config.json
    "2b": dict(
        vision=VISION_2B_7B,
        text=dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                  num_key_value_heads=2, vocab_size=151936),
        tie_word_embeddings=True,
    ),
    # Qwen2-VL-7B-Instruct config.json
    "7b": dict(
        vision=VISION_2B_7B,
        text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, vocab_size=152064),
        tie_word_embeddings=False,
    ),
    # smoke test: same code path, seconds on a CPU
    "tiny": dict(
        vision=dict(depth=2, embed_dim=32, num_heads=4, mlp_ratio=2, hidden_act="quick_gelu"),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=1024),
        tie_word_embeddings=False,
    ),
}
MROPE = {"2b": [16, 24, 24], "7b": [16, 24, 24], "tiny": [2, 3, 3]}


def make_config(name: str, tokenizer):
    """``Qwen2VLConfig`` of model ``name`` with the tokenizer's special-token ids."""
    from transformers import Qwen2VLConfig

    spec = MODELS[name]
    special = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>",
               "<|endoftext|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special}
    text = dict(
        spec["text"], hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": MROPE[name]},
        bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(spec["vision"], hidden_size=spec["text"]["hidden_size"], in_channels=3, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    return Qwen2VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=spec["tie_word_embeddings"],
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )


def build_model(name: str, tokenizer, device: torch.device, dtype: torch.dtype):
    """Random-weight model created directly on ``device`` in ``dtype``, eval mode, patched."""
    from transformers import Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration._from_config(make_config(name, tokenizer), dtype=dtype,
                                                             attn_implementation="sdpa")
    return patch_model(model.eval())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall ms of ``fn()`` over ``repeats`` calls after ``warmup``, synchronised on ``device``."""
    times = []
    for i in range(warmup + repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def first_token_logits(model, inputs) -> torch.Tensor:
    """(B, vocab) logits of the first generated token: vision tower + prefill."""
    with torch.inference_mode():
        return model(**inputs, use_cache=True, logits_to_keep=1).logits[:, -1]


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU, small images: a smoke test")
    parser.add_argument("--models", nargs="+", choices=["2b", "7b"], default=["2b", "7b"])
    parser.add_argument("--sizes", type=setup.positive_float, nargs="+",
                        help="image sizes in megapixels (default 1 4; --tiny: 0.05 0.1)")
    parser.add_argument("--alphas", type=setup.unit_float, nargs="+", default=[0.5, 0.3, 0.2], help="budget alphas")
    parser.add_argument("--mode", choices=["multiscale", "drop"], default="multiscale")
    parser.add_argument("--photo", choices=setup.PHOTOS, default="astronaut", help="skimage.data photograph")
    parser.add_argument("--backend", choices=["pil", "torchvision"], default="torchvision",
                        help="image processor backend")
    parser.add_argument("--repeats", type=setup.positive_int, default=10, help="timed forwards per row")
    parser.add_argument("--warmup", type=setup.non_negative_int, default=3, help="untimed forwards before them")
    parser.add_argument("--proc-repeats", type=setup.positive_int, default=5,
                        help="timed processor calls per setting")
    parser.add_argument("--device", help="torch device (default: cuda; --tiny: cpu)")
    args = parser.parse_args(argv)
    args.device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available: run on a GPU machine, or pass --tiny (or --device cpu)")
    if args.tiny:
        args.models = ["tiny"]
        args.sizes = args.sizes or [0.05, 0.1]
    args.sizes = args.sizes or [1.0, 4.0]
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark, print its table; returns one dict per row."""
    args = parse_args(argv)
    device = args.device
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    stock = setup.make_stock_processor(args.backend)
    settings = [("stock", None)] + [
        (f"a={a:g}", wrap_processor(stock, patch_selection_method="budget", alpha=a, mode=args.mode))
        for a in args.alphas
    ]
    text = [setup.prompt(stock)]
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {card}, {dtype}, sdpa; {args.backend} processor on CPU ({torch.get_num_threads()} threads); "
          f"budget {args.mode}, default score; median of {args.repeats} after {args.warmup} warm-up")

    # Processor outputs and CPU times are model-independent: compute them once.
    inputs, proc_ms, photos = {}, {}, {}
    for mp in args.sizes:
        image, photos[mp] = setup.photo(args.photo, mp)
        for label, proc in settings:
            def call(proc=proc or stock, image=image):  # defaults bind this iteration's values (B023)
                return proc(images=[image], text=text, return_tensors="pt")

            proc_ms[mp, label] = median_ms(call, args.proc_repeats, 1, torch.device("cpu"))
            inputs[mp, label] = call()

    header = (f"{'model':<5} {'MP':>5} {'setting':<8} {'tokens':>6} {'seq':>6} {'proc ms':>8} {'TTFT ms':>9} "
              f"{'speed-up':>8} {'e2e ms':>9} {'e2e x':>6} {'peak MB':>8}")
    print(header)
    rows = []
    for name in args.models:
        t0 = time.perf_counter()
        model = build_model(name, stock.tokenizer, device, dtype)
        sync(device)
        print(f"-- {name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
              f"built in {time.perf_counter() - t0:.1f} s")
        for mp in args.sizes:
            base = None
            for label, _ in settings:
                batch = inputs[mp, label].to(device)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                # a temporary partial, not a name: `del model` below must free the model
                ttft = median_ms(functools.partial(first_token_logits, model, batch), args.repeats, args.warmup, device)
                peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
                peak_text = f"{peak:.0f}" if device.type == "cuda" else "-"
                e2e = proc_ms[mp, label] + ttft
                base = base or (ttft, e2e)
                row = dict(model=name, mp=mp, photo=photos[mp], setting=label, tokens=setup.image_tokens(batch),
                           seq=int(batch["input_ids"].shape[1]), proc_ms=proc_ms[mp, label], ttft_ms=ttft,
                           speedup=base[0] / ttft, e2e_ms=e2e, e2e_speedup=base[1] / e2e, peak_mb=peak)
                rows.append(row)
                print(f"{name:<5} {mp:>5g} {label:<8} {row['tokens']:>6} {row['seq']:>6} {row['proc_ms']:>8.1f} "
                      f"{ttft:>9.1f} {row['speedup']:>7.2f}x {e2e:>9.1f} {row['e2e_speedup']:>5.2f}x {peak_text:>8}",
                      flush=True)
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"photograph: {photos[args.sizes[0]]}, resized bicubic; speed-ups are stock / setting")
    return rows


if __name__ == "__main__":
    main()
