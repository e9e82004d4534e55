"""The preview sampler (train/preview_sampler.py) is the Euler sampler: on a tiny pipeline it ends where diffusers'
EulerDiscreteScheduler ends from the same start noise, for eps and v models, with and without guidance."""

import pytest
import torch
from diffusers import EulerDiscreteScheduler
from lora_format_trees import one_torch_thread

from lib_lora_train.host import SampleRequest
from lib_lora_train.hosts.diffusers_host import DiffusersHost
from lib_lora_train.hosts.tiny_model import build_tiny_pipeline
from lib_lora_train.train import preview_sampler


def test_the_schedule_runs_from_the_last_timestep_to_sigma_zero():
    alphas = torch.linspace(0.999, 0.01, 1000)
    timesteps, sigmas = preview_sampler.schedule(alphas, 4)
    assert timesteps.tolist() == [999, 666, 333, 0]
    discrete = ((1 - alphas.double()) / alphas.double()).sqrt()
    assert torch.allclose(sigmas[:-1], discrete[[999, 666, 333, 0]]) and sigmas[-1] == 0
    # between two discrete timesteps the sigma is interpolated in log space
    timesteps, sigmas = preview_sampler.schedule(alphas, 3)  # 999, 499.5, 0
    middle = (discrete[499].log() + discrete[500].log()) / 2
    assert timesteps[1] == 499.5 and torch.isclose(sigmas[1], middle.exp())
    with pytest.raises(ValueError, match="at least 1 step"):
        preview_sampler.schedule(alphas, 0)


@pytest.mark.usefixtures(one_torch_thread.__name__)
@pytest.mark.parametrize(("prediction", "cfg"), [("epsilon", 7.0), ("v_prediction", 5.0), ("epsilon", 1.0)])
def test_the_preview_is_diffusers_euler_from_the_same_noise(prediction, cfg):
    pipe = build_tiny_pipeline(seed=4, prediction=prediction)
    host = DiffusersHost(pipe)
    parts = host.model_parts()
    request = SampleRequest("a red square", negative_prompt="blurry", seed=11, steps=4, cfg_scale=cfg, width=64,
                            height=64)  # fmt: skip
    ours = preview_sampler.sample_latents(
        request, encode_text=host.encode_text, predict=host.predict, alphas_cumprod=parts.alphas_cumprod,
        prediction=parts.prediction, latent_channels=4, device=torch.device("cpu"),
    )  # fmt: skip
    # 4 steps over 1000 timesteps fall on whole timesteps (999, 666, 333, 0), where diffusers' linear and the WebUI's
    # log-space sigma interpolation agree
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(11))
    theirs = pipe(request.prompt, negative_prompt=request.negative_prompt, num_inference_steps=4, guidance_scale=cfg,
                  latents=noise, output_type="latent", height=64, width=64).images  # fmt: skip
    assert ours.shape == theirs.shape == (1, 4, 8, 8)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()


@pytest.mark.usefixtures(one_torch_thread.__name__)
def test_another_seed_gives_another_preview_and_an_image_comes_out():
    host = DiffusersHost(build_tiny_pipeline(seed=4))
    parts = host.model_parts()

    def latents(seed):
        request = SampleRequest("a red square", seed=seed, steps=3, cfg_scale=7, width=64, height=64)
        return preview_sampler.sample_latents(
            request, encode_text=host.encode_text, predict=host.predict, alphas_cumprod=parts.alphas_cumprod,
            prediction="eps", latent_channels=4, device=torch.device("cpu"),
        )  # fmt: skip

    a, b = latents(1), latents(2)
    assert torch.equal(a, latents(1)) and not torch.allclose(a, b)
    image = preview_sampler.to_image(torch.tanh(torch.randn(1, 3, 16, 24)))
    assert image.size == (24, 16) and image.mode == "RGB"
