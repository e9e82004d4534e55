"""kohya's network, rank and module dropout for peft's LoRA / LoCon layers, as forward hooks.

What kohya's LoRA module (sd-scripts networks/lora.py) does in training mode, and these hooks reproduce:

- ``network_dropout`` p: dropout on the *output* of ``lora_down`` (peft's own ``lora_dropout`` drops its input);
- ``rank_dropout`` p: per sample, each rank of ``lora_down``'s output is kept with probability 1 - p, and the update
  is scaled by 1 / (1 - p) ("as if the rank changed");
- ``module_dropout`` p: with probability p a module adds no update for that forward.

The draws come from torch's global generators, which the loop seeds from (seed, step) before each step, so a run is
reproducible and a resumed run draws what the uninterrupted one drew. Gradient checkpointing recomputes a forward
with the generator state it had, so the recomputation draws the same masks. In eval mode (sample images) nothing
is dropped. LoHa / LoKr use peft's own ``rank_dropout`` / ``module_dropout`` instead (see ``adapters.peft_config``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

ADAPTER = "default"


def wants_hooks(settings) -> bool:
    """Whether the run's LoRA / LoCon layers need dropout hooks."""
    return settings.network in ("lora", "locon") and bool(
        settings.network_dropout or settings.rank_dropout or settings.module_dropout
    )


def attach_dropouts(layers: Iterable[nn.Module], settings) -> list[RemovableHandle]:
    """Hooks on each peft LoRA layer of ``layers`` (others are skipped) for the settings' dropouts; remove them with
    ``handle.remove()`` before the layers are taken out."""
    hooks: list[RemovableHandle] = []
    network_p, rank_p, module_p = settings.network_dropout, settings.rank_dropout, settings.module_dropout
    for layer in layers:
        downs = getattr(layer, "lora_A", None)
        if downs is None or ADAPTER not in downs:
            continue
        down = downs[ADAPTER]
        if network_p or rank_p:
            hooks.append(down.register_forward_hook(_down_output_hook(network_p, rank_p)))
        if module_p:
            hooks.append(layer.register_forward_pre_hook(_module_skip_hook(module_p)))
            hooks.append(layer.register_forward_hook(_module_restore_hook))
    return hooks


def _down_output_hook(network_p: float, rank_p: float):
    def hook(module: nn.Module, args, output: torch.Tensor):
        if not module.training:
            return None
        out = output
        if network_p:
            out = torch.nn.functional.dropout(out, p=network_p, training=True)
        if rank_p:
            out = out * rank_keep_mask(out, rank_p, conv=isinstance(module, nn.Conv2d))
        return out

    return hook


def rank_keep_mask(lx: torch.Tensor, p: float, *, conv: bool) -> torch.Tensor:
    """A (batch, rank) keep mask drawn with probability 1 - p, divided by 1 - p and shaped to broadcast over ``lx``:
    the rank is dim 1 of a convolution's output (B, r, H, W) and the last dim of a linear's (B, [tokens,] r)."""
    batch, rank = lx.shape[0], lx.shape[1] if conv else lx.shape[-1]
    keep = (torch.rand((batch, rank), device=lx.device) > p).to(lx.dtype) / (1.0 - p)
    if conv:
        return keep.view(batch, rank, *[1] * (lx.dim() - 2))
    return keep.view(batch, *[1] * (lx.dim() - 2), rank)


def _module_skip_hook(p: float):
    def hook(layer: nn.Module, args):
        # the CPU generator, like kohya's torch.rand(1): one draw per module forward, no device sync
        if layer.training and torch.rand(1).item() < p:
            # peft's layers run only their base layer while this flag is set (enable_adapters() would also change
            # requires_grad); the forward hook clears it again
            layer._disable_adapters = True
        return None

    return hook


def _module_restore_hook(layer: nn.Module, args, output):
    layer._disable_adapters = False
    return None
