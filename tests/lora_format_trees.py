"""Builders of tiny module trees for the LoRA-format tests (not a test module itself).

``tree_from_state_dict`` rebuilds a module tree whose paths and leaf types mirror a checkpoint's keys: a key
``a.b.weight`` of rank 2 becomes an ``nn.Linear`` at ``a.b``, rank 4 an ``nn.Conv2d`` with the stored kernel size,
and every other parent is an empty container. That is all the LoRA naming looks at, so the WebUI's ldm/sgm UNets
can be stood in for without importing ldm or sgm.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

REPO = Path(__file__).resolve().parents[1]
# CI keeps ../shared beside the clone; a git worktree sits one level deeper, so look upwards for it.
FIXTURES = next(
    (parent / "shared" / "fixtures" for parent in REPO.parents if (parent / "shared" / "fixtures").is_dir()),
    REPO.parent / "shared" / "fixtures",
)
WEBUI_TINY = FIXTURES / "webui-tiny"
DIFFUSERS_SD1 = FIXTURES / "diffusers-tiny-sd1"


class Container(nn.Module):
    """A named node of a stand-in tree."""


def tree_from_shapes(shapes: dict[str, tuple[int, ...]]) -> nn.Module:
    """Module tree from ``{module path: weight shape}``; rank-2 shapes become Linear, rank-4 Conv2d."""
    root = Container()
    for path, shape in shapes.items():
        if path.endswith(".in_proj"):
            _add_mha(root, path[: -len(".in_proj")], shape[1])
    for path, shape in shapes.items():
        parent = root
        parts = path.split(".")
        for part in parts[:-1]:
            if not hasattr(parent, part):
                parent.add_module(part, Container())
            parent = getattr(parent, part)
        if hasattr(parent, parts[-1]):  # the out_proj of a MultiheadAttention made below
            continue
        if parts[-1] == "in_proj":  # OpenCLIP's fused attention: the whole nn.MultiheadAttention sits at the parent
            continue
        if len(shape) == 2:
            leaf = nn.Linear(shape[1], shape[0], device="meta")
        else:
            leaf = nn.Conv2d(shape[1], shape[0], tuple(shape[2:]), device="meta")
        parent.add_module(parts[-1], leaf)
    return root


def _add_mha(root: nn.Module, path: str, dim: int) -> None:
    parent = root
    parts = path.split(".")
    for part in parts[:-1]:
        if not hasattr(parent, part):
            parent.add_module(part, Container())
        parent = getattr(parent, part)
    parent.add_module(parts[-1], nn.MultiheadAttention(dim, 1, device="meta"))


def shapes_from_checkpoint(path: Path, prefix: str) -> dict[str, tuple[int, ...]]:
    """``{module path: shape}`` of the Linear/Conv2d weights under ``prefix`` in a safetensors checkpoint."""
    shapes: dict[str, tuple[int, ...]] = {}
    with safe_open(str(path), "pt") as handle:
        names = handle.keys()  # a safe_open handle is not a mapping
        for key in names:
            if not key.startswith(prefix):
                continue
            # OpenCLIP stores its fused attention projection as "<attn>.in_proj_weight": keep it as "<attn>.in_proj"
            stem = (
                key[: -len(".weight")]
                if key.endswith(".weight")
                else key[: -len("_weight")]
                if key.endswith(".in_proj_weight")
                else None
            )
            shape = tuple(handle.get_slice(key).get_shape())
            if stem is not None and len(shape) in (2, 4):
                shapes[stem[len(prefix) :]] = shape
    return shapes


def reference_modules(lora_file: Path) -> set[str]:
    """The module names (key without the part) of a reference LoRA file."""
    with safe_open(str(lora_file), "pt") as handle:
        names = handle.keys()
        return {key.split(".", 1)[0] for key in names}


def tiny_weights(module: nn.Module) -> nn.Module:
    """Materialise a meta tree with small random weights (for trees that must run)."""
    module.to_empty(device="cpu")
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0, 0.02)
    return module


def tiny_unet(*, linear_proj: bool = False, layers_per_block: int = 2):
    """A diffusers UNet with SD1's block kinds (attention down/up levels, a plain deepest level), a few KB."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16, 16),
        layers_per_block=layers_per_block,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
        use_linear_projection=linear_proj,
    )


def tiny_clip():
    """A 2-layer Hugging Face CLIP text model."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=100,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=16,
        projection_dim=16,
    )
    return CLIPTextModel(config)


def ldm_shapes(*, model_channels=8, mult=(1, 2, 2), num_res_blocks=2, attention_levels=(0, 1), depth=1):
    """Module paths and kinds of an ldm ``UNetModel`` with this layout, written out the way ldm builds it.

    It is the independent description of the original tree that the structure-derived name map is checked
    against: the mapped names must be exactly the module names of a diffusers UNet with the same layout.
    """
    linear, conv3, conv1 = (4, 4), (4, 4, 3, 3), (4, 4, 1, 1)
    shapes: dict[str, tuple[int, ...]] = {
        "time_embed.0": linear,
        "time_embed.2": linear,
        "input_blocks.0.0": conv3,
        "out.2": conv3,
    }

    def res(path: str, skip: bool) -> None:
        shapes.update({f"{path}.in_layers.2": conv3, f"{path}.emb_layers.1": linear, f"{path}.out_layers.3": conv3})
        if skip:
            shapes[f"{path}.skip_connection"] = conv1

    def attn(path: str) -> None:
        shapes.update({f"{path}.proj_in": conv1, f"{path}.proj_out": conv1})
        for block in range(depth):
            base = f"{path}.transformer_blocks.{block}"
            for part in ("attn1", "attn2"):
                for leaf in ("to_q", "to_k", "to_v", "to_out.0"):
                    shapes[f"{base}.{part}.{leaf}"] = linear
            shapes.update({f"{base}.ff.net.0.proj": linear, f"{base}.ff.net.2": linear})

    channels = [model_channels]
    ch, index = model_channels, 1
    for level, factor in enumerate(mult):
        for _ in range(num_res_blocks):
            res(f"input_blocks.{index}.0", ch != factor * model_channels)
            ch = factor * model_channels
            if level in attention_levels:
                attn(f"input_blocks.{index}.1")
            channels.append(ch)
            index += 1
        if level != len(mult) - 1:
            shapes[f"input_blocks.{index}.0.op"] = conv3
            channels.append(ch)
            index += 1
    res("middle_block.0", False)
    attn("middle_block.1")
    res("middle_block.2", False)
    index = 0
    for level, factor in reversed(list(enumerate(mult))):
        for i in range(num_res_blocks + 1):
            skip_ch = channels.pop()
            res(f"output_blocks.{index}.0", ch + skip_ch != factor * model_channels)
            ch = factor * model_channels
            position = 1
            if level in attention_levels:
                attn(f"output_blocks.{index}.1")
                position = 2
            if level and i == num_res_blocks:
                shapes[f"output_blocks.{index}.{position}.conv"] = conv3
            index += 1
    return shapes


@pytest.fixture
def one_torch_thread():
    """Run torch single-threaded: on the shared 2-core machine, 2 threads per process make tiny models ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
