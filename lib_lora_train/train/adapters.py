"""Put LoRA / LoCon / LoHa / LoKr adapters into the host's modules with peft, and take them out again.

peft's ``inject_adapter_in_model`` replaces each targeted module by a wrapper that holds the original as
``base_layer``; ``AdapterHandle.remove`` puts every original object back at its path, deletes the ``peft_config``
attribute peft leaves on the root and restores ``requires_grad`` flags and train/eval modes, then checks the tree
against the snapshot taken before injection.

OpenCLIP text encoders (naming "open_clip") have fused ``nn.MultiheadAttention`` layers that peft cannot wrap per
projection: ``mha_split`` swaps them for stand-ins with q/k/v/out linears before injection, and ``remove`` puts the
original attention modules back after the adapters are out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from lib_lora_train.host import AdapterTarget, ModelParts
from lib_lora_train.train.blocks import BlockPlan, unet_block_plan
from lib_lora_train.train.dora import wrap_with_dora
from lib_lora_train.train.mha_split import MhaSplit, split_attention
from lib_lora_train.train.tree_guard import TreeSnapshot

log = logging.getLogger(__name__)

ADAPTER_NAME = "default"


class AdapterError(RuntimeError):
    """Adapters could not be injected or removed cleanly."""


@dataclass
class InjectedTarget:
    target: AdapterTarget
    group: str  # "unet" or "te"
    paths: list[str]  # module paths that carry an adapter
    originals: dict[str, torch.nn.Module]
    snapshot: TreeSnapshot


@dataclass
class AdapterHandle:
    targets: list[InjectedTarget] = field(default_factory=list)
    splits: list[MhaSplit] = field(default_factory=list)  # attention split before injection, restored last
    hooks: list = field(default_factory=list)  # dropout hooks on the adapter layers, removed first
    block_plan: BlockPlan | None = None  # the UNet's block-wise ranks and lr weights, when set
    removed: bool = False

    def named_parameters(self, group: str | None = None) -> dict[str, torch.nn.Parameter]:
        """Adapter parameters as ``<prefix>/<module path>/<peft param name>`` -> Parameter (for saving state)."""
        out = {}
        for injected in self.targets:
            if group is not None and injected.group != group:
                continue
            root = injected.target.module
            for path in injected.paths:
                for name, p in root.get_submodule(path).named_parameters():
                    if not name.startswith("base_layer."):
                        out[f"{injected.target.prefix}/{path}/{name}"] = p
        return out

    def parameters(self, group: str | None = None) -> list[torch.nn.Parameter]:
        """The trainable adapter parameters of ``group`` ("unet", "te" or None for all)."""
        return list(self.named_parameters(group).values())

    def summary(self) -> list[str]:
        """One line per adapted part for the run log, e.g. "lora_te2: adapters on 192 modules (32 OpenCLIP ...)"."""
        split_roots = {id(split.root): len(split.originals) for split in self.splits}
        lines = []
        for injected in self.targets:
            line = f"{injected.target.prefix}: adapters on {len(injected.paths)} modules"
            if id(injected.target.module) in split_roots:
                count = split_roots[id(injected.target.module)]
                line += f" ({count} OpenCLIP attention layers split into q/k/v/out for training)"
            lines.append(line)
        return lines + (self.block_plan.notes if self.block_plan else [])

    def layers(self):
        """Every module that carries an adapter."""
        return [injected.target.module.get_submodule(path) for injected in self.targets for path in injected.paths]

    def params_by_path(self, group: str) -> dict[str, list[torch.nn.Parameter]]:
        """The trainable adapter parameters of ``group`` per adapted module path."""
        out: dict[str, list[torch.nn.Parameter]] = {}
        for key, p in self.named_parameters(group).items():
            out.setdefault(key.split("/")[1], []).append(p)
        return out

    def remove(self) -> None:
        """Put the original modules back and restore the flags; raises AdapterError if the tree is not as it was."""
        if self.removed:
            return
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()
        problems = []
        for injected in reversed(self.targets):
            root = injected.target.module
            for path in injected.paths:
                _set_submodule(root, path, injected.originals[path])
            if "peft_config" in vars(root) and "peft_config" not in injected.snapshot.attributes.get("", frozenset()):
                del root.peft_config
            injected.snapshot.restore_flags(root)
            problems += [f"{injected.target.prefix}: {p}" for p in injected.snapshot.differences(root)]
        for split in reversed(self.splits):
            try:
                split.restore()
            except Exception as exc:  # keep restoring the others
                problems.append(str(exc))
        self.removed = True
        if problems:
            raise AdapterError("the host's model was not restored exactly: " + "; ".join(problems[:5]))


def _set_submodule(root: torch.nn.Module, path: str, module: torch.nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def is_spatial_conv(module: torch.nn.Module) -> bool:
    """A convolution with a kernel larger than 1x1: LoCon's conv_dim / conv_alpha apply to it."""
    return isinstance(module, torch.nn.Conv2d) and tuple(module.kernel_size) != (1, 1)


def peft_config(network: str, rank: int, alpha: float, paths: list[str], rank_dropout: float = 0.0,
                module_dropout: float = 0.0):  # fmt: skip
    """The peft config for one network type and one (rank, alpha) over exact module paths; the dropouts are peft's
    own for LoHa / LoKr (LoRA / LoCon get kohya's through ``dropouts``)."""
    if network in ("lora", "locon"):
        from peft import LoraConfig

        return LoraConfig(r=rank, lora_alpha=alpha, target_modules=paths, lora_dropout=0.0, init_lora_weights=True)
    if network == "loha":
        from peft import LoHaConfig

        return LoHaConfig(r=rank, alpha=alpha, target_modules=paths, init_weights=True, rank_dropout=rank_dropout,
                          module_dropout=module_dropout)  # fmt: skip
    if network == "lokr":
        from peft import LoKrConfig

        return LoKrConfig(r=rank, alpha=alpha, target_modules=paths, init_weights=True, rank_dropout=rank_dropout,
                          module_dropout=module_dropout)  # fmt: skip
    raise AdapterError(f"unknown network type {network!r}")


def inject_into_target(
    target: AdapterTarget,
    paths: list[str],
    *,
    group: str,
    network: str,
    rank: int,
    alpha: float,
    conv_rank: int,
    conv_alpha: float,
    ranks: dict[str, tuple[int, float]] | None = None,
    dropouts: tuple[float, float] = (0.0, 0.0),
    dora: bool = False,
) -> InjectedTarget:
    r"""Inject adapters at exactly ``paths`` under ``target.module``; 3x3 convs get (conv_rank, conv_alpha), and
    ``ranks`` (path -> (rank, alpha), from block-wise settings) overrides both. ``dropouts``: peft's (rank, module)
    dropout for LoHa / LoKr. ``dora``: our DoRA layers (``train.dora``) instead of peft's LoRA, for lora / locon.

    One injection per (rank, alpha) rather than ``rank_pattern``: the result does not depend on how each peft
    tuner matches pattern keys (LoRA tries ``.*\.<key>$`` and then the exact path; LoHa/LoKr ``(.*\.)?<key>$``).
    """
    from peft import inject_adapter_in_model

    root = target.module
    snapshot = TreeSnapshot.take(root)
    modules = dict(root.named_modules())
    missing = [p for p in paths if p not in modules]
    if missing:
        raise AdapterError(f"{target.prefix}: no module at {missing[0]!r} ({len(missing)} target paths missing)")
    if "peft_config" in vars(root):
        raise AdapterError(f"{target.prefix}: the model already carries peft adapters; remove them first")
    subsets: dict[tuple[int, float], list[str]] = {}
    for p in paths:
        default = (conv_rank, conv_alpha) if is_spatial_conv(modules[p]) else (rank, alpha)
        subsets.setdefault((ranks or {}).get(p, default), []).append(p)
    originals = {p: modules[p] for p in paths}
    injected = InjectedTarget(target, group, [], originals, snapshot)
    try:
        for (r, a), subset in subsets.items():
            if subset and dora:
                wrap_with_dora(root, subset, r, a)
                injected.paths += subset
            elif subset:
                config = peft_config(network, r, a, subset, *dropouts)
                inject_adapter_in_model(config, root, adapter_name=ADAPTER_NAME)
                root.__dict__.pop("peft_config", None)  # peft leaves its config on the root; we keep none
                injected.paths += subset
        for path in paths:
            wrapper = root.get_submodule(path)
            if getattr(wrapper, "base_layer", None) is not originals[path]:
                raise AdapterError(f"{target.prefix}: peft did not wrap {path!r} as expected")
    except BaseException:
        # undo a half-done injection before reporting
        for path in injected.paths:
            _set_submodule(root, path, originals[path])
        root.__dict__.pop("peft_config", None)
        snapshot.restore_flags(root)
        raise
    return injected


def inject_adapters(
    parts: ModelParts, settings, *, train_unet: bool = True, train_te: bool = True, module_ranks=None
) -> AdapterHandle:
    """Adapters into the UNet (if ``train_unet``) and text encoders (if ``train_te``), targets from lora_format.keys.
    ``module_ranks``: target prefix -> {path: (rank, alpha)} for modules with their own, also modules outside the
    usual targets (a start file's, see ``start_weights``).

    Afterwards only adapter parameters require gradients: the host's own weights are frozen in every part (also in
    parts without adapters, so that no gradient is computed for them). Adapter weights are fp32 whatever the host's
    weight dtype (fp32 master weights; autocast handles the half-precision compute).
    """
    from lib_lora_train.lora_format.keys import unet_target_modules
    from lib_lora_train.train.dropouts import attach_dropouts, wants_hooks

    handle = AdapterHandle()
    jobs: list[tuple[AdapterTarget, str, list[str]]] = []
    if train_unet:
        unet_network = "lora" if settings.network == "lora" else "locon"
        unet_paths = list(unet_target_modules(parts.unet, unet_network))
        handle.block_plan = unet_block_plan(parts, unet_paths, settings)
        if handle.block_plan is not None:
            unet_paths = [p for p in unet_paths if p in handle.block_plan.ranks]
        jobs.append((parts.unet, "unet", unet_paths))
    try:
        if train_te:
            for te in parts.text_encoders:
                jobs.append((te, "te", _te_paths(te, handle)))
        for target, group, paths in jobs:
            own = (module_ranks or {}).get(target.prefix, {})
            paths = paths + [p for p in own if p not in set(paths)]
            ranks = {**(handle.block_plan.ranks if group == "unet" and handle.block_plan else {}), **own}
            if not paths:  # every UNet block switched off by block-wise settings
                continue
            handle.targets.append(
                inject_into_target(
                    target,
                    paths,
                    group=group,
                    network=settings.network,
                    rank=settings.rank,
                    alpha=settings.alpha,
                    conv_rank=settings.conv_rank,
                    conv_alpha=settings.conv_alpha,
                    ranks=ranks or None,
                    dropouts=(settings.rank_dropout, settings.module_dropout),
                    dora=settings.dora_wd,
                )
            )
        if wants_hooks(settings):
            handle.hooks += attach_dropouts(handle.layers(), settings)
        for injected in handle.targets:
            injected.target.module.requires_grad_(False)
        for p in handle.parameters():
            if p.dtype != torch.float32:
                p.data = p.data.float()
            p.requires_grad_(True)
    except BaseException:
        handle.remove()
        raise
    return handle


def _te_paths(te: AdapterTarget, handle: AdapterHandle) -> list[str]:
    """The text encoder's adapter paths; an OpenCLIP tower's attention is split first (recorded in ``handle``)."""
    from lib_lora_train.lora_format.keys import te_target_modules

    paths = list(te_target_modules(te))
    modules = dict(te.module.named_modules())
    mha = [p for p in paths if isinstance(modules.get(p), torch.nn.MultiheadAttention)]
    if not mha:
        return paths
    if te.naming != "open_clip":
        log.info("%s: %d MultiheadAttention modules get no adapter (not an OpenCLIP tower)", te.prefix, len(mha))
        return [p for p in paths if p not in set(mha)]
    split = split_attention(te.module, mha)
    handle.splits.append(split)
    out = []
    for path in paths:
        out += split.split_paths(path) if path in split.originals else [path]
    return out
