"""Finding the training images and their captions in a folder, without decoding a single pixel.

Folder conventions are kohya's: a sub-folder named ``N_name`` (``10_mychar``) repeats its images N times per epoch;
each image's caption is the file beside it with the same stem and the caption extension (``.txt`` by default).
Images that cannot be opened are listed as problems and left out; images without a caption are kept (trained with an
empty caption) and listed too, so that the user sees both before a run starts.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from lib_lora_train.images import ImageLoadError, iter_image_files, load_rgb

# kohya's repeat folders: "10_name"; the number is the repeat count, the rest the concept name
_REPEAT_FOLDER = re.compile(r"^(\d+)_(.+)$")
# EXIF orientations 5-8 rotate by a quarter turn, so width and height swap
_QUARTER_TURN_ORIENTATIONS = frozenset({5, 6, 7, 8})
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class DatasetItem:
    """One training image. ``size`` is the upright (width, height); ``folder`` is its repeat-folder name."""

    image_path: Path
    caption: str
    repeats: int
    folder: str
    has_caption: bool
    size: tuple[int, int]
    is_reg: bool = False  # a regularisation (class) image: its loss is weighted by prior_loss_weight


@dataclass(frozen=True)
class DatasetProblem:
    """Something the user should fix. ``skipped`` says whether the image was left out of training."""

    path: str
    message: str
    skipped: bool

    def __str__(self) -> str:
        action = "skipped" if self.skipped else "kept"
        return f"{self.path}: {self.message} ({action})"


@dataclass
class DatasetScan:
    """The outcome of :func:`scan_dataset`: the usable items and every problem found on the way."""

    root: Path
    items: list[DatasetItem] = field(default_factory=list)
    problems: list[DatasetProblem] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return len(self.items)

    @property
    def num_repeated(self) -> int:
        """Images seen per epoch: every image counted ``repeats`` times."""
        return sum(item.repeats for item in self.items)

    @property
    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """``{folder: {tag: number of images carrying it}}``, the shape of kohya's ``ss_tag_frequency``."""
        counts: dict[str, Counter[str]] = {}
        for item in self.items:
            folder = counts.setdefault(item.folder, Counter())
            # a tag written twice in one caption still describes one image
            folder.update(set(split_tags(item.caption)))
        return {name: dict(sorted(counter.items())) for name, counter in counts.items()}

    @property
    def dataset_dirs(self) -> dict[str, dict[str, int]]:
        """``{folder: {"n_repeats": N, "img_count": images}}``, the shape of kohya's ``ss_dataset_dirs``."""
        dirs: dict[str, dict[str, int]] = {}
        for item in self.items:
            entry = dirs.setdefault(item.folder, {"n_repeats": item.repeats, "img_count": 0})
            entry["img_count"] += 1
        return dirs

    @property
    def skipped(self) -> list[DatasetProblem]:
        return [p for p in self.problems if p.skipped]

    def skip(self, item: DatasetItem, reason: str) -> DatasetProblem:
        """Take ``item`` out of training because it failed later (a truncated file found while caching latents).

        The item leaves ``items`` (so repeats, tag frequency and dataset dirs no longer count it) and a skipped
        problem with ``reason`` is recorded and returned. Build buckets and the batch sampler after the last skip.
        """
        self.items = [other for other in self.items if other.image_path != item.image_path]
        problem = DatasetProblem(str(item.image_path), reason, skipped=True)
        self.problems.append(problem)
        return problem


def split_tags(caption: str) -> list[str]:
    """Comma-separated tags, stripped, empty ones dropped."""
    return [tag.strip() for tag in caption.split(",") if tag.strip()]


def parse_repeat_folder(name: str, default_repeats: int = 1) -> int:
    """Repeats encoded in a kohya folder name: ``"10_mychar"`` -> 10; anything else -> ``default_repeats``.

    ``"0_name"`` is read as the default too: zero repeats would silently drop the whole folder.
    """
    match = _REPEAT_FOLDER.match(name)
    if match and int(match.group(1)) > 0:
        return int(match.group(1))
    return default_repeats


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Upright (width, height) from the file header, EXIF orientation applied; no pixels are decoded.

    Raises :class:`ImageLoadError` for empty, missing or unreadable files.
    """
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            raise ImageLoadError(p, "the file is empty (0 bytes); delete it or copy the image again")
        with Image.open(p) as image:
            width, height = image.size
            if _orientation(image) in _QUARTER_TURN_ORIENTATIONS:
                width, height = height, width
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(p, "the file does not exist (was it moved or deleted?)") from None
    except UnidentifiedImageError:
        raise ImageLoadError(p, "not an image Pillow can read; convert it to PNG or JPEG, or remove it") from None
    except Image.DecompressionBombError:
        raise ImageLoadError(
            p, "the image is too large to open safely (over about 178 megapixels); scale it down"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(p, f"the image is damaged ({exc}); re-export it or remove it from the folder") from None
    if width <= 0 or height <= 0:
        raise ImageLoadError(p, f"the image has no pixels ({width}x{height}); re-export it or remove it")
    return width, height


def _orientation(image: Image.Image) -> int:
    # PNG keeps EXIF in an optional chunk; Pillow's getexif() decodes the whole image to look for it after the
    # pixels, so only the chunk found before the pixels is consulted here (load_rgb still applies a late one).
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        return int(image.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except (OSError, SyntaxError, ValueError, TypeError):
        return 1  # broken EXIF: treat as upright rather than reject an otherwise good image


def read_caption(image_path: Path, caption_extension: str) -> tuple[str, bool, str | None]:
    """(caption, found, problem message or None) for the caption file beside ``image_path``.

    Lines are joined with ", " so that a caption spread over several lines reads as one tag list.
    """
    caption_path = image_path.with_suffix(caption_extension)
    if not caption_path.is_file() and image_path.with_suffix(caption_extension.upper()).is_file():
        caption_path = image_path.with_suffix(caption_extension.upper())  # "A.TXT" from a Windows or camera export
    if not caption_path.is_file():
        return "", False, f"no caption file {caption_path.name}; it will train with an empty caption"
    try:
        data = caption_path.read_bytes()
    except OSError as exc:
        return "", False, f"caption {caption_path.name} cannot be read ({exc}); it will train with an empty caption"
    problem = None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        problem = (
            f"caption {caption_path.name} is not UTF-8 text; unreadable characters were replaced, re-save it as UTF-8"
        )
    lines = (line.strip().strip(",").strip() for line in text.splitlines())
    caption = ", ".join(line for line in lines if line)
    return caption, True, problem


def scan_dataset(
    root: str | os.PathLike,
    *,
    caption_extension: str = ".txt",
    default_repeats: int = 1,
    recursive: bool = True,
    verify: bool = False,
) -> DatasetScan:
    """Scan ``root`` for training images and captions.

    Each first-level sub-folder of ``root`` is a repeat group (``10_name`` -> 10 repeats, others
    ``default_repeats``); deeper folders belong to their first-level group. Images directly in ``root`` form a group
    named after ``root`` itself (so pointing at a single ``10_name`` folder works too). Sizes come from the headers;
    with ``verify`` every image is also fully decoded, which finds truncated files but is much slower.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise FileNotFoundError(f"{root_path}: the dataset folder does not exist; pick a folder of images")
    if not caption_extension.startswith("."):
        caption_extension = "." + caption_extension
    scan = DatasetScan(root=root_path)
    for image_path in iter_image_files(root_path, recursive=recursive):
        relative = image_path.relative_to(root_path)
        folder = relative.parts[0] if len(relative.parts) > 1 else root_path.name
        try:
            size = read_image_size(image_path)
            if verify:
                load_rgb(image_path)
        except ImageLoadError as exc:
            scan.problems.append(DatasetProblem(str(image_path), exc.reason, skipped=True))
            continue
        caption, has_caption, problem = read_caption(image_path, caption_extension)
        if problem:
            scan.problems.append(DatasetProblem(str(image_path), problem, skipped=False))
        scan.items.append(
            DatasetItem(
                image_path=image_path,
                caption=caption,
                repeats=parse_repeat_folder(folder, default_repeats),
                folder=folder,
                has_caption=has_caption,
                size=size,
            )
        )
    return scan
