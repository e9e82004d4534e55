"""Single-file checkpoints: nothing may keep the checkpoint's memory map alive, and float position ids are fixed."""

from types import SimpleNamespace

import torch

from lib_lora_train.hosts.diffusers_host import _detach_from_checkpoint_file


def test_buffers_stop_sharing_the_checkpoint_storage_and_position_ids_become_integers():
    whole_file = torch.zeros(1_000_000, dtype=torch.float16)  # stands in for the mapped checkpoint
    text_encoder = torch.nn.Module()
    text_encoder.embeddings = torch.nn.Module()
    text_encoder.embeddings.register_buffer("position_ids", whole_file[:77].view(1, 77))
    text_encoder.embeddings.position_ids.copy_(torch.arange(77, dtype=torch.float16).view(1, 77))
    unet = torch.nn.Module()
    unet.register_buffer("scale", whole_file[100:104])
    pipe = SimpleNamespace(components={"text_encoder": text_encoder, "unet": unet, "tokenizer": object()})

    _detach_from_checkpoint_file(pipe)

    ids = text_encoder.embeddings.position_ids
    assert ids.dtype == torch.long
    assert ids.tolist() == [list(range(77))]
    for buffer in (ids, unet.scale):
        assert buffer.untyped_storage().data_ptr() != whole_file.untyped_storage().data_ptr()
        assert buffer.untyped_storage().nbytes() == buffer.numel() * buffer.element_size()


# --- WebUI checkpoints with their yaml, offline (the fixtures' own Hugging Face cache) -----------------------------

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from lib_lora_train.hosts.single_file import CheckpointError, inspect_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEBUI_TINY = ROOT.parent / "shared" / "fixtures" / "webui-tiny"
DIFFUSERS_TINY = ROOT.parent / "shared" / "fixtures" / "diffusers-tiny-sd1"
needs_fixtures = pytest.mark.skipif(not (WEBUI_TINY / "tiny-sdxl.safetensors").is_file(),
                                    reason=f"the tiny WebUI fixtures are missing ({WEBUI_TINY})")  # fmt: skip

# run in a fresh interpreter: huggingface_hub fixes its cache folder (HF_HOME) when it is first imported
PROBE = r"""
import json, sys, torch
from lib_lora_train.hosts.diffusers_host import load_pipeline
from lib_lora_train.lora_format.file import read_lora_file
from lib_lora_train.standalone.lora_apply import _layer_index
pipe = load_pipeline(sys.argv[1])
index = _layer_index(pipe)
lora = read_lora_file(sys.argv[2])
ids = pipe.tokenizer(["a red cat"], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                     return_tensors="pt").input_ids
with torch.no_grad():
    hidden = pipe.text_encoder(ids).last_hidden_state
    image = pipe(prompt="a red cat", num_inference_steps=2, width=64, height=64,
                 generator=torch.Generator().manual_seed(0), output_type="np").images[0]
print(json.dumps({"pipeline": type(pipe).__name__, "unmatched": sorted(set(lora.modules) - set(index)),
                  "lora_modules": len(lora.modules), "prediction": pipe.scheduler.config.prediction_type,
                  "te_layers": pipe.text_encoder.config.num_hidden_layers, "hidden_sum": float(hidden.double().sum()),
                  "finite": bool(torch.isfinite(torch.from_numpy(image)).all()),
                  "unet": {k: float(v.double().sum()) for k, v in list(pipe.unet.state_dict().items())[:5]}}))
"""


def _probe(model: Path, lora: Path) -> dict:
    env = {**os.environ, "HF_HOME": str(WEBUI_TINY / "hf_home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", PROBE, str(model), str(lora)], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_fixtures
@pytest.mark.parametrize(
    "arch, lora, pipeline, prediction, te_layers",
    [("tiny-sd1", "tiny_kohya", "StableDiffusionPipeline", "epsilon", 4),
     ("tiny-sd2v", "tiny_sd2v_kohya", "StableDiffusionPipeline", "v_prediction", 3),  # penultimate: last layer unused
     ("tiny-sdxl", "tiny_sdxl_kohya", "StableDiffusionXLPipeline", "epsilon", 4)],
)  # fmt: skip
def test_webui_checkpoints_load_offline_from_file_and_yaml(arch, lora, pipeline, prediction, te_layers):
    found = _probe(WEBUI_TINY / f"{arch}.safetensors", WEBUI_TINY / "lora" / f"{lora}.safetensors")
    assert found["pipeline"] == pipeline and found["prediction"] == prediction and found["te_layers"] == te_layers
    assert found["lora_modules"] > 100 and found["unmatched"] == []  # every key of the WebUI's reference LoRA fits
    assert found["finite"]


@needs_fixtures
def test_the_sd1_checkpoint_equals_its_diffusers_conversion():
    single = _probe(WEBUI_TINY / "tiny-sd1.safetensors", WEBUI_TINY / "lora" / "tiny_kohya.safetensors")
    folder = _probe(DIFFUSERS_TINY, WEBUI_TINY / "lora" / "tiny_kohya.safetensors")
    assert single["unet"] == folder["unet"]
    assert single["hidden_sum"] == pytest.approx(folder["hidden_sum"], rel=1e-6)  # the yaml's encoder, not CLIP-L


def _safetensors(path: Path, tensors: dict) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    "tensors, message",
    [({"lora_unet_x.lora_down.weight": torch.zeros(1)}, "this is a LoRA"),
     ({"encoder.conv_in.weight": torch.zeros(1), "decoder.conv_out.weight": torch.zeros(1)}, "a VAE"),
     ({"emb_params": torch.zeros(1)}, "textual-inversion embedding"),
     ({"something": torch.zeros(1)}, "no Stable Diffusion UNet")],
    ids=["lora", "vae", "embedding", "other"],
)  # fmt: skip
def test_a_file_that_is_not_a_base_model_is_named(tmp_path, tensors, message):
    with pytest.raises(CheckpointError, match=message):
        inspect_checkpoint(_safetensors(tmp_path / "file.safetensors", tensors))


def test_an_unreadable_file_and_a_missing_yaml_offline(tmp_path, monkeypatch):
    from lib_lora_train.hosts.diffusers_host import load_pipeline

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    with pytest.raises(CheckpointError, match="not a readable .safetensors file"):
        load_pipeline(broken)
    model = _safetensors(tmp_path / "model.safetensors", {"model.diffusion_model.x": torch.zeros(1)})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="no model.yaml beside it"):
        load_pipeline(model)
