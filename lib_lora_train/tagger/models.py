"""Which tagger models exist: the WD14 family on the Hugging Face hub, and folders the user dropped in.

A model is a folder holding ``model.onnx`` and ``selected_tags.csv``. Known models are downloaded into
``<models_dir>/<name>/``; any other folder there with those two files is listed under its folder name, so a user can
work fully offline by copying models in by hand.

Default thresholds come from the model cards' "P=R" validation threshold (the point where precision equals
recall). The v3 cards measure it with macro-F1, which gives lower values (~0.26) than the v1.4/v2 cards (~0.35-0.38).
Character tags use 0.85, the default of SmilingWolf's own wd-tagger demo, because a wrong character tag hurts a
LoRA dataset far more than a missing one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
DEFAULT_CHARACTER_THRESHOLD = 0.85


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model. ``name`` is its folder name and the name shown in lists and the API."""

    name: str
    repo_id: str
    general_threshold: float
    character_threshold: float = DEFAULT_CHARACTER_THRESHOLD
    # names the existing tagger extension (and its forks) used, so that API clients keep working
    aliases: tuple[str, ...] = ()
    revision: str | None = None


KNOWN_MODELS: tuple[ModelSpec, ...] = (
    # v3 (dataset v3, 2024): batch axis is dynamic; thresholds from the model cards (v2.0 weights where given)
    ModelSpec("wd-eva02-large-tagger-v3", "SmilingWolf/wd-eva02-large-tagger-v3", 0.5296),
    ModelSpec("wd-vit-large-tagger-v3", "SmilingWolf/wd-vit-large-tagger-v3", 0.26),
    ModelSpec("wd-swinv2-tagger-v3", "SmilingWolf/wd-swinv2-tagger-v3", 0.2653),
    ModelSpec("wd-convnext-tagger-v3", "SmilingWolf/wd-convnext-tagger-v3", 0.2682),
    ModelSpec("wd-vit-tagger-v3", "SmilingWolf/wd-vit-tagger-v3", 0.2614),
    # WD 1.4 v2 (SW-CV-ModelZoo)
    ModelSpec(
        "wd-v1-4-moat-tagger-v2", "SmilingWolf/wd-v1-4-moat-tagger-v2", 0.3771, aliases=("wd-v1-4-moat-tagger.v2",)
    ),
    ModelSpec(
        "wd-v1-4-swinv2-tagger-v2",
        "SmilingWolf/wd-v1-4-swinv2-tagger-v2",
        0.3771,
        aliases=("wd14-swinv2-v1", "wd14-swinv2-v2", "wd14-swinv2-v2-git"),
    ),
    ModelSpec(
        "wd-v1-4-convnextv2-tagger-v2",
        "SmilingWolf/wd-v1-4-convnextv2-tagger-v2",
        0.3710,
        aliases=("wd14-convnextv2.v1", "wd14-convnextv2-v2"),
    ),
    ModelSpec(
        "wd-v1-4-convnext-tagger-v2",
        "SmilingWolf/wd-v1-4-convnext-tagger-v2",
        0.3685,
        aliases=("wd14-convnext.v2", "wd14-convnext-v2", "wd14-convnext-v2-git"),
    ),
    ModelSpec(
        "wd-v1-4-vit-tagger-v2",
        "SmilingWolf/wd-v1-4-vit-tagger-v2",
        0.3537,
        aliases=("wd14-vit.v2", "wd14-vit-v2", "wd14-vit-v2-git"),
    ),
    # WD 1.4 v1: no card threshold; 0.35 is what the tagger extensions defaulted to
    ModelSpec(
        "wd-v1-4-convnext-tagger",
        "SmilingWolf/wd-v1-4-convnext-tagger",
        0.35,
        aliases=("wd14-convnext.v1", "wd14-convnext"),
    ),
    ModelSpec("wd-v1-4-vit-tagger", "SmilingWolf/wd-v1-4-vit-tagger", 0.35, aliases=("wd14-vit.v1", "wd14-vit")),
)

DEFAULT_MODEL = "wd-swinv2-tagger-v3"
_FALLBACK_GENERAL_THRESHOLD = 0.35


class ModelNotFoundError(LookupError):
    """A model name that is neither known nor present as a folder; the message lists what is."""


@dataclass(frozen=True)
class ModelEntry:
    """A model as the UI and API list it: known (downloadable) and/or present on disk."""

    name: str
    folder: Path | None  # the folder holding model.onnx + selected_tags.csv, when present on disk
    spec: ModelSpec | None = None  # None for models the user dropped in by hand
    aliases: tuple[str, ...] = field(default=())

    @property
    def is_local(self) -> bool:
        return self.folder is not None

    @property
    def general_threshold(self) -> float:
        return self.spec.general_threshold if self.spec else _FALLBACK_GENERAL_THRESHOLD

    @property
    def character_threshold(self) -> float:
        return self.spec.character_threshold if self.spec else DEFAULT_CHARACTER_THRESHOLD


def is_model_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds both files a WD14 tagger needs."""
    p = Path(folder)
    return (p / MODEL_FILE).is_file() and (p / TAGS_FILE).is_file()


def discover_local(models_dir: str | os.PathLike | None) -> dict[str, Path]:
    """``{folder name: folder}`` for every direct sub-folder of ``models_dir`` holding a usable model."""
    if not models_dir:
        return {}
    root = Path(models_dir)
    if not root.is_dir():
        return {}
    found = {}
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith(".") and is_model_folder(child):
            found[child.name] = child
    return found


def list_models(models_dir: str | os.PathLike | None) -> list[ModelEntry]:
    """Known models (present or not) followed by the user's own folders, in a stable order."""
    local = discover_local(models_dir)
    entries = [ModelEntry(spec.name, local.get(spec.name), spec, spec.aliases) for spec in KNOWN_MODELS]
    known = {spec.name for spec in KNOWN_MODELS}
    entries += [ModelEntry(name, folder) for name, folder in local.items() if name not in known]
    return entries


def find_model(name: str, models_dir: str | os.PathLike | None) -> ModelEntry:
    """Look ``name`` up among known names, aliases of the older extension, and local folders."""
    wanted = name.strip()
    entries = list_models(models_dir)
    for entry in entries:
        if entry.name == wanted or wanted in entry.aliases:
            return entry
    names = ", ".join(e.name for e in entries)
    raise ModelNotFoundError(
        f"unknown tagger model {wanted!r}; choose one of: {names} - or put a folder named {wanted!r} holding "
        f"{MODEL_FILE} and {TAGS_FILE} into {models_dir}"
    )
