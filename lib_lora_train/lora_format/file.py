"""Save and read kohya-format LoRA ``.safetensors`` files.

Saving follows kohya's sd-scripts: every tensor (``alpha`` included) is cast to the save precision, and two hashes
are added to the metadata the way its ``precalculate_safetensors_hashes`` does it, on the bytes of the file
serialised with only the ``ss_*`` metadata:

- ``sshs_model_hash``: sha256 of everything after the 8-byte header length and the JSON header (the tensor bytes;
  these are identical in the final file, so the hash equals what the WebUI computes for the saved file);
- ``sshs_legacy_hash``: the first 8 hex digits of the sha256 of the 0x10000 bytes at offset 0x100000.

The write is atomic (temporary file + rename), so a crash never leaves a half-written LoRA behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from lib_lora_train.fileio import atomic_write_bytes

SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
LEGACY_OFFSET = 0x100000
LEGACY_LENGTH = 0x10000


def model_hash(data: bytes) -> str:
    """sha256 of a safetensors file's bytes after its 8-byte length and JSON header (kohya's "addnet" hash)."""
    header_length = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header_length :]).hexdigest()


def legacy_hash(data: bytes) -> str:
    """First 8 hex digits of the sha256 of 0x10000 bytes at offset 0x100000 (kohya's legacy "addnet" hash)."""
    return hashlib.sha256(data[LEGACY_OFFSET : LEGACY_OFFSET + LEGACY_LENGTH]).hexdigest()[:8]


def _prepare(tensors: Mapping[str, torch.Tensor], precision: str) -> dict[str, torch.Tensor]:
    if precision not in SAVE_DTYPES:
        raise ValueError(f"save precision {precision!r} is not one of: {', '.join(SAVE_DTYPES)}")
    dtype = SAVE_DTYPES[precision]
    return {key: value.detach().to("cpu", dtype).contiguous() for key, value in tensors.items()}


def save_lora_file(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    precision: str = "fp16",
) -> dict[str, str]:
    """Write ``tensors`` with ``metadata`` (all values strings) to ``path``; returns the metadata written.

    Adds ``sshs_model_hash`` and ``sshs_legacy_hash``. ``precision`` is fp16, bf16 or fp32.
    """
    if not tensors:
        raise ValueError(f"{path}: no tensors to save; the network has no adapter layers (check the target modules)")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"{path}: metadata {key!r} must map to a string, got {type(value).__name__}")
    prepared = _prepare(tensors, precision)
    training_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    hashed = save(prepared, training_only)
    written = {**metadata, "sshs_model_hash": model_hash(hashed), "sshs_legacy_hash": legacy_hash(hashed)}
    atomic_write_bytes(path, save(prepared, written))
    return written


@dataclass
class LoraFile:
    """A LoRA file read back: its tensors, metadata, and what kind of network it holds.

    ``modules`` maps each kohya module name to its parts (``{"lora_down.weight": ..., "alpha": ...}``).
    ``rank`` / ``alpha`` are the most common values over the modules that are not 3x3 convolutions, and
    ``conv_rank`` / ``conv_alpha`` over those that are (None when there are none).
    """

    path: Path
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    modules: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    network: str = "lora"
    rank: int | None = None
    alpha: float | None = None
    conv_rank: int | None = None
    conv_alpha: float | None = None

    @property
    def prefixes(self) -> set[str]:
        """The key prefixes present (``lora_unet``, ``lora_te``, ``lora_te1``, ``lora_te2``)."""
        return {name.split("_", 2)[0] + "_" + name.split("_", 2)[1] for name in self.modules}

    def training_tags(self) -> dict[str, dict[str, int]]:
        """``ss_tag_frequency`` decoded ({} when absent or unreadable)."""
        try:
            value = json.loads(self.metadata.get("ss_tag_frequency", "{}"))
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


def read_lora_file(path: str | os.PathLike) -> LoraFile:
    """Load a kohya-format LoRA/LyCORIS file (for resume and inspection). Raises ``ValueError`` naming the file."""
    path = Path(path)
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = dict(handle.metadata() or {})
            names = handle.keys()  # a safe_open handle is not a mapping
            tensors = {key: handle.get_tensor(key) for key in names}
    except FileNotFoundError:
        raise
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path}: not a readable .safetensors LoRA ({error}); re-save or re-download it") from error
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        module, sep, part = key.partition(".")
        if not sep:
            raise ValueError(f"{path}: key {key!r} is not '<module>.<part>'; this is not a kohya-format LoRA")
        modules.setdefault(module, {})[part] = tensor
    result = LoraFile(path=path, tensors=tensors, metadata=metadata, modules=modules)
    _describe(result)
    return result


def _module_shape(parts: Mapping[str, torch.Tensor]) -> tuple[str, int | None, bool]:
    """(kind, rank, is a 3x3 conv) of one module's parts."""
    if "lora_down.weight" in parts:
        down = parts["lora_down.weight"]
        return "lora", int(down.shape[0]), down.dim() == 4 and tuple(down.shape[2:]) != (1, 1)
    if "hada_w1_b" in parts:
        w1b = parts["hada_w1_b"]
        # a flattened conv (r, in*k*k) cannot be told from a linear without the model; CP or 4-D ones can
        return "loha", int(w1b.shape[0]), "hada_t1" in parts or w1b.dim() == 4
    if any(part.startswith("lokr_") for part in parts):
        rank = next((int(parts[p].shape[0]) for p in ("lokr_w2_b", "lokr_w1_b") if p in parts), None)
        conv = any(parts[p].dim() == 4 for p in ("lokr_w2", "lokr_t2") if p in parts)
        return "lokr", rank, conv
    return "unknown", None, False


def _describe(lora: LoraFile) -> None:
    kinds: Counter[str] = Counter()
    plain: Counter[tuple[int | None, float | None]] = Counter()
    conv: Counter[tuple[int | None, float | None]] = Counter()
    for parts in lora.modules.values():
        kind, rank, is_conv = _module_shape(parts)
        kinds[kind] += 1
        alpha = float(parts["alpha"]) if "alpha" in parts else None
        (conv if is_conv else plain)[(rank, alpha)] += 1
    if kinds.get("unknown") == len(lora.modules):
        raise ValueError(f"{lora.path}: no LoRA, LoHa or LoKr parts found; this is not a LoRA file")
    kind = kinds.most_common(1)[0][0]
    lora.network = "locon" if kind == "lora" and conv else kind
    if plain:
        lora.rank, lora.alpha = plain.most_common(1)[0][0]
    if conv:
        lora.conv_rank, lora.conv_alpha = conv.most_common(1)[0][0]
    if lora.rank is None and lora.conv_rank is not None:
        lora.rank, lora.alpha = lora.conv_rank, lora.conv_alpha
