"""Presets and the step arithmetic of the Train Tools tab and the bootstrap loop: pure functions.

The rule of thumb from the guides our users follow: images × repeats ≈ 200–400 per epoch, about 10 epochs, a
checkpoint every epoch; the activation tag first with ``keep_tokens = 1`` for a character.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from lib_lora_train.settings import TrainSettings

PER_EPOCH_LOW, PER_EPOCH_HIGH, PER_EPOCH_AIM = 200, 400, 300
_REPEAT_FOLDER = re.compile(r"^(\d+)_(.+)$")

PRESETS: dict[str, dict] = {
    # one subject, an activation tag kept first; no flips (asymmetric details such as a side ponytail)
    "character": dict(rank=16, alpha=8.0, unet_lr=1e-4, te_lr=5e-5, epochs=10, keep_tokens=1, shuffle_tags=True,
                      flip=False, caption_dropout=0.0, tag_dropout=0.0, lr_scheduler="cosine", network="lora"),
    # a look over many subjects: more capacity, flips, and some dropout so no single tag carries the style
    "style": dict(rank=32, alpha=16.0, unet_lr=1e-4, te_lr=2e-5, epochs=10, keep_tokens=0, shuffle_tags=True,
                  flip=True, caption_dropout=0.05, tag_dropout=0.1, lr_scheduler="cosine", network="locon"),
    # a bootstrap round on 4-40 images: a weak "style" LoRA of the character to generate more views with; small
    # rank, a few epochs, each saved (the loop sets the repeats for 200-400 images per epoch)
    "bootstrap": dict(rank=8, alpha=4.0, unet_lr=1e-4, te_lr=5e-5, epochs=4, save_every=1, keep_tokens=1,
                      shuffle_tags=True, flip=False, caption_dropout=0.0, tag_dropout=0.0, lr_scheduler="cosine",
                      network="lora"),
    # an object, pose or clothing: like a character, but flips are harmless
    "concept": dict(rank=16, alpha=8.0, unet_lr=1e-4, te_lr=5e-5, epochs=12, keep_tokens=1, shuffle_tags=True,
                    flip=True, caption_dropout=0.0, tag_dropout=0.05, lr_scheduler="cosine", network="lora"),
}  # fmt: skip


def preset_settings(name: str, base: TrainSettings | None = None, *, arch: str = "sd1") -> TrainSettings:
    """``base`` with the preset's values; SDXL gets its native 1024 px resolution."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[name])
    values["resolution"] = 1024 if arch == "sdxl" else 512
    return (base or TrainSettings()).replace(**values)


@dataclass(frozen=True)
class FolderPlan:
    """One repeat group of the dataset: its name without the ``N_`` prefix, image count and repeats."""

    name: str
    images: int
    repeats: int


@dataclass(frozen=True)
class StepPlan:
    per_epoch_images: int  # images × repeats
    steps_per_epoch: int
    total_steps: int
    epochs: int
    advice: str
    reg_per_epoch: int = 0  # regularisation samples mixed in (as many as training samples, kohya's rule)


def suggest_repeats(images: int) -> int:
    """Repeats that bring ``images`` to about 300 per epoch (at least 1)."""
    return max(1, round(PER_EPOCH_AIM / images)) if images > 0 else 1


def plan_steps(folders: list[FolderPlan], *, batch_size: int, epochs: int, grad_accum: int = 1,
               max_steps: int = 0, reg_images: int = 0) -> StepPlan:  # fmt: skip
    """images × repeats × epochs ÷ batch, and whether the per-epoch count sits in the guides' 200–400 band.

    With ``reg_images`` (files in reg_data_dir) every epoch also holds as many regularisation samples as training
    samples, so it has twice the steps; the band is about the training images only.
    """
    per_epoch = sum(f.images * f.repeats for f in folders)
    images = sum(f.images for f in folders)
    reg_per_epoch = per_epoch if reg_images > 0 else 0
    per_step = max(1, batch_size) * max(1, grad_accum)
    steps_per_epoch = math.ceil((per_epoch + reg_per_epoch) / per_step) if per_epoch else 0
    if max_steps > 0 and steps_per_epoch:
        total, epochs = max_steps, math.ceil(max_steps / steps_per_epoch)
    else:
        total = steps_per_epoch * epochs
    if not images:
        advice = "no images yet: pick a dataset folder"
    elif per_epoch < PER_EPOCH_LOW or per_epoch > PER_EPOCH_HIGH:
        advice = (
            f"{per_epoch} images per epoch; the guides aim for {PER_EPOCH_LOW}-{PER_EPOCH_HIGH}: "
            f"try {suggest_repeats(images)} repeats for {images} images"
        )
    else:
        advice = f"{per_epoch} images per epoch: within the guides' {PER_EPOCH_LOW}-{PER_EPOCH_HIGH}"
    return StepPlan(per_epoch, steps_per_epoch, total, epochs, advice, reg_per_epoch)


def split_repeat_folder(name: str) -> tuple[int | None, str]:
    """``"10_alice"`` -> (10, "alice"); ``"alice"`` -> (None, "alice")."""
    match = _REPEAT_FOLDER.match(name)
    return (int(match.group(1)), match.group(2)) if match else (None, name)


def apply_repeats(dataset_dir: Path, repeats: dict[str, int]) -> list[str]:
    """Rename the first-level folders of a version's dataset snapshot to ``<repeats>_<name>``.

    ``repeats`` maps a folder's name (with or without its old prefix) to the wanted repeats. Returns the new folder
    names. Renames only inside the snapshot, never in the user's own dataset folder.
    """
    renamed = []
    for entry in sorted(Path(dataset_dir).iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        _, bare = split_repeat_folder(entry.name)
        wanted = repeats.get(entry.name, repeats.get(bare))
        if wanted is None or int(wanted) < 1:
            continue
        target = entry.with_name(f"{int(wanted)}_{bare}")
        if target != entry:
            if target.exists():
                raise FileExistsError(f"{target}: cannot rename {entry.name}, a folder of that name exists")
            os.rename(entry, target)
        renamed.append(target.name)
    return renamed
