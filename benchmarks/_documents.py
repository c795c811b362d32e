"""Document pages rendered from text that ships with the system (licence texts), for benchmarks.

Each page is uint8 (H, W, 3) RGB, drawn with Pillow's bundled font (no system font needed) or a
TrueType font by name (e.g. "DejaVuSans.ttf", Debian package fonts-dejavu-core), in one of the
layouts people feed VLMs: a dense page of small text, two columns, a table, a slide, a GUI-like
screenshot (:data:`LAYOUTS`), a book-like body-text page and photographs with
captions (the photographs from ``skimage.data``). :func:`render_page` also returns the text
drawn in each region of the page, the reference for reading it back. Deterministic for a given
text and size.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LICENCES = Path("/usr/share/common-licenses")
LAYOUTS = ("dense", "columns", "table", "slide", "screenshot")  # text only
PAGE_LAYOUTS = (*LAYOUTS, "body", "photos")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # skimage.data, for the "photos" layout


_FALLBACK = "Permission is hereby granted, free of charge, to any person obtaining a copy of this software. "


def source_text() -> str:
    """Words of the system's licence texts (GPL-3, Apache-2.0, ...); a short fixed text elsewhere."""
    files = sorted(p for p in LICENCES.glob("*") if p.is_file()) if LICENCES.is_dir() else []
    text = " ".join(" ".join(p.read_text(errors="replace") for p in files).split())
    return text or _FALLBACK * 200


@dataclass(frozen=True)
class Region:
    """Text drawn on a page: ``box`` (x0, y0, x1, y1) bounds its ink; ``text`` is its lines, joined by "\\n"."""

    box: tuple[int, int, int, int]
    text: str


@dataclass(frozen=True)
class Page:
    image: np.ndarray
    regions: tuple[Region, ...]


def _font(size: int, name: str | None = None) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size) if name is None else ImageFont.truetype(name, size)


def _lines(words: list[str], start: int, width: int, count: int) -> tuple[list[str], int]:
    """``count`` lines of at most ``width`` characters from ``words[start:]``; the next start."""
    text = " ".join(words[start : start + count * width // 4])
    lines = textwrap.wrap(text, width)[:count]
    return lines, start + sum(len(line.split()) for line in lines)


class _Page:
    """A white ``h`` x ``w`` page, body text ``px`` px high, words from ``words[offset:]``."""

    def __init__(self, words: list[str], offset: int, h: int, w: int, px: int, font: str | None) -> None:
        self.image = Image.new("RGB", (w, h), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.words, self.offset, self.h, self.w, self.px, self.font_name = words, offset, h, w, px, font
        self.font, self.line_h = _font(px, font), int(px * 1.35)
        self.chars = max(10, int(w / (px * 0.55)))  # characters per full-width line
        self.regions: list[Region] = []

    def write(self, x: int, y: int, lines: list[str], step: int, font=None, fill="black") -> None:
        """Draw ``lines`` from (x, y), ``step`` px apart, as one region."""
        font = font or self.font
        boxes = [self.draw.textbbox((x, y + i * step), line, font=font) for i, line in enumerate(lines) if line]
        for i, line in enumerate(lines):
            self.draw.text((x, y + i * step), line, fill=fill, font=font)
        if boxes:
            box = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                   max(b[3] for b in boxes))
            self.regions.append(Region(box, "\n".join(lines)))

    @staticmethod
    def fit(text: str, font, width: float) -> str:
        """``text`` less its last words until it is at most ``width`` px long in ``font``."""
        while " " in text and font.getlength(text) > width:
            text = text.rsplit(" ", 1)[0]
        return text

    def lines(self, start: int, width: int, count: int) -> tuple[list[str], int]:
        """:func:`_lines`, narrowed until each line fits in ``width`` characters of 0.55 ``px``
        (the layouts' estimate), so wide fonts and runs of capitals stay inside their column."""
        while True:
            lines, end = _lines(self.words, start, width, count)
            if width <= 10 or max(map(self.font.getlength, lines), default=0) <= width * self.px * 0.55:
                return lines, end
            width -= 1

    def text_block(self, x: int, y: int, width: int, count: int, start: int) -> int:
        lines, start = self.lines(start, width, count)
        self.write(x, y, lines, self.line_h)
        return start

    def dense(self) -> None:
        self.text_block(20, 20, self.chars - 8, (self.h - 40) // self.line_h, self.offset)

    def columns(self) -> None:
        start, count = self.offset, (self.h - 60) // self.line_h
        for col in range(2):
            start = self.text_block(20 + col * self.w // 2, 40, self.chars // 2 - 6, count, start)
        self.draw.line([(self.w // 2 - 5, 40), (self.w // 2 - 5, self.h - 20)], fill=(160, 160, 160))

    def table(self) -> None:
        row_h, cols = self.line_h + 8, 4
        rows, cell_w = (self.h - 40) // row_h, (self.w - 40) // cols
        grey = (120, 120, 120)
        for r in range(rows):
            y = 20 + r * row_h
            if r % 2:
                self.draw.rectangle([20, y, self.w - 20, y + row_h], fill=(236, 240, 248))
            for c in range(cols):
                word = self.words[(self.offset + r * cols + c) % len(self.words)][: cell_w // (self.px // 2 + 1)]
                self.write(26 + c * cell_w, y + 4, [word if r else word.upper()], 0)  # one region per cell
            self.draw.line([(20, y), (self.w - 20, y)], fill=grey)
        for c in range(cols + 1):
            self.draw.line([(20 + c * cell_w, 20), (20 + c * cell_w, 20 + rows * row_h)], fill=grey)

    def slide(self) -> None:
        words, o, w = self.words, self.offset, self.w
        title, bullet = _font(3 * self.px, self.font_name), _font(2 * self.px, self.font_name)
        self.draw.rectangle([0, 0, w, self.h // 6], fill=(31, 73, 125))
        self.write(40, self.h // 18, [self.fit(" ".join(words[o : o + 4]).title(), title, w - 60)], 0, title, "white")
        bullets = [self.fit("- " + " ".join(words[o + 4 + 8 * i : o + 12 + 8 * i]), bullet, w - 80) for i in range(6)]
        self.write(60, self.h // 4, bullets, 3 * self.line_h, bullet)

    def screenshot(self) -> None:
        words, o, w = self.words, self.offset, self.w
        self.draw.rectangle([0, 0, w, 36], fill=(45, 45, 48))
        self.draw.rectangle([0, 36, w // 4, self.h], fill=(243, 243, 243))
        items = [self.fit(" ".join(words[o + i : o + i + 2]), self.font, w // 4 - 24) for i in range(12)]
        self.write(16, 56, items, 2 * self.line_h, fill=(60, 60, 60))
        for i in range(3):
            x = w // 4 + 30 + i * (w * 3 // 4 - 60) // 3
            self.draw.rounded_rectangle([x, 60, x + 150, 96], radius=6, fill=(0, 120, 212))
            self.write(x + 16, 70, [words[o + 20 + i][:12]], 0, fill="white")
        self.text_block(w // 4 + 30, 130, self.chars * 3 // 4 - 10, (self.h - 160) // self.line_h, o + 30)

    def body(self) -> None:
        """A book-like page: a heading, then paragraphs of 4 to 8 lines between wide margins."""
        margin, words = self.w // 10, self.words
        title = _font(2 * self.px, self.font_name)
        self.write(margin, margin, [" ".join(words[self.offset : self.offset + 5])], 0, title)
        y, start, width = margin + 3 * self.px, self.offset + 5, int((self.w - 2 * margin) / (self.px * 0.55))
        lines = []
        while y + 9 * self.line_h <= self.h - margin:
            count = 4 + len(lines) % 5
            paragraph, start = self.lines(start, width, count)
            lines += [*paragraph, ""]
            y += (count + 1) * self.line_h
        self.write(margin, margin + 3 * self.px, lines[:-1], self.line_h)

    def photos(self) -> None:
        """A paragraph, then a 2 x 2 grid of skimage photographs, each with a two-line caption."""
        from skimage import data

        margin, start = 40, self.text_block(40, 40, self.chars - 14, 4, self.offset)
        cell_w = (self.w - 3 * margin) // 2
        cell_h = (self.h - 40 - 5 * self.line_h - margin) // 2
        photo_h = cell_h - 3 * self.line_h - margin // 2
        for i, name in enumerate(PHOTOS):
            x, y = margin + (i % 2) * (cell_w + margin), 40 + 5 * self.line_h + (i // 2) * cell_h
            img = Image.fromarray(getattr(data, name)()[..., :3])
            scale = max(cell_w / img.width, photo_h / img.height)  # cover the box, centre-crop
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
            left, top = (img.width - cell_w) // 2, (img.height - photo_h) // 2
            self.image.paste(img.crop((left, top, left + cell_w, top + photo_h)), (x, y))
            lines, start = self.lines(start, int(cell_w / (self.px * 0.55)) - 12, 2)
            lines[0] = f"Figure {i + 1}. {lines[0]}"
            self.write(x, y + photo_h + self.line_h // 2, lines, self.line_h)


def render_page(layout: str, h: int = 1120, w: int = 840, text_px: int = 12, offset: int = 0,
                font: str | None = None) -> Page:
    """One page and the text of each of its regions: ``layout`` in :data:`PAGE_LAYOUTS`, ``h`` x ``w``
    px, body text ``text_px`` px high, text taken from word ``offset`` of :func:`source_text`, in
    ``font`` (a TrueType file name; None: Pillow's bundled font)."""
    if layout not in PAGE_LAYOUTS:
        raise ValueError(f"layout must be one of {PAGE_LAYOUTS}, got {layout!r}")
    page = _Page(source_text().split(), offset, h, w, text_px, font)
    getattr(page, layout)()
    return Page(np.asarray(page.image), tuple(page.regions))


def render(layout: str, h: int = 1120, w: int = 840, text_px: int = 12, offset: int = 0) -> np.ndarray:
    """The image of :func:`render_page`."""
    return render_page(layout, h, w, text_px, offset).image
