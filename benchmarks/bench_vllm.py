"""Offline vLLM throughput of Qwen2-VL, stock vs the entropy_prune plugin (budget alpha 0.5 / 0.3 / 0.2).

    python -m benchmarks.bench_vllm [--sizes 1 4] [--alphas 0.5 0.3 0.2] [--mode multiscale] [--repeats 4]
                                    [--rounds 5] [--max-tokens 16] [--limit N] [--layers N]
    python -m benchmarks.bench_vllm --tiny     # CPU, tiny random Qwen2-VL, small images (what CI runs)

Model: default, random weights (vLLM's ``load_format="dummy"``) at Qwen2-VL-2B-Instruct shapes
(:data:`benchmarks.bench_gpu.MODELS`, the released config's values) in bf16, meant for a GPU;
``--tiny``, the random checkpoint of :func:`entropy_prune.qwen.testing.save_checkpoint` in float32
on CPU. Tokenizer: :func:`entropy_prune.qwen.testing.make_tokenizer`; image processor: Qwen2-VL's,
with a ``max_pixels`` that no benchmark image exceeds (``--tiny``: 768 units at most, within its
1024 positions). ``--layers N`` cuts both towers to N layers
(a quick check of the 2B code path on a CPU, not a measurement).

Images: the skimage photographs of :data:`benchmarks._qwen_setup.PHOTOS` (the bundled astronaut
without scikit-image) and the documents of :data:`benchmarks._documents.LAYOUTS` (rendered at scale
from 1 MP up, rendered at 0.94 MP and resized below), each at every ``--sizes`` megapixels.

Conditions: ``stock`` (vLLM's own architecture) and, through the plugin's architecture (one engine,
settings per request in ``mm_processor_kwargs``), ``none`` (keep every unit: the control) and
budget ``a=<alpha>``. Each engine runs in a subprocess of its own; both stay up and take turns
(a warm-up round of every condition per size, then ``--rounds`` timed rounds, the engine going
first alternating), so drifts in machine load hit stock and plugin alike. Prefix caching and the
multimodal processor cache are off: every request is processed and prefilled in full. Per size,
condition and round: one ``generate`` call on every image ``--repeats`` times
(``--max-tokens`` tokens each, EOS ignored) gives requests/s and prompt tokens/s (wall clock, the
multimodal processor included); then each image alone with ``max_tokens=1`` gives TTFT from
``RequestOutput.metrics.first_token_latency`` (arrival, before the processor, to the first token,
on an idle engine; wall time of that call where vLLM gives no metrics). Reported: the best round's
throughput and each image's best TTFT (on a shared machine the least disturbed by other load; the
row dicts keep every round's wall time). Ratios are against stock at the same size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import _qwen_setup as setup

ROOT = Path(__file__).resolve().parents[1]
STOCK_ARCH = "Qwen2VLForConditionalGeneration"
TINY_HEADER = "CPU, tiny random Qwen2-VL — not representative of GPU serving"
PAGE_H, PAGE_W = 1120, 840  # benchmarks._documents' page size (12 px text)


def documents(megapixels: float) -> list[tuple[str, np.ndarray]]:
    """Every text layout at ~``megapixels`` MP: rendered at scale (text scaled too) from the page's
    own size up, rendered at that size and resized (bicubic) below it."""
    from benchmarks import _documents

    scale = math.sqrt(megapixels * 1e6 / (PAGE_H * PAGE_W))
    out = []
    for layout in _documents.LAYOUTS:
        if scale >= 1:
            page = _documents.render(layout, round(PAGE_H * scale), round(PAGE_W * scale), round(12 * scale))
        else:
            size = (max(1, round(PAGE_W * scale)), max(1, round(PAGE_H * scale)))
            page = np.asarray(Image.fromarray(_documents.render(layout)).resize(size, Image.BICUBIC))
        out.append((layout, page))
    return out


def write_images(directory: Path, sizes: list[float], limit: int | None) -> tuple[dict, list[str]]:
    """PNG files of the fixed image set: {size: [(kind, name, path)]} and the photographs' sources."""
    files, sources = {}, []
    for mp in sizes:
        photos = []
        for name in setup.PHOTOS[:limit]:
            image, source = setup.photo(name, mp)
            photos.append((name, image))
            sources.append(source)
        files[mp] = []
        for kind, items in (("photo", photos), ("document", documents(mp)[:limit])):
            for name, image in items:
                path = directory / f"{mp:g}MP-{kind}-{name}.png"
                Image.fromarray(np.ascontiguousarray(image[..., :3])).save(path)
                files[mp].append((kind, name, str(path)))
    return files, sorted(set(sources))


def write_model(directory: Path, tiny: bool, max_pixels: int, layers: int | None) -> None:
    """Tiny: ``save_checkpoint``'s random weights; else the Qwen2-VL-2B config alone (weights are
    vLLM's dummy ones). Either way the processor gets ``max_pixels``."""
    processor = setup.make_stock_processor("torchvision", max_pixels=max_pixels)
    if tiny:
        from entropy_prune.qwen.testing import save_checkpoint

        save_checkpoint(str(directory))
    else:
        import torch

        from benchmarks.bench_gpu import make_config

        config = make_config("2b", processor.tokenizer)
        if layers is not None:
            text = config.text_config
            config.vision_config.depth = text.num_hidden_layers = layers
            text.layer_types = text.layer_types[:layers]
        config.architectures = [STOCK_ARCH]
        config.dtype = config.text_config.dtype = torch.bfloat16
        config.save_pretrained(directory)
    processor.save_pretrained(directory)


# ---------------------------------------------------------------------------------------- worker


class _Engine:
    """One vLLM engine and the benchmark's requests to it."""

    def __init__(self, spec: dict) -> None:
        from vllm import LLM, SamplingParams

        self.spec, self.llm, self.ttft_sources = spec, LLM(**spec["engine"]), set()
        self.decode = SamplingParams(temperature=0, max_tokens=spec["max_tokens"], ignore_eos=True, detokenize=False)
        self.first = SamplingParams(temperature=0, max_tokens=1, detokenize=False)
        self.images = {mp: [(kind, Image.open(path).convert("RGB")) for kind, _, path in items]
                       for mp, items in spec["images"]}

    def requests(self, mp: float, settings: dict | None) -> list[dict]:
        extra = {} if settings is None else {"mm_processor_kwargs": settings}
        return [{"prompt": self.spec["prompt"], "multi_modal_data": {"image": image}, **extra}
                for _, image in self.images[mp]]

    def ttft(self, request: dict) -> float:
        """Seconds to the first token of one request on an idle engine."""
        t0 = time.perf_counter()
        metrics = self.llm.generate(request, self.first, use_tqdm=False)[0].metrics
        wall = time.perf_counter() - t0
        latency = getattr(metrics, "first_token_latency", None)  # vLLM 0.32, with log stats on
        self.ttft_sources.add("RequestOutput.metrics.first_token_latency" if latency else "wall time of 1-token calls")
        return latency or wall

    def measure(self, mp: float, settings: dict | None) -> tuple[float, list[float], list[int]]:
        """Wall time of the timed batch, per-image TTFTs and prompt tokens."""
        t0 = time.perf_counter()
        outputs = self.llm.generate(self.requests(mp, settings) * self.spec["repeats"], self.decode, use_tqdm=False)
        wall = time.perf_counter() - t0
        assert all(len(o.outputs[0].token_ids) == self.spec["max_tokens"] for o in outputs)
        n = len(self.images[mp])
        return wall, [self.ttft(r) for r in self.requests(mp, settings)], [len(o.prompt_token_ids) for o in outputs[:n]]


def worker(spec: dict) -> None:
    """One engine: prints ``READY <json>``, then for each size read from stdin one round of its
    conditions, ``ROUND <json>`` ({label: [wall s, TTFTs s, prompt tokens]}), until stdin closes."""
    t0 = time.perf_counter()
    import vllm

    engine = _Engine(spec)
    print("READY " + json.dumps({"version": vllm.__version__, "start_s": time.perf_counter() - t0}), flush=True)
    for line in sys.stdin:
        mp = json.loads(line)
        result = {label: engine.measure(mp, settings) for label, settings in spec["conditions"]}
        print("ROUND " + json.dumps({"conditions": result, "ttft": sorted(engine.ttft_sources)}), flush=True)


class _Worker:
    """``worker(spec)`` in a fresh interpreter (one in-process vLLM engine per process), driven
    round by round; killed after ``timeout`` seconds."""

    def __init__(self, spec: dict, log: Path, timeout: float) -> None:
        code = "import json, sys; from benchmarks.bench_vllm import worker; worker(json.loads(sys.argv[1]))"
        self.name, self.log = spec["name"], log
        with open(log, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)], cwd=ROOT, text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        self.timer = threading.Timer(timeout, self.proc.kill)
        self.timer.start()
        self.ready = self.expect("READY")

    def expect(self, tag: str) -> dict:
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return json.loads(line.removeprefix(tag + " "))
        code = self.proc.wait()
        raise RuntimeError(f"engine {self.name} exited ({code}):\n{self.log.read_text()[-4000:]}")

    def round(self, mp: float) -> dict:
        self.proc.stdin.write(json.dumps(mp) + "\n")
        self.proc.stdin.flush()
        return self.expect("ROUND")

    def close(self) -> None:
        self.timer.cancel()
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def measure(specs: list[dict], sizes: list[float], rounds: int, tmp: Path, timeout: float) -> tuple[list, dict]:
    """Both engines started one after the other and kept; per size a warm-up round of each, then
    ``rounds`` rounds alternating which engine goes first. Returns rows and run facts."""
    workers = []
    try:
        for spec in specs:
            workers.append(_Worker(spec, tmp / f"{spec['name']}.log", timeout))
            print(f"  engine {spec['name']}: imported and started in {workers[-1].ready['start_s']:.0f} s", flush=True)
        rows, ttft = [], set()
        for mp in sizes:
            t0 = time.perf_counter()
            for w in workers:
                w.round(mp)
            print(f"  {mp:g} MP: warm-up round {time.perf_counter() - t0:.0f} s", flush=True)
            runs = {}
            for i in range(rounds):
                for w in workers[:: 1 if i % 2 == 0 else -1]:
                    result = w.round(mp)
                    ttft |= set(result["ttft"])
                    for label, run in result["conditions"].items():
                        runs.setdefault(label, []).append(run)
            kinds = [kind for kind, *_ in dict(specs[0]["images"])[mp]]
            rows += [dict(mp=mp, condition=label, requests=len(kinds) * specs[0]["repeats"], kinds=kinds,
                          wall_s=min(r[0] for r in run), wall_s_rounds=[r[0] for r in run],
                          prompt_tokens=run[-1][2], ttft_s=np.min([r[1] for r in run], axis=0).tolist())
                     for label, run in runs.items()]
        return rows, {"version": workers[0].ready["version"], "ttft": sorted(ttft)}
    finally:
        for w in workers:
            w.close()


# ---------------------------------------------------------------------------------------- driver


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random checkpoint on CPU, small images (CI)")
    parser.add_argument("--sizes", type=setup.positive_float, nargs="+",
                        help="image sizes in megapixels (default 1 4; --tiny: 0.1 0.3)")
    parser.add_argument("--alphas", type=setup.unit_float, nargs="+", default=[0.5, 0.3, 0.2], help="budget alphas")
    parser.add_argument("--mode", choices=["multiscale", "drop"], default="multiscale")
    parser.add_argument("--repeats", type=setup.positive_int,
                        help="times each image is in the timed batch (default 4; --tiny: 2)")
    parser.add_argument("--rounds", type=setup.positive_int, default=5,
                        help="timed rounds; the best is reported (default 5)")
    parser.add_argument("--max-tokens", type=setup.positive_int, default=16, help="generated tokens per request")
    parser.add_argument("--limit", type=setup.positive_int,
                        help="first N photographs and first N documents only (default: all)")
    parser.add_argument("--layers", type=setup.positive_int,
                        help="2B shapes with N layers in each tower: a quick check of the code path on CPU")
    parser.add_argument("--device", choices=["cuda", "cpu"],
                        help="default: cuda where torch sees one (it must be vLLM's build), else cpu")
    parser.add_argument("--timeout", type=setup.positive_float, default=3600,
                        help="seconds before an engine's process is killed")
    args = parser.parse_args(argv)
    if args.tiny and args.layers:
        parser.error("--layers applies to the 2B shapes, not --tiny")
    args.sizes = args.sizes or ([0.1, 0.3] if args.tiny else [1.0, 4.0])
    args.repeats = args.repeats or (2 if args.tiny else 4)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    return args


def engine_kwargs(path: str, args, max_pixels: int, plugin: bool) -> dict:
    """The same engine for stock and plugin but the architecture."""
    cpu = args.device == "cpu"
    max_model_len = max_pixels // (28 * 28) + 256
    kwargs = dict(model=path, tokenizer=path, max_model_len=max_model_len, limit_mm_per_prompt={"image": 1, "video": 0},
                  max_num_batched_tokens=max_model_len if cpu else max(8192, max_model_len),
                  enable_prefix_caching=False, mm_processor_cache_gb=0, disable_log_stats=False, seed=0,
                  dtype="float32" if args.tiny else "bfloat16", enforce_eager=cpu)
    if not cpu:  # both engines stay up, taking turns
        kwargs["gpu_memory_utilization"] = 0.4
    if not args.tiny:
        kwargs["load_format"] = "dummy"
    if plugin:
        from entropy_prune.vllm import ARCHITECTURES

        kwargs["hf_overrides"] = {"architectures": [ARCHITECTURES[STOCK_ARCH]]}
    return kwargs


def summarise(rows: list[dict]) -> list[dict]:
    """Per-row rates, means and ratios against stock at the same size."""
    stock = {r["mp"]: r for r in rows if r["condition"] == "stock"}
    for r in rows:
        tokens = np.array(r["prompt_tokens"])
        kinds = np.array(r["kinds"])
        total = tokens.sum() * r["requests"] / len(tokens)
        r.update(requests_per_s=r["requests"] / r["wall_s"], prompt_tokens_per_s=total / r["wall_s"],
                 mean_prompt_tokens=float(tokens.mean()), mean_ttft_ms=1e3 * float(np.mean(r["ttft_s"])),
                 **{f"mean_{k}_tokens": float(tokens[kinds == k].mean()) for k in ("photo", "document")
                    if (kinds == k).any()})
    for r in rows:
        base = stock[r["mp"]]
        r.update(requests_ratio=r["requests_per_s"] / base["requests_per_s"],
                 tokens_ratio=r["mean_prompt_tokens"] / base["mean_prompt_tokens"],
                 ttft_speedup=base["mean_ttft_ms"] / r["mean_ttft_ms"])
    return rows


def table(rows: list[dict]) -> str:
    head = ("| MP | condition | requests/s | × stock | prompt tok/s | prompt tokens | photo / doc | × stock "
            "| TTFT ms | TTFT speed-up |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        kinds = f"{r.get('mean_photo_tokens', math.nan):.0f} / {r.get('mean_document_tokens', math.nan):.0f}"
        lines.append(f"| {r['mp']:g} | {r['condition']} | {r['requests_per_s']:.2f} | {r['requests_ratio']:.2f} "
                     f"| {r['prompt_tokens_per_s']:.0f} | {r['mean_prompt_tokens']:.1f} | {kinds} "
                     f"| {r['tokens_ratio']:.2f} | {r['mean_ttft_ms']:.0f} | {r['ttft_speedup']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark, print its markdown table; returns one dict per size and condition."""
    args = parse_args(argv)
    if args.device == "cpu":  # the in-process CPU engine the plugin's tests use
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # max_pixels: no benchmark image is downscaled (rounding to 28 px can add a little)
    max_pixels = math.ceil(max(args.sizes) * 1.1e6 / 784) * 784
    if args.tiny:
        max_pixels = min(max_pixels, 1024 * 784 - 256 * 784)  # the tiny config's 1024 positions
    plugin = [("none", {"patch_selection_method": None})] + [
        (f"a={a:g}", {"patch_selection_method": "budget", "alpha": a, "mode": args.mode}) for a in args.alphas
    ]
    if args.tiny:
        print(TINY_HEADER)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_vllm-") as tmp:
        tmp = Path(tmp)
        (tmp / "model").mkdir()
        write_model(tmp / "model", args.tiny, max_pixels, args.layers)
        files, sources = write_images(tmp, args.sizes, args.limit)
        prompt = setup.prompt(setup.make_stock_processor("torchvision"))
        base = dict(images=list(files.items()), prompt=prompt, repeats=args.repeats, max_tokens=args.max_tokens)
        specs = [dict(base, name=name, conditions=conditions,
                      engine=engine_kwargs(str(tmp / "model"), args, max_pixels, name == "plugin"))
                 for name, conditions in (("stock", [("stock", None)]), ("plugin", plugin))]
        rows, facts = measure(specs, args.sizes, args.rounds, tmp, args.timeout)
    order = {label: i for i, (label, _) in enumerate([("stock", None), *plugin])}
    rows = summarise(sorted(rows, key=lambda r: (r["mp"], order[r["condition"]])))
    model = "tiny random Qwen2-VL, float32" if args.tiny else (
        f"Qwen2-VL-2B shapes{f' cut to {args.layers} layers' if args.layers else ''}, dummy weights, bf16")
    kinds = files[args.sizes[0]]
    photos = sum(kind == "photo" for kind, *_ in kinds)
    print(f"vLLM {facts['version']} on {args.device}; {model}; budget {args.mode}, default score; "
          f"{photos} photographs ({', '.join(sources)}) and {len(kinds) - photos} documents per size, each "
          f"{args.repeats}x per timed batch, {args.max_tokens} tokens per request, best of {args.rounds} rounds; "
          f"TTFT: {' / '.join(facts['ttft'])}, one request at a time, mean over images of each one's best; "
          f"{time.perf_counter() - start:.0f} s in all")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
