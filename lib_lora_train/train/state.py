"""Save and resume a run: adapter weights (fp32), optimiser, scheduler and grad-scaler state, and the step reached.

The state folder is written next to its final place and renamed over it, so a stop or crash mid-save leaves the
previous complete state (or none), never a mix. Random numbers need no saving: each step's numbers are derived
from (seed, step) (see noise.py and batches.py).
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from lib_lora_train.fileio import atomic_write_bytes, atomic_write_text

FORMAT = 1


@dataclass
class ResumePoint:
    step: int  # optimiser steps completed
    epoch: int  # epochs completed


def save_training_state(
    folder: Path, *, params: dict[str, torch.nn.Parameter], optimizer, scheduler, scaler, step: int, epoch: int
) -> Path:
    """Write the state of a run that has completed ``step`` optimiser steps into ``folder`` (replacing it)."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tensors = {name: p.detach().float().cpu().contiguous() for name, p in params.items()}
        atomic_write_bytes(tmp / "adapter.safetensors", save(tensors))
        buffer = io.BytesIO()
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()},
            buffer,
        )
        atomic_write_bytes(tmp / "optimizer.pt", buffer.getvalue())
        atomic_write_text(tmp / "state.json", json.dumps({"format": FORMAT, "step": step, "epoch": epoch}))
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_resume_point(folder: Path) -> ResumePoint | None:
    """Where a saved run stopped, or None if ``folder`` holds no complete state."""
    path = Path(folder) / "state.json"
    if not path.exists():
        old = Path(folder).with_name(Path(folder).name + ".old")  # a save interrupted between the two renames
        if not (old / "state.json").exists():
            return None
        path = old / "state.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return ResumePoint(int(data["step"]), int(data["epoch"]))


def load_training_state(
    folder: Path, *, params: dict[str, torch.nn.Parameter], optimizer, scheduler, scaler
) -> ResumePoint:
    """Load a saved state into freshly built adapters/optimiser/scheduler/scaler; returns where to continue."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "state.json").exists() and (folder.with_name(folder.name + ".old") / "state.json").exists():
        folder = folder.with_name(folder.name + ".old")
    point = read_resume_point(folder)
    if point is None:
        raise FileNotFoundError(f"{folder}: no saved training state to resume; train with save_state on first")
    tensors = load_file(str(folder / "adapter.safetensors"))
    missing = sorted(set(params) - set(tensors))
    if missing:
        raise ValueError(
            f"{folder}: the saved state does not fit these settings (e.g. {missing[0]} is missing); "
            "resume with the settings the run was started with"
        )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name].to(p.device, p.dtype))
    blob = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    scaler.load_state_dict(blob["scaler"])
    return point
