"""Latents of the training images, encoded once and kept in memory or on disk (like kohya's cache_latents).

An entry is keyed by the image path, its modification time, the bucket and the flip, so an edited image or a new
resolution never reuses a stale latent. Disk entries are safetensors files written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lib_lora_train.fileio import atomic_write_bytes
from lib_lora_train.host import ImageGeometry


@dataclass(frozen=True)
class LatentKey:
    path: str
    mtime_ns: int
    bucket: tuple[int, int]
    flip: bool

    @classmethod
    def of(cls, path: str | os.PathLike, bucket: tuple[int, int], flip: bool) -> LatentKey:
        return cls(str(Path(path).resolve()), os.stat(path).st_mtime_ns, tuple(bucket), bool(flip))

    @property
    def digest(self) -> str:
        return hashlib.sha256(
            json.dumps([self.path, self.mtime_ns, list(self.bucket), self.flip]).encode()
        ).hexdigest()[:32]


Encoder = Callable[[LatentKey], tuple[torch.Tensor, ImageGeometry]]


class LatentCache:
    """``get(key, encode)`` returns (latent (C,h,w) fp32 on the CPU, geometry); ``mode`` is memory, disk or none."""

    def __init__(self, mode: str, folder: Path | None = None):
        if mode == "disk" and folder is None:
            raise ValueError("a disk latent cache needs a folder")
        self.mode = mode
        self.folder = folder
        self._memory: dict[LatentKey, tuple[torch.Tensor, ImageGeometry]] = {}
        self.encoded = 0  # how many times the encoder ran (for tests and the log)

    def _file(self, key: LatentKey) -> Path:
        assert self.folder is not None
        return self.folder / f"{key.digest}.safetensors"

    def contains(self, key: LatentKey) -> bool:
        if self.mode == "memory":
            return key in self._memory
        if self.mode == "disk":
            return self._file(key).exists()
        return False

    def get(self, key: LatentKey, encode: Encoder) -> tuple[torch.Tensor, ImageGeometry]:
        if self.mode == "memory" and key in self._memory:
            return self._memory[key]
        if self.mode == "disk":
            hit = self._read(key)
            if hit is not None:
                return hit
        latent, geometry = encode(key)
        latent = latent.detach().float().cpu()
        self.encoded += 1
        if self.mode == "memory":
            self._memory[key] = (latent, geometry)
        elif self.mode == "disk":
            self._write(key, latent, geometry)
        return latent, geometry

    def _read(self, key: LatentKey) -> tuple[torch.Tensor, ImageGeometry] | None:
        from safetensors import safe_open

        path = self._file(key)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                latent = handle.get_tensor("latent")
            geo = json.loads(meta["geometry"])
            return latent, ImageGeometry(*(tuple(v) for v in geo))
        except Exception:  # SafetensorError, OSError, KeyError, JSON errors: a damaged entry is simply re-encoded
            return None

    def _write(self, key: LatentKey, latent: torch.Tensor, geometry: ImageGeometry) -> None:
        from safetensors.torch import save

        meta = {"geometry": json.dumps([geometry.original_size, geometry.crop_top_left, geometry.target_size])}
        atomic_write_bytes(self._file(key), save({"latent": latent.contiguous()}, metadata=meta))
