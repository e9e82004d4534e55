"""Stand in a real ``nn.Linear`` for each of Forge's own Linear layers for the duration of a run.

Forge builds its UNet and text encoders with ``backend.operations.ForgeOperations.Linear``, a plain ``nn.Module``
(not an ``nn.Linear`` subclass) whose weight and bias are set when the checkpoint loads. peft, and our key naming,
only recognise ``nn.Linear``. ``swap_linears`` puts an ``nn.Linear`` holding the *same* Parameter objects at each
such path (nothing copied), and ``LinearSwap.restore`` puts every original module object back. Forge's Conv2d
already subclasses ``nn.Conv2d`` and is left in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


class SwapError(RuntimeError):
    """A Forge layer cannot be stood in for (quantised weights), or the tree could not be restored."""


def is_forge_linear(module: nn.Module) -> bool:
    """Forge's Linear: named Linear, not an ``nn.Linear``, with ``in_features``/``out_features`` and a weight."""
    return (
        type(module).__name__ == "Linear"
        and not isinstance(module, nn.Linear)
        and hasattr(module, "in_features")
        and hasattr(module, "out_features")
        and "weight" in module._parameters
    )


class LinearStandIn(nn.Linear):
    """``nn.Linear`` over another layer's Parameters. Like Forge's manual cast, the weights follow the input's
    dtype and device when they differ (Forge keeps fp16 storage under fp32 compute on some cards)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if weight.dtype != x.dtype or weight.device != x.device:
            weight = weight.to(device=x.device, dtype=x.dtype)
            bias = bias.to(device=x.device, dtype=x.dtype) if bias is not None else None
        return F.linear(x, weight, bias)


def stand_in_for(layer: nn.Module) -> LinearStandIn:
    weight, bias = layer._parameters.get("weight"), layer._parameters.get("bias")
    if weight is None or weight.dim() != 2 or not weight.is_floating_point() or weight.element_size() < 2:
        raise SwapError(
            f"a {type(layer).__module__}.Linear holds {getattr(weight, 'dtype', None)} weights (a quantised model: "
            "fp8, NF4 or GGUF), which Train Tools cannot train on; load an fp16/bf16/fp32 checkpoint"
        )
    if getattr(layer, "scale_weight", None) is not None or getattr(layer, "forge_online_loras", None):
        raise SwapError("a Forge Linear carries scaled or online-LoRA weights; load the plain checkpoint to train")
    stand_in = LinearStandIn(layer.in_features, layer.out_features, bias=bias is not None, device="meta")
    stand_in.weight = weight  # the same Parameter objects: no copy, and the fingerprint sees the same tensors
    stand_in.bias = bias
    stand_in.train(layer.training)
    return stand_in


@dataclass
class LinearSwap:
    root: nn.Module
    originals: dict[str, nn.Module] = field(default_factory=dict)

    def restore(self) -> None:
        for path, original in self.originals.items():
            _set(self.root, path, original)
        self.originals.clear()


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def swap_linears(root: nn.Module) -> LinearSwap:
    """Stand in ``nn.Linear`` for every Forge Linear under ``root``; checks every layer before changing any."""
    found = [(path, m) for path, m in root.named_modules() if is_forge_linear(m)]
    stand_ins = {path: stand_in_for(m) for path, m in found}
    swap = LinearSwap(root)
    try:
        for path, layer in found:
            _set(root, path, stand_ins[path])
            swap.originals[path] = layer
    except BaseException:
        swap.restore()
        raise
    return swap
