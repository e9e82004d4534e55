"""Apply kohya-format LoRA / LoCon / LoHa / LoKr files to a diffusers pipeline for a render, then take them out.

The standalone app has no WebUI to read ``<lora:NAME:W>``, so it does what the WebUI's built-in loader does: each
module's weight delta is rebuilt from the file with the loader's rule (``scale = alpha / rank``, LoKr unscaled when
neither factor is decomposed; a DoRA's ``dora_scale`` renormalises it, ``lora_format.dora``), multiplied by the
prompt's weight and added to the layer; the original weights are kept and put back, bit for bit, when the render
ends (``applied``). Module names come from the same kohya name map that writes our files (``lora_format.keys``),
so every key of a file we trained finds its layer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from lib_lora_train.host import AdapterTarget
from lib_lora_train.lora_format.dora import PART as DORA_PART
from lib_lora_train.lora_format.dora import decomposed_weight
from lib_lora_train.lora_format.file import read_lora_file
from lib_lora_train.lora_format.keys import kohya_module_names

log = logging.getLogger(__name__)


class LoraApplyError(ValueError):
    """A LoRA file that cannot be applied to this model; the message names the file."""


def _tucker(core: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """A conv weight from a Tucker core and its two factors (LyCORIS's ``use_tucker`` / peft's effective conv)."""
    return torch.einsum("i j k l, i r, j p -> r p k l", core, wa, wb)


def module_delta(parts: dict[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    """The weight delta of one module at weight 1, shaped like the layer's weight (float32)."""
    parts = {k: v.float() for k, v in parts.items()}
    alpha = float(parts["alpha"]) if "alpha" in parts else None
    if "lora_down.weight" in parts:
        down, up = parts["lora_down.weight"], parts["lora_up.weight"]
        rank = down.shape[0]
        delta = up.flatten(1) @ down.flatten(1)
    elif "hada_w1_a" in parts:
        rank = parts["hada_w1_b"].shape[0]
        if "hada_t1" in parts:
            one = _tucker(parts["hada_t1"], parts["hada_w1_a"], parts["hada_w1_b"])
            two = _tucker(parts["hada_t2"], parts["hada_w2_a"], parts["hada_w2_b"])
        else:
            one = parts["hada_w1_a"] @ parts["hada_w1_b"].flatten(1)
            two = parts["hada_w2_a"] @ parts["hada_w2_b"].flatten(1)
        delta = one * two
    elif "lokr_w1" in parts or "lokr_w1_a" in parts:
        w1 = parts["lokr_w1"] if "lokr_w1" in parts else parts["lokr_w1_a"] @ parts["lokr_w1_b"]
        if "lokr_w2" in parts:
            w2 = parts["lokr_w2"]
        elif "lokr_t2" in parts:
            w2 = _tucker(parts["lokr_t2"], parts["lokr_w2_a"], parts["lokr_w2_b"])
        else:
            w2_a, w2_b = parts["lokr_w2_a"], parts["lokr_w2_b"]
            w2 = (w2_a @ w2_b.flatten(1)).reshape(w2_a.shape[0], *w2_b.shape[1:])
        w1, w2 = w1.contiguous(), w2.contiguous()
        delta = torch.kron(w1[:, :, None, None], w2) if w2.dim() == 4 else torch.kron(w1, w2)
        # the loaders divide alpha by the rank of the decomposed factor (w2's wins); both full: no alpha at all
        decomposed = parts.get("lokr_w2_b", parts.get("lokr_w1_b"))
        rank = int(decomposed.shape[0]) if decomposed is not None else None
        if rank is None:
            alpha = None
    else:
        raise LoraApplyError(f"unknown parts {sorted(parts)}")
    if alpha is not None and rank:
        delta = delta * (alpha / rank)
    return delta.reshape(shape)


def targets_of(pipe) -> list[AdapterTarget]:
    """The pipeline's module trees with the kohya prefixes and namings our trainer writes (the diffusers host's own)."""
    from lib_lora_train.hosts.diffusers_host import DiffusersHost

    parts = DiffusersHost(pipe).model_parts()
    return [parts.unet, *parts.text_encoders]


def _layer_index(pipe) -> dict[str, torch.nn.Module]:
    index: dict[str, torch.nn.Module] = {}
    for target in targets_of(pipe):
        for path, name in kohya_module_names(target).items():
            index[name] = target.module.get_submodule(path)
    return index


@contextlib.contextmanager
def applied(pipe, loras: Sequence[tuple[Path, float]]) -> Iterator[list[str]]:
    """Add each ``(file, weight)`` to the pipeline's weights inside the ``with``; yields notes (unmatched keys).

    The originals are restored on every exit path, including an exception inside the block.
    """
    backups: dict[int, tuple[torch.nn.Module, torch.Tensor]] = {}
    notes: list[str] = []
    try:
        if loras:
            index = _layer_index(pipe)
        for path, weight in loras:
            lora = read_lora_file(path)
            unmatched = []
            for name, parts in lora.modules.items():
                layer = index.get(name)
                if layer is None or not hasattr(layer, "weight"):
                    unmatched.append(name)
                    continue
                try:
                    delta = module_delta(parts, layer.weight.shape)
                except (LoraApplyError, RuntimeError, KeyError) as exc:
                    raise LoraApplyError(f"{path.name}: module {name}: {exc}") from None
                if id(layer) not in backups:
                    backups[id(layer)] = (layer, layer.weight.detach().clone())
                if DORA_PART in parts:  # renormalised against the original weight, as the WebUI does
                    original = backups[id(layer)][1].float()
                    delta = decomposed_weight(original, delta.to(original.device), parts[DORA_PART].float()) - original
                with torch.no_grad():
                    layer.weight += (weight * delta).to(layer.weight.device, layer.weight.dtype)
            if unmatched:
                notes.append(f"{path.name}: {len(unmatched)} module(s) do not match this model, e.g. {unmatched[0]}")
                log.warning(notes[-1])
        yield notes
    finally:
        with torch.no_grad():
            for layer, original in backups.values():
                layer.weight.copy_(original)
