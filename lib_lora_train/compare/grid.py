"""Labelled grids with Pillow: the layout math (where each cell and label goes) and a host-neutral composer.

In the WebUI the grid is drawn with its own ``images.image_grid`` + ``draw_grid_annotations`` so that it looks like
every other grid there; this composer serves other hosts and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

MISSING_CELL = (40, 40, 40)  # an interrupted or failed cell: dark, so it cannot be mistaken for a render
LABEL_PAD = 8


@dataclass(frozen=True)
class GridLayout:
    """Pixel geometry of a grid of ``rows`` x ``cols`` cells with a label column on the left and a label row on top."""

    rows: int
    cols: int
    cell_w: int
    cell_h: int
    left: int  # width of the row-label column
    top: int  # height of the column-label row

    @property
    def size(self) -> tuple[int, int]:
        return self.left + self.cols * self.cell_w, self.top + self.rows * self.cell_h

    def cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of one cell."""
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise IndexError(f"cell ({row}, {col}) outside a {self.rows}x{self.cols} grid")
        x0, y0 = self.left + col * self.cell_w, self.top + row * self.cell_h
        return x0, y0, x0 + self.cell_w, y0 + self.cell_h

    def col_label_box(self, col: int) -> tuple[int, int, int, int]:
        x0 = self.left + col * self.cell_w
        return x0, 0, x0 + self.cell_w, self.top

    def row_label_box(self, row: int) -> tuple[int, int, int, int]:
        y0 = self.top + row * self.cell_h
        return 0, y0, self.left, y0 + self.cell_h


def load_font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default()


def text_size(text: str, font: ImageFont.ImageFont) -> tuple[int, int]:
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    return box[2] - box[0], box[3] - box[1]


def plan_layout(
    cell_size: tuple[int, int], row_labels: Sequence[str], col_labels: Sequence[str], font_size: int
) -> GridLayout:
    """Margins sized to the longest label (at least 2 pads) for ``len(row_labels)`` x ``len(col_labels)`` cells."""
    font = load_font(font_size)
    left = max([text_size(t, font)[0] for t in row_labels] + [0]) + 2 * LABEL_PAD
    top = max([text_size(t, font)[1] for t in col_labels] + [0]) + 2 * LABEL_PAD
    return GridLayout(len(row_labels), len(col_labels), cell_size[0], cell_size[1], left, top)


def cell_size_of(images: Sequence[Sequence[Image.Image | None]], fallback: tuple[int, int]) -> tuple[int, int]:
    """The largest rendered cell (renders may differ by a few pixels after hires fixes); fallback when none."""
    sizes = [im.size for row in images for im in row if im is not None]
    if not sizes:
        return fallback
    return max(w for w, _ in sizes), max(h for _, h in sizes)


def compose_grid(
    images: Sequence[Sequence[Image.Image | None]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    fallback_size: tuple[int, int] = (512, 512),
) -> Image.Image:
    """``images[row][col]`` (None = not rendered) -> one labelled RGB grid."""
    if len(images) != len(row_labels) or any(len(r) != len(col_labels) for r in images):
        raise ValueError(
            f"grid of {len(images)} rows does not match {len(row_labels)} row / {len(col_labels)} column labels"
        )
    cell = cell_size_of(images, fallback_size)
    font_size = max(10, min(32, cell[1] // 12))
    layout = plan_layout(cell, row_labels, col_labels, font_size)
    canvas = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(canvas)
    font = load_font(font_size)
    for r, row in enumerate(images):
        for c, im in enumerate(row):
            x0, y0, x1, y1 = layout.cell_box(r, c)
            if im is None:
                draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=MISSING_CELL)
            else:
                canvas.paste(im.convert("RGB"), (x0, y0))
    for c, label in enumerate(col_labels):
        x0, y0, x1, y1 = layout.col_label_box(c)
        w, h = text_size(label, font)
        draw.text((x0 + (x1 - x0 - w) // 2, y0 + (y1 - y0 - h) // 2), label, fill="black", font=font)
    for r, label in enumerate(row_labels):
        x0, y0, x1, y1 = layout.row_label_box(r)
        w, h = text_size(label, font)
        draw.text((x1 - w - LABEL_PAD, y0 + (y1 - y0 - h) // 2), label, fill="black", font=font)
    return canvas
