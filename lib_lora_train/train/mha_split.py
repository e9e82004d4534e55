"""Split ``nn.MultiheadAttention`` modules into separate q/k/v/out linears for the duration of a training run.

OpenCLIP text encoders (SD2's, SDXL's second) keep their attention projection fused in one ``in_proj_weight``.
peft can only wrap whole ``nn.Linear`` modules, and kohya's files (and the WebUI's loader) want one LoRA per
q, k, v and out projection. ``split_attention`` therefore swaps each attention module for a ``SplitAttention``
with ``nn.Linear`` children ``q_proj``/``k_proj``/``v_proj``/``out_proj`` whose parameters are *views* of the
original tensors (no copy of the frozen weights; in-place edits of the original weights show through), and whose
forward reproduces ``nn.MultiheadAttention``'s. ``MhaSplit.restore`` puts every original module object back.

The original modules are taken out of the tree whole and never touched, so their parameters, flags and modes are
exactly as before whatever happens to the split stand-ins (peft wrapping, ``requires_grad_`` on the tree).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lib_lora_train.train.tree_guard import TreeSnapshot

PARTS = ("q_proj", "k_proj", "v_proj", "out_proj")


class SplitError(RuntimeError):
    """An attention module cannot be split, or the tree could not be restored exactly."""


def _linear_view(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` whose weight/bias are new Parameters sharing storage with the given tensors."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    linear.weight = nn.Parameter(weight.detach(), requires_grad=False)
    linear.bias = nn.Parameter(bias.detach(), requires_grad=False) if bias is not None else None
    return linear


class SplitAttention(nn.Module):
    """Drop-in for one ``nn.MultiheadAttention`` with separate q/k/v/out ``nn.Linear`` children.

    Same call signature and results as the original (``batch_first`` either way, 2-D/3-D float or bool
    ``attn_mask``, ``key_padding_mask``, ``need_weights``). Not supported (refused by ``split_attention``):
    ``add_bias_kv`` and ``add_zero_attn``, which OpenCLIP does not use.
    """

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        if mha.bias_k is not None or mha.add_zero_attn:
            raise SplitError("nn.MultiheadAttention with add_bias_kv / add_zero_attn cannot be split")
        e = mha.embed_dim
        self.embed_dim, self.num_heads, self.head_dim = e, mha.num_heads, mha.head_dim
        self.dropout, self.batch_first = mha.dropout, mha.batch_first
        bias = mha.in_proj_bias
        biases = [None, None, None] if bias is None else [bias[0:e], bias[e : 2 * e], bias[2 * e :]]
        if mha._qkv_same_embed_dim:
            w = mha.in_proj_weight
            weights = [w[0:e], w[e : 2 * e], w[2 * e :]]
        else:
            weights = [mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight]
        self.q_proj = _linear_view(weights[0], biases[0])
        self.k_proj = _linear_view(weights[1], biases[1])
        self.v_proj = _linear_view(weights[2], biases[2])
        self.out_proj = _linear_view(mha.out_proj.weight, mha.out_proj.bias)
        self.train(mha.training)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if not batched:  # unbatched (L, E): as a batch of one
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        tgt_len, bsz, _ = query.shape
        src_len = key.shape[0]
        h, d = self.num_heads, self.head_dim
        # (L, N, E) -> (N, H, L, D)
        q = self.q_proj(query).view(tgt_len, bsz, h, d).permute(1, 2, 0, 3)
        k = self.k_proj(key).view(src_len, bsz, h, d).permute(1, 2, 0, 3)
        v = self.v_proj(value).view(src_len, bsz, h, d).permute(1, 2, 0, 3)
        mask = self._merged_mask(attn_mask, key_padding_mask, q.dtype, bsz, tgt_len, src_len)
        if is_causal and mask is None:
            raise SplitError("is_causal needs attn_mask, as for nn.MultiheadAttention")
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            # explicit softmax, as nn.MultiheadAttention does when it has to return the weights
            scores = (q * d**-0.5) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            probs = scores.softmax(dim=-1)
            weights = probs.mean(dim=1) if average_attn_weights else probs
            if dropout > 0:
                probs = F.dropout(probs, p=dropout)
            out = probs @ v
            if not batched:
                weights = weights.squeeze(0)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, self.embed_dim))
        if not batched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def _merged_mask(self, attn_mask, key_padding_mask, dtype, bsz, tgt_len, src_len) -> torch.Tensor | None:
        """One additive float mask of shape broadcastable to (N, H, L, S); bool True means "do not attend"."""
        mask = None
        if attn_mask is not None:
            mask = _additive(attn_mask, dtype)
            if mask.dim() == 3:  # (N*H, L, S)
                mask = mask.view(bsz, self.num_heads, tgt_len, src_len)
        if key_padding_mask is not None:
            padding = _additive(key_padding_mask, dtype).view(bsz, 1, 1, src_len)
            mask = padding if mask is None else mask + padding
        return mask


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    return mask.to(dtype)


@dataclass
class MhaSplit:
    """The attention modules swapped out of ``root``; ``restore`` puts them back (idempotent)."""

    root: nn.Module
    originals: dict[str, nn.MultiheadAttention]
    snapshot: TreeSnapshot
    restored: bool = field(default=False)

    def split_paths(self, path: str) -> list[str]:
        """The four linear paths that stand for the attention at ``path``."""
        return [f"{path}.{part}" for part in PARTS]

    def restore(self) -> None:
        """Put every original attention module back; raises SplitError if the tree is not exactly as before."""
        if self.restored:
            return
        for path, module in self.originals.items():
            _set_submodule(self.root, path, module)
        self.restored = True
        problems = self.snapshot.differences(self.root)
        if problems:
            raise SplitError("the attention modules were not restored exactly: " + "; ".join(problems[:5]))


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def split_attention(root: nn.Module, paths: list[str]) -> MhaSplit:
    """Swap the ``nn.MultiheadAttention`` at each of ``paths`` under ``root`` for a ``SplitAttention``.

    Builds every stand-in before swapping any, so a refusal leaves the tree untouched.
    """
    snapshot = TreeSnapshot.take(root)
    originals = {}
    for path in paths:
        module = root.get_submodule(path)
        if not isinstance(module, nn.MultiheadAttention):
            raise SplitError(f"{path!r} is a {type(module).__name__}, not an nn.MultiheadAttention")
        originals[path] = module
    stand_ins = {path: SplitAttention(module) for path, module in originals.items()}
    split = MhaSplit(root, originals, snapshot)
    for path, stand_in in stand_ins.items():
        _set_submodule(root, path, stand_in)
    return split
