"""A saved file is read by diffusers' ``load_lora_weights`` with every key consumed, and reproduces the training.

With the WebUI's pins (diffusers 0.27.2, transformers 4.30.2, peft 0.13.2) diffusers turns its PEFT backend off
(it wants transformers >= 4.34) and then ``load_lora_weights`` refuses to run; its old non-PEFT path is gone for
kohya files in 0.27 (the UNet layers are plain ``nn.Linear``/``nn.Conv2d`` that ``load_attn_procs`` rejects). So
the tests switch the flag back on in the two loader modules (peft 0.13.2 is installed and is what that path calls) and
stand in for transformers' ``load_adapter`` (>= 4.34) with exactly what it does: peft's
``inject_adapter_in_model`` + ``set_peft_model_state_dict``. Everything else is diffusers' own kohya loading: its
key conversion raises on any key it cannot rename, and the loaded pipeline must reproduce the trained adapters.
"""

from __future__ import annotations

import copy

import pytest
import torch
from lora_format_trees import DIFFUSERS_SD1, one_torch_thread, tiny_clip, tiny_unet
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

from lib_lora_train.host import AdapterTarget
from lib_lora_train.lora_format import keys, peft_bridge
from lib_lora_train.lora_format.file import read_lora_file, save_lora_file

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)


@pytest.fixture
def diffusers_peft_path(monkeypatch):
    import diffusers.loaders.lora as lora_loader
    import diffusers.loaders.unet as unet_loader
    from transformers import CLIPTextModel

    def load_adapter(self, adapter_name, adapter_state_dict, peft_config):
        inject_adapter_in_model(peft_config, self, adapter_name=adapter_name)
        result = set_peft_model_state_dict(self, adapter_state_dict, adapter_name)
        assert not result.unexpected_keys, result.unexpected_keys

    monkeypatch.setattr(lora_loader, "USE_PEFT_BACKEND", True)
    monkeypatch.setattr(unet_loader, "USE_PEFT_BACKEND", True)
    monkeypatch.setattr(CLIPTextModel, "load_adapter", load_adapter, raising=False)


def _train_like(unet, text_encoder, network="locon"):
    """Inject kohya-targeted peft adapters into the two models and give them random non-zero weights."""
    targets = [AdapterTarget("lora_unet", unet, "diffusers"), AdapterTarget("lora_te", text_encoder, "hf_clip", True)]
    tensors = {}
    for target in targets:
        if target.is_text_encoder:
            paths = keys.te_target_modules(target)
        else:
            paths = keys.unet_target_modules(target, network)
        ranks, alphas = peft_bridge.conv_rank_patterns(target, paths, 2, 1.0)
        config = LoraConfig(r=4, lora_alpha=2.0, target_modules=paths, rank_pattern=ranks, alpha_pattern=alphas)
        inject_adapter_in_model(config, target.module)
        generator = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for name, param in target.module.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
        target.module.eval()
        tensors |= peft_bridge.adapter_state_dict(target, keys.kohya_module_names(target), network)
    return tensors


def _unet_out(unet, hidden_size=16):
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 5, hidden_size, generator=generator)
    with torch.no_grad():
        return unet(sample, torch.tensor([500]), encoder_hidden_states=context).sample


def _load_with_diffusers(pipe, path, tensors):
    """``load_lora_weights``, after checking that its kohya conversion keeps every tensor."""
    state_dict, network_alphas = pipe.lora_state_dict(str(path))
    # the conversion raises on any key it cannot rename; every down/up pair and alpha must come through
    assert len(state_dict) == sum(1 for key in tensors if not key.endswith(".alpha"))
    assert len(network_alphas) == sum(1 for key in tensors if key.endswith(".alpha"))
    pipe.load_lora_weights(str(path))


def _te_out(text_encoder):
    with torch.no_grad():
        return text_encoder(torch.tensor([[1, 5, 7, 9, 2]]))[0]


def test_tiny_pipeline_loads_saved_locon_and_matches_trained_adapters(tmp_path, diffusers_peft_path):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline

    unet, text_encoder = tiny_unet(layers_per_block=1), tiny_clip()
    clean_unet, clean_te = copy.deepcopy(unet), copy.deepcopy(text_encoder)
    tensors = _train_like(unet, text_encoder)
    path = tmp_path / "tiny.safetensors"
    save_lora_file(path, tensors, {"ss_network_module": "networks.lora"}, precision="fp32")
    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=clean_te,
        tokenizer=None,
        unet=clean_unet,
        scheduler=DDIMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    before = _unet_out(pipe.unet)
    _load_with_diffusers(pipe, path, tensors)
    after = _unet_out(pipe.unet)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, _unet_out(unet), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_te_out(pipe.text_encoder), _te_out(text_encoder), rtol=1e-4, atol=1e-5)
    assert read_lora_file(path).network == "locon"


@pytest.mark.slow
@pytest.mark.skipif(not (DIFFUSERS_SD1 / "model_index.json").is_file(), reason="../shared/fixtures not present")
def test_fixture_pipeline_loads_saved_file_and_its_image_changes(tmp_path, diffusers_peft_path):
    from diffusers import StableDiffusionPipeline

    def load():
        pipe = StableDiffusionPipeline.from_pretrained(str(DIFFUSERS_SD1), local_files_only=True, safety_checker=None)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def render(pipe):
        generator = torch.Generator().manual_seed(0)
        return pipe("a cat", height=64, width=64, num_inference_steps=2, generator=generator, output_type="np").images

    trained = load()
    # LoCon: every LoRA key plus the ResNet and sampler convs
    tensors = _train_like(trained.unet, trained.text_encoder, "locon")
    path = tmp_path / "fixture_locon.safetensors"
    save_lora_file(path, tensors, {"ss_network_module": "networks.lora"}, precision="fp16")
    expected = render(trained)
    pipe = load()
    before = render(pipe)
    _load_with_diffusers(pipe, path, tensors)
    after = render(pipe)
    assert abs(after - before).max() > 1e-3
    # fp16 storage of the adapters is the only difference from the pipeline that trained them
    assert abs(after - expected).max() < abs(after - before).max() / 10
