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

The reverse direction (``diffusers_to_ldm_names``) serves SDXL trained on a diffusers UNet: kohya names SDXL LoRA
modules with the original sgm names, so a diffusers SDXL UNet's paths are turned back into them. It walks the same
block layout from the diffusers side and inverts the same part tables.
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


_LDM_RESNET_PARTS = {diffusers: ldm for ldm, diffusers in _RESNET_PARTS.items()}
_LDM_TOP_LEVEL = {diffusers: ldm for ldm, diffusers in _TOP_LEVEL.items()}
_DIFFUSERS_UNIT = re.compile(
    r"^((?:down|up)_blocks\.\d+\.(?:resnets|attentions|downsamplers|upsamplers)\.\d+"
    r"|mid_block\.(?:resnets|attentions)\.\d+)(?:\.(.*))?$"
)


def _children(module: nn.Module | None, name: str) -> list[str]:
    """Names of the entries of ``module.<name>`` (a ModuleList), or [] when it has none."""
    container = getattr(module, name, None) if module is not None else None
    return [child for child, _ in container.named_children()] if container is not None else []


def _blocks(unet: nn.Module, name: str) -> list[tuple[str, nn.Module]]:
    container = getattr(unet, name, None)
    return list(container.named_children()) if container is not None else []


def diffusers_unit_map(unet: nn.Module) -> dict[str, str]:
    """diffusers unit path -> ldm/sgm unit path, e.g. ``"up_blocks.0.upsamplers.0" -> "output_blocks.2.1"``.

    The mirror of ``unit_map``: input block 0 is ``conv_in``; each down level gives one input block per
    ResNet (``.0``, with its attention at ``.1``) and one more for its downsampler; the mid block is
    ResNet / attention / ResNet; each up level gives one output block per ResNet, and its upsampler sits in the
    last of them, after the attention if there is one.
    """
    mapping: dict[str, str] = {}
    index = 1
    for level, block in _blocks(unet, "down_blocks"):
        attentions = set(_children(block, "attentions"))
        for layer in _children(block, "resnets"):
            mapping[f"down_blocks.{level}.resnets.{layer}"] = f"input_blocks.{index}.0"
            if layer in attentions:
                mapping[f"down_blocks.{level}.attentions.{layer}"] = f"input_blocks.{index}.1"
            index += 1
        for sampler in _children(block, "downsamplers"):
            mapping[f"down_blocks.{level}.downsamplers.{sampler}"] = f"input_blocks.{index}.0"
            index += 1
    mid = getattr(unet, "mid_block", None)
    position = 0
    attentions = _children(mid, "attentions")
    for layer in _children(mid, "resnets"):
        mapping[f"mid_block.resnets.{layer}"] = f"middle_block.{position}"
        position += 1
        if layer in attentions:  # attention i follows resnet i: [ResBlock, SpatialTransformer, ResBlock]
            mapping[f"mid_block.attentions.{layer}"] = f"middle_block.{position}"
            position += 1
    index = 0
    for level, block in _blocks(unet, "up_blocks"):
        attentions = set(_children(block, "attentions"))
        layers = _children(block, "resnets")
        for layer in layers:
            mapping[f"up_blocks.{level}.resnets.{layer}"] = f"output_blocks.{index}.0"
            position = 1
            if layer in attentions:
                mapping[f"up_blocks.{level}.attentions.{layer}"] = f"output_blocks.{index}.1"
                position = 2
            if layer == layers[-1]:
                for sampler in _children(block, "upsamplers"):
                    mapping[f"up_blocks.{level}.upsamplers.{sampler}"] = f"output_blocks.{index}.{position}"
            index += 1
    return mapping


def diffusers_to_ldm_names(unet: nn.Module, paths: Iterable[str] | None = None) -> dict[str, str]:
    """diffusers module path -> ldm/sgm module path for ``paths`` (default: every Linear/Conv2d in ``unet``).

    Example: ``"down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"`` ->
    ``"input_blocks.4.1.transformer_blocks.0.attn1.to_q"``; ``"down_blocks.0.resnets.0.conv1"`` ->
    ``"input_blocks.1.0.in_layers.2"``. Paths outside the known layout keep their own name.
    """
    mapping = diffusers_unit_map(unet)
    if paths is None:
        paths = [name for name, module in unet.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))]
    return {path: _convert_back(path, mapping) for path in paths}


def _convert_back(path: str, mapping: dict[str, str]) -> str:
    if path in _LDM_TOP_LEVEL:
        return _LDM_TOP_LEVEL[path]
    match = _DIFFUSERS_UNIT.match(path)
    if not match or match.group(1) not in mapping:
        return path
    unit, rest = match.group(1), match.group(2) or ""
    if ".resnets." in unit:
        rest = _LDM_RESNET_PARTS.get(rest, rest)
    elif ".downsamplers." in unit and rest == "conv":
        rest = "op"
    return f"{mapping[unit]}.{rest}" if rest else mapping[unit]
