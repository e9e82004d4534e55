"""Inside a real AUTOMATIC1111 WebUI v1.10.x on the CPU (set LORA_TRAIN_TOOLS_WEBUI, optionally
LORA_TRAIN_TOOLS_WEBUI_PYTHON): the tabs appear, training through the API writes the version's files, the LoRA loads
in txt2img with every key matched and changes the image (SD2/SDXL: the OpenCLIP text encoder trained too), and the
WebUI's model is exactly as before after a run that finished, one that was stopped and one that raised; a LoRA
applied just before training does not leak into it."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from webui_server import (
    FAST,
    assert_same_model_but_new_objects,
    serve,
    skip_reason,
    unmatched_keys,
    write_alice_dataset,
)

pytestmark = [pytest.mark.webui, pytest.mark.slow]
if skip_reason():
    pytest.skip(skip_reason(), allow_module_level=True)


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    yield from serve(tmp_path_factory.mktemp("webui"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_alice_dataset(tmp_path_factory.mktemp("dataset"))


def test_the_four_tabs_are_registered(webui):
    status, config = webui.call("GET", "/config")
    assert status == 200
    text = str(config)
    for elem_id in ("lora_train_tagger", "lora_train_tag_editor", "lora_train_tools", "lora_train_compare"):
        assert elem_id in text, f"tab {elem_id} missing"
    # the routes and their pydantic-1 models are in the WebUI's /docs
    status, openapi = webui.call("GET", "/openapi.json")
    assert status == 200
    for route in ("projects", "train", "status", "stop", "host-fingerprint"):
        assert f"/train-tools/v1/{route}" in openapi["paths"]
    assert "TrainRequest" in openapi["components"]["schemas"]


def test_training_leaves_the_model_exactly_as_it_was_and_the_lora_works(webui, dataset):
    before, image_before = webui.fingerprint(), webui.txt2img("alice, red hair")
    job = webui.train("alice", "v1", dataset, **FAST, sample_every=1, sample_prompts=["alice"], sample_steps=2)
    assert job["state"] == "done", job["message"]
    assert len(job["samples"]) == 2 and all(Image.open(p).size == (64, 64) for p in job["samples"])
    assert [p.rsplit("/", 1)[-1] for p in job["checkpoints"]] == ["alice-v1-000001.safetensors", "alice-v1.safetensors"]
    assert webui.fingerprint() == before
    assert webui.txt2img("alice, red hair") == image_before
    # published into the LoRA folder's sub-folder and usable by name, epoch by epoch (X/Y/Z Prompt S/R -000001…)
    assert (webui.lora_dir / "train_tools" / "alice-v1-000001.safetensors").is_file()
    assert webui.txt2img("alice, red hair <lora:alice-v1-000001:1>") != image_before
    assert webui.txt2img("alice, red hair <lora:alice-v1:1>") != image_before
    assert unmatched_keys(webui.log(), "alice-v1") == []
    _, projects = webui.call("GET", "/train-tools/v1/projects")
    version = next(v for p in projects if p["name"] == "alice" for v in p["versions"] if v["name"] == "v1")
    assert [c["epoch"] for c in version["checkpoints"]] == [1, None]


def test_a_stopped_run_restores_the_model(webui, dataset):
    before = webui.fingerprint()
    status, _ = webui.call("POST", "/train-tools/v1/train",
                           {"project": "alice", "version": "stopped", "dataset": str(dataset),
                            "settings": {**FAST, "epochs": 50}})  # fmt: skip
    assert status == 200
    deadline = time.time() + 300
    while webui.call("GET", "/train-tools/v1/status")[1]["step"] < 1 and time.time() < deadline:
        time.sleep(0.5)
    webui.call("POST", "/train-tools/v1/stop")
    job = webui.wait_job()
    assert job["state"] == "stopped", job["message"]
    assert webui.fingerprint() == before


def test_the_webui_interrupt_button_stops_training(webui, dataset):
    before = webui.fingerprint()
    status, _ = webui.call("POST", "/train-tools/v1/train",
                           {"project": "alice", "version": "interrupted", "dataset": str(dataset),
                            "settings": {**FAST, "epochs": 50}})  # fmt: skip
    assert status == 200
    deadline = time.time() + 300
    while webui.call("GET", "/train-tools/v1/status")[1]["step"] < 1 and time.time() < deadline:
        time.sleep(0.5)
    webui.call("POST", "/sdapi/v1/interrupt")  # what the Interrupt button under Generate does
    job = webui.wait_job()
    assert job["state"] == "stopped", job["message"]
    assert webui.fingerprint() == before


def test_a_setting_that_cannot_work_is_refused_before_anything_changes(webui, dataset):
    before = webui.fingerprint()
    # an optimiser whose package the WebUI does not have: refused before a version folder or the model is touched
    status, answer = webui.call("POST", "/train-tools/v1/train", {"project": "alice", "version": "refused",
                                "dataset": str(dataset), "settings": {**FAST, "optimizer": "lion"}})  # fmt: skip
    assert status == 422 and answer["detail"]["field"] == "optimizer", answer
    assert "pip install lion-pytorch" in answer["detail"]["message"]
    _, projects = webui.call("GET", "/train-tools/v1/projects")
    assert "refused" not in json.dumps(projects)
    assert webui.fingerprint() == before


def test_a_run_that_raises_restores_the_model(webui, dataset):
    before = webui.fingerprint()
    first = webui.train("alice", "raises", dataset, **{**FAST, "epochs": 1, "save_state": True})
    assert first["state"] == "done", first["message"]
    # a damaged optimiser state: the resumed run fails after the adapters are in the model and the optimiser is built
    state = Path(first["checkpoints"][-1]).parents[1] / "state"
    (state / "optimizer.pt").write_bytes(b"not a torch file")
    status, answer = webui.call("POST", "/train-tools/v1/train", {"project": "alice", "version": "raises",
                                "resume": True, "settings": {**FAST, "epochs": 2,
                                "save_state": True}})  # fmt: skip
    assert status == 200, answer
    job = webui.wait_job()
    assert job["state"] == "error", job
    assert webui.fingerprint() == before


def test_a_lora_applied_in_txt2img_just_before_training_does_not_leak(webui, dataset):
    clean = webui.train("leak", "clean", dataset, **{**FAST, "epochs": 1})
    assert clean["state"] == "done", clean["message"]
    base, live = webui.fingerprint(), webui.fingerprint(live=True)
    webui.txt2img("alice <lora:tiny_kohya:1>")  # merges the reference LoRA into the weights
    assert webui.fingerprint(live=True) != live  # it really is merged
    assert webui.fingerprint() == base  # and the default fingerprint sees through it, to the model's own weights
    after_lora = webui.train("leak", "after-lora", dataset, **{**FAST, "epochs": 1})
    assert after_lora["state"] == "done", after_lora["message"]
    from safetensors.torch import load_file

    a = load_file(clean["checkpoints"][-1])
    b = load_file(after_lora["checkpoints"][-1])
    assert a.keys() == b.keys()
    # identical up to fp16 rounding of the saved file (a leaked LoRA changes nearly every value, by far more)
    differing = [k for k in a if not torch.allclose(a[k].float(), b[k].float(), rtol=2e-3, atol=1e-4)]
    assert differing == [], f"{len(differing)} tensors differ: the applied LoRA leaked into training"
    assert webui.fingerprint(live=True) == live  # training took the merged LoRA out; it was not baked in


@pytest.mark.parametrize("checkpoint", ["tiny-sd2v", "tiny-sdxl"])
def test_sd2_v_prediction_and_sdxl_train_and_restore(webui, dataset, checkpoint):
    webui.use_checkpoint(checkpoint)
    try:
        before, image_before = webui.fingerprint(), webui.txt2img("alice")
        settings = {**FAST, "epochs": 1, "gradient_checkpointing": True}  # the per-block checkpoint patches too
        if checkpoint == "tiny-sdxl":
            settings.update(resolution=64, max_bucket_side=128)
        job = webui.train("arch", checkpoint, dataset, **settings)
        assert job["state"] == "done", job["message"]
        assert webui.fingerprint() == before
        name = re.sub(r"\.safetensors$", "", job["checkpoints"][-1].rsplit("/", 1)[-1])
        assert webui.txt2img(f"alice <lora:{name}:1>") != image_before
        assert unmatched_keys(webui.log(), name) == []
        # the OpenCLIP text encoder (SD2's lora_te, SDXL's lora_te2) is trained: all four attention parts per layer
        open_clip = "lora_te" if checkpoint == "tiny-sd2v" else "lora_te2"
        _, status = webui.call("GET", "/train-tools/v1/status?history=true")
        assert any(f"{open_clip}: adapters on" in line and "OpenCLIP" in line for line in status["log"])
        _assert_open_clip_keys(webui, job["checkpoints"][-1], open_clip, image_before)
    finally:
        webui.use_checkpoint("tiny-sd1")


def _assert_open_clip_keys(webui, path: str, prefix: str, image_before: bytes) -> None:
    """Every trained layer of the OpenCLIP encoder has q/k/v/out + fc1/fc2, and those keys alone change the image."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    pattern = re.compile(rf"^{prefix}_text_model_encoder_layers_(\d+)_(\w+)\.lora_up\.weight$")
    parts: dict[str, set[str]] = {}
    for key, value in tensors.items():
        if match := pattern.match(key):
            parts.setdefault(match.group(1), set()).add(match.group(2))
            assert value.abs().max() > 0, f"{key}: the adapter got no gradient"
    assert parts, f"no {prefix} keys in {path}"
    wanted = {"self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj", "mlp_fc1", "mlp_fc2"}
    assert all(found == wanted for found in parts.values()), parts
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    only = {k: v for k, v in tensors.items() if k.startswith(f"{prefix}_")}
    save_file(only, str(webui.lora_dir / f"{prefix}-only.safetensors"), metadata=metadata)
    assert webui.txt2img(f"alice <lora:{prefix}-only:1>") != image_before
    assert unmatched_keys(webui.log(), f"{prefix}-only") == []


def test_training_from_the_tab(webui, dataset):
    """Press the tab's Start through the WebUI's gradio queue, with the form filled as a user would."""
    from gradio_client import Client

    _, config = webui.call("GET", "/config")
    by_elem = {c.get("props", {}).get("elem_id"): c for c in config["components"]}
    start_id = by_elem["lora_train_tools_start"]["id"]

    def targets(dep):
        return [t[0] if isinstance(t, list) else t for t in dep.get("targets", [])]

    fn_index = next(i for i, dep in enumerate(config["dependencies"]) if start_id in targets(dep))
    components = {c["id"]: c for c in config["components"]}
    wanted = {"project": "tab", "version": "v1", "dataset": str(dataset), "task_id": "",
              "repeats": {"headers": ["folder", "images", "repeats"], "data": [["1_alice", 2, 1]]},
              **{k: v for k, v in FAST.items()}}  # fmt: skip
    data = []
    for input_id in config["dependencies"][fn_index]["inputs"]:
        props = components[input_id].get("props", {})
        name = (props.get("elem_id") or "").removeprefix("lora_train_tools_")
        value = wanted.get(name, props.get("value"))
        data.append("\n".join(value) if name == "sample_prompts" and isinstance(value, list) else value)
    Client(f"http://127.0.0.1:{webui.port}/", serialize=False, verbose=False).predict(*data, fn_index=fn_index)
    job = webui.wait_job()
    assert job["state"] == "done" and job["project"] == "tab", job["message"]
    assert any(p.endswith("tab-v1.safetensors") for p in job["checkpoints"])


def test_training_on_another_checkpoint_switches_with_the_webuis_loader_and_back(webui, dataset):
    _, options = webui.call("GET", "/sdapi/v1/options")
    loaded = options["sd_model_checkpoint"]
    assert loaded.startswith("tiny-sd1")
    before = webui.fingerprint()
    job, trained_on = webui.train_on("tiny-sd2v.safetensors", "base", "on-sd2v", dataset, **{**FAST, "epochs": 1})
    assert trained_on["arch"] == "sd2" and trained_on["name"].startswith("tiny-sd2v")
    from safetensors import safe_open

    with safe_open(job["checkpoints"][-1], "pt") as handle:
        assert handle.metadata()["ss_v2"] == "True"
    _, options = webui.call("GET", "/sdapi/v1/options")
    assert options["sd_model_checkpoint"] == loaded  # the user's model is loaded again
    assert_same_model_but_new_objects(before, webui.fingerprint())
    body = {"project": "base", "version": "nope", "dataset": str(dataset), "base_model": "nope", "settings": FAST}
    status, answer = webui.call("POST", "/train-tools/v1/train", body)
    assert status == 422 and answer["detail"]["field"] == "base_model"


def test_a_run_can_end_with_its_epoch_compare_grid(webui, dataset):
    settings = {**FAST, "epochs": 2, "sample_prompts": ["alice, solo"], "sample_steps": 2}
    body = {"project": "grid", "version": "after", "dataset": str(dataset), "compare_after": True, "settings": settings}
    status, answer = webui.call("POST", "/train-tools/v1/train", body)
    assert status == 200, answer
    job = webui.wait_job()
    assert job["state"] == "done", job["message"]
    assert job["grids"], job["log"][-5:]
    grid = Image.open(job["grids"][0])
    assert grid.width > 64 and grid.height > 64  # epochs x weights cells, with labels
    assert any(line.startswith("Epoch Compare grid: ") for line in job["log"])
