"""Continue from a LoRA file (``network_weights``, kohya's ``--network_weights`` / ``--dim_from_weights``).

A run's adapters start from the file's tensors instead of peft's initialisation: ours, kohya's or LyCORIS's, of the
run's network type. With ``dim_from_weights`` the network's shape comes from the file: rank and alpha per module
(they may vary, e.g. after kohya's resize), the conv rank/alpha, and DoRA (a file with ``dora_scale`` continues as
a DoRA). Without it the file has to have the shape the settings give, else it is refused, naming the fix.

LoHa/LoKr files that we write carry alpha = rank with ``alpha / rank`` folded into one factor (see
``lora_format.peft_bridge``); their real alpha is in the metadata (``ss_network_alpha``, ``conv_alpha`` in
``ss_network_args``), which ``dim_from_weights`` takes, so the factors are trained as they were (the loader unfolds
the scale). Any alpha gives the file's effect exactly: ``load_adapter_state_dict`` rescales one factor.

Checks in two stages, both before anything changes (``train.preflight`` calls them): ``check_start_file`` needs
only the settings (the file exists, is a LoRA of the run's network type, DoRA or not as set, no parts we cannot
train, LoRA ranks as set); ``check_start_fits`` needs the model (the file's modules are modules this run adapts,
of the right sizes and ranks).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lib_lora_train.lora_format.dora import PART as DORA_PART
from lib_lora_train.lora_format.file import LoraFile, read_lora_file
from lib_lora_train.lora_format.peft_bridge import LOHA_PARTS, LOKR_PARTS, NETWORK_KINDS
from lib_lora_train.settings import SettingsError

FIELD = "network_weights"
TRAINABLE_PARTS = {
    "lora": {"lora_down.weight", "lora_up.weight", "alpha", DORA_PART},
    "loha": {*LOHA_PARTS, "alpha"},
    "lokr": {*LOKR_PARTS, "alpha"},
}
LABELS = {"lora": "LoRA", "locon": "LoCon", "loha": "LoHa", "lokr": "LoKr"}


def _refuse(lora_or_path, message: str) -> SettingsError:
    path = lora_or_path.path if isinstance(lora_or_path, LoraFile) else lora_or_path
    return SettingsError(FIELD, f"{path}: {message}")


def read_start_file(settings) -> LoraFile:
    """The file ``settings.network_weights`` names, read; SettingsError if it is missing or not a LoRA."""
    path = Path(settings.network_weights.strip()).expanduser()
    if not path.is_file():
        raise _refuse(path, "no such LoRA file; give the path of a .safetensors LoRA")
    try:
        return read_lora_file(path)
    except ValueError as exc:
        raise SettingsError(FIELD, str(exc)) from None


def is_dora(lora: LoraFile) -> bool:
    return any(DORA_PART in parts for parts in lora.modules.values())


def _module_rank(parts: Mapping[str, torch.Tensor]) -> int | None:
    """The rank of one module's factors (lora_down rows, hada_w1_b rows, a decomposed LoKr factor's rows)."""
    for name in ("lora_down.weight", "hada_w1_b", "lokr_w2_b", "lokr_w1_b"):
        if name in parts:
            return int(parts[name].shape[0])
    return None


def check_start_file(settings) -> LoraFile:
    """What the file alone tells: see the module docstring. Returns the file read."""
    lora = read_start_file(settings)
    network = settings.network
    if NETWORK_KINDS.get(lora.network) != NETWORK_KINDS[network] or {lora.network, network} == {"lora", "locon"}:
        what = {
            "locon": "it adapts 3x3 convolutions",
            "lora": "it has no 3x3 convolution modules",
        }.get(lora.network, "")
        raise _refuse(
            lora, f"is a {LABELS.get(lora.network, lora.network)} file{f' ({what})' if what else ''} but network is "
            f"{network}; "
            f"set network {lora.network} to continue it",
        )  # fmt: skip
    for name, parts in lora.modules.items():
        extra = sorted(set(parts) - TRAINABLE_PARTS[NETWORK_KINDS[network]])
        if extra:
            raise _refuse(
                lora, f"module {name} has {', '.join(extra)}, which this trainer cannot continue "
                f"(a CP/Tucker-decomposed or otherwise extended {LABELS[lora.network]}); train a new one",
            )  # fmt: skip
    if settings.dim_from_weights:
        blockwise = [n for n in ("block_dims", "conv_block_dims", "block_alphas", "conv_block_alphas")
                     if getattr(settings, n).strip()]  # fmt: skip
        if blockwise:
            raise SettingsError(
                "dim_from_weights", f"takes every module's rank from {lora.path}; clear {blockwise[0]} or turn "
                "dim_from_weights off",
            )  # fmt: skip
        return lora
    if is_dora(lora) != settings.dora_wd:
        state = "is a DoRA (it has dora_scale)" if is_dora(lora) else "is not a DoRA (no dora_scale)"
        raise _refuse(lora, f"{state} but dora_wd is {'on' if settings.dora_wd else 'off'}; turn dora_wd "
                      f"{'off' if settings.dora_wd else 'on'}, or turn dim_from_weights on")  # fmt: skip
    if NETWORK_KINDS[network] == "lora" and not _block_wise(settings):
        for name, parts in lora.modules.items():
            down = parts.get("lora_down.weight")
            if down is None:
                continue
            conv = down.dim() == 4 and tuple(down.shape[2:]) != (1, 1)
            want, setting = (settings.conv_rank, "conv_rank") if conv else (settings.rank, "rank")
            if down.shape[0] != want:
                raise _rank_refusal(lora, name, int(down.shape[0]), setting, want)
    return lora


def _block_wise(settings) -> bool:
    return bool(settings.block_dims.strip() or settings.conv_block_dims.strip())


def _rank_refusal(lora: LoraFile, name: str, rank: int, setting: str, want: int) -> SettingsError:
    return _refuse(
        lora, f"module {name} has rank {rank} but {setting} is {want}; set {setting} {rank} or turn "
        "dim_from_weights on to take the ranks from the file",
    )  # fmt: skip


@dataclass
class Adapted:
    """A module this run can put an adapter on: target prefix, path, layer (for sizes), whether it is a 3x3 conv,
    the rank the settings give it (block-wise ones included), and whether it is among the run's usual targets."""

    prefix: str
    path: str
    layer: nn.Module
    conv: bool
    rank: int
    usual: bool = True


def adapted_modules(settings, parts) -> dict[str, Adapted]:
    """kohya name -> Adapted for every module of the parts the run trains (the UNet if unet_lr > 0, the text
    encoders if te_lr > 0), named as in our files (an OpenCLIP attention as its q/k/v/out parts): the usual targets,
    and every other Linear / Conv2d of those parts (``usual`` False), which a file may adapt too (LyCORIS's full
    preset: conv_in, conv_out, the time embedding). Modules that block-wise settings switch off are left out."""
    from lib_lora_train.lora_format.keys import (
        MHA_PARTS,
        base_module,
        kohya_module_names,
        te_target_modules,
        unet_target_modules,
    )
    from lib_lora_train.train.blocks import unet_block_plan

    jobs = []
    if settings.unet_lr > 0:
        paths = unet_target_modules(parts.unet, "lora" if settings.network == "lora" else "locon")
        plan = unet_block_plan(parts, paths, settings)
        dropped = set(plan.dropped) if plan is not None else set()
        jobs.append((parts.unet, [p for p in paths if p not in dropped], plan, dropped))
    if settings.te_lr > 0:
        jobs += [(te, te_target_modules(te), None, set()) for te in parts.text_encoders]
    out: dict[str, Adapted] = {}
    for target, paths, plan, dropped in jobs:
        names = kohya_module_names(target)
        for path in paths:
            layer = base_module(target.module.get_submodule(path))
            if isinstance(layer, nn.MultiheadAttention):
                for part in MHA_PARTS:
                    out[names[f"{path}.{part}"]] = Adapted(target.prefix, f"{path}.{part}", layer, False,
                                                           settings.rank)  # fmt: skip
                continue
            conv = isinstance(layer, nn.Conv2d) and tuple(layer.kernel_size) != (1, 1)
            rank = settings.conv_rank if conv else settings.rank
            if plan is not None:
                rank = plan.ranks[path][0]
            out[names[path]] = Adapted(target.prefix, path, layer, conv, rank)
        for path, name in names.items():
            if name in out or path in dropped:
                continue
            try:
                layer = target.module.get_submodule(path)
            except AttributeError:  # the q/k/v parts of an attention the run does not adapt
                continue
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                conv = isinstance(layer, nn.Conv2d) and tuple(layer.kernel_size) != (1, 1)
                out[name] = Adapted(target.prefix, path, layer, conv, settings.conv_rank if conv else settings.rank,
                                    usual=False)  # fmt: skip
    return out


def _sizes(layer: nn.Module) -> tuple[int, int]:
    """(out, in * kernel area) of a layer (of one q/k/v/out part for a MultiheadAttention)."""
    if isinstance(layer, nn.MultiheadAttention):
        return layer.embed_dim, layer.embed_dim
    weight = layer.weight
    return int(weight.shape[0]), int(weight[0].numel())


def _file_sizes(parts: Mapping[str, torch.Tensor]) -> tuple[int, int] | None:
    """(out, in * kernel area) that a module's factors make, where the factors tell it (LoRA, LoHa)."""
    if "lora_down.weight" in parts:
        return int(parts["lora_up.weight"].shape[0]), int(parts["lora_down.weight"][0].numel())
    if "hada_w1_a" in parts and "hada_t1" not in parts:
        return int(parts["hada_w1_a"].shape[0]), int(parts["hada_w1_b"][0].numel())
    return None


def check_start_fits(settings, parts, lora: LoraFile | None = None) -> LoraFile:
    """What needs the model: the file's modules are modules this run adapts, of their sizes (and ranks)."""
    lora = lora or check_start_file(settings)
    adapted = adapted_modules(settings, parts)
    matched = [name for name in lora.modules if name in adapted]
    if not matched:
        example = next(iter(lora.modules))
        raise _refuse(
            lora, f"none of its {len(lora.modules)} modules (e.g. {example}) is a module this run trains in this "
            f"{parts.arch.upper()} model; pick a LoRA trained for this model type"
            + ("" if settings.unet_lr > 0 and settings.te_lr > 0 else " (or train the part it adapts: unet_lr/te_lr)"),
        )  # fmt: skip
    for name in matched:
        module, file_parts = adapted[name], lora.modules[name]
        sizes = _file_sizes(file_parts)
        if sizes is not None and sizes != _sizes(module.layer):
            raise _refuse(
                lora, f"module {name} is {sizes[0]}x{sizes[1]} but the model's layer is "
                f"{'x'.join(map(str, _sizes(module.layer)))}; the file was trained for another model",
            )  # fmt: skip
        rank = _module_rank(file_parts)
        if not settings.dim_from_weights and rank is not None and rank != module.rank:
            setting = "conv_rank" if module.conv else "rank"
            if _block_wise(settings):
                setting = "conv_block_dims" if module.conv else "block_dims"
            raise _rank_refusal(lora, name, rank, setting, module.rank)
    return lora


def _folded_alphas(lora: LoraFile) -> tuple[float | None, float | None]:
    """(alpha, conv alpha) from the metadata for a LoHa/LoKr written with alpha folded (alpha = rank everywhere)."""
    if NETWORK_KINDS[lora.network] not in ("loha", "lokr"):
        return None, None
    for parts in lora.modules.values():
        rank = _module_rank(parts)
        if "alpha" in parts and rank is not None and float(parts["alpha"]) != rank:
            return None, None  # a real alpha (LyCORIS): the file's own
    try:
        alpha = float(lora.metadata["ss_network_alpha"])
    except (KeyError, ValueError):
        return None, None
    try:
        conv_alpha = float(json.loads(lora.metadata.get("ss_network_args", "{}")).get("conv_alpha", alpha))
    except (ValueError, AttributeError, TypeError):
        conv_alpha = alpha
    return alpha, conv_alpha


def _module_alpha(parts: Mapping[str, torch.Tensor], rank: int | None, folded: float | None) -> float | None:
    if folded is not None:
        return folded
    if "alpha" in parts:
        return float(parts["alpha"])
    return float(rank) if rank is not None else None  # no alpha: loaders scale by 1, i.e. alpha = rank


@dataclass
class StartWeights:
    """A checked start file for a run: the settings the run trains with (the file's shape under dim_from_weights),
    and per target prefix the (rank, alpha) of each module path (only under dim_from_weights)."""

    lora: LoraFile
    settings: object
    ranks: dict[str, dict[str, tuple[int, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def load(self, handle) -> list[str]:
        """Copy the file's tensors into the injected adapters; returns the lines for the run log."""
        from lib_lora_train.lora_format.keys import kohya_module_names
        from lib_lora_train.lora_format.peft_bridge import load_adapter_state_dict

        loaded: Counter[str] = Counter()
        fresh = 0
        for injected in handle.targets:
            try:
                report = load_adapter_state_dict(
                    injected.target, kohya_module_names(injected.target), self.lora.tensors
                )
            except ValueError as exc:
                raise _refuse(self.lora, f"{exc}; or turn dim_from_weights on") from None
            loaded[injected.group] += len(report.loaded)
            fresh += len(report.missing)
        total = sum(loaded.values())
        parts = ", ".join(f"{n} {'UNet' if g == 'unet' else 'text encoder'}" for g, n in loaded.items() if n)
        lines = [*self.notes, f"network_weights: {total} modules loaded from {self.lora.path.name} ({parts})"]
        left = len(self.lora.modules) - total
        if left:
            lines.append(f"network_weights: {left} modules of the file are not trained in this run and are left out "
                         "of its files (a part with lr 0, or a block switched off)")  # fmt: skip
        if fresh:
            lines.append(f"network_weights: {fresh} modules of this run are not in the file and start fresh")
        return lines


def open_start_weights(settings, parts) -> StartWeights | None:
    """None without ``network_weights``; else the checked file and the settings/ranks the run trains with."""
    if not settings.network_weights.strip():
        return None
    lora = check_start_fits(settings, parts)
    adapted = adapted_modules(settings, parts)
    alpha, conv_alpha = _folded_alphas(lora)
    ranks: dict[str, dict[str, tuple[int, float]]] = {}
    plain: Counter[tuple[int, float]] = Counter()
    convs: Counter[tuple[int, float]] = Counter()
    extra = []
    for name, file_parts in lora.modules.items():
        module = adapted.get(name)
        if module is None or (module.usual and not settings.dim_from_weights):
            continue
        rank = _module_rank(file_parts)
        if rank is None:  # a LoKr with both factors full: the rank only has to be large enough for peft
            rank = max(_sizes(module.layer))
        module_alpha = _module_alpha(file_parts, rank, conv_alpha if module.conv else alpha)
        if not settings.dim_from_weights:  # a module outside the usual targets: the run's own alpha
            module_alpha = settings.conv_alpha if module.conv else settings.alpha
        ranks.setdefault(module.prefix, {})[module.path] = (rank, module_alpha)
        (convs if module.conv else plain)[(rank, module_alpha)] += 1
        extra += [name] if not module.usual else []
    notes = [f"network_weights: {len(extra)} modules of the file outside this run's usual targets (e.g. {extra[0]}) "
             "get adapters too"] if extra else []  # fmt: skip
    if not settings.dim_from_weights:
        return StartWeights(lora, settings, ranks, notes)
    base = plain.most_common(1)[0][0] if plain else (settings.rank, settings.alpha)
    conv = convs.most_common(1)[0][0] if convs else (settings.conv_rank, settings.conv_alpha)
    try:
        effective = settings.replace(rank=base[0], alpha=base[1], conv_rank=conv[0], conv_alpha=conv[1],
                                     dora_wd=is_dora(lora))  # fmt: skip
    except SettingsError as exc:
        raise _refuse(lora, f"its shape cannot be trained: {exc}") from None
    varying = sum(1 for r in ranks.values() for value in r.values() if value not in (base, conv))
    note = f"dim_from_weights: rank {base[0]} alpha {base[1]:g}"
    if NETWORK_KINDS[settings.network] != "lora" or convs:
        note += f", conv rank {conv[0]} alpha {conv[1]:g}"
    note += (", DoRA" if is_dora(lora) else "") + (f"; {varying} modules with their own rank/alpha" if varying else "")
    return StartWeights(lora, effective, ranks, [note, *notes])
