"""The diffusers host on a tiny random pipeline: model parts, encoders, clip skip, checkpointing, samples, loading."""

import pytest
import torch

from lib_lora_train.host import ImageGeometry, SampleRequest
from lib_lora_train.hosts.diffusers_host import DiffusersHost, load_pipeline
from lib_lora_train.hosts.tiny_model import build_tiny_pipeline, save_tiny_model
from lib_lora_train.settings import TrainSettings
from lib_lora_train.train.adapters import inject_adapters

GEO = ImageGeometry((64, 64), (0, 0), (64, 64))


@pytest.fixture(scope="module")
def host():
    return DiffusersHost(build_tiny_pipeline(seed=4))


def test_model_parts_describe_the_pipeline(host):
    parts = host.model_parts()
    assert parts.arch == "sd1" and parts.prediction == "eps"
    assert parts.unet.module is host.pipe.unet and parts.unet.prefix == "lora_unet"
    assert [t.prefix for t in parts.text_encoders] == ["lora_te"] and parts.text_encoders[0].naming == "hf_clip"
    assert parts.num_train_timesteps == 1000
    assert torch.all(parts.alphas_cumprod[1:] < parts.alphas_cumprod[:-1])


def test_encoders_and_unet_call_shapes(host):
    latents = host.encode_images(torch.zeros(2, 3, 64, 64))
    assert latents.shape == (2, 4, 8, 8)
    cond = host.encode_text(["a", "b c"], [GEO, GEO])
    assert cond.context.shape == (2, 77, 32) and cond.vector is None
    out = host.predict(latents, torch.tensor([1, 999]), cond)
    assert out.shape == latents.shape


def test_clip_skip_changes_the_conditioning_and_is_undone(host):
    last = host.encode_text(["a red square"], [GEO]).context
    undo = host.use_clip_skip(2)
    penultimate = host.encode_text(["a red square"], [GEO]).context
    undo()
    assert not torch.allclose(last, penultimate)
    assert torch.equal(host.encode_text(["a red square"], [GEO]).context, last)


def test_v_prediction_scheduler_gives_v_parts():
    assert DiffusersHost(build_tiny_pipeline(prediction="v_prediction")).model_parts().prediction == "v"


def test_gradient_checkpointing_still_trains_text_encoder_adapters(host):
    parts = host.model_parts()
    handle = inject_adapters(parts, TrainSettings(rank=2))
    undo = host.set_gradient_checkpointing(True)
    try:
        parts.text_encoders[0].module.train()
        host.encode_text(["a red square"], [GEO]).context.sum().backward()
        grads = [p.grad for p in handle.parameters("te")]
        assert grads and all(g is not None for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
    finally:
        undo()
        parts.text_encoders[0].module.train(False)
        handle.remove()
    assert not host.pipe.unet.is_gradient_checkpointing
    assert "_require_grads_hook" not in vars(host.pipe.text_encoder)


def test_samples_render_with_the_requested_size(host):
    images = host.render_samples([SampleRequest("red square", steps=1, width=64, height=64, seed=1)])
    assert len(images) == 1 and images[0].size == (64, 64)


def test_saved_tiny_model_loads_back_as_a_folder(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny")
    pipe = load_pipeline(folder)
    assert pipe.unet.config.block_out_channels == (32, 64) or list(pipe.unet.config.block_out_channels) == [32, 64]
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_pipeline(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such model"):
        load_pipeline(tmp_path / "missing")


def test_sdxl_pipeline_conditions_on_two_encoders_pooled_text_and_sizes():
    from lib_lora_train.hosts.tiny_model import build_tiny_sdxl_pipeline

    host = DiffusersHost(build_tiny_sdxl_pipeline())
    parts = host.model_parts()
    assert parts.arch == "sdxl" and [t.prefix for t in parts.text_encoders] == ["lora_te1", "lora_te2"]
    small = ImageGeometry((48, 40), (0, 4), (64, 64))
    cond = host.encode_text(["a", "b"], [GEO, small])
    assert cond.context.shape == (2, 77, 64)  # both encoders' hidden states side by side
    assert cond.vector.shape == (2, 32 + 6) and cond.vector[1, -6:].tolist() == [48, 40, 0, 4, 64, 64]
    latents = host.encode_images(torch.zeros(2, 3, 64, 64))
    out = host.predict(latents, torch.tensor([1, 500]), cond)
    assert out.shape == latents.shape
    other = host.predict(latents, torch.tensor([1, 500]), type(cond)(cond.context, cond.vector * 0))
    assert not torch.allclose(out, other)  # the size/pooled vector reaches the UNet
