"""benchmarks/_documents.py: pages, and the reference text of their regions."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import ImageFont

from benchmarks import _documents as docs


def _boxes_ok(page: docs.Page) -> None:
    h, w = page.image.shape[:2]
    boxes = [r.box for r in page.regions]
    assert boxes and all(0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h for x0, y0, x1, y1 in boxes)
    for i, a in enumerate(boxes):  # no region runs into another (a column into the next, say)
        for b in boxes[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    for r in page.regions:
        x0, y0, x1, y1 = r.box
        assert r.text.strip() and (page.image[y0:y1, x0:x1] < 128).any()  # ink where text is said to be


@pytest.mark.parametrize("layout", [*docs.LAYOUTS, "body"])
def test_regions_hold_the_drawn_text(layout):
    page = docs.render_page(layout, 700, 560, 12, offset=100)
    assert page.image.shape == (700, 560, 3) and page.image.dtype == np.uint8
    assert np.array_equal(page.image, docs.render(layout, 700, 560, 12, offset=100))
    _boxes_ok(page)


@pytest.mark.parametrize("layout", ["dense", "columns", "body"])
def test_running_text_is_the_source_in_order(layout):
    """Each paragraph of a region is a run of the source's words (a word broken at its hyphen
    across two lines is one word; a paragraph's last line may end with the first half of one)."""
    page = docs.render_page(layout, 700, 560, 12, offset=100)
    source = docs.source_text().split()
    paragraphs = [p.replace("-\n", "-").split() for r in page.regions for p in r.text.split("\n\n")]
    assert paragraphs[0][:5] == source[100:105] and sum(map(len, paragraphs)) > 100
    at = 100
    for words in paragraphs:
        n = len(words)
        at = next(i for i in range(at, at + 3) if source[i : i + n - 1] == words[:-1]
                  and source[i + n - 1].startswith(words[-1])) + n  # at most two words skipped between


def test_table_has_one_region_per_cell():
    page = docs.render_page("table", 448, 700, 14)
    assert all("\n" not in r.text and " " not in r.text for r in page.regions)
    assert len(page.regions) % 4 == 0 and page.regions[0].text.isupper()


def test_photos_layout_has_four_captions():
    pytest.importorskip("skimage")
    page = docs.render_page("photos", 1000, 760, 12)
    _boxes_ok(page)
    assert [r.text.split()[:2] for r in page.regions[1:]] == [["Figure", f"{i}."] for i in range(1, 5)]


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="layout must be one of"):
        docs.render_page("poster")


def test_a_wide_font_stays_inside_its_columns():
    try:
        ImageFont.truetype("DejaVuSans.ttf", 10)
    except OSError:
        pytest.skip("no DejaVuSans.ttf (Debian: fonts-dejavu-core)")
    for layout in ("columns", "screenshot"):  # runs of capitals in the licences are the widest lines
        for offset in (0, 20030, 30000):
            _boxes_ok(docs.render_page(layout, 1080, 1920, 13, offset, font="DejaVuSans.ttf"))
