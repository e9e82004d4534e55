"""DoRA adapter layers (``dora_wd``): LoRA whose merged weight is renormalised per input channel to a trained scale.

peft's ``use_dora`` normalises per output row, which the WebUI, ComfyUI and LyCORIS files cannot express (see
``lora_format.dora``), so the layer is our own. It has the shape the rest of the engine expects of a peft LoRA
layer: the original module as ``base_layer``, ``lora_A`` / ``lora_B`` holding the down / up projections under the
adapter name, ``r`` / ``lora_alpha`` / ``scaling`` dicts, plus ``dora_scale`` (a ParameterDict, same adapter name)
— so ``adapters`` puts the original back by the same bookkeeping and ``peft_bridge`` reads and writes it as a LoRA
with one more part.

At the start ``lora_B`` is zero and ``dora_scale`` holds the input-channel norms of the original weight, so the
layer computes exactly what the original does. Each forward computes the merged weight's input-channel norms (the
cost of DoRA: one merged weight per layer) and applies ``(W + delta) * dora_scale / norms`` — the weight the
loaders rebuild (``lora_format.dora.decomposed_weight``, ``effective_weight``) — as the original layer plus the
down/up projections on the input scaled per channel. Gradients reach down, up and the scale, also through the norm.
"""

from __future__ import annotations

import torch
from torch import nn

from lib_lora_train.lora_format.dora import decomposed_weight, input_norms

ADAPTER = "default"


class DoraLayer(nn.Module):
    """A DoRA adapter around one ``nn.Linear`` or ``nn.Conv2d`` (the conv's down projection has its kernel)."""

    def __init__(self, base_layer: nn.Module, rank: int, alpha: float, adapter: str = ADAPTER):
        super().__init__()
        if not isinstance(base_layer, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"DoRA wraps Linear and Conv2d layers, not {type(base_layer).__name__}")
        if isinstance(base_layer, nn.Conv2d) and (base_layer.groups != 1 or base_layer.padding_mode != "zeros"):
            raise TypeError("DoRA wraps plain convolutions (groups 1, zero padding)")
        self.base_layer = base_layer
        weight = base_layer.weight
        kw = dict(bias=False, device=weight.device, dtype=torch.float32)
        if isinstance(base_layer, nn.Linear):
            down = nn.Linear(base_layer.in_features, rank, **kw)  # kaiming-uniform like peft's lora_A
            up = nn.Linear(rank, base_layer.out_features, **kw)
        else:
            c = base_layer
            down = nn.Conv2d(c.in_channels, rank, c.kernel_size, c.stride, c.padding, c.dilation, **kw)
            up = nn.Conv2d(rank, c.out_channels, 1, **kw)
        nn.init.zeros_(up.weight)
        self.lora_A = nn.ModuleDict({adapter: down})
        self.lora_B = nn.ModuleDict({adapter: up})
        self.r = {adapter: rank}
        self.lora_alpha = {adapter: alpha}
        self.scaling = {adapter: alpha / rank}
        with torch.no_grad():
            norms = input_norms(weight.detach().float())
        self.dora_scale = nn.ParameterDict({adapter: nn.Parameter(norms)})
        self.adapter = adapter

    def delta_weight(self) -> torch.Tensor:
        """``scaling * up @ down`` shaped like the original weight (float32)."""
        down, up = self.lora_A[self.adapter].weight, self.lora_B[self.adapter].weight
        product = up.flatten(1) @ down.flatten(1)
        return product.reshape(self.base_layer.weight.shape) * self.scaling[self.adapter]

    def effective_weight(self) -> torch.Tensor:
        """The weight this layer computes with (float32): what a loader rebuilds from the saved file."""
        weight = self.base_layer.weight.float()
        return decomposed_weight(weight, self.delta_weight(), self.dora_scale[self.adapter])

    def input_scale(self) -> torch.Tensor:
        """``dora_scale / input_norms(W + delta)``: the factor each input channel of the merged weight is scaled by."""
        merged = self.base_layer.weight.float() + self.delta_weight()
        return self.dora_scale[self.adapter] / input_norms(merged).clamp_min(torch.finfo(merged.dtype).tiny)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, "_disable_adapters", False):  # a skipped module (module_dropout, dropouts.py)
            return self.base_layer(x)
        # (W + delta) * diag(c) applied to x is (W + delta) applied to x * c: the original layer and the down/up
        # projections run as in a LoRA (so the dropout hooks on lora_A apply), on the input scaled per channel
        scaled = x * self.input_scale().to(x.dtype)
        down, up = self.lora_A[self.adapter], self.lora_B[self.adapter]
        update = up(down(scaled.to(down.weight.dtype))) * self.scaling[self.adapter]
        result = self.base_layer(scaled)
        return result + update.to(result.dtype)


def wrap_with_dora(root: nn.Module, paths: list[str], rank: int, alpha: float) -> None:
    """Replace the module at each of ``paths`` under ``root`` by a ``DoraLayer`` around it."""
    for path in paths:
        parent_path, _, name = path.rpartition(".")
        parent = root.get_submodule(parent_path) if parent_path else root
        setattr(parent, name, DoraLayer(getattr(parent, name), rank, alpha))
