"""benchmarks/bench_rescale.py: its smaller grids reach the budget's exact count, and a quick run."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")
pytest.importorskip("transformers")

from benchmarks import bench_rescale as br
from entropy_prune import select_patches


@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 5), (4, 4), (7, 9), (16, 12), (13, 30)])
def test_coarsest_count_is_the_coarsest_tiling(rows, cols):
    coarsest = select_patches(np.zeros((rows, cols), np.uint8), "v1", thresholds=[1e9, 1e9], patch_size=1)
    assert br.coarsest_count(rows, cols) == coarsest.num_tokens


@pytest.mark.parametrize("rows, cols, tokens", [(18, 18, 96), (11, 14, 46), (7, 14, 29)])
def test_candidate_grids_reach_the_count_exactly(rows, cols, tokens):
    grids = br.candidate_grids(rows, cols, tokens, 4)
    assert grids
    for r, c in grids:
        assert tokens <= r * c < rows * cols
        flat = np.zeros((r, c), np.uint8)
        assert select_patches(flat, "budget", tokens / (r * c), patch_size=1).num_tokens == tokens


def test_quick_run(capsys):
    """Smaller grids are tried (each checked inside to keep the exact count) and the table prints."""
    rows = br.main(["--quick", "--alphas", "0.3"])
    assert len(rows) == 5 and all(r["candidates"] > 0 for r in rows if r["set"] == "photographs")
    assert "oracle" in capsys.readouterr().out
