"""What each bootstrap round wrote, on disk, so that the loop resumes at the step it was in after a restart.

    versions/<v>/bootstrap/state.json         the loop's settings and the phase it reached
    versions/<v>/bootstrap/round-N/candidates/ one PNG per view x seed (with its generation parameters)
    versions/<v>/bootstrap/round-N/scores.json every candidate's score and reasons
    versions/<v>/bootstrap/round-N/selection.json  the files kept and rejected, and whether by hand

A round belongs to the version whose LoRA generated its candidates; the kept images grow the dataset of the next
version (``version.json`` records ``parent``, ``bootstrap_round``, ``candidates`` and ``selection``).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lib_lora_train.bootstrap.prompts import CandidatePrompt
from lib_lora_train.bootstrap.scoring import CandidateScore
from lib_lora_train.fileio import atomic_write_text
from lib_lora_train.store.versions import VersionPaths, now_iso

PHASES = ("train", "generate", "score", "select", "grow", "done")


@dataclass
class LoopState:
    """The loop's settings (chosen once at the start, the same in every round's copy) and where it is."""

    activation_tag: str
    traits: list[str]
    targets: list[int]
    views: list[str]
    seeds_per_view: int = 2
    seed: int = 42
    resolution: int = 512
    arch: str = "sd1"
    auto_select: bool = True
    base: dict = field(default_factory=dict)  # training settings the user set beyond the preset
    weight: float | None = None  # None: the best cell of a comparison, else 0.8
    epoch: int | None = None  # None: the best cell of a comparison, else the last epoch
    round: int = 1
    phase: str = "train"
    updated: str = ""
    notes: list[str] = field(default_factory=list)
    timings: list[dict] = field(default_factory=list)  # {round, phase, seconds, model_seconds} per finished phase

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"bootstrap phase {self.phase!r} is not one of {', '.join(PHASES)}")


def state_file(version: VersionPaths) -> Path:
    return version.path / "bootstrap" / "state.json"


def read_state(version: VersionPaths) -> LoopState | None:
    path = state_file(version)
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return LoopState(**{k: v for k, v in data.items() if k in LoopState.__dataclass_fields__})


def write_state(version: VersionPaths, state: LoopState) -> None:
    state.updated = now_iso()
    atomic_write_text(state_file(version), json.dumps(asdict(state), indent=2) + "\n")


@dataclass(frozen=True)
class RoundFiles:
    version: VersionPaths
    number: int

    @property
    def folder(self) -> Path:
        return self.version.path / "bootstrap" / f"round-{self.number}"

    @property
    def candidates(self) -> Path:
        return self.folder / "candidates"

    @property
    def scores(self) -> Path:
        return self.folder / "scores.json"

    @property
    def selection(self) -> Path:
        return self.folder / "selection.json"

    def candidate_file(self, prompt: CandidatePrompt) -> Path:
        slug = re.sub(r"[^a-z0-9]+", "-", prompt.view.lower()).strip("-") or "view"
        return self.candidates / f"{slug}-s{prompt.seed}.png"

    def missing(self, prompts: Sequence[CandidatePrompt]) -> list[CandidatePrompt]:
        """The prompts whose candidate is not on disk yet (a resumed round renders only these)."""
        return [p for p in prompts if not self.candidate_file(p).is_file()]

    def save_scores(self, scores: Sequence[CandidateScore]) -> None:
        atomic_write_text(self.scores, json.dumps([s.to_dict() for s in scores], indent=2) + "\n")

    def load_scores(self) -> list[CandidateScore] | None:
        if not self.scores.is_file():
            return None
        return [CandidateScore.from_dict(d) for d in json.loads(self.scores.read_text(encoding="utf-8"))]

    def save_selection(self, kept: Sequence[str], rejected: Sequence[str], *, auto: bool, target: int) -> None:
        data = {"kept": list(kept), "rejected": list(rejected), "auto": auto, "target": target, "at": now_iso()}
        atomic_write_text(self.selection, json.dumps(data, indent=2) + "\n")

    def load_selection(self) -> dict | None:
        return json.loads(self.selection.read_text(encoding="utf-8")) if self.selection.is_file() else None


def grow(parent: VersionPaths, child: VersionPaths, round_files: RoundFiles, kept: dict[str, str], *,
         folder_name: str, repeats: int) -> Path:  # fmt: skip
    """Build the child's dataset: the parent's images and captions plus the kept candidates (``kept``: file name ->
    caption), all in one ``<repeats>_<folder_name>`` folder so that images x repeats land in the guides' band.

    Built beside the dataset and renamed into place, so an interrupted grow leaves no half dataset."""
    child.update_info(bootstrap_parent=parent.version, bootstrap_round=round_files.number)  # found again on resume
    staging = child.path / ".dataset-grow"
    shutil.rmtree(staging, ignore_errors=True)
    target = staging / f"{repeats}_{folder_name}"
    target.mkdir(parents=True)
    for image in sorted(p for p in parent.dataset.rglob("*") if p.is_file() and p.suffix.lower() != ".txt"):
        name = f"{image.parent.name.split('_', 1)[-1]}-{image.name}" if image.parent != parent.dataset else image.name
        shutil.copy2(image, target / name)
        caption = image.with_suffix(".txt")
        if caption.is_file():
            shutil.copy2(caption, (target / name).with_suffix(".txt"))
    for name, caption in kept.items():
        source = round_files.candidates / name
        copied = target / f"r{round_files.number}-{name}"
        shutil.copy2(source, copied)
        atomic_write_text(copied.with_suffix(".txt"), caption)
    if child.dataset.exists():
        shutil.rmtree(child.dataset)
    staging.rename(child.dataset)
    child.update_info(parent=parent.version, bootstrap_round=round_files.number,
                      candidates=str(round_files.candidates), selection=str(round_files.selection))  # fmt: skip
    return child.dataset
