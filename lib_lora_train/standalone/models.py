"""The standalone app's base model: which models the picker offers, and the one loaded (a diffusers pipeline).

Without ``--base`` the app uses the tiny SD1 fixture beside the repository (``../shared/fixtures``) or builds a tiny
random model once, so that every tab works on a fresh machine within seconds; it makes noise, not pictures.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "diffusers-tiny-sd1"
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


def is_model(path: Path) -> bool:
    return (path.is_dir() and (path / "model_index.json").is_file()) or (
        path.is_file() and path.suffix in CHECKPOINT_SUFFIXES
    )


def tiny_model(cache: Path) -> Path:
    """The tiny fixture when it is beside the clone, else a tiny random SD1 model built once into ``cache``."""
    if (FIXTURE / "model_index.json").is_file():
        return FIXTURE
    target = cache / "tiny-sd1"
    if not (target / "model_index.json").is_file():
        from lib_lora_train.hosts.tiny_model import save_tiny_model

        log.info("building a tiny random SD1 model in %s", target)
        save_tiny_model(target)
    return target


def candidates(base: Path, extra_dirs: list[Path]) -> list[Path]:
    """What the model picker lists: the base model, its siblings that are models, and the models in ``extra_dirs``."""
    found: list[Path] = [base]
    for folder in [base.parent, *extra_dirs]:
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if is_model(p) and not p.name.startswith("."))
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path.resolve(), None)
    return list(unique)


@dataclass
class LoadedModel:
    path: Path
    pipe: Any
    arch: str  # sd1, sd2, sdxl

    @property
    def label(self) -> str:
        return self.path.name

    def short_hash(self) -> str:
        """The WebUI's short hash of a checkpoint file (sha256, 10 hex digits); "" for a diffusers folder."""
        if not self.path.is_file():
            return ""
        if not hasattr(self, "_hash"):
            from lib_lora_train.hosts.diffusers_host import _file_short_hash

            self._hash = _file_short_hash(self.path)
        return self._hash


class ModelSlot:
    """The loaded base model; switching it holds the GPU lock, so no job or render sees a half-loaded model."""

    def __init__(self, lock: threading.RLock, device: str = "auto"):
        self._lock = lock
        self.device = device
        self.loaded: LoadedModel | None = None

    def load(self, path: Path) -> LoadedModel:
        import torch

        from lib_lora_train.hosts.diffusers_host import DiffusersHost, load_pipeline

        device = torch.device("cuda" if self.device == "auto" and torch.cuda.is_available() else
                              self.device.replace("auto", "cpu"))  # fmt: skip
        dtype = torch.float16 if device.type == "cuda" else None
        with self._lock:
            pipe = load_pipeline(path, dtype=dtype).to(device)
            arch = DiffusersHost(pipe).model_parts().arch
            self.loaded = LoadedModel(Path(path), pipe, arch)
            return self.loaded
