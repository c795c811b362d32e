"""python -m benchmarks.bench_gpu --tiny: the GPU benchmark's code path on CPU with a tiny config."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from benchmarks import bench_gpu  # noqa: E402


def test_tiny_runs_and_reports_every_setting(capsys):
    rows = bench_gpu.main(["--tiny", "--sizes", "0.05", "0.1", "--alphas", "0.5", "0.3",
                           "--repeats", "1", "--warmup", "0", "--proc-repeats", "1"])
    out = capsys.readouterr().out
    assert "tiny" in out and "TTFT ms" in out
    expected = [(mp, s) for mp in (0.05, 0.1) for s in ("stock", "a=0.5", "a=0.3")]
    assert [(r["mp"], r["setting"]) for r in rows] == expected
    for mp in (0.05, 0.1):
        stock, half, third = (r for r in rows if r["mp"] == mp)
        assert stock["speedup"] == 1.0 and stock["e2e_speedup"] == 1.0
        # stock: every merge unit; pruned: fewer, non-increasing with alpha; prompt shrinks by as many
        assert stock["tokens"] > half["tokens"] >= third["tokens"] > 0
        assert stock["seq"] - stock["tokens"] == half["seq"] - half["tokens"] == third["seq"] - third["tokens"]
        for r in (stock, half, third):
            assert r["ttft_ms"] > 0 and r["proc_ms"] > 0
            assert r["e2e_ms"] == pytest.approx(r["proc_ms"] + r["ttft_ms"])


def test_config_special_tokens_match_tokenizer():
    from benchmarks import _qwen_setup

    tokenizer = _qwen_setup.make_stock_processor("pil").tokenizer
    for name, vocab in (("2b", 151936), ("7b", 152064)):
        config = bench_gpu.make_config(name, tokenizer)
        assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
        assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
        assert config.text_config.vocab_size == vocab
        v = config.vision_config
        hidden = config.text_config.hidden_size
        assert (v.depth, v.embed_dim, v.num_heads, v.mlp_ratio, v.hidden_size) == (32, 1280, 16, 4, hidden)
        assert config.text_config.rope_parameters["mrope_section"] == [16, 24, 24]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tiny", "--alphas", "0"], "must be in (0, 1]"),
        (["--tiny", "--sizes", "-1"], "must be > 0"),
        (["--tiny", "--repeats", "0"], "must be >= 1"),
        (["--models", "13b"], "invalid choice"),
    ],
)
def test_bad_arguments_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_gpu.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_command_line_smoke():
    """``python -m benchmarks.bench_gpu`` from the repository root, as the README says."""
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_gpu", "--tiny", "--sizes", "0.05", "--alphas", "0.3",
                          "--repeats", "1", "--warmup", "0", "--proc-repeats", "1"],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert "a=0.3" in out and "stock" in out


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU error")
def test_without_cuda_the_full_run_says_so(capsys):
    with pytest.raises(SystemExit):
        bench_gpu.main(["--models", "2b"])
    assert "CUDA is not available" in capsys.readouterr().err
