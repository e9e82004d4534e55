"""Saving and reading LoRA files: precision, the sshs hashes, atomic writes, what the reader reports."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from lora_format_trees import WEBUI_TINY, one_torch_thread
from safetensors import safe_open
from safetensors.torch import save

from lib_lora_train.lora_format.file import read_lora_file, save_lora_file

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)


def _lora_tensors(rank=4, alpha=2.0, modules=3, width=64, conv=False):
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for index in range(modules):
        name = f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_{'qkv'[index % 3]}{index}"
        tensors[f"{name}.lora_down.weight"] = torch.randn(rank, width, generator=generator)
        tensors[f"{name}.lora_up.weight"] = torch.randn(width, rank, generator=generator)
        tensors[f"{name}.alpha"] = torch.tensor(alpha)
    if conv:
        tensors["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"] = torch.randn(2, 8, 3, 3)
        tensors["lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight"] = torch.randn(8, 2, 1, 1)
        tensors["lora_unet_down_blocks_0_resnets_0_conv1.alpha"] = torch.tensor(1.0)
    return tensors


@pytest.mark.parametrize(
    "precision, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)]
)
def test_precision_applies_to_every_tensor(tmp_path, precision, dtype):
    path = tmp_path / "a.safetensors"
    save_lora_file(path, _lora_tensors(), {"ss_network_dim": "4"}, precision=precision)
    with safe_open(str(path), "pt") as handle:
        names = handle.keys()
        assert {handle.get_tensor(k).dtype for k in names} == {dtype}


def test_hashes_follow_kohya_definition(tmp_path):
    # > 1 MiB so that the legacy hash reads real bytes at 0x100000
    tensors = _lora_tensors(rank=16, width=1024, modules=10)
    metadata = {"ss_network_dim": "16", "ss_output_name": "x", "modelspec.title": "changes the header only"}
    path = tmp_path / "big.safetensors"
    written = save_lora_file(path, tensors, metadata, precision="fp32")
    data = path.read_bytes()
    assert len(data) > 0x110000
    header = int.from_bytes(data[:8], "little")
    # the model hash covers the tensor bytes, which the extra metadata does not move
    assert written["sshs_model_hash"] == hashlib.sha256(data[8 + header :]).hexdigest()
    # the legacy hash is taken on the file serialised with only the ss_* metadata
    ss_only = save(
        {k: v.float() for k, v in tensors.items()}, {k: v for k, v in metadata.items() if k.startswith("ss_")}
    )
    assert written["sshs_legacy_hash"] == hashlib.sha256(ss_only[0x100000:0x110000]).hexdigest()[:8]
    assert written["sshs_legacy_hash"] != hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata() == written


def test_save_is_atomic_and_replaces(tmp_path):
    path = tmp_path / "out" / "a.safetensors"
    save_lora_file(path, _lora_tensors(rank=4), {})
    save_lora_file(path, _lora_tensors(rank=8), {})
    assert read_lora_file(path).rank == 8
    assert [p.name for p in path.parent.iterdir()] == ["a.safetensors"]


def test_save_rejects_bad_input_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.safetensors"
    save_lora_file(path, _lora_tensors(), {"ss_epoch": "1"})
    before = path.read_bytes()
    with pytest.raises(TypeError, match="ss_epoch"):
        save_lora_file(path, _lora_tensors(), {"ss_epoch": 2})
    with pytest.raises(ValueError, match="precision"):
        save_lora_file(path, _lora_tensors(), {}, precision="fp8")
    with pytest.raises(ValueError, match="no tensors"):
        save_lora_file(path, {}, {})
    assert path.read_bytes() == before


def test_reader_reports_network_rank_alpha_and_metadata(tmp_path):
    path = tmp_path / "a.safetensors"
    tags = {"10_me": {"me": 3, "smile": 1}}
    save_lora_file(path, _lora_tensors(rank=4, alpha=2.0, conv=True), {"ss_tag_frequency": json.dumps(tags)})
    lora = read_lora_file(path)
    assert (lora.network, lora.rank, lora.alpha, lora.conv_rank, lora.conv_alpha) == ("locon", 4, 2.0, 2, 1.0)
    assert lora.prefixes == {"lora_unet"}
    assert len(lora.modules) == 4 and set(lora.modules["lora_unet_down_blocks_0_resnets_0_conv1"]) == {
        "lora_down.weight",
        "lora_up.weight",
        "alpha",
    }
    assert lora.training_tags() == tags
    plain = tmp_path / "b.safetensors"
    save_lora_file(plain, _lora_tensors(), {})
    assert read_lora_file(plain).network == "lora"


def test_reader_recognises_lycoris_parts(tmp_path):
    path = tmp_path / "loha.safetensors"
    parts = {f"hada_w{i}_{s}": torch.randn(8, 4) if s == "a" else torch.randn(4, 8) for i in (1, 2) for s in "ab"}
    tensors = {f"lora_te_text_model_encoder_layers_0_mlp_fc1.{k}": v for k, v in parts.items()}
    tensors["lora_te_text_model_encoder_layers_0_mlp_fc1.alpha"] = torch.tensor(4.0)
    save_lora_file(path, tensors, {})
    lora = read_lora_file(path)
    assert (lora.network, lora.rank, lora.alpha) == ("loha", 4, 4.0)
    path = tmp_path / "lokr.safetensors"
    save_lora_file(path, {"lora_te_x.lokr_w1": torch.randn(2, 2), "lora_te_x.lokr_w2": torch.randn(4, 4)}, {})
    assert read_lora_file(path).network == "lokr"


def test_reader_names_the_file_on_damage(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="broken.safetensors"):
        read_lora_file(path)
    other = tmp_path / "model.safetensors"
    other.write_bytes(save({"model.weight": torch.zeros(2)}))
    with pytest.raises(ValueError, match="not a LoRA file"):
        read_lora_file(other)


@pytest.mark.skipif(not (WEBUI_TINY / "lora").is_dir(), reason="../shared/fixtures (reference LoRAs) not present")
def test_reader_on_reference_files():
    locon = read_lora_file(WEBUI_TINY / "lora" / "tiny_kohya_locon.safetensors")
    assert (locon.network, locon.rank, locon.alpha, locon.conv_rank) == ("locon", 4, 4.0, 4)
    sdxl = read_lora_file(WEBUI_TINY / "lora" / "tiny_sdxl_kohya.safetensors")
    assert sdxl.network == "lora" and sdxl.prefixes == {"lora_unet", "lora_te1", "lora_te2"}
    assert sdxl.metadata["ss_base_model_version"] == "sdxl_base_v1-0"
