"""The folders and files of one version: ``<root>/<project>/versions/<version>/``.

``config.json`` holds exactly ``TrainSettings.to_json()``; run metadata (when it was created, where its dataset came
from, what it was cloned from) lives in ``version.json`` beside it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lib_lora_train.fileio import atomic_write_text
from lib_lora_train.settings import TrainSettings
from lib_lora_train.store.names import StoreError, validate_name
from lib_lora_train.store.snapshot import (
    CAPTION_EXTENSIONS,
    copy_snapshot,
    count_images,
    plan_snapshot,
    snapshot_is_current,
)
from lib_lora_train.store.trash import move_to_trash

CHECKPOINT_SUFFIX = ".safetensors"
PARTIAL_SUFFIX = "-partial"
_EPOCH_SUFFIX = re.compile(r"^(?P<name>.+)-(?P<epoch>\d{6})$")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class VersionPaths:
    """Where everything of one version lives. Creating it checks the names; it does not touch the disk."""

    root: Path
    project: str
    version: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        validate_name(self.project, "project")
        validate_name(self.version, "version")

    @property
    def path(self) -> Path:
        return self.root / self.project / "versions" / self.version

    @property
    def dataset(self) -> Path:
        return self.path / "dataset"

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def info(self) -> Path:
        """``version.json``: run metadata that is not a training setting."""
        return self.path / "version.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def compare(self) -> Path:
        return self.path / "compare"

    @property
    def loss_log(self) -> Path:
        return self.logs / "loss.csv"

    @property
    def output_name(self) -> str:
        return f"{self.project}-{self.version}"

    def checkpoint_file(self, epoch: int | None) -> Path:
        """``checkpoints/<project>-<version>-000001.safetensors`` for an epoch, without the number for the final."""
        if epoch is None:
            return self.checkpoints / f"{self.output_name}{CHECKPOINT_SUFFIX}"
        if epoch < 0:
            raise ValueError(f"epoch must be 0 or more, got {epoch}")
        return self.checkpoints / f"{self.output_name}-{epoch:06d}{CHECKPOINT_SUFFIX}"

    def partial_file(self, step: int) -> Path:
        """``checkpoints/<project>-<version>-step000123-partial.safetensors``: the adapters of a stopped run at the
        step it reached (not an epoch; ``list_checkpoints`` leaves it out, ``list_partial`` lists it)."""
        return self.checkpoints / f"{self.output_name}-step{step:06d}{PARTIAL_SUFFIX}{CHECKPOINT_SUFFIX}"

    def list_partial(self) -> list[Path]:
        return (
            sorted(self.checkpoints.glob(f"*{PARTIAL_SUFFIX}{CHECKPOINT_SUFFIX}")) if self.checkpoints.is_dir() else []
        )

    def list_checkpoints(self) -> list[tuple[int | None, Path]]:
        """(epoch, file) for every ``.safetensors`` in ``checkpoints/``: epochs ascending, the final file(s) last."""
        found: list[tuple[int | None, Path]] = []
        try:
            # scandir: the store listing calls this for every version, and its entries know their type without stat
            entries = list(os.scandir(self.checkpoints))
        except (FileNotFoundError, NotADirectoryError):
            return []
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not name.endswith(CHECKPOINT_SUFFIX) or not entry.is_file():
                continue  # hidden files include the temporary files of a save in progress
            if name.endswith(PARTIAL_SUFFIX + CHECKPOINT_SUFFIX):
                continue  # a stopped run's last steps: not an epoch
            match = _EPOCH_SUFFIX.match(name[: -len(CHECKPOINT_SUFFIX)])
            found.append((int(match.group("epoch")) if match else None, self.checkpoints / name))
        return sorted(found, key=lambda entry: (entry[0] is None, entry[0] or 0, entry[1].name))

    # --- settings and metadata ----------------------------------------------------------------------------------

    def save_settings(self, settings: TrainSettings) -> None:
        """Write ``config.json`` (atomically): the validated settings and nothing else."""
        settings.validate()
        atomic_write_text(self.config, settings.to_json() + "\n")

    def load_settings(self) -> TrainSettings:
        """Read ``config.json``; StoreError if missing or not JSON, SettingsError (naming the field) if invalid."""
        try:
            text = self.config.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise StoreError(f"{self.config}: version {self.version!r} has no settings yet; save them first") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StoreError(
                f"{self.config}: not valid JSON ({exc}); fix the file or save the settings again"
            ) from None
        return TrainSettings.from_dict(data)

    def read_info(self) -> dict[str, Any]:
        """``version.json`` as a dict ({} when missing or unreadable: it is informational only)."""
        try:
            data = json.loads(self.info.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def update_info(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into ``version.json`` (atomically) and return the result."""
        data = {**self.read_info(), **fields}
        atomic_write_text(self.info, json.dumps(data, indent=2, sort_keys=True) + "\n")
        return data

    # --- dataset snapshot ---------------------------------------------------------------------------------------

    def snapshot_dataset(
        self, src_folder: str | os.PathLike, caption_extensions: tuple[str, ...] = CAPTION_EXTENSIONS
    ) -> Path:
        """Copy the images and captions under ``src_folder`` into ``dataset/``, keeping ``N_name`` folders.

        Images directly in ``src_folder`` go to ``dataset/<src_folder name>/`` so that a folder named ``10_name``
        keeps its repeats and the scan's folder names stay the same. A previous, different snapshot is moved to the
        trash; an identical one is kept as it is. The copy is built beside ``dataset/`` and renamed into place, so a
        failure leaves the old one untouched. Returns the dataset folder.
        """
        src = Path(src_folder)
        if not src.is_dir():
            raise StoreError(f"{src}: the dataset folder does not exist; pick a folder of images")
        src_real, dataset_real = src.resolve(), self.dataset.resolve()
        if src_real == dataset_real:
            return self.dataset  # training from the snapshot itself
        if dataset_real in src_real.parents or src_real in dataset_real.parents:
            raise StoreError(f"{src}: the dataset folder and the version folder {self.path} contain each other")
        plan = plan_snapshot(src, caption_extensions)
        copied = count_images(plan)
        if copied == 0:
            raise StoreError(f"{src}: no images found; put .png/.jpg/.webp images (and captions) in it")
        if snapshot_is_current(plan, self.dataset):
            return self.dataset  # retraining on an unchanged folder: no copy, nothing to trash
        self.path.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".dataset-", dir=self.path))
        try:
            copy_snapshot(plan, staging)
            if self.dataset.exists():
                if any(self.dataset.iterdir()):
                    move_to_trash(self.root, self.dataset, self.project, f"{self.version}-dataset")
                else:
                    self.dataset.rmdir()
            os.replace(staging, self.dataset)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.update_info(dataset_source=str(src_real), dataset_images=copied, dataset_snapshot_at=now_iso())
        return self.dataset
