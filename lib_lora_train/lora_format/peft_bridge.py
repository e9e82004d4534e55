"""peft adapter layers <-> kohya tensors: the bridge between what the engine trains and what the file holds.

peft (0.13.x) wraps each targeted layer in a tuner layer that keeps the original as ``base_layer`` and the adapter
"default" in dicts. Their weights map onto kohya's parts as follows (all checked against the WebUI's loaders):

- LoRA / LoCon: ``lora_A`` (Linear ``(r, in)``, Conv2d ``(r, in, k, k)``) is ``lora_down.weight``, ``lora_B``
  (``(out, r)`` / ``(out, r, 1, 1)``) is ``lora_up.weight``; peft scales by ``lora_alpha / r`` and so do loaders
  (``alpha / lora_down.shape[0]``).
- LoHa: ``hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b`` (and ``hada_t1``/``hada_t2`` for the
  effective-conv variant) keep their names and shapes; conv ``hada_w*_b`` stay flattened ``(r, in*k*k)``, which
  LyCORIS, ComfyUI and the WebUI all read. peft scales by ``alpha / r``; the file carries that scale folded into
  ``hada_w1_a`` and stores alpha = r, because LyCORIS's merge path applies ``alpha / r`` twice (``get_weight`` and
  ``get_diff_weight``), so any other alpha would merge at ``(alpha / r)²``. Decomposed LoKr is written the same way.
- DoRA (``train.dora.DoraLayer``, LoRA-shaped): ``dora_scale`` (``(1, in)`` / ``(1, in, 1, 1)``) is written and read
  beside the LoRA parts as it stands; the loaders' rule is in ``lora_format.dora``. peft's own ``use_dora`` (per
  output row) is refused.
- LoKr: ``lokr_w1`` or ``lokr_w1_a/_b``, ``lokr_w2`` or ``lokr_w2_a/_b`` (and ``lokr_t2``) keep their names.
  Loaders scale by ``alpha / dim`` where dim is the rank of a decomposed factor, and by 1 when both factors are
  full. peft 0.13.2 applies no scaling at all to LoKr (its forward uses the bare Kronecker product), so the
  effective scale is measured once (``_lokr_applies_scaling``) and the written alpha reproduces it.

Every written alpha reproduces the *effective* scale (peft's ``scaling``), so a loader rebuilds exactly the weights
that were trained, also with peft's per-module ``rank_pattern`` / ``alpha_pattern``.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from lib_lora_train.host import AdapterTarget
from lib_lora_train.lora_format.dora import PART as DORA_PART
from lib_lora_train.lora_format.keys import conv3x3_modules

ADAPTER = "default"
LOHA_PARTS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
LORA_PARTS = ("lora_down.weight", "lora_up.weight", DORA_PART)
LOKR_PARTS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
NETWORK_KINDS = {"lora": "lora", "locon": "lora", "loha": "loha", "lokr": "lokr"}
# LyCORIS types written with alpha/rank folded into a factor (alpha = rank): the part that carries the scale
FOLDED_KINDS = {
    "loha": lambda parts: "hada_w1_a",
    "lokr": lambda parts: "lokr_w1" if "lokr_w1" in parts else "lokr_w1_a",
}


@dataclass
class LoadReport:
    """What ``load_adapter_state_dict`` did: module names loaded, adapters with no tensors, tensors with no adapter."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


def adapter_kind(layer: nn.Module | None) -> str | None:
    """'lora', 'loha' or 'lokr' for a peft tuner layer holding the adapter "default", else None."""
    if layer is None:
        return None
    if ADAPTER in getattr(layer, "lora_A", {}):
        return "lora"
    if ADAPTER in getattr(layer, "hada_w1_a", {}):
        return "loha"
    if ADAPTER in getattr(layer, "lokr_w1", {}) or ADAPTER in getattr(layer, "lokr_w1_a", {}):
        return "lokr"
    return None


def _find(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", torch.float32).clone()


@functools.lru_cache(maxsize=1)
def _lokr_applies_scaling() -> bool:
    """Whether the installed peft multiplies LoKr's delta by ``alpha / r`` (0.13.2 does not)."""
    from peft import LoKrConfig, inject_adapter_in_model

    probe = inject_adapter_in_model(LoKrConfig(r=1, alpha=4, target_modules=["0"]), nn.Sequential(nn.Linear(4, 4)))
    layer = probe[0]
    with torch.no_grad():
        for name in LOKR_PARTS:
            if ADAPTER in getattr(layer, name, {}):
                getattr(layer, name)[ADAPTER].fill_(1.0)
        delta = layer.get_delta_weight(ADAPTER)
    return not torch.allclose(delta, torch.ones_like(delta))


def effective_scale(layer: nn.Module) -> float:
    """The factor the peft layer applies to its adapter's product (``alpha / r`` except for LoKr on peft 0.13)."""
    if adapter_kind(layer) == "lokr" and not _lokr_applies_scaling():
        return 1.0
    return float(layer.scaling[ADAPTER])


def _loader_dim(kind: str, parts: Mapping[str, torch.Tensor]) -> int | None:
    """The rank that loaders divide alpha by (None: they apply no alpha), as the WebUI and ComfyUI compute it."""
    if kind == "lora":
        return int(parts["lora_down.weight"].shape[0])
    if kind == "loha":
        return int(parts["hada_w1_b"].shape[0])
    for name in ("lokr_w2_b", "lokr_w1_b"):  # the WebUI lets w2_b win when both exist; both have r rows in peft
        if name in parts:
            return int(parts[name].shape[0])
    return None


def adapter_state_dict(
    target: AdapterTarget,
    names: Mapping[str, str],
    network: str | None = None,
    alpha: float | None = None,
    conv_alpha: float | None = None,
) -> dict[str, torch.Tensor]:
    """kohya tensors (fp32, CPU) for every peft layer with adapter "default" under ``target.module``.

    ``names`` is ``keys.kohya_module_names(target)`` (module path -> kohya name); paths without an adapter are
    skipped. ``network`` (lora/locon/loha/lokr), when given, is checked against the layers found. The alpha written
    is the layer's effective one; ``alpha`` / ``conv_alpha`` are accepted for the shared call shape and are not
    needed because every peft layer carries its own.
    """
    del alpha, conv_alpha  # each peft layer knows its own (possibly per-module) alpha
    wanted = NETWORK_KINDS.get(network) if network else None
    if network and wanted is None:
        raise ValueError(f"unknown network {network!r}; use one of {', '.join(NETWORK_KINDS)}")
    tensors: dict[str, torch.Tensor] = {}
    for path, name in names.items():
        layer = _find(target.module, path)
        kind = adapter_kind(layer)
        if kind is None:
            continue
        if wanted and kind != wanted:
            raise ValueError(f"{path} holds a {kind} adapter but the network is {network}")
        if getattr(layer, "use_dora", {}).get(ADAPTER):
            raise ValueError(f"{path} uses DoRA, which this writer does not support; train without use_dora")
        parts = _layer_parts(layer, kind)
        scale = effective_scale(layer)
        dim = _loader_dim(kind, parts)
        if dim is None:
            # both LoKr factors are full: loaders apply no alpha, so the scale goes into w2
            parts["lokr_w2"] = parts["lokr_w2"] * scale
            written_alpha = float(layer.r[ADAPTER])
        elif kind in FOLDED_KINDS:
            # LyCORIS's merge (merge_to, tools/merge.py) scales a LoHa by alpha/rank twice; with the scale folded
            # into one factor and alpha = rank every loader and merger computes the same delta. The user's alpha
            # stays in the metadata (ss_network_alpha).
            first = FOLDED_KINDS[kind](parts)
            parts[first] = parts[first] * scale
            written_alpha = float(dim)
        else:
            written_alpha = scale * dim
        for part, tensor in parts.items():
            tensors[f"{name}.{part}"] = tensor
        tensors[f"{name}.alpha"] = torch.tensor(written_alpha, dtype=torch.float32)
    return tensors


def _layer_parts(layer: nn.Module, kind: str) -> dict[str, torch.Tensor]:
    if kind == "lora":
        parts = {
            "lora_down.weight": _cpu(layer.lora_A[ADAPTER].weight),
            "lora_up.weight": _cpu(layer.lora_B[ADAPTER].weight),
        }
        if ADAPTER in getattr(layer, DORA_PART, {}):
            parts[DORA_PART] = _cpu(getattr(layer, DORA_PART)[ADAPTER])
        return parts
    names = LOHA_PARTS if kind == "loha" else LOKR_PARTS
    return {name: _cpu(getattr(layer, name)[ADAPTER]) for name in names if ADAPTER in getattr(layer, name, {})}


def _group(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    grouped: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, tensor in tensors.items():
        module, _, part = key.partition(".")
        grouped[module][part] = tensor
    return grouped


def load_adapter_state_dict(
    target: AdapterTarget, names: Mapping[str, str], tensors: Mapping[str, torch.Tensor]
) -> LoadReport:
    """Copy kohya tensors into the peft layers under ``target.module`` (the inverse of ``adapter_state_dict``).

    A file whose alpha differs from the layer's is rescaled into one factor so that the adapter's effect is the
    file's. Raises ``ValueError`` naming the module when a tensor does not fit the layer (another rank or model).
    """
    grouped = _group(tensors)
    report = LoadReport()
    used: set[str] = set()
    for path, name in names.items():
        layer = _find(target.module, path)
        kind = adapter_kind(layer)
        if kind is None:
            continue
        parts = grouped.get(name)
        if not parts:
            report.missing.append(name)
            continue
        _load_layer(layer, kind, name, parts)
        used.add(name)
        report.loaded.append(name)
    prefix = target.prefix + "_"
    report.unused = sorted(module for module in grouped if module.startswith(prefix) and module not in used)
    return report


def _load_layer(layer: nn.Module, kind: str, name: str, parts: dict[str, torch.Tensor]) -> None:
    expected = {"lora": LORA_PARTS, "loha": LOHA_PARTS, "lokr": LOKR_PARTS}[kind]
    present = {part: tensor for part, tensor in parts.items() if part in expected}
    if (kind == "lora" and not {"lora_down.weight", "lora_up.weight"} <= set(present)) or not present:
        found = ", ".join(sorted(parts))
        raise ValueError(f"{name}: the file holds {found}, which does not fit a {kind} adapter; train a new {kind}")
    _check_dora(layer, name, present)
    dim = _loader_dim(kind, present)
    alpha = parts.get("alpha")
    file_scale = 1.0 if dim is None or alpha is None else float(alpha) / dim
    ratio = file_scale / effective_scale(layer)
    if kind == "lora":
        targets = {"lora_down.weight": layer.lora_A[ADAPTER].weight, "lora_up.weight": layer.lora_B[ADAPTER].weight}
        if DORA_PART in present:  # the delta is kept (up absorbs any alpha ratio): the scale goes in as it is
            targets[DORA_PART] = getattr(layer, DORA_PART)[ADAPTER]
        scaled = "lora_up.weight"
    else:
        targets = {part: getattr(layer, part)[ADAPTER] for part in present if ADAPTER in getattr(layer, part, {})}
        scaled = next(p for p in ("hada_w1_a", "lokr_w2", "lokr_w2_a", "lokr_w1", "lokr_w1_a") if p in targets)
    if set(targets) != set(present):
        raise ValueError(
            f"{name}: the file has parts {sorted(present)} but the adapter has {sorted(targets)}; "
            "the file was trained with another factorisation (rank or decompose setting)"
        )
    with torch.no_grad():
        for part, param in targets.items():
            value = present[part]
            if value.numel() != param.numel():
                raise ValueError(
                    f"{name}.{part}: shape {tuple(value.shape)} does not fit the adapter's {tuple(param.shape)}; "
                    "resume with the rank and network the file was trained with"
                )
            value = value.reshape(param.shape).to(param.device, torch.float32)
            if part == scaled:
                value = value * ratio
            param.copy_(value)


def _check_dora(layer: nn.Module, name: str, present: Mapping[str, torch.Tensor]) -> None:
    """A DoRA file into DoRA layers only, and only with the per-input-channel scale the loaders read."""
    in_file, in_layer = DORA_PART in present, ADAPTER in getattr(layer, DORA_PART, {})
    if in_file and not in_layer:
        raise ValueError(f"{name}: the file is a DoRA (it has dora_scale); train with dora_wd on")
    if in_layer and not in_file:
        raise ValueError(f"{name}: the file is a plain LoRA (no dora_scale); train with dora_wd off")
    if in_file:
        scale, param = present[DORA_PART], getattr(layer, DORA_PART)[ADAPTER]
        if scale.shape[0] != 1 or scale.numel() != param.numel():
            raise ValueError(
                f"{name}.dora_scale: shape {tuple(scale.shape)} is not one scale per input channel "
                f"{tuple(param.shape)}; only LyCORIS's wd_on_out=False DoRA (what the WebUI reads) can be continued"
            )


def conv_rank_patterns(
    target: AdapterTarget, paths: list[str], conv_rank: int, conv_alpha: float
) -> tuple[dict[str, int], dict[str, float]]:
    """peft ``rank_pattern`` / ``alpha_pattern`` that give the 3x3 convolutions among ``paths`` the conv rank/alpha.

    Keys are the full module paths (relative to ``target.module``, which must be the model peft injects into):
    peft 0.13's LoRA looks a key up by the exact module path when no pattern matches, and LoHa/LoKr match
    ``(.*\\.)?<key>$``, so a full path selects exactly that module in all three.
    """
    convs = conv3x3_modules(target, paths)
    return {path: conv_rank for path in convs}, {path: conv_alpha for path in convs}
