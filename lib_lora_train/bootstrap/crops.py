"""Cutting the start images: one picture into 4 crops (quadrants, or boxes the user drew), each enlarged to the
training resolution when it is smaller, so that a tiny crop does not become a tiny bucket."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from lib_lora_train.fileio import atomic_write_bytes
from lib_lora_train.images import load_rgb


class CropError(ValueError):
    """A box that does not fit the image, or text that is not a box; the message names which and how to fix it."""


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def size(self) -> tuple[int, int]:
        return self.right - self.left, self.bottom - self.top

    def text(self) -> str:
        return f"{self.left}, {self.top}, {self.right}, {self.bottom}"


def quadrant_boxes(width: int, height: int, overlap: float = 0.15) -> list[Box]:
    """The four quadrants, each grown by ``overlap`` of the side into its neighbours (a face on the centre line
    would otherwise be cut in half in every crop)."""
    if width < 2 or height < 2:
        raise CropError(f"a {width}x{height} image is too small to cut into 4")
    half_w, half_h = width / 2, height / 2
    grow_w, grow_h = overlap * width / 2, overlap * height / 2
    boxes = []
    for row in (0, 1):
        for col in (0, 1):
            left = max(0, round(col * half_w - grow_w * col))
            top = max(0, round(row * half_h - grow_h * row))
            right = min(width, round((col + 1) * half_w + grow_w * (1 - col)))
            bottom = min(height, round((row + 1) * half_h + grow_h * (1 - row)))
            boxes.append(Box(left, top, right, bottom))
    return boxes


def parse_boxes(text: str, width: int, height: int) -> list[Box]:
    """One box per line, ``left, top, right, bottom`` in pixels of the original image."""
    boxes = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            left, top, right, bottom = (int(round(float(v))) for v in line.replace(";", ",").split(","))
        except ValueError:
            raise CropError(f"box line {number} {line.strip()!r}: write left, top, right, bottom in pixels") from None
        box = Box(left, top, right, bottom)
        if not (0 <= left < right <= width and 0 <= top < bottom <= height):
            raise CropError(f"box line {number} ({box.text()}) is outside the {width}x{height} image or empty")
        boxes.append(box)
    if not boxes:
        raise CropError("no boxes given: one per line, left, top, right, bottom")
    return boxes


def crop_to_training_size(image: Image.Image, box: Box, resolution: int) -> Image.Image:
    """The crop, enlarged (Lanczos) so that its shorter side reaches ``resolution`` when it is smaller."""
    crop = image.crop((box.left, box.top, box.right, box.bottom))
    short = min(crop.size)
    if short < resolution:
        scale = resolution / short
        crop = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.LANCZOS)
    return crop


def write_crops(source: Path, boxes: Sequence[Box], folder: Path, resolution: int) -> list[Path]:
    """``<folder>/<stem>-crop1.png`` … for each box (atomic writes); returns the files."""
    image = load_rgb(source)
    written = []
    for index, box in enumerate(boxes, 1):
        buffer = io.BytesIO()
        crop_to_training_size(image, box, resolution).save(buffer, format="PNG")
        path = Path(folder) / f"{Path(source).stem}-crop{index}.png"
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written
