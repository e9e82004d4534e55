"""Map the module paths of an original (ldm / sgm) UNet onto diffusers' names, from the module structure alone.

kohya's SD1/SD2 LoRA keys use diffusers' UNet names, but the WebUI holds the original ldm ``UNetModel``. The map
is derived from the tree rather than from a table, so it works for any SD1/SD2/SDXL block layout:

- ``input_blocks.0.0`` is ``conv_in``; every later input block holds either ``[ResBlock]``,
  ``[ResBlock, SpatialTransformer]`` or ``[Downsample]``. Res/attention units count up inside a level and a
  Downsample closes the level, so the level sizes (layers per block) come from the tree.
- ``middle_block`` is ``[ResBlock, SpatialTransformer, ResBlock]`` (or just two ResBlocks).
- every output level holds ``layers_per_block + 1`` blocks of ``[ResBlock, SpatialTransformer?, Upsample?]``.

A unit's kind is recognised by its children, not its class, so that stand-in trees in tests (and wrappers in
other hosts) work too: ``in_layers``/``out_layers`` -> ResBlock, ``transformer_blocks`` -> SpatialTransformer,
``op`` -> Downsample, a lone ``conv`` -> Upsample.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

# Inside a unit, ldm and diffusers spell the sub-modules differently only in the ResBlock and the Downsample.
_RESNET_PARTS = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_TOP_LEVEL = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "label_emb.0.0": "add_embedding.linear_1",
    "label_emb.0.2": "add_embedding.linear_2",
    "out.0": "conv_norm_out",
    "out.2": "conv_out",
    "input_blocks.0.0": "conv_in",
}
_UNIT = re.compile(r"^(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.(\d+)(?:\.(.*))?$")


def unit_kind(unit: nn.Module) -> str | None:
    """'resnet', 'transformer', 'downsample' or 'upsample' for one child of an ldm/sgm block, else None."""
    children = {name for name, _ in unit.named_children()}
    if {"in_layers", "out_layers"} <= children:
        return "resnet"
    if "transformer_blocks" in children or "proj_in" in children:
        return "transformer"
    if "op" in children:
        return "downsample"
    if children == {"conv"}:
        return "upsample"
    return None


def ldm_units(unet: nn.Module) -> dict[str, str]:
    """Every unit of an ldm/sgm UNet: ``"input_blocks.1.1" -> "transformer"`` and so on."""
    units: dict[str, str] = {}
    for group in ("input_blocks", "middle_block", "output_blocks"):
        container = getattr(unet, group, None)
        if container is None:
            continue
        blocks = [("", container)] if group == "middle_block" else list(container.named_children())
        for block_name, block in blocks:
            base = f"{group}.{block_name}" if block_name else group
            for child_name, child in block.named_children():
                kind = unit_kind(child)
                if kind is not None:
                    units[f"{base}.{child_name}"] = kind
    return units


def _layers_per_block(units: dict[str, str]) -> int:
    """Number of input blocks before the first Downsample (each level of SD1/SD2/SDXL has the same count)."""
    count = 0
    for index in range(1, 1000):
        kinds = {kind for path, kind in units.items() if path.startswith(f"input_blocks.{index}.")}
        if not kinds:
            break
        if "downsample" in kinds:
            return count
        count += 1
    if count == 0:
        raise ValueError("not an ldm/sgm UNet: no ResBlocks found under input_blocks (expected input_blocks.1.0)")
    return count


def unit_map(unet: nn.Module) -> dict[str, str]:
    """ldm unit path -> diffusers unit path, e.g. ``"output_blocks.2.1" -> "up_blocks.0.upsamplers.0"``."""
    units = ldm_units(unet)
    per_level = _layers_per_block(units)
    mapping: dict[str, str] = {}
    level = layer = 0
    input_indices = sorted({int(p.split(".")[1]) for p in units if p.startswith("input_blocks.")})
    for index in input_indices:
        kinds = {p: k for p, k in units.items() if p.startswith(f"input_blocks.{index}.")}
        if "downsample" in kinds.values():
            for path in kinds:
                mapping[path] = f"down_blocks.{level}.downsamplers.0"
            level, layer = level + 1, 0
            continue
        for path, kind in kinds.items():
            collection = "resnets" if kind == "resnet" else "attentions"
            mapping[path] = f"down_blocks.{level}.{collection}.{layer}"
        layer += 1
    resnet_index = attention_index = 0
    for path, kind in sorted((p, k) for p, k in units.items() if p.startswith("middle_block.")):
        if kind == "resnet":
            mapping[path] = f"mid_block.resnets.{resnet_index}"
            resnet_index += 1
        elif kind == "transformer":
            mapping[path] = f"mid_block.attentions.{attention_index}"
            attention_index += 1
    for path, kind in units.items():
        if not path.startswith("output_blocks."):
            continue
        index = int(path.split(".")[1])
        level, layer = divmod(index, per_level + 1)
        if kind == "upsample":
            mapping[path] = f"up_blocks.{level}.upsamplers.0"
        else:
            collection = "resnets" if kind == "resnet" else "attentions"
            mapping[path] = f"up_blocks.{level}.{collection}.{layer}"
    return mapping


def ldm_to_diffusers_names(unet: nn.Module, paths: Iterable[str] | None = None) -> dict[str, str]:
    """ldm module path -> diffusers module path for ``paths`` (default: every Linear/Conv2d in ``unet``).

    Paths outside the known layout keep their own name, so nothing is dropped silently.
    """
    units = ldm_units(unet)
    mapping = unit_map(unet)
    if paths is None:
        paths = [name for name, module in unet.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))]
    result: dict[str, str] = {}
    for path in paths:
        result[path] = _convert(path, units, mapping)
    return result


def _convert(path: str, units: dict[str, str], mapping: dict[str, str]) -> str:
    if path in _TOP_LEVEL:
        return _TOP_LEVEL[path]
    match = _UNIT.match(path)
    if not match:
        return path
    unit = f"{match.group(1)}.{match.group(2)}"
    rest = match.group(3) or ""
    if unit not in mapping:
        return path
    kind = units[unit]
    if kind == "resnet":
        rest = _RESNET_PARTS.get(rest, rest)
    elif kind == "downsample" and rest == "op":
        rest = "conv"
    return f"{mapping[unit]}.{rest}" if rest else mapping[unit]
