"""Optimisers by name. AdamW, Adafactor and SGD (Nesterov) always work; Lion, Prodigy and AdamW8bit need their
package, and asking for one that is missing raises ``OptimizerUnavailable`` naming the package to install."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch

# optimiser name -> (module to import, pip package that provides it)
OPTIONAL = {
    "lion": ("lion_pytorch", "lion-pytorch"),
    "prodigy": ("prodigyopt", "prodigyopt"),
    "adamw8bit": ("bitsandbytes", "bitsandbytes"),
}


class OptimizerUnavailable(RuntimeError):
    """The optimiser's package is not installed; the message says which one."""


def _optional(name: str) -> Any:
    module_name, package = OPTIONAL[name]
    try:
        return importlib.import_module(module_name)
    except ImportError:
        raise OptimizerUnavailable(
            f"optimizer {name!r} needs the package {package!r}: pip install {package} (or choose adamw)"
        ) from None


def _fast_adamw_kwargs(params: list[dict]) -> dict[str, Any]:
    """Use the fused (CUDA) or multi-tensor AdamW kernels: one launch for all LoRA tensors instead of hundreds."""
    devices = {p.device.type for group in params for p in group["params"]}
    if devices == {"cuda"} and "fused" in inspect.signature(torch.optim.AdamW).parameters:
        return {"fused": True}
    return {"foreach": True}


def build_optimizer(name: str, param_groups: list[dict], *, weight_decay: float) -> torch.optim.Optimizer:
    """An optimiser over ``param_groups`` (each with its own ``lr``) by its settings name."""
    if name == "adamw":
        return torch.optim.AdamW(param_groups, weight_decay=weight_decay, **_fast_adamw_kwargs(param_groups))
    if name == "sgd":
        return torch.optim.SGD(param_groups, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        # explicit learning rates (ours), not Adafactor's relative-step schedule
        return Adafactor(
            param_groups,
            lr=param_groups[0]["lr"],
            scale_parameter=False,
            relative_step=False,
            warmup_init=False,
            weight_decay=weight_decay,
        )
    if name == "lion":
        return _optional("lion").Lion(param_groups, weight_decay=weight_decay)
    if name == "prodigy":
        # Prodigy finds its own step size: the learning rates act as multipliers (1.0 is the usual value)
        return _optional("prodigy").Prodigy(param_groups, weight_decay=weight_decay)
    if name == "adamw8bit":
        return _optional("adamw8bit").optim.AdamW8bit(param_groups, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")
