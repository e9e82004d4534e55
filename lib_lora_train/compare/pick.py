"""The user's pick: the chosen epoch and weight, recorded in the version and published under a clean name.

Publishing copies the chosen checkpoint to ``<lora dir>/<project>-<version>.safetensors`` and writes the WebUI's
user-metadata sidecar ``<lora dir>/<project>-<version>.json`` (v1.10.1 keys, as its LoRA card editor saves them:
``description``, ``activation text``, ``preferred weight``, ``sd version``, ``negative text``, ``notes``), so the card
inserts ``<lora:NAME:WEIGHT>`` with the chosen weight and the activation text. Keys the user set in the sidecar are
kept; only our description line is replaced. Existing files are kept as ``.bak`` before being overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from lib_lora_train.fileio import atomic_write_text

from .lora_tags import format_weight

PICK_FILE = "pick.json"
DESCRIPTION_MARK = "Epoch Compare pick:"  # our line in the description; replaced, never duplicated


class PickError(ValueError):
    """A pick that cannot be recorded or published; the message names the file and the fix."""


@dataclass
class Pick:
    project: str
    version: str
    epoch: int | None  # None = the final file
    weight: float
    checkpoint: str  # file name of the chosen checkpoint
    picked_at: str = ""
    note: str = ""

    @property
    def epoch_label(self) -> str:
        return "final" if self.epoch is None else f"epoch {self.epoch}"


def record_pick(version_dir: Path, pick: Pick) -> Path:
    """Write ``<version>/pick.json`` (atomically; the previous pick kept as ``pick.json.bak``)."""
    if not version_dir.is_dir():
        raise PickError(f"{version_dir}: the version folder does not exist; was it deleted or renamed?")
    if not pick.picked_at:
        pick.picked_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    path = version_dir / PICK_FILE
    atomic_write_text(path, json.dumps(asdict(pick), indent=2) + "\n", backup=True)
    return path


def load_pick(version_dir: Path) -> Pick | None:
    """The recorded pick, or None when there is none; PickError naming the file when it is damaged."""
    path = version_dir / PICK_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Pick(
            **{k: data[k] for k in ("project", "version", "epoch", "weight", "checkpoint")},
            picked_at=data.get("picked_at", ""),
            note=data.get("note", ""),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise PickError(f"{path}: not a valid pick ({exc}); pick the epoch again or delete the file") from None


@dataclass
class PublishedPick:
    model: Path
    sidecar: Path
    backups: list[Path]
    notes: list[str] = field(default_factory=list)


def _copy_atomic(source: Path, target: Path) -> None:
    temp = target.with_name(f".{target.name}.publishing")
    shutil.copy2(source, temp)
    os.replace(temp, target)


def description_line(pick: Pick) -> str:
    return (
        f"{DESCRIPTION_MARK} {pick.epoch_label} of {pick.project}/{pick.version} ({pick.checkpoint}), "
        f"best at weight {format_weight(pick.weight)}."
    )


def sidecar_metadata(existing: dict, pick: Pick, activation_text: str, sd_version: str = "") -> dict:
    """The user metadata after a publish: our description line and preferred weight; the user's other keys kept."""
    data = dict(existing)
    old = [line for line in str(data.get("description", "")).splitlines() if not line.startswith(DESCRIPTION_MARK)]
    data["description"] = "\n".join([description_line(pick), *old]).strip()
    data["preferred weight"] = round(float(pick.weight), 4)
    if activation_text or "activation text" not in data:
        data["activation text"] = activation_text
    if sd_version:
        data["sd version"] = sd_version  # SD1 / SD2 / SDXL, the names of the WebUI's SdVersion enum
    data.setdefault("negative text", "")
    data.setdefault("notes", "")
    return data


def publish_pick(
    checkpoint: Path, lora_dir: Path, clean_name: str, pick: Pick, *, activation_text: str = "", sd_version: str = ""
) -> PublishedPick:
    """Copy ``checkpoint`` to ``<lora_dir>/<clean_name>.safetensors`` and write its user-metadata sidecar."""
    if not checkpoint.is_file():
        raise PickError(f"{checkpoint}: the chosen checkpoint is missing; render the comparison again and re-pick")
    if not clean_name or any(ch in clean_name for ch in "/\\:<>") or clean_name.startswith("."):
        raise PickError(f"{clean_name!r} cannot be a LoRA file name; use letters, digits, '-' and '_'")
    lora_dir.mkdir(parents=True, exist_ok=True)
    model = lora_dir / f"{clean_name}.safetensors"
    sidecar = lora_dir / f"{clean_name}.json"
    if model.resolve() == checkpoint.resolve():
        raise PickError(f"{model}: is the checkpoint itself; choose another LoRA folder")
    backups = []
    if model.exists():
        # .bak is not a LoRA extension, so the WebUI does not list the backup as a second LoRA
        backup = model.with_name(model.name + ".bak")
        shutil.copy2(model, backup)
        backups.append(backup)
    existing: dict = {}
    if sidecar.is_file():
        try:
            loaded = json.loads(sidecar.read_text(encoding="utf-8"))
            existing = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            existing = {}  # unreadable: the backup below keeps it
        backups.append(sidecar.with_name(sidecar.name + ".bak"))
    _copy_atomic(checkpoint, model)
    text = json.dumps(sidecar_metadata(existing, pick, activation_text, sd_version), indent=4, ensure_ascii=False)
    atomic_write_text(sidecar, text + "\n", backup=sidecar.is_file())
    # the WebUI lists LoRAs by file stem: another file of this name in a sub-folder would shadow one of the two
    clashes = [p for p in lora_dir.rglob(f"{clean_name}.safetensors") if p != model]
    notes = [
        f"{p} has the same name; <lora:{clean_name}:…> may load that one instead, rename or remove it" for p in clashes
    ]
    return PublishedPick(model, sidecar, backups, notes)


def pick_version(
    version,
    epoch: int | None,
    weight: float,
    *,
    lora_dir: Path | None = None,
    activation_text: str = "",
    note: str = "",
) -> tuple[Pick, Path, PublishedPick | None]:
    """Record the pick for ``version`` (a ``VersionPaths``) and, with ``lora_dir``, publish it as
    ``<project>-<version>``. Returns (pick, pick.json path, published files or None)."""
    found = {e: p for e, p in version.list_checkpoints()}
    if epoch not in found:
        have = ", ".join("final" if e is None else str(e) for e in found) or "none"
        raise PickError(f"{version.checkpoints}: no checkpoint for epoch {epoch}; saved: {have}")
    if not -4.0 <= float(weight) <= 4.0:
        raise PickError(f"weight {weight} is outside -4..4")
    pick = Pick(version.project, version.version, epoch, round(float(weight), 4), found[epoch].name, note=note)
    path = record_pick(version.path, pick)
    published = None
    if lora_dir is not None:
        published = publish_pick(found[epoch], lora_dir, version.output_name, pick, activation_text=activation_text)
    return pick, path, published
