"""Fingerprint and restore the state of a host's model, so that training leaves it exactly as it found it.

``fingerprint`` hashes what the user would notice if it changed: every parameter and buffer's bytes, the module tree
(which objects sit where), ``requires_grad`` flags, devices and dtypes, train/eval modes and per-instance ``forward``
patches. ``ModuleSnapshot`` records the cheap parts of that state (not the weights) and puts them back on every exit
path, as a safety net under the engine's own clean-up. Only torch is imported: the same code checks any host.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class PartFingerprint:
    """One model part's state, split so that a difference says what changed."""

    weights: str  # sha256 over parameter and buffer names and bytes
    structure: str  # sha256 over module paths, classes, object ids and instance forward patches
    flags: str  # sha256 over requires_grad and training flags
    placement: str  # sha256 over devices and dtypes
    tensors: int


def _sha(items) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(item if isinstance(item, bytes) else repr(item).encode())
    return digest.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().reshape(-1).contiguous().cpu()
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def merged_lora_originals(module: torch.nn.Module) -> dict[int, torch.Tensor]:
    """{id(parameter): original tensor} for the layers into which the WebUI's built-in Lora extension has merged a
    LoRA (v1.10.x keeps the originals in ``network_weights_backup`` / ``network_bias_backup``)."""
    originals: dict[int, torch.Tensor] = {}
    for layer in module.modules():
        weights, bias = getattr(layer, "network_weights_backup", None), getattr(layer, "network_bias_backup", None)
        if getattr(layer, "network_current_names", ()) == () or (weights is None and bias is None):
            continue  # nothing merged: the live weights are the originals
        if isinstance(layer, torch.nn.MultiheadAttention):
            if weights is not None:
                originals[id(layer.in_proj_weight)], originals[id(layer.out_proj.weight)] = weights
            if bias is not None:
                originals[id(layer.out_proj.bias)] = bias
            continue
        if weights is not None:
            originals[id(layer.weight)] = weights
        if bias is not None and getattr(layer, "bias", None) is not None:
            originals[id(layer.bias)] = bias
    return originals


def fingerprint_module(
    module: torch.nn.Module, *, live: bool = False, originals: Mapping[int, torch.Tensor] | None = None
) -> PartFingerprint:
    """Hash one module tree (weights read on the CPU; a full SDXL takes a few seconds).

    By default a LoRA that the WebUI merged into the weights is hashed as the original weights it keeps as backup, so
    the value describes the model itself, not which LoRA the last generation used; ``live=True`` hashes the weights
    as they are in memory. ``originals`` ({id(tensor): original}) names the merged weights for hosts that keep their
    backups elsewhere (Forge's ``lora_loader``).
    """
    tensors = list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers(remove_duplicate=False))
    if live:
        originals = {}
    elif originals is None:
        originals = merged_lora_originals(module)
    weights = _sha(
        x for name, t in tensors for x in (name.encode(), str(t.dtype).encode(), _tensor_bytes(originals.get(id(t), t)))
    )
    structure = _sha(
        (name, type(m).__qualname__, id(m), id(m.__dict__.get("forward"))) for name, m in module.named_modules()
    )
    flags = _sha(
        [(name, p.requires_grad) for name, p in module.named_parameters(remove_duplicate=False)]
        + [(name, m.training) for name, m in module.named_modules()]
    )
    placement = _sha((name, str(t.device), str(t.dtype)) for name, t in tensors)
    return PartFingerprint(weights, structure, flags, placement, len(tensors))


def fingerprint(
    parts: Mapping[str, torch.nn.Module], *, live: bool = False, originals: Mapping[int, torch.Tensor] | None = None
) -> dict[str, PartFingerprint]:
    """Fingerprint each named part (``unet``, ``text_encoder``, ``vae``…); see ``fingerprint_module``."""
    return {name: fingerprint_module(module, live=live, originals=originals) for name, module in parts.items()}


def differences(before: Mapping[str, PartFingerprint], after: Mapping[str, PartFingerprint]) -> list[str]:
    """Human-readable list of what changed between two fingerprints; empty when identical."""
    changed = []
    for name in sorted(set(before) | set(after)):
        if name not in before or name not in after:
            changed.append(f"{name}: part appeared or disappeared")
            continue
        for aspect in ("weights", "structure", "flags", "placement", "tensors"):
            if getattr(before[name], aspect) != getattr(after[name], aspect):
                changed.append(f"{name}: {aspect} changed")
    return changed


@dataclass
class ModuleSnapshot:
    """The restorable, weight-free state of a module tree: children, flags, modes, placement and forward patches."""

    children: list[tuple[torch.nn.Module, dict[str, torch.nn.Module | None]]] = field(default_factory=list)
    requires_grad: list[tuple[torch.nn.Parameter, bool]] = field(default_factory=list)
    training: list[tuple[torch.nn.Module, bool]] = field(default_factory=list)
    placement: list[tuple[torch.nn.Module, str, torch.device, torch.dtype]] = field(default_factory=list)
    forwards: list[tuple[torch.nn.Module, object]] = field(default_factory=list)

    @classmethod
    def capture(cls, root: torch.nn.Module) -> ModuleSnapshot:
        snap = cls()
        for module in root.modules():
            snap.children.append((module, dict(module._modules)))
            snap.training.append((module, module.training))
            snap.forwards.append((module, module.__dict__.get("forward")))
            for name, param in module._parameters.items():
                if param is not None:
                    snap.requires_grad.append((param, param.requires_grad))
                    snap.placement.append((module, name, param.device, param.dtype))
        return snap

    def restore(self) -> list[str]:
        """Put everything recorded back; returns what had to be repaired (empty when the engine cleaned up)."""
        repaired = []
        for module, children in self.children:
            if dict(module._modules) != children:
                repaired.append(f"{type(module).__name__}: child modules put back")
                module._modules.clear()
                module._modules.update(children)
        for module, forward in self.forwards:
            if module.__dict__.get("forward") is not forward:
                repaired.append(f"{type(module).__name__}: forward patch removed")
                if forward is None:
                    del module.forward
                else:
                    module.forward = forward
        for param, flag in self.requires_grad:
            if param.requires_grad != flag:
                param.requires_grad_(flag)
        for module, mode in self.training:
            module.training = mode
        for module, name, device, dtype in self.placement:
            param = module._parameters.get(name)
            if param is not None and (param.device != device or param.dtype != dtype):
                repaired.append(f"{type(module).__name__}.{name}: moved back to {device} {dtype}")
                param.data = param.data.to(device=device, dtype=dtype)
        return repaired
