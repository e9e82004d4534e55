"""Opening the images users actually have: phone photos, transparent PNGs, CMYK JPEGs, 16-bit scans, GIFs.

``load_rgb`` turns any of them into an upright 8-bit RGB image or raises ``ImageLoadError`` naming the file and
what to do about it, so that callers can report the file and carry on with the rest of a folder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif", ".jxl"})

# Transparent pixels become white: the convention of the WD14 taggers and of most training guides.
BACKGROUND = (255, 255, 255)


class ImageLoadError(Exception):
    """An image that cannot be used; the message names the file and the fix."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def iter_image_files(folder: str | os.PathLike, *, recursive: bool = True) -> Iterator[Path]:
    """Image files under ``folder`` in a stable (sorted) order; hidden files and folders are skipped."""
    root = Path(folder)
    if not recursive:
        yield from sorted(p for p in root.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith("."))
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and is_image_file(name):
                yield Path(dirpath) / name


def _draft_jpeg(image: Image.Image, min_side: int) -> None:
    """Ask the JPEG decoder for the smallest scale whose longer side stays at least ``min_side``.

    The requested size keeps the aspect ratio, so Pillow's choice (the largest of 1/8, 1/4, 1/2 that keeps both
    sides at least that size) never cuts the longer side below ``min_side``; the mode is left as it is.
    """
    width, height = image.size
    ratio = min_side / max(width, height)
    if ratio < 0.5:  # otherwise no scale of 1/2 or less fits
        image.draft(None, (math.ceil(width * ratio), math.ceil(height * ratio)))


def flatten_to_rgb(
    image: Image.Image, background: tuple[int, int, int] = BACKGROUND, *, sixteen_bit: bool | None = None
) -> Image.Image:
    """Any PIL mode to RGB, compositing transparency onto ``background``.

    ``sixteen_bit`` says whether an integer greyscale image ("I") holds 16-bit samples; ``None`` guesses from the
    values. "I;16*" modes are always 16-bit.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of letting PIL clip everything above 255 to white
        import numpy as np

        arr = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            sixteen_bit = True
        elif sixteen_bit is None:
            # a guess: a dark 16-bit image whose samples all stay below 256 would come out too bright
            sixteen_bit = bool(arr.size) and arr.max() > 255
        peak = 65535.0 if sixteen_bit else 255.0
        image = Image.fromarray((arr / peak * 255.0).round().clip(0, 255).astype("uint8"), "L")
    if image.mode == "F":
        image = image.convert("L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if image.mode != "RGB":
        # CMYK, YCbCr, L, 1, I;16 already reduced above
        return image.convert("RGB")
    return image


def load_rgb(path: str | os.PathLike, *, min_side: int | None = None) -> Image.Image:
    """Open ``path`` as an upright RGB image (EXIF orientation applied, first frame of an animation).

    ``min_side``: the caller only needs the longer side to be at least this many pixels, so a JPEG may be decoded
    at 1/2, 1/4 or 1/8 scale (libjpeg scales while it decodes: 2-3x less CPU for a photo going to a 448 px model).
    Other formats always decode at full size.
    """
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            raise ImageLoadError(p, "the file is empty (0 bytes); delete it or copy the image again")
        with Image.open(p) as image:
            if getattr(image, "is_animated", False):
                image.seek(0)
            if min_side and image.format == "JPEG":
                _draft_jpeg(image, min_side)
            image.load()
            # Pillow opens 16-bit greyscale PNGs as mode "I"; PNG has no other source of that mode
            sixteen_bit = True if image.format == "PNG" and image.mode == "I" else None
            upright = ImageOps.exif_transpose(image)
            return flatten_to_rgb(upright, sixteen_bit=sixteen_bit).copy()
    except ImageLoadError:
        raise
    except Image.DecompressionBombError:
        raise ImageLoadError(
            p, "the image is too large to open safely (over about 178 megapixels); scale it down"
        ) from None
    except FileNotFoundError:
        raise ImageLoadError(p, "the file does not exist (was it moved or deleted?)") from None
    except UnidentifiedImageError:
        raise ImageLoadError(p, "not an image Pillow can read; convert it to PNG or JPEG, or remove it") from None
    except (OSError, SyntaxError, ValueError) as exc:
        # truncated or corrupt data: Pillow raises OSError("image file is truncated") and friends
        raise ImageLoadError(p, f"the image is damaged ({exc}); re-export it or remove it from the folder") from None
