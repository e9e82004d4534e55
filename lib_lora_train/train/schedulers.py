"""Learning-rate schedules as a pure factor function plus a torch LambdaLR around it.

Warmup is linear from 0 for ``warmup_steps`` optimiser steps; the shapes after it match diffusers'/transformers'
schedules of the same names (what kohya's sd-scripts uses), so users' learning rates carry over.
"""

from __future__ import annotations

import functools
import math

import torch


def warmup_steps(lr_warmup: float, total_steps: int) -> int:
    """``lr_warmup`` below 1 is a fraction of all steps; 1 or more is a number of steps."""
    if lr_warmup <= 0:
        return 0
    if lr_warmup < 1:
        return int(round(lr_warmup * total_steps))
    return min(int(lr_warmup), total_steps)


def lr_factor(step: int, *, name: str, total_steps: int, warmup: int, cycles: int = 1, power: float = 1.0) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    if name == "constant":
        return 1.0
    if warmup > 0 and step < warmup:
        return step / warmup
    if name == "constant_with_warmup":
        return 1.0
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    if name == "linear":
        return max(0.0, 1.0 - progress)
    if name == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    if name == "cosine_with_restarts":
        if progress >= 1.0:
            return 0.0
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))
    if name == "polynomial":
        # decays to lr_end = 0 like transformers' polynomial schedule with lr_end 0
        return (1.0 - progress) ** power
    raise ValueError(f"unknown learning-rate scheduler {name!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, settings, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The LambdaLR for ``settings.lr_scheduler``; a partial (not a lambda) so its state_dict is plain data."""
    factor = functools.partial(
        lr_factor,
        name=settings.lr_scheduler,
        total_steps=total_steps,
        warmup=warmup_steps(settings.lr_warmup, total_steps),
        cycles=settings.lr_cycles,
        power=settings.lr_power,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
