"""Make a module tree's inference tensors usable by autograd for one run, without copying them.

Forge builds its models under ``torch.inference_mode()`` (``backend/loader.py``), so every weight is an inference
tensor, and autograd refuses to save one for backward ("Inference tensors cannot be saved for backward"): even frozen
weights are saved, to compute the gradient of their input. ``thaw`` puts, in place of each inference parameter or
buffer, an ordinary tensor over the same storage (no copy, so no extra memory and in-place edits show through), and
``Thawed.restore`` puts the original objects back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def ordinary_alias(tensor: torch.Tensor) -> torch.Tensor:
    """A normal (non-inference) tensor sharing ``tensor``'s storage, offset, shape and strides."""
    alias = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
    return alias.set_(tensor.untyped_storage(), tensor.storage_offset(), tensor.size(), tensor.stride())


@dataclass
class Thawed:
    # (module, "_parameters" or "_buffers", name, original object)
    swapped: list[tuple[torch.nn.Module, str, str, torch.Tensor]] = field(default_factory=list)

    def restore(self) -> None:
        for module, table, name, original in reversed(self.swapped):
            getattr(module, table)[name] = original
        self.swapped.clear()


def thaw(root: torch.nn.Module) -> Thawed:
    """Swap every inference parameter and buffer under ``root`` for an ordinary alias; returns how to undo it.

    A tensor shared by several modules gets one alias, so sharing (tied weights) survives the swap."""
    done = Thawed()
    aliases: dict[int, torch.Tensor] = {}
    try:
        for module in root.modules():
            for table in ("_parameters", "_buffers"):
                entries = getattr(module, table)
                for name, tensor in list(entries.items()):
                    if tensor is None or not tensor.is_inference():
                        continue
                    alias = aliases.get(id(tensor))
                    if alias is None:
                        alias = ordinary_alias(tensor)
                        if isinstance(tensor, torch.nn.Parameter):
                            alias = torch.nn.Parameter(alias, requires_grad=tensor.requires_grad)
                        aliases[id(tensor)] = alias
                    done.swapped.append((module, table, name, tensor))
                    entries[name] = alias
    except BaseException:
        done.restore()
        raise
    return done
