"""Writers of the odd and broken image files users really have, made with Pillow on the fly for the dataset tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

ORIENTATION = 0x0112


def gradient(width: int, height: int) -> Image.Image:
    """An RGB image whose left column is dark and right column bright, so orientation and flips can be checked."""
    row = np.linspace(0, 255, width, dtype=np.uint8)
    arr = np.repeat(np.repeat(row[None, :, None], height, axis=0), 3, axis=2)
    return Image.fromarray(arr, "RGB")


def write_png(path: Path, width: int = 64, height: int = 48) -> Path:
    gradient(width, height).save(path)
    return path


def write_exif_rotated_jpeg(path: Path, width: int = 80, height: int = 40, orientation: int = 6) -> Path:
    """Stored ``width`` x ``height`` but tagged to be shown rotated (6 = rotate 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    gradient(width, height).save(path, "JPEG", exif=exif.tobytes(), quality=95)
    return path


def write_rgba_png(path: Path, size: int = 32) -> Path:
    """Fully transparent black pixels on the left half, opaque red on the right."""
    arr = np.zeros((size, size, 4), dtype=np.uint8)
    arr[:, size // 2 :, 0] = 255
    arr[:, size // 2 :, 3] = 255
    Image.fromarray(arr, "RGBA").save(path)
    return path


def write_la_png(path: Path, size: int = 32) -> Path:
    """Black, fully transparent everywhere."""
    Image.new("LA", (size, size), (0, 0)).save(path)
    return path


def write_palette_transparent_png(path: Path, size: int = 32) -> Path:
    """Palette image whose index 0 (black) is transparent; every pixel uses index 0."""
    image = Image.new("P", (size, size), 0)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    image.save(path, transparency=0)
    return path


def write_cmyk_jpeg(path: Path, size: int = 32) -> Path:
    """Pure cyan in CMYK."""
    Image.new("CMYK", (size, size), (255, 0, 0, 0)).save(path, "JPEG", quality=95)
    return path


def write_16bit_png(path: Path, width: int = 64, height: int = 16) -> Path:
    """Mode I;16 greyscale ramp from 0 to 65535 (left to right)."""
    row = np.linspace(0, 65535, width).astype(np.uint16)
    Image.fromarray(np.repeat(row[None, :], height, axis=0), "I;16").save(path)
    return path


def write_animated_gif(path: Path, size: int = 32) -> Path:
    """Three frames: white, black, black. The first frame is the one to train on."""
    frames = [Image.new("RGB", (size, size), colour) for colour in ((255, 255, 255), (0, 0, 0), (0, 0, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def write_empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def write_truncated_jpeg(path: Path, size: int = 256) -> Path:
    """A real JPEG header and the first part of its data: opens fine, fails when decoded."""
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(noise, "RGB").save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 3])
    return path


def write_random_bytes(path: Path, count: int = 500) -> Path:
    # seeded, so the bytes are the same on every run (and, checked once, match no image format's signature)
    path.write_bytes(np.random.default_rng(1).bytes(count))
    return path


def write_caption(image_path: Path, caption: str, extension: str = ".txt") -> Path:
    caption_path = image_path.with_suffix(extension)
    caption_path.write_text(caption, encoding="utf-8")
    return caption_path
