"""benchmarks/bench_fidelity.py: the best_size oracle is the best of the sizes least_error chooses from."""

from __future__ import annotations

import pytest

pytest.importorskip("skimage")
pytest.importorskip("transformers")

from benchmarks import bench_fidelity as bf
from benchmarks._qwen_setup import downscaled
from entropy_prune import reconstruct, select_patches


@pytest.mark.parametrize("name", ["page", "coffee@8", "chelsea@6"])
@pytest.mark.parametrize("alpha", [0.2, 0.5])
def test_best_size_is_at_least_least_error_and_the_processors_size(name, alpha):
    img = bf.load_small(name) if "@" in name else bf.load(name)
    best, tokens = bf.best_size(img, alpha)
    assert best.shape == img.shape
    budget = int(alpha * (img.shape[0] // bf.UNIT) * (img.shape[1] // bf.UNIT) + 0.5)
    assert 0 < tokens <= budget
    least, _ = downscaled(img, alpha, bf.UNIT, bf.MIN_PIXELS, "least_error", tolerance=0)
    here = reconstruct(img, select_patches(img, "budget", alpha, patch_size=bf.UNIT, tolerance=0), bf.UNIT)
    top = bf.quality(img, best)[0]
    assert top >= bf.quality(img, least)[0] - 1e-9
    assert top >= bf.quality(img, here)[0] - 1e-9
