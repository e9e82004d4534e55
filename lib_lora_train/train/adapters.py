"""Put LoRA / LoCon / LoHa / LoKr adapters into the host's modules with peft, and take them out again.

peft's ``inject_adapter_in_model`` replaces each targeted module by a wrapper that holds the original as
``base_layer``; ``AdapterHandle.remove`` puts every original object back at its path, deletes the ``peft_config``
attribute peft leaves on the root and restores ``requires_grad`` flags and train/eval modes, then checks the tree
against the snapshot taken before injection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from lib_lora_train.host import AdapterTarget, ModelParts
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

    def remove(self) -> None:
        """Put the original modules back and restore the flags; raises AdapterError if the tree is not as it was."""
        if self.removed:
            return
        problems = []
        for injected in reversed(self.targets):
            root = injected.target.module
            for path in injected.paths:
                _set_submodule(root, path, injected.originals[path])
            if "peft_config" in vars(root) and "peft_config" not in injected.snapshot.attributes.get("", frozenset()):
                del root.peft_config
            injected.snapshot.restore_flags(root)
            problems += [f"{injected.target.prefix}: {p}" for p in injected.snapshot.differences(root)]
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


def peft_config(network: str, rank: int, alpha: float, paths: list[str]):
    """The peft config for one network type and one (rank, alpha) over exact module paths."""
    if network in ("lora", "locon"):
        from peft import LoraConfig

        return LoraConfig(r=rank, lora_alpha=alpha, target_modules=paths, lora_dropout=0.0, init_lora_weights=True)
    if network == "loha":
        from peft import LoHaConfig

        return LoHaConfig(r=rank, alpha=alpha, target_modules=paths, init_weights=True)
    if network == "lokr":
        from peft import LoKrConfig

        return LoKrConfig(r=rank, alpha=alpha, target_modules=paths, init_weights=True)
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
) -> InjectedTarget:
    r"""Inject adapters at exactly ``paths`` under ``target.module``; 3x3 convs get (conv_rank, conv_alpha).

    Two injections, one per (rank, alpha), rather than ``rank_pattern``: the result does not depend on how each
    peft tuner matches pattern keys (LoRA tries ``.*\.<key>$`` and then the exact path; LoHa/LoKr ``(.*\.)?<key>$``).
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
    convs = [p for p in paths if is_spatial_conv(modules[p])]
    plain = [p for p in paths if p not in set(convs)]
    originals = {p: modules[p] for p in paths}
    injected = InjectedTarget(target, group, [], originals, snapshot)
    try:
        for subset, r, a in ((plain, rank, alpha), (convs, conv_rank, conv_alpha)):
            if subset:
                inject_adapter_in_model(peft_config(network, r, a, subset), root, adapter_name=ADAPTER_NAME)
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


def inject_adapters(parts: ModelParts, settings, *, train_unet: bool = True, train_te: bool = True) -> AdapterHandle:
    """Adapters into the UNet (if ``train_unet``) and text encoders (if ``train_te``), targets from lora_format.keys.

    Afterwards only adapter parameters require gradients: the host's own weights are frozen in every part (also in
    parts without adapters, so that no gradient is computed for them). Adapter weights are fp32 whatever the host's
    weight dtype (fp32 master weights; autocast handles the half-precision compute).
    """
    from lib_lora_train.lora_format.keys import te_target_modules, unet_target_modules

    handle = AdapterHandle()
    jobs: list[tuple[AdapterTarget, str, list[str]]] = []
    if train_unet:
        unet_network = "lora" if settings.network == "lora" else "locon"
        jobs.append((parts.unet, "unet", list(unet_target_modules(parts.unet, unet_network))))
    if train_te:
        for te in parts.text_encoders:
            paths = list(te_target_modules(te))
            modules = dict(te.module.named_modules())
            mha = [p for p in paths if isinstance(modules.get(p), torch.nn.MultiheadAttention)]
            if mha:
                log.info(
                    "%s: %d MultiheadAttention modules get no adapter (not supported by peft)", te.prefix, len(mha)
                )
            jobs.append((te, "te", [p for p in paths if p not in set(mha)]))
    try:
        for target, group, paths in jobs:
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
                )
            )
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
