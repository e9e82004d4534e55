"""Out-of-place residual adds in Forge's UNet transformer blocks for the duration of a run.

Forge's ``backend/nn/unet.py`` ``BasicTransformerBlock._forward`` adds each attention and feed-forward output into
its input in place (``x += n``). For inference that saves memory; under autograd it overwrites a tensor that the
preceding LayerNorm saved for backward ("modified by an inplace operation"). ``use_out_of_place_adds`` gives each
block a per-instance ``_forward`` with the same computation for the case training uses (no transformer patches, as
``ForgeHost.predict`` passes none) and ordinary adds; the returned function removes exactly those attributes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from lib_lora_train.webui.shared.host_base import patch_instances


def is_transformer_block(module: torch.nn.Module) -> bool:
    return type(module).__name__ == "BasicTransformerBlock" and hasattr(module, "attn1") and hasattr(module, "ff")


def training_forward(block: torch.nn.Module, x, context=None, transformer_options=None):
    # The order of Forge's block: optional ff_in, self-attention, cross-attention, feed-forward, each residual
    # where the widths allow (is_res).
    options = {"n_heads": block.n_heads, "dim_head": block.d_head}
    if block.ff_in:
        skip = x
        x = block.ff_in(block.norm_in(x))
        if block.is_res:
            x = x + skip
    self_context = context if block.disable_self_attn else None
    x = x + block.attn1(block.norm1(x), context=self_context, value=None, transformer_options=options)
    if block.attn2 is not None:
        x = x + block.attn2(block.norm2(x), context=context, value=None, transformer_options=options)
    out = block.ff(block.norm3(x))
    return out + x if block.is_res else out


def use_out_of_place_adds(unet: torch.nn.Module) -> Callable[[], None]:
    blocks = [module for module in unet.modules() if is_transformer_block(module)]
    return patch_instances(blocks, "_forward", lambda block: functools.partial(training_forward, block))
