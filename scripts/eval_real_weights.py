"""Accuracy, image tokens and time of a local Qwen-VL checkpoint, stock vs pruned.

    python -m scripts.eval_real_weights --model PATH --data DIR [--alphas 1.0 0.5 0.3]
        [--method budget|v2] [--mode multiscale|drop] [--score detail|entropy]
        [--max-new-tokens 16] [--device cuda] [--dtype auto] [--limit N] [--out results.json]

``--model``: a Qwen2-VL, Qwen2.5-VL or Qwen3-VL checkpoint directory (loaded with
``AutoProcessor`` and ``AutoModelForImageTextToText``). ``--data``: a directory holding
``items.jsonl``, one JSON object per line::

    {"image": "cat.jpg", "question": "What animal is this?", "answer": "cat"}

``image`` is a path relative to the directory (any format Pillow reads); ``answer`` is a string
or a list of accepted strings. Each item is asked as a chat turn (the image, then the question
and ``--instruction``) and answered by greedy ``generate``. Settings: ``stock`` (the unwrapped
processor) and one ``wrap_processor(method, alpha, mode, score)`` per alpha, all on the same
``patch_model``-ed model. Scores (answers and predictions normalised: lower case, punctuation
and the articles a/an/the removed, whitespace collapsed): ``exact`` = prediction equals an
answer, ``contains`` = an answer occurs in the prediction as whole words. Per setting it reports
both accuracies, mean image tokens per item, and mean seconds per item (processor + generate).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import string
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from entropy_prune.qwen import REGIONS_KEY, patch_model, wrap_processor

INSTRUCTION = "Answer the question using a single word or phrase."
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalise(text: str) -> str:
    """Lower case, punctuation and articles removed, whitespace collapsed."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def score(prediction: str, answers: list[str]) -> dict[str, bool]:
    """{"exact": normalised prediction equals an answer, "contains": an answer occurs in it as whole words}."""
    pred = normalise(prediction)
    golds = [g for g in (normalise(a) for a in answers) if g]
    return {
        "exact": any(pred == g for g in golds),
        "contains": any(f" {g} " in f" {pred} " for g in golds),
    }


def load_items(data: Path) -> list[dict]:
    """Items of ``data/items.jsonl`` as dicts with ``image`` (Path), ``question`` (str), ``answers`` (list[str])."""
    path = data / "items.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} not found: --data must be a directory holding items.jsonl")
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str) for k in ("image", "question")):
            raise ValueError(f'{path}:{n}: need {{"image": str, "question": str, "answer": str or [str]}}')
        answers = raw.get("answer")
        answers = [answers] if isinstance(answers, str) else answers
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise ValueError(f"{path}:{n}: 'answer' must be a string or a non-empty list of strings")
        image = data / raw["image"]
        if not image.is_file():
            raise ValueError(f"{path}:{n}: image {image} not found")
        items.append({"image": image, "question": raw["question"], "answers": answers})
    if not items:
        raise ValueError(f"{path} holds no items")
    return items


def load(model_path: str, device: str, dtype: str):
    """(processor, patched model in eval mode on ``device``)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch_dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
                   "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    processor = AutoProcessor.from_pretrained(model_path)
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch_dtype).to(device).eval()
    return processor, patch_model(model)


def run_setting(processor, model, items: list[dict], instruction: str, max_new_tokens: int, device: str) -> list[dict]:
    """Greedy answers for every item: prediction, scores, image tokens, seconds (processor + generate)."""
    image_pad = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    results = []
    for item in items:
        content = [{"type": "image"}, {"type": "text", "text": f"{item['question']} {instruction}".strip()}]
        text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        with Image.open(item["image"]) as im:
            image = im.convert("RGB")
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        inputs = processor(images=[image], text=[text], return_tensors="pt").to(device)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        prompt_len = inputs["input_ids"].shape[1]
        prediction = processor.batch_decode(out[:, prompt_len:], skip_special_tokens=True)[0].strip()
        tokens = int((inputs["input_ids"] == image_pad).sum())
        if REGIONS_KEY in inputs:
            assert tokens == len(inputs[REGIONS_KEY])
        results.append({"image": item["image"].name, "question": item["question"], "answers": item["answers"],
                        "prediction": prediction, **score(prediction, item["answers"]),
                        "image_tokens": tokens, "seconds": seconds})
    return results


def summarise(name: str, results: list[dict]) -> dict:
    """One report row: accuracies (fractions), mean image tokens, mean seconds per item."""
    return {
        "setting": name,
        "items": len(results),
        "exact": statistics.fmean(r["exact"] for r in results),
        "contains": statistics.fmean(r["contains"] for r in results),
        "image_tokens": statistics.fmean(r["image_tokens"] for r in results),
        "seconds": statistics.fmean(r["seconds"] for r in results),
    }


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint directory")
    parser.add_argument("--data", required=True, type=Path, help="directory holding items.jsonl and its images")
    parser.add_argument("--alphas", type=positive_float, nargs="+", default=[1.0, 0.5, 0.3],
                        help="budget: fraction of tokens in (0, 1]; v2: threshold factor > 0")
    parser.add_argument("--method", choices=["budget", "v2"], default="budget")
    parser.add_argument("--mode", choices=["multiscale", "drop"], default="multiscale")
    parser.add_argument("--score", choices=["detail", "entropy"], help="default: the method's default score")
    parser.add_argument("--max-new-tokens", type=positive_int, default=16)
    parser.add_argument("--instruction", default=INSTRUCTION, help="appended to every question")
    parser.add_argument("--limit", type=positive_int, help="use only the first N items")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"], default="auto",
                        help="auto: bfloat16 on CUDA, float32 elsewhere")
    parser.add_argument("--out", type=Path, help="write the report and per-item results as JSON")
    args = parser.parse_args(argv)
    if args.method == "budget" and any(a > 1 for a in args.alphas):
        parser.error(f"--alphas for --method budget must be in (0, 1], got {args.alphas}")
    if not Path(args.model).is_dir():
        parser.error(f"--model {args.model} is not a directory")
    if not args.data.is_dir():
        parser.error(f"--data {args.data} is not a directory")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the evaluation and print the table; returns {"config", "report": [rows], "items": {setting: [...]}}."""
    args = parse_args(argv)
    try:
        items = load_items(args.data)[: args.limit]
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    processor, model = load(args.model, args.device, args.dtype)
    settings = [("stock", processor)] + [
        (f"{args.method} {a:g}",
         wrap_processor(processor, patch_selection_method=args.method, alpha=a, mode=args.mode, score=args.score))
        for a in args.alphas
    ]
    print(f"{type(model).__name__} from {args.model} on {args.device}; {len(items)} items; greedy, "
          f"max {args.max_new_tokens} new tokens; mode {args.mode}")
    print(f"{'setting':<14} {'exact':>6} {'contains':>8} {'img tokens':>10} {'s/item':>8}")
    report, per_item = [], {}
    for name, proc in settings:
        results = run_setting(proc, model, items, args.instruction, args.max_new_tokens, args.device)
        row = summarise(name, results)
        report.append(row)
        per_item[name] = results
        print(f"{name:<14} {row['exact']:>6.3f} {row['contains']:>8.3f} {row['image_tokens']:>10.1f} "
              f"{row['seconds']:>8.3f}", flush=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result = {"config": config, "report": report, "items": per_item}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
