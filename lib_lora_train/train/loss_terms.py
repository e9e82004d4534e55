"""Per-sample loss terms as pure functions: the loss types (L2, L1, Huber, smooth L1) with kohya's Huber schedules,
debiased-estimation weights and masks. The loop combines them; nothing here knows about models or files.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lib_lora_train.train.noise import snr

HUBER_TYPES = ("huber", "smooth_l1")  # the loss types that take a Huber threshold


def huber_c(schedule: str, c: float, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The Huber threshold per sample (shape (B,)): constant ``c``; ``exponential`` decays from 1 at t=0 to ``c`` at
    the last timestep; ``snr`` goes from 1 for clean latents to ``c`` for pure noise, by the noise level
    sigma = sqrt((1-a)/a): (1-c) / (1+sigma)^2 + c."""
    t = timesteps.cpu()
    if schedule == "constant":
        return torch.full(t.shape, float(c))
    if schedule == "exponential":
        rate = -math.log(c) / len(alphas_cumprod)
        return torch.exp(-rate * t.double()).float()
    if schedule == "snr":
        a = alphas_cumprod[t].double()
        sigma = ((1 - a) / a).sqrt()
        return ((1 - c) / (1 + sigma) ** 2 + c).float()
    raise ValueError(f"unknown huber_schedule {schedule!r}; use snr, exponential or constant")


def elementwise_loss(pred: torch.Tensor, target: torch.Tensor, loss_type: str, c: torch.Tensor | None = None):
    """The unreduced loss between prediction and target (fp32), shape of ``pred``.

    Huber and smooth L1 are the pseudo-Huber forms that kohya trains with: 2c(sqrt(d^2 + c^2) - c) and
    2(sqrt(d^2 + c^2) - c); both are ~d^2 for small errors and grow linearly for large ones (outlier images and
    high-noise timesteps pull less).
    """
    pred, target = pred.float(), target.float()
    if loss_type == "l2":
        return F.mse_loss(pred, target, reduction="none")
    if loss_type == "l1":
        return F.l1_loss(pred, target, reduction="none")
    if c is None:
        raise ValueError(f"{loss_type} needs huber_c per sample")
    c = c.to(pred.device).reshape(-1, *([1] * (pred.dim() - 1)))
    root = torch.sqrt((pred - target) ** 2 + c**2) - c
    if loss_type == "huber":
        return 2 * c * root
    if loss_type == "smooth_l1":
        return 2 * root
    raise ValueError(f"unknown loss_type {loss_type!r}; use l2, l1, huber or smooth_l1")


def debiased_weights(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, prediction: str) -> torch.Tensor:
    """Debiased estimation (Yu et al. 2023): 1/sqrt(SNR) for eps models, 1/(SNR+1) for v models, with the SNR
    capped at 1000 so that nearly clean timesteps keep a small weight instead of vanishing."""
    s = torch.clamp(snr(timesteps, alphas_cumprod), max=1000.0)
    return 1 / (s + 1) if prediction == "v" else 1 / s.sqrt()


def masked(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The loss weighted by a mask in [0, 1] (B, 1, h, w), resized to the loss's size by area averaging."""
    if mask.shape[-2:] != loss.shape[-2:]:
        mask = F.interpolate(mask.float(), size=loss.shape[-2:], mode="area")
    return loss * mask.to(loss.device, loss.dtype)
