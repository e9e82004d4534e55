"""Which tagger models exist: the WD14 family and ML-Danbooru on the Hugging Face hub, and folders the user dropped in.

A WD14 model is a folder holding ``model.onnx`` and ``selected_tags.csv``; an ML-Danbooru (``mld``) model is a folder
holding one ``.onnx`` file and ``classes.json``. Known models are downloaded into ``<models_dir>/<name>/``; any other
folder there with either pair of files is listed under its folder name, so a user can work fully offline by copying
models in by hand.

Default thresholds come from the model cards' "P=R" validation threshold (the point where precision equals
recall). The v3 cards measure it with macro-F1, which gives lower values (~0.26) than the v1.4/v2 cards (~0.35-0.38).
Character tags use 0.85, the default of SmilingWolf's own wd-tagger demo, because a wrong character tag hurts a
LoRA dataset far more than a missing one. ML-Danbooru has no tag categories; 0.7 is its authors' demo threshold.

``aliases`` are the names the WD14 tagger extension used for the same files: its maintained fork (picobyte) and the
original (toriato), so that scripts written for either keep working against our HTTP API.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
MLD_TAGS_FILE = "classes.json"
DEFAULT_CHARACTER_THRESHOLD = 0.85

WD14 = "wd14"  # NHWC BGR 0-255, padded to a square; selected_tags.csv with categories
MLD = "mld"  # ML-Danbooru: NCHW RGB 0-1, aspect ratio kept; logits; classes.json without categories
FAMILIES = (WD14, MLD)
MLD_INPUT_SIDE = 448  # the short side ML-Danbooru images are resized to (the graphs take any size)
MLD_THRESHOLD = 0.7


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
    family: str = WD14
    model_file: str = MODEL_FILE  # the file names in the hub repository (and in the local folder)
    tags_file: str = TAGS_FILE
    input_side: int | None = None  # mld: the short side to resize to; WD14 graphs say their own size

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family {self.family!r} is not one of {', '.join(FAMILIES)}")


def _mld(name: str, model_file: str) -> ModelSpec:
    return ModelSpec(
        name,
        "deepghs/ml-danbooru-onnx",
        MLD_THRESHOLD,
        MLD_THRESHOLD,
        family=MLD,
        model_file=model_file,
        tags_file=MLD_TAGS_FILE,
        input_side=MLD_INPUT_SIDE,
    )


KNOWN_MODELS: tuple[ModelSpec, ...] = (
    # v3 (dataset v3, 2024): batch axis is dynamic; thresholds from the model cards (v2.0 weights where given).
    # The ".v3" aliases come from the fork's unmerged v3 branch, which some installs run.
    ModelSpec("wd-eva02-large-tagger-v3", "SmilingWolf/wd-eva02-large-tagger-v3", 0.5296),
    ModelSpec("wd-vit-large-tagger-v3", "SmilingWolf/wd-vit-large-tagger-v3", 0.26),
    ModelSpec("wd-swinv2-tagger-v3", "SmilingWolf/wd-swinv2-tagger-v3", 0.2653, aliases=("wd-v1-4-swinv2-tagger.v3",)),
    ModelSpec(
        "wd-convnext-tagger-v3", "SmilingWolf/wd-convnext-tagger-v3", 0.2682, aliases=("wd-v1-4-convnext-tagger.v3",)
    ),
    ModelSpec("wd-vit-tagger-v3", "SmilingWolf/wd-vit-tagger-v3", 0.2614, aliases=("wd-v1-4-vit-tagger.v3",)),
    # WD 1.4 v2 (SW-CV-ModelZoo), the repositories' current weights
    ModelSpec(
        "wd-v1-4-moat-tagger-v2", "SmilingWolf/wd-v1-4-moat-tagger-v2", 0.3771, aliases=("wd-v1-4-moat-tagger.v2",)
    ),
    ModelSpec(
        "wd-v1-4-swinv2-tagger-v2",
        "SmilingWolf/wd-v1-4-swinv2-tagger-v2",
        0.3771,
        aliases=("wd14-swinv2-v1", "wd14-swinv2.v2", "wd14-swinv2-v2-git"),
    ),
    ModelSpec(
        "wd-v1-4-convnextv2-tagger-v2",
        "SmilingWolf/wd-v1-4-convnextv2-tagger-v2",
        0.3710,
        aliases=("wd14-convnextv2.v1", "wd14-convnextv2-v2-git"),
    ),
    ModelSpec(
        "wd-v1-4-convnext-tagger-v2",
        "SmilingWolf/wd-v1-4-convnext-tagger-v2",
        0.3685,
        aliases=("wd14-convnext.v2", "wd14-convnext-v2-git"),
    ),
    ModelSpec(
        "wd-v1-4-vit-tagger-v2", "SmilingWolf/wd-v1-4-vit-tagger-v2", 0.3537, aliases=("wd14-vit.v2", "wd14-vit-v2-git")
    ),
    # The same four at the hub tag v2.0: the original extension's names without "-git" pinned that revision
    ModelSpec(
        "wd-v1-4-swinv2-tagger-v2@v2.0",
        "SmilingWolf/wd-v1-4-swinv2-tagger-v2",
        0.3771,
        aliases=("wd14-swinv2-v2",),
        revision="v2.0",
    ),
    ModelSpec(
        "wd-v1-4-convnextv2-tagger-v2@v2.0",
        "SmilingWolf/wd-v1-4-convnextv2-tagger-v2",
        0.3710,
        aliases=("wd14-convnextv2-v2",),
        revision="v2.0",
    ),
    ModelSpec(
        "wd-v1-4-convnext-tagger-v2@v2.0",
        "SmilingWolf/wd-v1-4-convnext-tagger-v2",
        0.3685,
        aliases=("wd14-convnext-v2",),
        revision="v2.0",
    ),
    ModelSpec(
        "wd-v1-4-vit-tagger-v2@v2.0",
        "SmilingWolf/wd-v1-4-vit-tagger-v2",
        0.3537,
        aliases=("wd14-vit-v2",),
        revision="v2.0",
    ),
    # WD 1.4 v1: no card threshold; 0.35 is what the tagger extensions defaulted to
    ModelSpec(
        "wd-v1-4-convnext-tagger",
        "SmilingWolf/wd-v1-4-convnext-tagger",
        0.35,
        aliases=("wd14-convnext.v1", "wd14-convnext"),
    ),
    ModelSpec("wd-v1-4-vit-tagger", "SmilingWolf/wd-v1-4-vit-tagger", 0.35, aliases=("wd14-vit.v1", "wd14-vit")),
    # ML-Danbooru, the two exports the fork serves (its names are the canonical ones: nobody else named them)
    _mld("mld-caformer.dec-5-97527", "ml_caformer_m36_dec-5-97527.onnx"),
    _mld("mld-tresnetd.6-30000", "TResnet-D-FLq_ema_6-30000.onnx"),
)

DEFAULT_MODEL = "wd-swinv2-tagger-v3"
_FALLBACK_GENERAL_THRESHOLD = 0.35


class ModelNotFoundError(LookupError):
    """A model name that is neither known nor present as a folder; the message lists what is."""


@dataclass(frozen=True)
class ModelFiles:
    """The two files of a model on disk and how to read them."""

    family: str
    model: Path
    tags: Path


def locate_files(folder: str | os.PathLike, spec: ModelSpec | None = None) -> ModelFiles | None:
    """The model's files in ``folder``, or None when it does not hold a usable pair.

    With a ``spec``, its family and file names; without one (a folder the user dropped in), WD14 when
    ``model.onnx`` + ``selected_tags.csv`` are there, ML-Danbooru when ``classes.json`` and exactly one ``.onnx`` are.
    """
    root = Path(folder)
    if not root.is_dir():
        return None
    family = spec.family if spec else None
    if family in (None, WD14):
        model = root / (spec.model_file if spec else MODEL_FILE)
        tags = root / (spec.tags_file if spec else TAGS_FILE)
        if model.is_file() and tags.is_file():
            return ModelFiles(WD14, model, tags)
        if family == WD14:
            return None
    tags = root / (spec.tags_file if spec else MLD_TAGS_FILE)
    if not tags.is_file():
        return None
    model = root / spec.model_file if spec else None
    if model is None or not model.is_file():
        # copied by hand under another name: the folder's only graph
        graphs = sorted(p for p in root.glob("*.onnx") if p.is_file())
        if len(graphs) != 1:
            return None
        model = graphs[0]
    return ModelFiles(MLD, model, tags)


@dataclass(frozen=True)
class ModelEntry:
    """A model as the UI and API list it: known (downloadable) and/or present on disk."""

    name: str
    folder: Path | None  # the folder holding the model's two files, when present on disk
    spec: ModelSpec | None = None  # None for models the user dropped in by hand
    aliases: tuple[str, ...] = field(default=())

    @property
    def is_local(self) -> bool:
        return self.folder is not None

    @property
    def files(self) -> ModelFiles | None:
        return locate_files(self.folder, self.spec) if self.folder is not None else None

    @property
    def family(self) -> str:
        if self.spec is not None:
            return self.spec.family
        files = self.files
        return files.family if files else WD14

    @property
    def general_threshold(self) -> float:
        if self.spec:
            return self.spec.general_threshold
        return MLD_THRESHOLD if self.family == MLD else _FALLBACK_GENERAL_THRESHOLD

    @property
    def character_threshold(self) -> float:
        if self.spec:
            return self.spec.character_threshold
        return MLD_THRESHOLD if self.family == MLD else DEFAULT_CHARACTER_THRESHOLD

    @property
    def names(self) -> tuple[str, ...]:
        """Its own name, then the names other tagger extensions gave it."""
        return (self.name, *self.aliases)


def is_model_folder(folder: str | os.PathLike, spec: ModelSpec | None = None) -> bool:
    """True when ``folder`` holds both files a tagger needs (those of ``spec`` when given)."""
    return locate_files(folder, spec) is not None


def discover_local(models_dir: str | os.PathLike | None) -> dict[str, Path]:
    """``{folder name: folder}`` for every direct sub-folder of ``models_dir`` holding a usable model."""
    if not models_dir:
        return {}
    root = Path(models_dir)
    if not root.is_dir():
        return {}
    known = {spec.name: spec for spec in KNOWN_MODELS}
    found = {}
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith(".") and is_model_folder(child, known.get(child.name)):
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
    """Look ``name`` up among our names and local folders first, then the names other tagger extensions used."""
    wanted = name.strip()
    entries = list_models(models_dir)
    for entry in entries:
        if entry.name == wanted:
            return entry
    for entry in entries:
        if wanted in entry.aliases:
            return entry
    names = ", ".join(e.name for e in entries)
    raise ModelNotFoundError(
        f"unknown tagger model {wanted!r}; choose one of: {names} - or put a folder named {wanted!r} holding "
        f"{MODEL_FILE} and {TAGS_FILE} (or an ML-Danbooru .onnx and {MLD_TAGS_FILE}) into {models_dir}"
    )
