"""Training previews for hosts whose own generation pipeline cannot run on the model while it trains (Forge).

The WebUI's "Euler" sampler on a discrete-time model, built only from what every host already lends the engine:
``encode_text``, ``predict`` and the noise schedule (``ModelParts.alphas_cumprod``). It follows k-diffusion's
discrete denoiser as the WebUI runs it: ``steps`` timesteps evenly spaced from the last to 0, each sigma
interpolated in log space between the schedule's discrete sigmas, the start latent ``noise * sigma_max``, the model
input scaled by ``1 / sqrt(sigma^2 + 1)`` and called at that (fractional) timestep, classifier-free guidance on the
model output, and Euler steps down to sigma 0. The noise is drawn on the CPU from the request's seed, so a preview
does not depend on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lib_lora_train.host import Conditioning, ImageGeometry, SampleRequest

EncodeText = Callable[[Sequence[str], Sequence[ImageGeometry]], Conditioning]
Predict = Callable[[torch.Tensor, torch.Tensor, Conditioning], torch.Tensor]


def schedule(alphas_cumprod: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps, sigmas): ``steps`` timesteps from the last to 0 and ``steps + 1`` sigmas ending in 0."""
    if steps < 1:
        raise ValueError(f"a preview needs at least 1 step, not {steps}")
    discrete = ((1 - alphas_cumprod.double()) / alphas_cumprod.double()).sqrt().log()
    timesteps = torch.linspace(len(discrete) - 1, 0, steps, dtype=torch.float64)
    low = timesteps.floor().long()
    high = timesteps.ceil().long()
    weight = timesteps - low
    sigmas = ((1 - weight) * discrete[low] + weight * discrete[high]).exp()
    return timesteps, torch.cat([sigmas, sigmas.new_zeros(1)])


@torch.no_grad()
def sample_latents(
    request: SampleRequest,
    *,
    encode_text: EncodeText,
    predict: Predict,
    alphas_cumprod: torch.Tensor,
    prediction: str,
    latent_channels: int,
    device: torch.device,
    downscale: int = 8,
) -> torch.Tensor:
    """The denoised latent (1, C, H/8, W/8) for ``request``, in the model's latent space (not yet unscaled)."""
    height, width = request.height // downscale, request.width // downscale
    size = (request.height, request.width)
    geometry = [ImageGeometry(size, (0, 0), size)]
    cond = encode_text([request.prompt], geometry)
    uncond = encode_text([request.negative_prompt], geometry)
    generator = torch.Generator(device="cpu").manual_seed(int(request.seed))
    noise = torch.randn((1, latent_channels, height, width), generator=generator, dtype=torch.float32)
    timesteps, sigmas = schedule(alphas_cumprod, int(request.steps))
    x = noise.double() * sigmas[0]
    for i, t in enumerate(timesteps.tolist()):
        sigma = float(sigmas[i])
        model_in = (x / (sigma**2 + 1) ** 0.5).float().to(device)
        step = torch.full((1,), t, dtype=torch.float32, device=device)
        out_cond = predict(model_in, step, cond).double().cpu()
        out = out_cond
        if request.cfg_scale != 1:
            out_uncond = predict(model_in, step, uncond).double().cpu()
            out = out_uncond + request.cfg_scale * (out_cond - out_uncond)
        if prediction == "v":  # k-diffusion's v denoiser with sigma_data = 1
            denoised = x / (sigma**2 + 1) - out * sigma / (sigma**2 + 1) ** 0.5
        else:
            denoised = x - out * sigma
        x = x + (x - denoised) / sigma * (float(sigmas[i + 1]) - sigma)
    return x.float()


def to_image(pixels: torch.Tensor):
    """(1, 3, H, W) in [-1, 1] -> an RGB PIL image."""
    from PIL import Image

    array = ((pixels[0].float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).numpy(), "RGB")
