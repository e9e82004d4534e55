"""DoRA (weight-decomposed LoRA) as the loaders read it: a ``<module>.dora_scale`` tensor beside the LoRA parts.

The A1111 WebUI v1.10 (``network.py``, ``apply_weight_decompose``), ComfyUI (``weight_decompose``) and LyCORIS
(``wd_on_out=False``) rebuild a layer's weight from its original ``W``, the LoRA delta ``D`` (``up @ down`` times
``alpha / rank``, shaped like ``W``) and ``dora_scale`` ``m`` as

    W' = m * (W + D) / ||W + D||

where the norm is taken over every dimension but dim 1, i.e. once per *input* channel, and ``m`` has the shape
``(1, in)`` for a Linear and ``(1, in, 1, 1)`` for a Conv2d. ComfyUI tells this axis from the other (per output row)
by ``m.shape[0] != W.shape[0]``, which holds for every layer with more than one output. Note that peft's
``use_dora`` normalises per output row, so its layers cannot be written this way.
"""

from __future__ import annotations

import torch

PART = "dora_scale"


def input_norms(weight: torch.Tensor) -> torch.Tensor:
    """The L2 norm of ``weight`` per input channel (over every dim but 1), shaped ``(1, in, 1, ...)`` like
    ``dora_scale``: ``(1, in)`` for a Linear weight, ``(1, in, 1, 1)`` for a Conv2d one."""
    columns = weight.transpose(0, 1).reshape(weight.shape[1], -1)
    return columns.norm(dim=1).reshape(1, weight.shape[1], *[1] * (weight.dim() - 2))


def decomposed_weight(weight: torch.Tensor, delta: torch.Tensor, dora_scale: torch.Tensor) -> torch.Tensor:
    """``dora_scale * (weight + delta) / input_norms(weight + delta)``: the layer's weight as the loaders rebuild it.

    A zero column (norm 0) would give 0/0; it is kept at 0 instead, which changes nothing where the norm is not 0.
    """
    merged = weight + delta.reshape(weight.shape)
    norms = input_norms(merged).clamp_min(torch.finfo(merged.dtype).tiny)
    return merged * (dora_scale.reshape(norms.shape).to(merged.dtype) / norms)
