"""Take the LoRA that Forge has merged into the loaded model out for a run, and put exactly the same tensors back.

Forge (``backend/patcher/lora.py``) merges LoRA patches into the weights when a patcher is loaded, keeping each
original in ``model.lora_loader.backup`` (parameter path -> tensor, on the offload device) and recording what it
merged in ``lora_loader.loaded_hash``; it re-merges only when that hash changes. Training on top of a merge would
bake the user's last LoRA into the new one. ``take_out`` puts the originals in place of the merged tensors and keeps
the merged ones; ``PatchesOut.put_back`` restores those very objects, so the loader's state (backup, hash) stays
true and the next generation needs no re-merge. Online LoRAs (``forge_online_loras`` on a layer, used for
quantised models) are taken off and put back the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def _parent(root: torch.nn.Module, path: str) -> tuple[torch.nn.Module, str]:
    obj = root
    *parents, name = path.split(".")
    for part in parents:
        obj = getattr(obj, part)
    return obj, name


@dataclass
class PatchesOut:
    merged: list[tuple[torch.nn.Module, str, torch.Tensor]] = field(default_factory=list)
    online: list[tuple[torch.nn.Module, dict]] = field(default_factory=list)

    @property
    def layers(self) -> int:
        return len(self.merged) + len(self.online)

    def put_back(self) -> None:
        for module, name, tensor in reversed(self.merged):
            setattr(module, name, tensor)
        for module, patches in self.online:
            module.forge_online_loras = patches
        self.merged.clear()
        self.online.clear()


def take_out(root: torch.nn.Module, loader=None) -> PatchesOut:
    """Originals in place of merged LoRA weights under ``root`` (whose ``lora_loader`` Forge attached)."""
    loader = loader if loader is not None else getattr(root, "lora_loader", None)
    out = PatchesOut()
    try:
        for path, original in dict(getattr(loader, "backup", None) or {}).items():
            module, name = _parent(root, path)
            current = getattr(module, name)
            if current is original:
                continue
            if not isinstance(original, torch.nn.Parameter):
                original = torch.nn.Parameter(original, requires_grad=False)
            # The backup sits on Forge's offload device; the run needs it where the merged weight is.
            if original.device != current.device:
                original = torch.nn.Parameter(original.to(current.device), requires_grad=False)
            out.merged.append((module, name, current))
            setattr(module, name, original)
        for module in root.modules():
            patches = module.__dict__.get("forge_online_loras")
            if patches:
                out.online.append((module, patches))
                del module.forge_online_loras
    except BaseException:
        out.put_back()
        raise
    return out


def originals_by_id(root: torch.nn.Module, loader=None) -> dict[int, torch.Tensor]:
    """{id(live parameter): original} for the merged weights, so that a fingerprint describes the model itself."""
    loader = loader if loader is not None else getattr(root, "lora_loader", None)
    found = {}
    for path, original in dict(getattr(loader, "backup", None) or {}).items():
        module, name = _parent(root, path)
        current = getattr(module, name, None)
        if current is not None:
            found[id(current)] = original
    return found
