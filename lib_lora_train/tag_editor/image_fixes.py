"""Fixes for images that hurt training: transparency, extreme aspect ratios, near duplicates.

An image is only rewritten on the user's request, atomically, after its original was copied into an "originals"
folder (see ``trash.keep_original``), so a fix can always be taken back by hand.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from lib_lora_train.fileio import atomic_write_bytes
from lib_lora_train.images import ImageLoadError, flatten_to_rgb, load_rgb
from lib_lora_train.tag_editor.dataset import Dataset
from lib_lora_train.tag_editor.operations import ReplaceTag
from lib_lora_train.tag_editor.trash import keep_original

TRANSPARENT_TAG = "transparent background"
FLATTENED_TAGS = ("white background", "simple background")
MAX_ASPECT = 3.0
# Pillow format names for the extensions we write back; anything else is rewritten as PNG data under its name
_SAVE_FORMATS = {".png": "PNG", ".webp": "WEBP", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF"}


@dataclass
class FixReport:
    """Entries fixed, and one message per file that could not be fixed (left as it was)."""

    fixed: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def has_transparency(path: str | os.PathLike) -> bool:
    """True if any pixel of the image is not fully opaque."""
    try:
        with Image.open(path) as image:
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")
            if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La"):
                return False
            low, _ = image.getchannel("A").getextrema()
            return low < 255
    except (OSError, ValueError, SyntaxError):
        return False  # unreadable files are reported by the loaders, not by this check


def _encode_like(image: Image.Image, path: Path) -> bytes:
    fmt = _SAVE_FORMATS.get(path.suffix.lower(), "PNG")
    buffer = BytesIO()
    if fmt == "WEBP":
        image.save(buffer, fmt, lossless=True)
    elif fmt == "JPEG":
        image.save(buffer, fmt, quality=95)
    else:
        image.save(buffer, fmt)
    return buffer.getvalue()


def flatten_transparent_images(dataset: Dataset, ids: Iterable[int], originals_dir: str | os.PathLike) -> FixReport:
    """Composite every transparent image among ``ids`` onto white and replace ``transparent background`` by
    ``white background, simple background`` in their captions (one undo step for the captions)."""
    report = FixReport()
    for entry_id in ids:
        entry = dataset.entry(entry_id)
        if not has_transparency(entry.image_file):
            continue
        try:
            flat = load_rgb(entry.image_file)  # composites onto white (lib_lora_train.images.BACKGROUND)
            keep_original(entry.image_file, dataset.root, originals_dir)
            atomic_write_bytes(entry.image_file, _encode_like(flat, entry.image))
        except (ImageLoadError, OSError) as exc:
            report.failures.append(f"{entry.image_file}: not flattened ({exc})")
            continue
        report.fixed.append(entry_id)
    if report.fixed:
        dataset.apply(ReplaceTag(TRANSPARENT_TAG, FLATTENED_TAGS), report.fixed)
    return report


@dataclass(frozen=True)
class AspectFlag:
    entry_id: int
    width: int
    height: int

    @property
    def ratio(self) -> float:
        return max(self.width, self.height) / max(1, min(self.width, self.height))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as displayed (EXIF rotation applied), read from the header only."""
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # orientations that swap the sides
            width, height = height, width
    return width, height


def flag_extreme_aspect(dataset: Dataset, ids: Iterable[int], limit: float = MAX_ASPECT) -> list[AspectFlag]:
    """Images whose long side is more than ``limit`` times the short one (bucketing would squash or waste them)."""
    flags = []
    for entry_id in ids:
        try:
            width, height = image_size(dataset.entry(entry_id).image_file)
        except (OSError, ValueError, SyntaxError):
            continue
        flag = AspectFlag(entry_id, width, height)
        if flag.ratio > limit:
            flags.append(flag)
    return flags


def centered_crop_box(width: int, height: int, limit: float = MAX_ASPECT) -> tuple[int, int, int, int]:
    """The largest centred (left, top, right, bottom) box whose aspect ratio is at most ``limit``."""
    if width >= height:
        new_width = min(width, int(height * limit))
        left = (width - new_width) // 2
        return left, 0, left + new_width, height
    new_height = min(height, int(width * limit))
    top = (height - new_height) // 2
    return 0, top, width, top + new_height


def crop_image(path: str | os.PathLike, box: tuple[int, int, int, int], dataset_root, originals_dir) -> Path:
    """Crop an image in place to ``box`` (in displayed, upright coordinates), keeping the original; returns
    where the original was kept. Raises ``ValueError`` for a box outside the image."""
    target = Path(path)
    with Image.open(target) as image:
        image.load()
        upright = ImageOps.exif_transpose(image)
    left, top, right, bottom = (int(v) for v in box)
    if not (0 <= left < right <= upright.width and 0 <= top < bottom <= upright.height):
        raise ValueError(
            f"{target}: crop box {box} is outside the image ({upright.width}x{upright.height}); "
            "use 0 <= left < right <= width and 0 <= top < bottom <= height"
        )
    kept = keep_original(target, dataset_root, originals_dir)
    cropped = upright.crop((left, top, right, bottom))
    if target.suffix.lower() in (".jpg", ".jpeg") and cropped.mode not in ("RGB", "L"):
        cropped = cropped.convert("RGB")
    atomic_write_bytes(target, _encode_like(cropped, target))
    return kept


# --- perceptual hashes ----------------------------------------------------------------------------------------


def dhash(image: Image.Image, size: int = 8) -> int:
    """Difference hash: is each pixel brighter than its right neighbour, on a (size+1) x size grey thumbnail."""
    grey = np.asarray(image.convert("L").resize((size + 1, size), Image.BILINEAR), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


_DCT32 = _dct_matrix(32)


def phash(image: Image.Image) -> int:
    """Perceptual hash: the signs (against the median) of the 8x8 lowest frequencies of a 32x32 grey DCT."""
    grey = np.asarray(image.convert("L").resize((32, 32), Image.BILINEAR), dtype=np.float64)
    low = (_DCT32 @ grey @ _DCT32.T)[:8, :8].flatten()
    bits = low > np.median(low[1:])  # the DC term only says how bright the image is
    return int("".join("1" if b else "0" for b in bits), 2)


def hash_images(dataset: Dataset, ids: Iterable[int], method: str = "phash") -> tuple[dict[int, int], list[str]]:
    """Perceptual hash of each image; returns (entry id -> 64-bit hash, messages for unreadable files)."""
    fn = {"phash": phash, "dhash": dhash}.get(method)
    if fn is None:
        raise ValueError(f"hash method must be 'phash' or 'dhash', got {method!r}")
    hashes, failures = {}, []
    for entry_id in ids:
        try:
            hashes[entry_id] = fn(_load_small(dataset.entry(entry_id).image_file))
        except ImageLoadError as exc:
            failures.append(str(exc))
    return hashes, failures


def _load_small(path: str) -> Image.Image:
    """An upright RGB image at least 64 px a side, decoded at reduced size where the format allows (JPEG):
    hashing needs 32x32, and decoding 10,000 full-size photos would take minutes."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))
            image.load()
            return flatten_to_rgb(ImageOps.exif_transpose(image))
    except Exception:
        return load_rgb(path)  # the robust loader raises ImageLoadError naming the file and the fix


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def group_near_duplicates(hashes: Mapping[int, int], max_distance: int = 6) -> list[list[int]]:
    """Groups of ids whose hashes differ in at most ``max_distance`` of 64 bits (transitively), largest first."""
    ids = list(hashes)
    if len(ids) < 2:
        return []
    values = np.array([hashes[i] for i in ids], dtype=np.uint64)
    parent = list(range(len(ids)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(ids) - 1):
        # vectorised Hamming distances from hash i to every later hash: xor, then popcount byte by byte
        xor = np.bitwise_xor(values[i + 1 :], values[i])
        distance = _POPCOUNT[xor.view(np.uint8)].reshape(-1, 8).sum(axis=1)
        for j in np.nonzero(distance <= max_distance)[0]:
            a, b = find(i), find(i + 1 + int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for index, entry_id in enumerate(ids):
        groups.setdefault(find(index), []).append(entry_id)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))
