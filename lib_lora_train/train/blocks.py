"""kohya's block-wise settings for the UNet: which block a module is in, and each block's rank, alpha and lr weight.

Blocks are numbered as kohya's sd-scripts numbers them (networks/lora.py), from the module's kohya key name:

- SD1/SD2, 25 blocks: 0-11 the down blocks (the LDM ``input_blocks``; 0 is ``conv_in``, which has no adapter), 12 the
  mid block, 13-24 the up blocks (``output_blocks``). Keys carry diffusers names: ``down_blocks_i_{attentions|resnets}
  _j`` is block 1 + 3i + j and its ``downsamplers`` 3 + 3i; ``up_blocks_i_..._j`` is 13 + 3i + j and its
  ``upsamplers`` 15 + 3i.
- SDXL, 23 blocks: 0 the time embedding, 1-9 ``input_blocks_0..8``, 10-12 ``middle_block_0..2``, 13-21
  ``output_blocks_0..8``, 22 the output layers (0 and 22 carry no adapter in kohya's choice of modules, nor ours).

``down_lr_weight`` / ``up_lr_weight`` have 12 (SDXL 9) values or a preset, ``mid_lr_weight`` 1 (SDXL 3); SDXL's time
embedding and output keep weight 1. A block whose lr weight is 0 or whose dim is 0 gets no adapter. Without
``block_dims`` every block has ``rank``/``alpha``; without ``conv_block_dims`` every 3x3 convolution ``conv_rank``/
``conv_alpha``. Text encoders are not block-weighted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from lib_lora_train.settings import SettingsError

DOWN_UP_BLOCKS = {"sd1": 12, "sd2": 12, "sdxl": 9}
MID_BLOCKS = {"sd1": 1, "sd2": 1, "sdxl": 3}
BLOCK_SETTINGS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_dims", "block_alphas",
                  "conv_block_dims", "conv_block_alphas")  # fmt: skip
_DIFFUSERS_BLOCK = re.compile(r"_(down|up)_blocks_(\d+)_(attentions|resnets|downsamplers|upsamplers)_(\d+)_")
_LDM_BLOCK = re.compile(r"^lora_unet_(input_blocks|middle_block|output_blocks)_(\d+)_")


@dataclass
class BlockPlan:
    """The UNet's adapters under block-wise settings: (rank, alpha) per module path that keeps an adapter, the lr
    weight of each (all 1 without lr weights), the paths left without one, and a log line per non-default block."""

    ranks: dict[str, tuple[int, float]] = field(default_factory=dict)
    lr_weights: dict[str, float] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def is_block_wise(settings) -> bool:
    return any(getattr(settings, name).strip() for name in BLOCK_SETTINGS)


def block_count(arch: str) -> int:
    """How many numbers ``block_dims`` and its siblings take for ``arch``: 25 (SD1/SD2) or 23 (SDXL)."""
    extra = 2 if arch == "sdxl" else 0  # SDXL's list also names the time embedding and the output layers
    return 2 * DOWN_UP_BLOCKS[arch] + MID_BLOCKS[arch] + extra


def block_index(kohya_name: str) -> int | None:
    """The block of a UNet module from its kohya key name (either spelling), or None outside every block."""
    match = _LDM_BLOCK.match(kohya_name)
    if match:
        kind, number = match.group(1), int(match.group(2))
        return {"input_blocks": 1, "middle_block": 10, "output_blocks": 13}[kind] + number
    if kohya_name.startswith(("lora_unet_time_embed_", "lora_unet_label_emb_")):
        return 0
    match = _DIFFUSERS_BLOCK.search(kohya_name)
    if match:
        side, i, kind, j = match.group(1), int(match.group(2)), match.group(3), int(match.group(4))
        inner = 3 * i + (2 if kind in ("downsamplers", "upsamplers") else j)
        return 1 + inner if side == "down" else DOWN_UP_BLOCKS["sd1"] + 1 + inner
    if "_mid_block_" in kohya_name:
        return DOWN_UP_BLOCKS["sd1"]
    return None


def block_label(arch: str, index: int) -> str:
    """A block's name in log lines: "down 4" (input_blocks 4), "mid", "mid 1", "up 7"; SDXL also "time embedding"."""
    n, mid = DOWN_UP_BLOCKS[arch], MID_BLOCKS[arch]
    offset = 1 if arch == "sdxl" else 0
    if arch == "sdxl" and index == 0:
        return "time embedding"
    if index < offset + n:
        return f"down {index - offset}"
    if index < offset + n + mid:
        return "mid" if mid == 1 else f"mid {index - offset - n}"
    if index < offset + 2 * n + mid:
        return f"up {index - offset - n - mid}"
    return "out"


def preset_weights(text: str, count: int) -> list[float]:
    """kohya's lr weight presets over ``count`` blocks, with an optional "+offset": sine rises as
    sin(pi/2 * i/(count-1)), cosine is sine reversed, linear rises as i/(count-1), reverse_linear falls, zeros."""
    name, _, offset_text = text.strip().partition("+")
    offset = float(offset_text) if offset_text else 0.0
    rising = [i / (count - 1) for i in range(count)]
    shapes = {
        "sine": [math.sin(math.pi / 2 * x) for x in rising],
        "cosine": [math.sin(math.pi / 2 * x) for x in reversed(rising)],
        "linear": rising,
        "reverse_linear": list(reversed(rising)),
        "zeros": [0.0] * count,
    }
    return [w + offset for w in shapes[name]]


def _numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(",")]


def _side_weights(text: str, count: int) -> list[float]:
    text = text.strip()
    if not text:
        return [1.0] * count
    return preset_weights(text, count) if text[:1].isalpha() else _numbers(text)


def block_lr_weights(settings, arch: str) -> list[float] | None:
    """One lr weight per block (``block_count(arch)`` of them), or None without lr weight settings. A weight of 0 or
    less is 0 (kohya's block_lr_zero_threshold, default 0)."""
    if not any(getattr(settings, name).strip() for name in ("down_lr_weight", "mid_lr_weight", "up_lr_weight")):
        return None
    n, mid = DOWN_UP_BLOCKS[arch], MID_BLOCKS[arch]
    middle = _numbers(settings.mid_lr_weight) if settings.mid_lr_weight.strip() else [1.0] * mid
    weights = _side_weights(settings.down_lr_weight, n) + middle + _side_weights(settings.up_lr_weight, n)
    if arch == "sdxl":
        weights = [1.0, *weights, 1.0]
    return [w if w > 0 else 0.0 for w in weights]


def check_block_settings(settings, arch: str) -> None:
    """SettingsError when a block-wise list has the wrong count for this model's architecture (or names 3x3
    convolutions that the network does not adapt). Called once the model is known, before anything changes."""
    n, mid, total = DOWN_UP_BLOCKS[arch], MID_BLOCKS[arch], block_count(arch)
    model = f"this {arch.upper()} model"
    layout = (
        "the time embedding, 9 input blocks, 3 middle blocks, 9 output blocks and the output layers"
        if arch == "sdxl"
        else "12 down blocks, the mid block and 12 up blocks"
    )
    for name in ("down_lr_weight", "up_lr_weight"):
        text = getattr(settings, name).strip()
        if text and not text[:1].isalpha() and len(text.split(",")) != n:
            got = len(text.split(","))
            raise SettingsError(name, f"has {got} values but {model} has {n} {name[:-10]} blocks; give {n} numbers")
    if settings.mid_lr_weight.strip() and len(settings.mid_lr_weight.split(",")) != mid:
        got = len(settings.mid_lr_weight.split(","))
        want = "1 number (one mid block)" if mid == 1 else f"{mid} numbers (middle_block 0, 1, 2)"
        raise SettingsError("mid_lr_weight", f"has {got} values but {model} needs {want}")
    for name in ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas"):
        text = getattr(settings, name).strip()
        if text and len(text.split(",")) != total:
            got = len(text.split(","))
            raise SettingsError(name, f"has {got} values but {model} needs {total}, one per block: {layout}")
    if settings.network == "lora" and settings.conv_block_dims.strip():
        raise SettingsError(
            "conv_block_dims", "only applies to 3x3 convolutions, which network lora does not adapt; use locon"
        )


def plan_blocks(names: dict[str, str], paths: Iterable[str], convs: Iterable[str], settings, arch: str) -> BlockPlan:
    """The block plan for the UNet ``paths`` (``names``: path -> kohya name; ``convs``: the 3x3 convolutions)."""
    total = block_count(arch)
    lr = block_lr_weights(settings, arch)
    dims = _numbers(settings.block_dims) if settings.block_dims.strip() else [settings.rank] * total
    alphas = _numbers(settings.block_alphas) if settings.block_alphas.strip() else [settings.alpha] * total
    if settings.conv_block_dims.strip():
        conv_dims = _numbers(settings.conv_block_dims)
        conv_alphas = _numbers(settings.conv_block_alphas) if settings.conv_block_alphas.strip() else None
        conv_alphas = conv_alphas or [settings.conv_alpha] * total
    else:
        conv_dims, conv_alphas = [settings.conv_rank] * total, [settings.conv_alpha] * total
    convs = set(convs)
    plan = BlockPlan()
    members: dict[int, list[str]] = {}
    for path in paths:
        index = block_index(names[path])
        if index is None:  # not in a numbered block: the run's own rank, alpha and lr
            plan.ranks[path] = (
                (settings.conv_rank, settings.conv_alpha) if path in convs else (settings.rank, settings.alpha)
            )
            plan.lr_weights[path] = 1.0
            continue
        members.setdefault(index, []).append(path)
        rank, alpha = (conv_dims[index], conv_alphas[index]) if path in convs else (dims[index], alphas[index])
        weight = lr[index] if lr is not None else 1.0
        if weight == 0 or rank == 0:
            plan.dropped.append(path)
            continue
        plan.ranks[path] = (int(rank), float(alpha))
        plan.lr_weights[path] = weight
    for index in sorted(members):
        note = _block_note(settings, arch, index, members[index], convs, plan, lr)
        if note:
            plan.notes.append(note)
    return plan


def unet_block_plan(parts, paths: list[str], settings) -> BlockPlan | None:
    """The plan for the UNet target ``paths`` of ``parts`` (a ModelParts), or None without block-wise settings."""
    from lib_lora_train.lora_format.keys import conv3x3_modules, kohya_module_names

    if not is_block_wise(settings):
        return None
    names = kohya_module_names(parts.unet)
    return plan_blocks(names, paths, conv3x3_modules(parts.unet, paths), settings, parts.arch)


def _block_note(settings, arch, index, paths, convs, plan: BlockPlan, lr) -> str:
    """One log line for a block whose settings differ from the run's rank/alpha/lr, else ""."""
    head = f"block-wise: {block_label(arch, index)} ({len(paths)} module{'' if len(paths) == 1 else 's'})"
    if all(p in plan.dropped for p in paths):
        why = "lr weight 0" if lr is not None and lr[index] == 0 else "dim 0"
        return f"{head}: no adapter ({why})"
    parts = []
    linear = [plan.ranks[p] for p in paths if p in plan.ranks and p not in convs]
    conv = [plan.ranks[p] for p in paths if p in plan.ranks and p in convs]
    if linear and linear[0] != (settings.rank, float(settings.alpha)):
        parts.append(f"rank {linear[0][0]} alpha {linear[0][1]:g}")
    if conv and conv[0] != (settings.conv_rank, float(settings.conv_alpha)):
        parts.append(f"conv rank {conv[0][0]} alpha {conv[0][1]:g}")
    if any(p in plan.dropped for p in paths):
        parts.append("3x3 convolutions without adapter (conv dim 0)" if linear else "linear layers without adapter")
    if lr is not None and lr[index] != 1.0:
        parts.append(f"lr x{lr[index]:.3g}")
    return f"{head}: {', '.join(parts)}" if parts else ""


def unet_param_groups(params_by_path: dict[str, list], plan: BlockPlan | None, lr: float) -> list[dict]:
    """Optimiser groups for the UNet's adapter parameters (``params_by_path``: module path -> its parameters): one
    group at ``lr`` without block lr weights, else one per distinct weight at ``lr * weight``."""
    if plan is None or all(w == 1.0 for w in plan.lr_weights.values()):
        return [{"params": [p for params in params_by_path.values() for p in params], "lr": lr}]
    by_weight: dict[float, list] = {1.0: []}  # the unweighted group first: the progress line shows group 0's lr
    for path, params in params_by_path.items():
        by_weight.setdefault(plan.lr_weights.get(path, 1.0), []).extend(params)
    return [{"params": params, "lr": lr * weight} for weight, params in by_weight.items() if params]
