"""Document pages rendered from text that ships with the system (licence texts), for benchmarks.

Each page is uint8 (H, W, 3) RGB, drawn with Pillow's bundled font (no system font needed), in
one of the layouts people feed VLMs: a dense page of small text, two columns, a table, a slide
and a GUI-like screenshot. Deterministic for a given text and size.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LICENCES = Path("/usr/share/common-licenses")
LAYOUTS = ("dense", "columns", "table", "slide", "screenshot")


_FALLBACK = "Permission is hereby granted, free of charge, to any person obtaining a copy of this software. "


def source_text() -> str:
    """Words of the system's licence texts (GPL-3, Apache-2.0, ...); a short fixed text elsewhere."""
    files = sorted(p for p in LICENCES.glob("*") if p.is_file()) if LICENCES.is_dir() else []
    text = " ".join(" ".join(p.read_text(errors="replace") for p in files).split())
    return text or _FALLBACK * 200


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _lines(words: list[str], start: int, width: int, count: int) -> tuple[list[str], int]:
    """``count`` lines of at most ``width`` characters from ``words[start:]``; the next start."""
    text = " ".join(words[start : start + count * width // 4])
    lines = textwrap.wrap(text, width)[:count]
    return lines, start + sum(len(line.split()) for line in lines)


class _Page:
    """A white ``h`` x ``w`` page, body text ``px`` px high, words from ``words[offset:]``."""

    def __init__(self, words: list[str], offset: int, h: int, w: int, px: int) -> None:
        self.image = Image.new("RGB", (w, h), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.words, self.offset, self.h, self.w, self.px = words, offset, h, w, px
        self.font, self.line_h = _font(px), int(px * 1.35)
        self.chars = max(10, int(w / (px * 0.55)))  # characters per full-width line

    def text_block(self, x: int, y: int, width: int, count: int, start: int) -> int:
        lines, start = _lines(self.words, start, width, count)
        for i, line in enumerate(lines):
            self.draw.text((x, y + i * self.line_h), line, fill="black", font=self.font)
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
                self.draw.text((26 + c * cell_w, y + 4), word if r else word.upper(), fill="black", font=self.font)
            self.draw.line([(20, y), (self.w - 20, y)], fill=grey)
        for c in range(cols + 1):
            self.draw.line([(20 + c * cell_w, 20), (20 + c * cell_w, 20 + rows * row_h)], fill=grey)

    def slide(self) -> None:
        words, o = self.words, self.offset
        self.draw.rectangle([0, 0, self.w, self.h // 6], fill=(31, 73, 125))
        self.draw.text((40, self.h // 18), " ".join(words[o : o + 4]).title(), fill="white", font=_font(3 * self.px))
        for i in range(6):
            line = "- " + " ".join(words[o + 4 + 8 * i : o + 12 + 8 * i])
            self.draw.text((60, self.h // 4 + i * 3 * self.line_h), line, fill="black", font=_font(2 * self.px))

    def screenshot(self) -> None:
        words, o, w = self.words, self.offset, self.w
        self.draw.rectangle([0, 0, w, 36], fill=(45, 45, 48))
        self.draw.rectangle([0, 36, w // 4, self.h], fill=(243, 243, 243))
        for i in range(12):
            item = " ".join(words[o + i : o + i + 2])
            self.draw.text((16, 56 + i * 2 * self.line_h), item, fill=(60, 60, 60), font=self.font)
        for i in range(3):
            x = w // 4 + 30 + i * (w * 3 // 4 - 60) // 3
            self.draw.rounded_rectangle([x, 60, x + 150, 96], radius=6, fill=(0, 120, 212))
            self.draw.text((x + 16, 70), words[o + 20 + i][:12], fill="white", font=self.font)
        self.text_block(w // 4 + 30, 130, self.chars * 3 // 4 - 10, (self.h - 160) // self.line_h, o + 30)


def render(layout: str, h: int = 1120, w: int = 840, text_px: int = 12, offset: int = 0) -> np.ndarray:
    """One page: ``layout`` in :data:`LAYOUTS`, ``h`` x ``w`` px, body text ``text_px`` px high,
    text taken from word ``offset`` of :func:`source_text`."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    page = _Page(source_text().split(), offset, h, w, text_px)
    getattr(page, layout)()
    return np.asarray(page.image)
