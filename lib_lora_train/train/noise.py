"""Diffusion training math as pure functions: per-step random numbers, noising, targets and loss weights.

Every random number of a step comes from a generator seeded by (seed, step, purpose), so a run resumed at step k
draws exactly what an uninterrupted run draws at step k. What is drawn for a training sample comes from that sample's
own generator (``sample_generators``, keyed by its place in the step's global batch), so that splitting a batch over
processes or devices changes none of its numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch

# one generator for a whole batch, or one per sample (row)
Generators = torch.Generator | Sequence[torch.Generator]


def derived_seed(seed: int, *parts: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and any labels (step number, purpose); stable across runs and machines."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def step_generator(seed: int, step: int, purpose: str) -> torch.Generator:
    """A CPU generator for one purpose of one step (CPU so that the numbers are the same on every device)."""
    return torch.Generator(device="cpu").manual_seed(derived_seed(seed, step, purpose))


def sample_generators(seed: int, step: int, micro: int, positions: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample of a micro-batch, keyed by (seed, step, micro-batch, the sample's position in the
    global micro-batch): a process holding positions 2 and 3 of a batch of 4 draws what one process at 4 draws there."""
    return [torch.Generator(device="cpu").manual_seed(derived_seed(seed, step, micro, p, "sample")) for p in positions]


def per_row(generator: Generators, rows: int, draw: Callable[[int, torch.Generator], torch.Tensor]) -> torch.Tensor:
    """``draw(n, generator)`` for a batch of ``rows``: once with a single generator, or row by row (n=1) with one
    generator per row, concatenated along dim 0."""
    if isinstance(generator, torch.Generator):
        return draw(rows, generator)
    if len(generator) != rows:
        raise ValueError(f"{len(generator)} generators for a batch of {rows}")
    return torch.cat([draw(1, g) for g in generator])


def sample_timesteps(
    batch: int, num_train_timesteps: int, generator: Generators, low: int = 0, high: int | None = None
) -> torch.Tensor:
    """Uniform integer timesteps in [low, high) (default [0, num_train_timesteps)), shape (batch,), int64 on the CPU."""
    high = num_train_timesteps if high is None else high
    return per_row(generator, batch, lambda n, g: torch.randint(low, high, (n,), generator=g, dtype=torch.long))


def make_noise(shape: tuple[int, ...], generator: Generators, noise_offset: float = 0.0) -> torch.Tensor:
    """Gaussian noise (CPU, fp32); with ``noise_offset`` a per-channel constant is added (Guttenberg's offset noise),
    which lets the model learn very dark and very bright images."""

    def draw(n: int, g: torch.Generator) -> torch.Tensor:
        noise = torch.randn((n, *shape[1:]), generator=g)
        if noise_offset > 0:
            noise = noise + noise_offset * torch.randn((n, shape[1], 1, 1), generator=g)
        return noise

    return per_row(generator, shape[0], draw)


def _gather(values: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    out = values.to(like.device)[timesteps.to(like.device)].float()
    return out.reshape(-1, *([1] * (like.dim() - 1)))


def add_noise(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor):
    """x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps (the forward diffusion process)."""
    a = _gather(alphas_cumprod, timesteps, latents)
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def v_target(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor):
    """The velocity target of v-prediction models: v = sqrt(a_t) eps - sqrt(1 - a_t) x_0."""
    a = _gather(alphas_cumprod, timesteps, latents)
    return a.sqrt() * noise - (1 - a).sqrt() * latents


def training_target(prediction: str, latents, noise, timesteps, alphas_cumprod) -> torch.Tensor:
    """What the model should output: the noise for eps models, the velocity for v models."""
    if prediction == "v":
        return v_target(latents, noise, timesteps, alphas_cumprod)
    return noise


def snr(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio a_t / (1 - a_t) per timestep."""
    a = alphas_cumprod[timesteps.cpu()].double()
    return (a / (1 - a)).float()


def min_snr_weights(
    timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, gamma: float, prediction: str
) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023): min(SNR, gamma) / SNR for eps, min(SNR, gamma) / (SNR + 1) for v.

    ``gamma <= 0`` means off (all ones).
    """
    s = snr(timesteps, alphas_cumprod)
    if gamma <= 0:
        return torch.ones_like(s)
    clipped = torch.minimum(s, torch.full_like(s, gamma))
    return clipped / (s + 1) if prediction == "v" else clipped / s


# --- options of #14: timestep range, pyramid and input-perturbation noise, zero terminal SNR -------------------------

# what the WebUI puts in place of the last alphas_cumprod when it samples with zero terminal SNR: exactly 0 would make
# the SNR 0 and every 1/SNR weight infinite
ZERO_TERMINAL_ALPHA = 4.8973451890853435e-08


def timestep_range(num_train_timesteps: int, min_timestep: int = 0, max_timestep: int | None = None):
    """The [low, high) range timesteps are drawn from, clipped to the model's schedule."""
    high = num_train_timesteps if max_timestep is None else min(max_timestep, num_train_timesteps)
    low = max(0, min(min_timestep, high - 1))
    return low, high


def pyramid_noise(noise: torch.Tensor, generator: Generators, iterations: int, discount: float) -> torch.Tensor:
    """Multires (pyramid) noise: lower-resolution noise upsampled and added level by level, ``discount**i`` each.

    Each sample is renormalised to unit std on its own (not over the batch), so that how a batch is split across
    processes or micro-batches does not change any sample's noise.
    """
    if iterations <= 0:
        return noise
    if not isinstance(generator, torch.Generator):
        return torch.cat([pyramid_noise(noise[i : i + 1], g, iterations, discount) for i, g in enumerate(generator)])
    b, c, h, w = noise.shape
    out = noise.clone()
    for i in range(iterations):
        # a random shrink factor in [2, 4) per level, as in the pyramid-noise recipe (level 0 is full size)
        r = float(torch.rand((), generator=generator)) * 2 + 2
        hn, wn = max(1, int(h / r**i)), max(1, int(w / r**i))
        low = torch.randn((b, c, hn, wn), generator=generator)
        out += torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False) * discount**i
        if hn == 1 or wn == 1:
            break
    return out / out.flatten(1).std(dim=1).reshape(b, 1, 1, 1)


def perturbed(noise: torch.Tensor, generator: Generators, gamma: float) -> torch.Tensor:
    """Input-perturbation noise (Ning et al. 2023): the latents are noised with ``noise + gamma * xi`` while the
    target stays ``noise``, which reduces the exposure bias between training and sampling."""
    if gamma <= 0:
        return noise
    return noise + gamma * per_row(
        generator, noise.shape[0], lambda n, g: torch.randn((n, *noise.shape[1:]), generator=g)
    )


def zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The schedule rescaled so that the last timestep is pure noise (Lin et al. 2023, "Common Diffusion Noise
    Schedules and Sample Steps are Flawed"): sqrt(a) shifted and scaled to keep a_0 and make a_T zero."""
    root = alphas_cumprod.double().sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    out = root**2
    out[-1] = ZERO_TERMINAL_ALPHA
    return out.to(alphas_cumprod.dtype)
