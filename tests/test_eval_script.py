"""scripts/eval_real_weights.py plumbing with a tiny random Qwen2-VL checkpoint saved to disk."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from entropy_prune.qwen.testing import make_model, make_processor, textured_image  # noqa: E402
from scripts import eval_real_weights as ev  # noqa: E402

# (h, w) px; the tiny processor keeps these sizes: 8x8, 6x10 and 4x4 merge units of 28 px.
SIZES = [(224, 224), (168, 280), (112, 112)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_qwen2_vl")
    processor = make_processor("torchvision")
    make_model(processor.tokenizer).save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("items")
    lines = []
    for i, (h, w) in enumerate(SIZES):
        Image.fromarray(textured_image(h, w, seed=i)).save(path / f"img{i}.png")
        answer = ["red", "Red colour"] if i == 0 else "a square"
        item = {"image": f"img{i}.png", "question": f"What is shown in picture {i}?", "answer": answer}
        lines.append(json.dumps(item))
    (path / "items.jsonl").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    return path


def test_report_structure_and_token_counts(checkpoint, data, tmp_path, capsys):
    out = tmp_path / "results.json"
    result = ev.main(["--model", str(checkpoint), "--data", str(data), "--alphas", "1.0", "0.3",
                      "--max-new-tokens", "3", "--device", "cpu", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "stock" in printed and "budget 0.3" in printed
    assert json.loads(out.read_text()) == json.loads(json.dumps(result, default=str))
    report = {row["setting"]: row for row in result["report"]}
    assert list(report) == ["stock", "budget 1", "budget 0.3"]
    units = [(h // 28) * (w // 28) for h, w in SIZES]
    for name, row in report.items():
        assert row["items"] == len(SIZES)
        assert 0 <= row["exact"] <= row["contains"] <= 1
        assert row["seconds"] > 0
        items = result["items"][name]
        assert [r["image"] for r in items] == [f"img{i}.png" for i in range(len(SIZES))]
        assert row["image_tokens"] == pytest.approx(sum(r["image_tokens"] for r in items) / len(items))
    stock, keep_all, pruned = (result["items"][k] for k in report)
    assert [r["image_tokens"] for r in stock] == units
    assert [r["image_tokens"] for r in keep_all] == units
    # budget 0.3: round(0.3 x units) tokens, at most 2 under (multiscale splits add 3 at a time)
    for r, n in zip(pruned, units, strict=True):
        assert round(0.3 * n) - 2 <= r["image_tokens"] <= round(0.3 * n) < n
    # keep-all goes through the pruning path and is bit-equal to stock: same greedy answers
    assert [r["prediction"] for r in keep_all] == [r["prediction"] for r in stock]
    assert result["items"]["stock"][0]["answers"] == ["red", "Red colour"]


def test_limit_and_drop_mode(checkpoint, data):
    result = ev.main(["--model", str(checkpoint), "--data", str(data), "--alphas", "0.5", "--mode", "drop",
                      "--limit", "1", "--max-new-tokens", "1", "--device", "cpu"])
    stock, pruned = result["report"]
    assert stock["items"] == pruned["items"] == 1
    assert pruned["image_tokens"] == round(0.5 * 64) < stock["image_tokens"] == 64


@pytest.mark.parametrize(
    "prediction, answers, exact, contains",
    [
        ("The cat.", ["cat"], True, True),
        ("a CAT sits on the mat", ["cat"], False, True),
        ("category", ["cat"], False, False),
        ("New York", ["new-york", "NYC"], True, True),
        ("", ["cat"], False, False),
        ("the", ["a"], False, False),
    ],
)
def test_scoring_is_normalised(prediction, answers, exact, contains):
    assert ev.score(prediction, answers) == {"exact": exact, "contains": contains}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--alphas", "0"], "finite number > 0"),
        (["--alphas", "1.5"], "must be in (0, 1]"),
        (["--method", "v1"], "invalid choice"),
        (["--max-new-tokens", "0"], "must be >= 1"),
    ],
)
def test_bad_arguments_are_argparse_errors(checkpoint, data, extra, message, capsys):
    with pytest.raises(SystemExit) as exc:
        ev.main(["--model", str(checkpoint), "--data", str(data), *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_paths_and_bad_items(checkpoint, data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        ev.main(["--model", str(tmp_path / "nope"), "--data", str(data)])
    assert "is not a directory" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(SystemExit, match="items.jsonl not found"):
        ev.main(["--model", str(checkpoint), "--data", str(bad), "--device", "cpu"])
    (bad / "items.jsonl").write_text('{"image": "x.png", "question": "q", "answer": "a"}\n')
    with pytest.raises(SystemExit, match="x.png not found"):
        ev.main(["--model", str(checkpoint), "--data", str(bad), "--device", "cpu"])
    (bad / "items.jsonl").write_text('{"image": "x.png", "question": "q", "answer": []}\n')
    with pytest.raises(SystemExit, match="non-empty list"):
        ev.main(["--model", str(checkpoint), "--data", str(bad), "--device", "cpu"])
