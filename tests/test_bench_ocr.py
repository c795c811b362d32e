"""benchmarks/bench_ocr.py: the metrics and conditions without Tesseract, and a quick run with it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

pytest.importorskip("skimage")
pytest.importorskip("transformers")

import torch

from benchmarks import bench_ocr as bo
from benchmarks._documents import Region, render_page
from benchmarks._qwen_setup import shrunk
from entropy_prune import reconstruct, select_patches
from entropy_prune.qwen._downscale import shrink_and_select
from entropy_prune.qwen._prune import removed_units


def _dp(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@given(st.text("abc d", max_size=80), st.text("abcd e", max_size=80))
def test_levenshtein_equals_the_textbook_recurrence(a, b):
    assert bo.levenshtein(a, b) == bo.levenshtein(b, a) == _dp(a, b)


def test_levenshtein_known_values():
    assert bo.levenshtein("kitten", "sitting") == 3
    assert bo.levenshtein("", "abc") == bo.levenshtein("abc", "") == 3
    assert bo.levenshtein("flaw", "lawn") == 2
    long = "x" * 200 + "y"  # wider than one machine word
    assert bo.levenshtein(long, "y" + "x" * 200) == 2


def test_cer_normalises_whitespace_and_typography():
    assert bo.cer("the  cat\n sat", "the cat sat") == 0
    assert bo.cer("\u201cIt\u2019s\u201d \u2014 ok", "\"It's\" - ok") == 0
    assert bo.cer("the bat", "the cat") == pytest.approx(1 / 7)
    assert bo.cer("", "abcd") == 1
    assert bo.cer("abcdabcd", "abcd") == 1  # insertions count: CER can reach and pass 1


def test_word_recall_is_a_multiset_fraction():
    assert bo.word_recall("a b", "a a b") == pytest.approx(2 / 3)
    assert bo.word_recall("b a a a", "a a b") == 1
    assert bo.word_recall("", "a b") == 0
    assert bo.word_recall("The cat.", "the cat") == 0  # case and punctuation count
    assert bo.word_recall("the cat.", "the cat") == 0.5


def test_psm_follows_the_region_shape():
    assert bo.psm(Region((0, 0, 1, 1), "one line")) == 7
    assert bo.psm(Region((0, 0, 1, 1), "two\nlines")) == 6


def test_ocr_input_is_the_scaled_box_upscaled_with_a_border():
    shown = np.full((100, 200, 3), 255, np.uint8)  # the page was twice this size
    shown[40:50, 60:90] = 0
    img = bo.ocr_input(Image.fromarray(shown).convert("L"), Region((120, 80, 180, 100), "x"), 0.5, 0.5)
    side = (30 + 2 * bo.PAD) * bo.SCALE + 2 * bo.BORDER, (10 + 2 * bo.PAD) * bo.SCALE + 2 * bo.BORDER
    assert img.size == side and img.mode == "L"
    pixels = np.asarray(img)
    inner = pixels[bo.BORDER + bo.PAD * bo.SCALE + 2 : -bo.BORDER - bo.PAD * bo.SCALE - 2,
                   bo.BORDER + bo.PAD * bo.SCALE + 2 : -bo.BORDER - bo.PAD * bo.SCALE - 2]
    assert inner.max() < 10 and pixels[: bo.BORDER].min() == 255


def test_uniform_takes_the_largest_grid_within_the_tokens():
    img = np.random.default_rng(0).integers(0, 256, (560, 700, 3), dtype=np.uint8)
    cells = 20 * 25

    def grid(units: int) -> int:
        h, w = bo.smart_resize(560, 700, bo.UNIT, bo.UNIT**2, units * bo.UNIT**2)
        return (h // bo.UNIT) * (w // bo.UNIT)

    for tokens in (7, 100, 149, 350):
        shown, used = bo.uniform(img, tokens)
        assert shown.shape == img.shape
        assert used == max(g for g in map(grid, range(1, cells + 1)) if g <= tokens)


def test_conditions_spend_equal_tokens():
    page = render_page("body", 560, 448, 12)  # Pillow's font: no system font needed
    img = bo.qwen_resize(page.image, bo.RESIZES["checkpoint"])
    cells = (img.shape[0] // bo.UNIT) * (img.shape[1] // bo.UNIT)
    for alpha in (0.3, 0.5):
        cond = bo.conditions(img, alpha)
        tokens = {k: n for k, (_, n) in cond.items()}
        assert tokens["full"] == cells
        assert tokens["library"] == tokens["entropy"] == tokens["random"]
        assert cells * alpha - 3 <= tokens["library"] <= cells * alpha + 1
        assert tokens["uniform"] <= tokens["library"] and tokens["uniform"] >= 0.85 * tokens["library"]
        assert all(out.shape == img.shape and out.dtype == np.uint8 for out, _ in cond.values())
        assert np.array_equal(cond["full"][0], img) and not np.array_equal(cond["library"][0], img)


def test_downscaled_library_is_lossless_on_a_smaller_grid_at_equal_tokens():
    page = render_page("body", 560, 448, 12)
    img = bo.qwen_resize(page.image, bo.RESIZES["checkpoint"])
    cells = (img.shape[0] // bo.UNIT) * (img.shape[1] // bo.UNIT)
    for alpha in (0.3, 0.5):
        cond = bo.conditions(img, alpha, downscale=True, tolerance=0)
        tokens = {k: n for k, (_, n) in cond.items()}
        assert tokens["library"] <= round(alpha * cells)
        for other in ("entropy", "random"):  # matched: the library's count, or up to 2 short
            assert tokens["library"] - 2 <= tokens[other] <= tokens["library"]
        assert tokens["uniform"] <= tokens["library"]
        shown = cond["library"][0]
        assert shown.shape == img.shape and not np.array_equal(shown, img)
        # every unit of the smaller grid is shown exactly: the same as scaling that grid back up
        raw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        small, _ = shrink_and_select(raw, True, lambda x: removed_units(x.numpy(), 0, bo.UNIT),
                                     lambda x, a, _: select_patches(x.numpy(), "budget", a, channels_first=True),
                                     lambda x: x.numpy(), alpha, bo.UNIT, bo.MIN_PIXELS)
        assert small.shape[1] < img.shape[0]
        small = np.ascontiguousarray(small.numpy().transpose(1, 2, 0))
        assert np.array_equal(small, shrunk(img, alpha, bo.UNIT, bo.MIN_PIXELS, True, tolerance=0)[0])
        assert np.array_equal(shown, bo.resize(small, *img.shape[:2], Image.BILINEAR))


@pytest.mark.skipif(bo.missing_reader() is not None, reason=f"no {bo.missing_reader()}")
def test_quick_run_reads_clean_pages_and_ranks_the_conditions(capsys):
    rows = bo.main(["--quick", "--jobs", "1"])
    out = capsys.readouterr().out
    pages = {r["page"] for r in rows}
    assert pages == {s.name for s in bo.QUICK_PAGES}
    assert len(rows) == len(pages) * len(bo.CONDITIONS)
    for page in pages:
        by = {r["condition"]: r for r in rows if r["page"] == page}
        assert by["full"]["cer"] < 0.02 and by["full"]["recall"] > 0.97  # the reader reads clean pages
        assert by["random"]["cer"] > by["full"]["cer"] + 0.1  # and is hurt by a random selection
        assert by["library"]["tokens"] == by["entropy"]["tokens"] == by["random"]["tokens"]
        assert 0 < by["uniform"]["tokens"] <= by["library"]["tokens"] < by["full"]["tokens"]
    assert "mean of types" in out and out.count("PASS") + out.count("FAIL") == 2


def test_jobs_below_one_are_refused(capsys):
    with pytest.raises(SystemExit):
        bo.main(["--jobs", "0"])
    assert "--jobs must be >= 1, got 0" in capsys.readouterr().err


def test_other_pages_are_read_instead_and_are_new(monkeypatch, capsys):
    """--other-pages: OTHER_PAGES (two per type, text from other places than PAGES'), read
    instead of PAGES; with --quick it is refused."""
    read = []
    monkeypatch.setattr(bo, "need_reader", lambda prog: None)
    monkeypatch.setattr(bo, "evaluate", lambda spec, resize, alphas, library: read.append(spec.name) or [])
    monkeypatch.setattr(bo, "report", lambda rows, alphas, resizes: None)
    bo.main(["--other-pages", "--resizes", "checkpoint", "--jobs", "1"])
    assert read == [s.name for s in bo.OTHER_PAGES]
    layouts = [s.layout for s in bo.OTHER_PAGES]
    assert {t: layouts.count(t) for t in layouts} == {s.layout: 2 for s in bo.PAGES}
    assert not {s.offset for s in bo.OTHER_PAGES} & {s.offset for s in (*bo.PAGES, *bo.QUICK_PAGES)}
    with pytest.raises(SystemExit):
        bo.main(["--quick", "--other-pages"])
    assert "--quick and --other-pages are two page sets; give one" in capsys.readouterr().err


def test_halves_apply_to_the_library_condition_only():
    page = render_page("body", 560, 448, 12)
    img = bo.qwen_resize(page.image, bo.RESIZES["checkpoint"])
    cond = bo.conditions(img, 0.3, shapes="halves", tolerance=0)
    sel = select_patches(img, "budget", 0.3, shapes="halves", tolerance=0)
    assert np.array_equal(cond["library"][0], reconstruct(img, sel, bo.UNIT)) and cond["library"][1] == sel.num_tokens
    assert (sel.sizes[:, 0] != sel.sizes[:, 1]).any()
    for other in ("entropy", "random"):  # squares, matched to the library's count (multiscale: up to 2 short)
        assert sel.num_tokens - 2 <= cond[other][1] <= sel.num_tokens


@pytest.mark.skipif(bo.missing_reader() is not None, reason=f"no {bo.missing_reader()}")
def test_ocr_sizes_reads_the_library_and_uniform_around_its_size(capsys):
    from benchmarks import ocr_sizes

    rows = ocr_sizes.main(["body-12", "--alpha", "0.5"])
    assert len(rows) == 2 + len(ocr_sizes.STEPS) and capsys.readouterr().out.count("\n| ") == len(rows) + 1
    (lib, tokens, *_), (_, matched, *_), (own, units, *_) = rows[:3]
    h, w = map(int, lib.split()[-2].split("x"))
    assert own == f"uniform at {h}x{w} px" and units == (h // bo.UNIT) * (w // bo.UNIT)
    assert matched <= tokens <= units < 20 * 25  # the quick page is 700 x 560 px: 25 x 20 units
    sizes = [tuple(map(int, name.split()[-2].split("x"))) for name, *_ in rows[2:]]
    assert sizes == [(h + dh * bo.UNIT, w + dw * bo.UNIT) for dh, dw in ocr_sizes.STEPS]
    assert all(0 <= cer <= 1.5 and 0 <= recall <= 1 for *_, cer, recall in rows)
    assert rows[0][3] > 0.9  # body text at half the tokens still reads


@pytest.mark.skipif(bo.missing_reader() is not None, reason=f"no {bo.missing_reader()}")
def test_ocr_sizes_shows_the_chosen_rule_and_shapes(capsys):
    """--downscale balanced --shapes halves: the library row is that selection, shrunk to the size
    the adapter's rule chose (``_qwen_setup.shrunk``), with its token count."""
    from benchmarks import ocr_sizes

    rows = ocr_sizes.main(["body-12", "--downscale", "balanced", "--shapes", "halves"])
    assert "downscale balanced, halves" in capsys.readouterr().out
    spec = bo.QUICK_PAGES[0]
    page = render_page(spec.layout, spec.h, spec.w, spec.text_px, spec.offset, font=bo.FONT)
    small, sel = shrunk(bo.qwen_resize(page.image, bo.RESIZES["checkpoint"]), 0.3, bo.UNIT, bo.MIN_PIXELS,
                        "balanced", tolerance=0, shapes="halves")
    assert rows[0][:2] == (f"library (shrunk to {small.shape[0]}x{small.shape[1]} px)", sel.num_tokens)


def test_ocr_sizes_refuses_a_bad_alpha(capsys):
    from benchmarks import ocr_sizes

    with pytest.raises(SystemExit):
        ocr_sizes.main(["body-12", "--alpha", "0"])
    assert "--alpha must be in (0, 1], got 0.0" in capsys.readouterr().err
