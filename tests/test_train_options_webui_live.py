"""#14's DoRA and continue-from-a-LoRA inside a real AUTOMATIC1111 WebUI v1.10.x on the CPU (set
LORA_TRAIN_TOOLS_WEBUI, optionally LORA_TRAIN_TOOLS_WEBUI_PYTHON): a DoRA trained through the extension's API loads
in txt2img with every key matched, the WebUI applies its dora_scale (the image differs from the same file without
it), a run continued from it (and one from kohya's reference LoRA) trains on and loads the same way, and a start
file that does not fit is refused before a version exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from webui_server import serve, skip_reason, unmatched_keys, write_alice_dataset

pytestmark = [pytest.mark.webui, pytest.mark.slow]
if skip_reason():
    pytest.skip(skip_reason(), allow_module_level=True)

FAST = dict(rank=4, alpha=4, conv_rank=2, conv_alpha=2, resolution=64, min_bucket_side=64, max_bucket_side=128,
            batch_size=1, epochs=1, mixed_precision="no", unet_lr=1e-2, te_lr=1e-3, cache_latents="memory", seed=7,
            save_precision="fp32")  # fmt: skip


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    yield from serve(tmp_path_factory.mktemp("webui"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_alice_dataset(tmp_path_factory.mktemp("dataset"))


def _name(path: str) -> str:
    return re.sub(r"\.safetensors$", "", path.rsplit("/", 1)[-1])


def _loads_and_changes_the_image(webui, path: str, image_before: bytes) -> bytes:
    name = _name(path)
    image = webui.txt2img(f"alice, red hair <lora:{name}:1>")
    assert image != image_before, f"{name} did not change the image"
    assert unmatched_keys(webui.log(), name) == [], f"{name}: the WebUI did not match every key"
    assert "Could not find a module type" not in webui.log()
    return image


@pytest.fixture(scope="module")
def dora_job(webui, dataset):
    job = webui.train("options", "dora", dataset, **FAST, network="locon", dora_wd=True)
    assert job["state"] == "done", job["message"]
    return job


def test_a_dora_loads_with_every_key_matched_and_the_webui_applies_its_scale(webui, dora_job):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    image_before = webui.txt2img("alice, red hair")
    path = dora_job["checkpoints"][-1]
    tensors = load_file(path)
    scales = [k for k in tensors if k.endswith(".dora_scale")]
    assert scales and len(scales) == len([k for k in tensors if k.endswith(".lora_down.weight")])
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["ss_network_args"])["dora_wd"] == "True"
    with_scale = _loads_and_changes_the_image(webui, path, image_before)
    # the same factors without dora_scale: a plain LoCon, which must render differently if the scale is applied
    plain = {k: v for k, v in tensors.items() if not k.endswith(".dora_scale")}
    save_file(plain, str(webui.lora_dir / "dora-without-scale.safetensors"), metadata=metadata)
    assert _loads_and_changes_the_image(webui, "dora-without-scale", image_before) != with_scale


def test_a_run_continued_from_the_dora_trains_on_and_loads(webui, dataset, dora_job):
    from safetensors.torch import load_file

    image_before = webui.txt2img("alice, red hair")
    start = dora_job["checkpoints"][-1]
    job = webui.train("options", "dora-continued", dataset, **{**FAST, "rank": 8}, network="locon",
                      network_weights=start, dim_from_weights=True)  # fmt: skip
    assert job["state"] == "done", job["message"]
    modules = len({k.split(".")[0] for k in load_file(start)})
    assert any(f"network_weights: {modules} modules loaded from {Path(start).name}" in line for line in job["log"])
    assert any("dim_from_weights: rank 4" in line and "DoRA" in line for line in job["log"]), job["log"][-10:]
    before, after = load_file(start), load_file(job["checkpoints"][-1])
    assert set(after) == set(before)  # the same modules, still a DoRA at the file's rank
    assert any(not (after[k] == before[k]).all() for k in before)
    _loads_and_changes_the_image(webui, job["checkpoints"][-1], image_before)


def test_a_run_continued_from_kohyas_reference_lora_loads_with_every_key_matched(webui, dataset):
    image_before = webui.txt2img("alice, red hair")
    start = webui.lora_dir / "tiny_kohya.safetensors"
    job = webui.train("options", "from-kohya", dataset, **FAST, network="lora", network_weights=str(start))
    assert job["state"] == "done", job["message"]
    assert any(f"network_weights: 216 modules loaded from {start.name}" in line for line in job["log"]), job["log"]
    _loads_and_changes_the_image(webui, job["checkpoints"][-1], image_before)


def test_a_start_file_that_does_not_fit_is_refused_before_a_version_exists(webui, dataset, dora_job):
    before = webui.fingerprint()
    body = {"project": "options", "version": "refused-start", "dataset": str(dataset),
            "settings": {**FAST, "network": "locon", "network_weights": dora_job["checkpoints"][-1]}}  # fmt: skip
    status, answer = webui.call("POST", "/train-tools/v1/train", body)
    assert status == 422 and answer["detail"]["field"] == "network_weights", answer
    assert "is a DoRA" in answer["detail"]["message"] and "dim_from_weights" in answer["detail"]["message"]
    body["settings"] = {**FAST, "network": "loha", "network_weights": dora_job["checkpoints"][-1]}
    status, answer = webui.call("POST", "/train-tools/v1/train", body)
    assert status == 422 and "set network locon" in answer["detail"]["message"], answer
    _, projects = webui.call("GET", "/train-tools/v1/projects")
    assert "refused-start" not in json.dumps(projects)
    assert webui.fingerprint() == before


def test_a_dora_on_sd2_with_its_openclip_text_encoder_loads_with_every_key_matched(webui, dataset):
    webui.use_checkpoint("tiny-sd2v")
    try:
        image_before = webui.txt2img("alice, red hair")
        job = webui.train("options", "dora-sd2", dataset, **FAST, network="lora", dora_wd=True)
        assert job["state"] == "done", job["message"]
        from safetensors.torch import load_file

        keys = load_file(job["checkpoints"][-1])
        assert any(k.startswith("lora_te_") and k.endswith("self_attn_q_proj.dora_scale") for k in keys)
        _loads_and_changes_the_image(webui, job["checkpoints"][-1], image_before)
    finally:
        webui.use_checkpoint("tiny-sd1")
