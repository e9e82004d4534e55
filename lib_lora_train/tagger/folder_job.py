"""Tag a whole folder into caption files, with progress and stop as plain callables (no WebUI here)."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lib_lora_train.images import iter_image_files
from lib_lora_train.tagger.captions import (
    DEFAULT_PATTERN,
    EXISTING_MODES,
    ExistingMode,
    caption_path,
    has_caption,
    merge_caption,
    read_caption,
    split_caption,
    validate_pattern,
    write_caption,
)
from lib_lora_train.tagger.inference import predict_paths
from lib_lora_train.tagger.postprocess import TagOptions, select_tags
from lib_lora_train.tagger.tag_table import TagTable

# progress(done, total, text); should_stop() -> True once the user pressed stop
Progress = Callable[[int, int, str], None]
ShouldStop = Callable[[], bool]


class FolderJobError(ValueError):
    """A request that cannot start (missing folder, bad pattern); the message says what to change."""


@dataclass
class FolderJobRequest:
    input_dir: str
    options: TagOptions = field(default_factory=TagOptions)
    recursive: bool = True
    output_dir: str = ""  # empty: captions beside the images
    pattern: str = DEFAULT_PATTERN
    existing: ExistingMode = "skip"
    backup: bool = True
    batch_size: int = 0  # 0: chosen for the model and device
    workers: int = 0  # 0: chosen for the device
    # decode big JPEGs at a reduced scale (still twice the model's size): the decode then costs 2-3x less CPU,
    # which on a CPU-only machine is time taken from the model; False decodes every pixel
    fast_jpeg: bool = True

    def validate(self) -> Path:
        """Check the request; returns the input folder."""
        root = Path(self.input_dir.strip()).expanduser() if self.input_dir else None
        if root is None or not root.is_dir():
            raise FolderJobError(f"input folder {self.input_dir!r} does not exist; enter the folder of your images")
        if self.existing not in EXISTING_MODES:
            raise FolderJobError(f"existing-caption mode {self.existing!r} is not one of: {', '.join(EXISTING_MODES)}")
        try:
            validate_pattern(self.pattern)
        except ValueError as exc:
            raise FolderJobError(str(exc)) from None
        if self.batch_size < 0 or self.workers < 0:
            raise FolderJobError("batch size and workers must be 0 (automatic) or positive")
        return root


@dataclass
class FolderSummary:
    """What a folder job did. ``frequencies`` counts the tags of every caption it wrote or left unchanged."""

    total: int = 0
    written: int = 0
    unchanged: int = 0
    skipped_existing: int = 0
    errors: list[str] = field(default_factory=list)
    stopped: bool = False
    seconds: float = 0.0
    tagged: int = 0  # images that went through the model
    frequencies: Counter = field(default_factory=Counter)

    @property
    def images_per_second(self) -> float:
        return self.tagged / self.seconds if self.seconds > 0 else 0.0

    def report(self, top: int = 50) -> str:
        """A plain-text summary for the UI and the log."""
        lines = [
            f"{self.total} images: {self.written} captions written, {self.unchanged} unchanged, "
            f"{self.skipped_existing} skipped (caption exists), {len(self.errors)} errors"
            + (" - stopped early" if self.stopped else ""),
            f"{self.tagged} images tagged in {self.seconds:.1f} s ({self.images_per_second:.2f} images/s)",
        ]
        if self.errors:
            lines.append("Errors:")
            lines += [f"  {e}" for e in self.errors]
        if self.frequencies:
            lines.append(f"Tag frequencies (top {min(top, len(self.frequencies))} of {len(self.frequencies)}):")
            lines += [f"  {count:5d}  {tag}" for tag, count in self.frequencies.most_common(top)]
        return "\n".join(lines)


def run_folder_job(
    model,
    tags: TagTable,
    request: FolderJobRequest,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> FolderSummary:
    """Tag every image under ``request.input_dir`` with ``model`` (a ``runtime.LoadedTagger`` or alike)."""
    root = request.validate()
    started = time.perf_counter()
    summary = FolderSummary()
    images = list(iter_image_files(root, recursive=request.recursive))
    summary.total = len(images)
    targets = {image: caption_path(image, root, request.output_dir, request.pattern) for image in images}
    todo = _without_shared_captions(images, targets, summary)
    if request.existing == "skip":
        # decided before decoding: skipping a tagged folder costs no inference at all
        kept = [image for image in todo if not has_caption(read_caption(targets[image]))]
        summary.skipped_existing = len(todo) - len(kept)
        todo = kept
    done = 0
    if progress:
        progress(0, len(todo), f"tagging {len(todo)} images")
    batches = predict_paths(
        model, todo, batch_size=request.batch_size, workers=request.workers, fast_jpeg=request.fast_jpeg
    )
    with contextlib.closing(batches):
        for batch in batches:
            for prediction in batch:
                _handle(prediction, targets[prediction.path], tags, request, summary)
            done += len(batch)
            if progress:
                progress(done, len(todo), f"{done}/{len(todo)}: {batch[-1].path.name}")
            if should_stop and should_stop():
                summary.stopped = done < len(todo)
                break
    summary.seconds = time.perf_counter() - started
    return summary


def _without_shared_captions(images: list[Path], targets: dict[Path, Path], summary: FolderSummary) -> list[Path]:
    """Keep the first image per caption file; ``a.png`` and ``a.jpg`` would otherwise overwrite each other."""
    owner: dict[Path, Path] = {}
    todo = []
    for image in images:
        first = owner.setdefault(targets[image], image)
        if first is image:
            todo.append(image)
        else:
            summary.errors.append(
                f"{image}: shares the caption file {targets[image].name} with {first.name}, so it was skipped; "
                "rename one of them or use the file name pattern [name].[extension].txt"
            )
    return todo


def _handle(prediction, target: Path, tags: TagTable, request: FolderJobRequest, summary: FolderSummary) -> None:
    if prediction.error:
        summary.errors.append(prediction.error)
        return
    summary.tagged += 1
    result = select_tags(prediction.probs, tags, request.options)
    try:
        existing = read_caption(target)
        text = merge_caption(existing, result.tags, request.existing, request.options.additional)
        if text is None:  # the caption appeared while we were working: still never overwrite in skip mode
            summary.skipped_existing += 1
            return
        if write_caption(target, text, existing=existing, backup=request.backup):
            summary.written += 1
        else:
            summary.unchanged += 1
        summary.frequencies.update(split_caption(text))
    except OSError as exc:
        summary.errors.append(f"{target}: could not write the caption ({exc}); check the folder's permissions")
