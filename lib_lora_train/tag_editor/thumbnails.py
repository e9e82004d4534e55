"""Thumbnails made when first shown and cached on disk.

Opening a 10,000-image folder makes no thumbnail at all; the gallery asks for one page at a time. A cached file
is named by a hash of the image's absolute path, modification time and size, so an edited image gets a new
thumbnail and an unchanged one is never decoded again. The cache is disposable: files are written with a
temporary name and a rename (no half-written JPEG is ever served) but without fsync.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageOps

from lib_lora_train.images import ImageLoadError, flatten_to_rgb, load_rgb

DEFAULT_SIZE = 256


class ThumbnailCache:
    """``get(path)`` returns the path of a JPEG thumbnail (at most ``size`` px on its long side)."""

    def __init__(self, cache_dir: str | os.PathLike, size: int = DEFAULT_SIZE, quality: int = 85):
        if size < 16:
            raise ValueError(f"thumbnail size must be at least 16 px, got {size}")
        self.cache_dir = Path(cache_dir)
        self.size = size
        self.quality = quality

    def cached_path(self, image_path: str | os.PathLike) -> Path:
        """Where the thumbnail of ``image_path`` is (or will be) cached; stats the file."""
        absolute = os.path.abspath(image_path)
        try:
            stat = os.stat(absolute)
        except OSError:
            raise ImageLoadError(absolute, "the file does not exist (was it moved or deleted?)") from None
        key = hashlib.sha1(f"{absolute}|{stat.st_mtime_ns}|{stat.st_size}|{self.size}".encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.jpg"

    def get(self, image_path: str | os.PathLike) -> Path:
        """The cached thumbnail, made now if missing. Raises ``ImageLoadError`` for a file that cannot be read."""
        target = self.cached_path(image_path)
        if target.exists():
            return target
        data = render_thumbnail(image_path, self.size, self.quality)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f"{target.stem}.{os.getpid()}.{id(data)}.tmp")
        temp.write_bytes(data)
        os.replace(temp, target)
        return target

    def get_many(self, image_paths: Sequence[str | os.PathLike], workers: int = 4) -> list[Path | ImageLoadError]:
        """Thumbnails of a gallery page, made in parallel (Pillow decodes without holding the GIL).

        A file that cannot be read gives its ``ImageLoadError`` in its place instead of failing the page.
        """

        def one(path: str | os.PathLike) -> Path | ImageLoadError:
            try:
                return self.get(path)
            except ImageLoadError as exc:
                return exc

        if len(image_paths) <= 1 or workers <= 1:
            return [one(p) for p in image_paths]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, image_paths))


def render_thumbnail(image_path: str | os.PathLike, size: int = DEFAULT_SIZE, quality: int = 85) -> bytes:
    """JPEG bytes of a thumbnail: upright, transparency on white, long side at most ``size``."""
    try:
        with Image.open(image_path) as image:
            # JPEG decoders can scale by 1/2..1/8 while decoding: a big photo thumbnails several times faster
            image.draft("RGB", (size * 2, size * 2))
            if getattr(image, "is_animated", False):
                image.seek(0)
            image.load()
            picture = flatten_to_rgb(ImageOps.exif_transpose(image))
    except Exception:
        # let the robust loader produce the message that names the file and the fix
        picture = load_rgb(image_path)
    picture.thumbnail((size, size), Image.BICUBIC)
    buffer = BytesIO()
    picture.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
