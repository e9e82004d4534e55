"""ss_* and modelspec.* metadata as sd-scripts writes them, and what the WebUI reads from them."""

from __future__ import annotations

import json

import pytest
import torch
from lora_format_trees import WEBUI_TINY, one_torch_thread

from lib_lora_train.lora_format.file import read_lora_file, save_lora_file
from lib_lora_train.lora_format.metadata import build_metadata
from lib_lora_train.settings import TrainSettings

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

TAGS = {"10_mychar": {"mychar": 12, "smile": 5, "1girl": 12}}
DIRS = {"10_mychar": {"n_repeats": 10, "img_count": 12}}


def _metadata(settings=None, **changes):
    arguments = dict(
        settings=settings or TrainSettings(),
        arch="sd1",
        output_name="proj-v1",
        epoch=2,
        num_epochs=10,
        steps=240,
        tag_frequency=TAGS,
        dataset_dirs=DIRS,
        num_train_images=120,
        model_name="tiny-sd1.safetensors",
        model_hash="0123abcd",
        clip_skip=2,
        training_started_at=1_700_000_000.5,
        training_finished_at=1_700_000_100.0,
    )
    arguments.update(changes)
    return build_metadata(**arguments)


def _webui_sd_version(metadata: dict[str, str]) -> str:
    """How the WebUI v1.10 Lora extension decides a LoRA's base model (restated from its network.py)."""
    if str(metadata.get("ss_base_model_version", "")).startswith("sdxl_"):
        return "SDXL"
    if str(metadata.get("ss_v2", "")) == "True":
        return "SD2"
    return "SD1" if metadata else "Unknown"


def test_every_value_is_a_string_and_the_card_fields_are_there():
    metadata = _metadata()
    assert all(isinstance(v, str) for v in metadata.values())
    assert json.loads(metadata["ss_tag_frequency"]) == TAGS
    assert json.loads(metadata["ss_dataset_dirs"]) == DIRS
    assert metadata["ss_output_name"] == "proj-v1" and metadata["modelspec.title"] == "proj-v1"
    assert (metadata["ss_epoch"], metadata["ss_num_epochs"], metadata["ss_steps"]) == ("2", "10", "240")
    assert metadata["ss_num_train_images"] == "120"
    assert metadata["ss_sd_model_name"] == "tiny-sd1.safetensors" and metadata["ss_sd_model_hash"] == "0123abcd"
    assert metadata["ss_clip_skip"] == "2" and metadata["modelspec.encoder_layer"] == "2"
    assert metadata["ss_training_started_at"] == "1700000000.5"
    assert metadata["ss_resolution"] == "(512, 512)" and metadata["modelspec.resolution"] == "512x512"
    assert metadata["ss_learning_rate"] == "0.0001" and metadata["ss_text_encoder_lr"] == "5e-05"
    assert metadata["ss_network_dim"] == "16" and metadata["ss_network_alpha"] == "8.0"


@pytest.mark.parametrize(
    "arch, prediction, version, architecture, implementation, webui",
    [
        ("sd1", "eps", "sd_v1", "stable-diffusion-v1/lora", "diffusers", "SD1"),
        ("sd2", "eps", "sd_v2", "stable-diffusion-v2-512/lora", "diffusers", "SD2"),
        ("sd2", "v", "sd_v2", "stable-diffusion-v2-768-v/lora", "diffusers", "SD2"),
        (
            "sdxl",
            "eps",
            "sdxl_base_v1-0",
            "stable-diffusion-xl-v1-base/lora",
            "https://github.com/Stability-AI/generative-models",
            "SDXL",
        ),
    ],
)
def test_base_model_fields(arch, prediction, version, architecture, implementation, webui):
    metadata = _metadata(arch=arch, prediction=prediction)
    assert metadata["ss_base_model_version"] == version
    assert metadata["ss_v2"] == str(arch == "sd2")
    assert metadata["modelspec.architecture"] == architecture
    assert metadata["modelspec.implementation"] == implementation
    assert metadata["modelspec.prediction_type"] == ("v" if prediction == "v" else "epsilon")
    assert metadata["modelspec.sai_model_spec"] == "1.0.0"
    assert _webui_sd_version(metadata) == webui
    if arch != "sdxl":
        assert metadata["ss_v_parameterization"] == str(prediction == "v")


@pytest.mark.parametrize(
    "network, module, args",
    [
        ("lora", "networks.lora", {}),
        ("locon", "networks.lora", {"conv_dim": "8", "conv_alpha": "4"}),
        ("loha", "lycoris.kohya", {"algo": "loha", "conv_dim": "8", "conv_alpha": "4"}),
        ("lokr", "lycoris.kohya", {"algo": "lokr", "conv_dim": "8", "conv_alpha": "4"}),
    ],
)
def test_network_module_and_args(network, module, args):
    metadata = _metadata(TrainSettings(network=network, conv_rank=8, conv_alpha=4.0))
    assert metadata["ss_network_module"] == module
    assert json.loads(metadata["ss_network_args"]) == args


def test_bad_arch_is_rejected():
    with pytest.raises(ValueError, match="sd1, sd2 or sdxl"):
        _metadata(arch="sd3")
    with pytest.raises(ValueError, match="eps or v"):
        _metadata(prediction="flow")


def test_hashes_ignore_non_training_metadata(tmp_path):
    generator = torch.Generator().manual_seed(0)
    # > 1 MiB of varied bytes in fp16, so that the legacy hash window moves when the ss_* header grows
    down = torch.randn(4, 300_000, generator=generator)
    tensors = {"lora_unet_x.lora_down.weight": down, "lora_unet_x.alpha": torch.tensor(2.0)}
    tensors["lora_unet_x.lora_up.weight"] = torch.randn(8, 4, generator=generator)
    metadata = _metadata()
    first = save_lora_file(tmp_path / "a.safetensors", tensors, metadata)
    retitled = save_lora_file(tmp_path / "b.safetensors", tensors, {**metadata, "modelspec.title": "renamed"})
    assert first["sshs_legacy_hash"] == retitled["sshs_legacy_hash"]
    assert first["sshs_model_hash"] == retitled["sshs_model_hash"]
    other_epoch = save_lora_file(tmp_path / "c.safetensors", tensors, {**metadata, "ss_epoch": "3" * 400})
    assert other_epoch["sshs_legacy_hash"] != first["sshs_legacy_hash"]
    lora = read_lora_file(tmp_path / "a.safetensors")
    assert lora.training_tags() == TAGS and lora.metadata["ss_base_model_version"] == "sd_v1"


@pytest.mark.skipif(not (WEBUI_TINY / "lora").is_dir(), reason="../shared/fixtures (reference LoRAs) not present")
def test_reference_files_use_the_same_keys_and_forms():
    for name, arch, prediction in (
        ("tiny_kohya", "sd1", "eps"),
        ("tiny_sd2v_kohya", "sd2", "v"),
        ("tiny_sdxl_kohya", "sdxl", "eps"),
    ):
        reference = read_lora_file(WEBUI_TINY / "lora" / f"{name}.safetensors").metadata
        ours = _metadata(TrainSettings(rank=4, alpha=4.0), arch=arch, prediction=prediction)
        for key in ("ss_base_model_version", "ss_network_module", "ss_v2", "ss_v_parameterization"):
            # the reference leaves out what is False; sd-scripts (and we) write it
            assert ours.get(key) == reference.get(key, ours.get(key) if ours.get(key) == "False" else None), (name, key)
        assert set(reference) - {"host_note"} <= set(ours)
        assert ours["ss_network_dim"] == reference["ss_network_dim"]
        assert ours["ss_network_alpha"] == reference["ss_network_alpha"]
