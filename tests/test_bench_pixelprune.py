"""benchmarks/bench_pixelprune.py: the PixelPrune re-implementation's guarantees, and a quick run."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("skimage")
pytest.importorskip("transformers")

from benchmarks import bench_pixelprune as pp


@st.composite
def unit_grids(draw):
    """(h, w, D) int32 units drawn from a few distinct values, so that many repeat exactly."""
    h, w, d = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    palette = np.array(draw(st.lists(st.lists(st.integers(0, 255), min_size=d, max_size=d), min_size=1, max_size=4)))
    picks = draw(st.lists(st.integers(0, len(palette) - 1), min_size=h * w, max_size=h * w))
    noise = draw(st.lists(st.integers(-3, 3), min_size=h * w * d, max_size=h * w * d))
    units = palette[np.array(picks)].reshape(h, w, d) + np.array(noise).reshape(h, w, d)
    return units.astype(np.int32)


@given(unit_grids(), st.sampled_from([0, 1, 3, 8]))
def test_error_is_bounded_by_tau_and_kept_units_are_exact(units, tau):
    keep, shown = pp.pixelprune(units, tau)
    assert keep[0, 0]
    assert np.array_equal(shown[keep], units[keep])
    assert np.abs(shown - units).max() <= tau
    if tau == 0:
        assert np.array_equal(shown, units)


def test_prediction_rule():
    """Flat: one unit. Vertical stripes: the first row, then every unit is predicted from above
    (C ~ A and not C ~ B). Horizontal stripes: the first column, then from the left."""
    flat = np.zeros((4, 5, 2), np.int32)
    assert pp.pixelprune(flat)[0].sum() == 1
    stripes = np.broadcast_to(np.arange(5, dtype=np.int32)[None, :, None], (4, 5, 2)).copy()
    keep, _ = pp.pixelprune(stripes)
    assert keep[0].all() and not keep[1:].any()
    keep, _ = pp.pixelprune(stripes.transpose(1, 0, 2).copy())
    assert keep[:, 0].all() and not keep[:, 1:].any()


def test_units_round_trip():
    image = np.random.default_rng(0).integers(0, 256, (56, 84, 3), dtype=np.uint8)
    units = pp.to_units(image)
    assert units.shape == (2, 3, 28 * 28 * 3)
    assert np.array_equal(pp.from_units(units), image)


def test_quick_run_is_exact_on_documents(capsys):
    rows = pp.main(["--quick", "--tau", "0"])
    docs = [r for r in rows if r["image"].startswith("doc:")]
    assert docs and all(r["pixelprune"] == float("inf") and r["tokens"] < r["cells"] for r in docs)
    assert all(r["library_tokens"] <= r["tokens"] and r["first_tokens"] <= r["tokens"] for r in rows)
    # the library's own removal: exact, and on documents fewer tokens than PixelPrune
    assert all(r["lossless"] == float("inf") for r in rows)
    assert all(r["lossless_tokens"] < r["tokens"] for r in docs)
    assert all(r["first"] == float("inf") for r in docs)  # the budget covers every unpredicted cell
    assert "PixelPrune exact on" in capsys.readouterr().out


@given(unit_grids(), st.sampled_from([0, 1, 3]))
def test_library_rule_is_pixelprunes_on_flat_units(units, tau):
    """On units of one value each, extending a unit's last column or row gives the unit itself, so
    the library's rule reduces to PixelPrune's: the same units are kept."""
    from entropy_prune import select_patches

    flat = np.repeat(units[..., :1], 28 * 28 * 3, -1)
    image = pp.from_units(np.clip(flat, 0, 255))
    keep, _ = pp.pixelprune(pp.to_units(image), tau)
    sel = select_patches(image, None, patch_size=28, tolerance=tau)
    assert np.array_equal(sel.label_map == 1, keep)


@pytest.mark.skipif(pp.bo.missing_reader() is not None, reason=f"no {pp.bo.missing_reader()}")
def test_quick_ocr_run_reads_lossless_conditions_as_the_full_page(capsys):
    """At tau 0 PixelPrune and the library's removal show the page exactly, so they read exactly
    as the full page, with fewer tokens; the budget spends no more than PixelPrune's count."""
    rows = pp.main(["--ocr", "--quick", "--tau", "0", "--jobs", "1"])
    assert "library alone" in capsys.readouterr().out
    for page in {r["page"] for r in rows}:
        by = {r["condition"]: r for r in rows if r["page"] == page}
        assert set(by) == set(pp.READ)
        for cond in ("pixelprune", "lossless", "first"):
            assert by[cond]["psnr"] == float("inf")
            assert (by[cond]["cer"], by[cond]["recall"]) == (by["full"]["cer"], by["full"]["recall"])
            assert by[cond]["tokens"] < by["full"]["tokens"]
        assert by["library"]["tokens"] <= by["pixelprune"]["tokens"]
        assert by["library"]["psnr"] < float("inf") and by["uniform"]["psnr"] < float("inf")


@pytest.mark.parametrize("argv, message", [(["--jobs", "3"], "apply to --ocr only"),
                                           (["--resizes", "cap1280"], "apply to --ocr only"),
                                           (["--ocr", "--jobs", "0"], "--jobs must be >= 1")])
def test_ocr_options_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit):
        pp.main(argv)
    assert message in capsys.readouterr().err
