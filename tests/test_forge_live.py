"""Inside a real Stable Diffusion WebUI Forge on the CPU (set LORA_TRAIN_TOOLS_FORGE and
LORA_TRAIN_TOOLS_FORGE_PYTHON; see forge_server.py): the four tabs appear, training through the API right after a
LoRA generation writes a kohya file (LoRA, LoCon, LoHa, LoKr) and a preview per epoch and leaves Forge's model exactly as it was (merged LoRA
and memory manager included), the trained LoRA loads in Forge's txt2img with every key matched and changes a fixed-seed image, for SD1
and SDXL; Epoch Compare renders a grid with Forge's own processing; the tagger API answers."""

from __future__ import annotations

import base64
import io
import re
import threading
import time
from pathlib import Path

import pytest
from forge_server import Forge, skip_reason
from PIL import Image
from tagger_graphs import make_model_folder
from webui_server import (
    FAST,
    assert_same_model_but_new_objects,
    assert_xyz_plot_redraws_every_cell,
    write_alice_dataset,
)

pytestmark = [pytest.mark.webui, pytest.mark.slow]
if skip_reason():
    pytest.skip(skip_reason(), allow_module_level=True)


@pytest.fixture(scope="module")
def forge(tmp_path_factory):
    server = Forge(tmp_path_factory.mktemp("forge"))
    make_model_folder(server.models / "tagger" / "wd-v1-4-vit-tagger-v2")  # the tiny WD14 graph
    try:
        server.start("tiny-sd1")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_alice_dataset(tmp_path_factory.mktemp("dataset"))


def _lora_lines(log: str, name: str) -> list[str]:
    return [line for line in log.splitlines() if "[LORA]" in line and name in line]


def _assert_all_keys_matched(log: str, name: str) -> None:
    lines = _lora_lines(log, name)
    assert any("Loaded" in line for line in lines), f"Forge did not load {name}: {lines}"
    bad = [line for line in lines if "unmatched keys" in line or "Mismatch" in line or "mismatch" in line
           or not re.search(r"\(skipped 0 keys\)", line) and "Loaded" in line]  # fmt: skip
    assert bad == [], bad


def test_the_four_tabs_are_registered(forge):
    status, config = forge.call("GET", "/config")
    assert status == 200
    text = str(config)
    for elem_id in ("lora_train_tagger", "lora_train_tag_editor", "lora_train_tools", "lora_train_compare"):
        assert elem_id in text, f"tab {elem_id} missing"
    status, openapi = forge.call("GET", "/openapi.json")
    assert status == 200
    for route in ("projects", "train", "status", "stop", "host-fingerprint"):
        assert f"/train-tools/v1/{route}" in openapi["paths"]


@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sdxl"])
def test_training_right_after_a_lora_generation_restores_the_model_and_the_lora_works(forge, dataset, checkpoint):
    if checkpoint != "tiny-sd1":
        forge.use_checkpoint(checkpoint)
    reference = "tiny_kohya" if checkpoint == "tiny-sd1" else "tiny_sdxl_kohya"
    try:
        image_before = forge.txt2img("alice, red hair")
        forge.txt2img(f"alice <lora:{reference}:1>")  # Forge merges the reference LoRA into the weights
        _assert_all_keys_matched(forge.log(), reference)
        before, live = forge.fingerprint(), forge.fingerprint(live=True)
        assert live != before  # the merge is real, and the default fingerprint sees through it
        job = forge.train("alice", checkpoint, dataset, **FAST, sample_every=1, sample_prompts=["alice, red hair"],
                          sample_steps=3)  # fmt: skip
        assert job["state"] == "done", job["message"]
        assert any("took Forge's applied LoRA out" in line for line in job["log"]), job["log"][-10:]
        # a preview per epoch, rendered as the model trains (the UNet and text engines with the adapters live)
        previews = [Image.open(p).convert("RGB") for p in job["samples"]]
        assert len(previews) == 2 and all(im.size == (64, 64) for im in previews), job["log"][-10:]
        assert previews[0].tobytes() != previews[1].tobytes(), "the epoch 1 and 2 previews are the same image"
        assert all(max(hi - lo for lo, hi in im.getextrema()) > 0 for im in previews), "a preview is one flat colour"
        assert forge.fingerprint() == before
        assert forge.fingerprint(live=True) == live  # the merged tensors are back, not re-made
        assert forge.txt2img("alice, red hair") == image_before
        name = job["checkpoints"][-1].rsplit("/", 1)[-1].removesuffix(".safetensors")
        assert forge.txt2img(f"alice, red hair <lora:{name}:1>") != image_before
        _assert_all_keys_matched(forge.log(), name)
        from safetensors.torch import load_file

        keys = load_file(job["checkpoints"][-1]).keys()
        prefixes = {k.split("_")[0] + "_" + k.split("_")[1] for k in keys}
        assert prefixes == (
            {"lora_unet", "lora_te"} if checkpoint == "tiny-sd1" else {"lora_unet", "lora_te1", "lora_te2"}
        ), prefixes
    finally:
        if checkpoint != "tiny-sd1":
            forge.use_checkpoint("tiny-sd1")


@pytest.mark.parametrize("network", ["locon", "loha", "lokr"])
def test_lycoris_networks_train_and_load_in_forge(forge, dataset, network):
    """LoCon (convolutions too), LoHa and LoKr go through the same engine on Forge's model; Forge's own loader reads
    each file with every key matched, and it changes a fixed-seed image."""
    image_before = forge.txt2img("alice, red hair")
    before = forge.fingerprint()
    job = forge.train("lyco", network, dataset, **FAST, network=network)
    assert job["state"] == "done", job["message"]
    assert forge.fingerprint() == before
    from safetensors.torch import load_file

    keys = load_file(job["checkpoints"][-1]).keys()
    kinds = {"locon": ".lora_down.weight", "loha": ".hada_w1_a", "lokr": ".lokr_w1"}
    assert any(k.endswith(kinds[network]) for k in keys), sorted(keys)[:6]
    if network == "locon":  # the ResNet convolutions get adapters too
        assert any("_resnets_" in k or "_in_layers_2" in k for k in keys), sorted(keys)[:6]
    name = job["checkpoints"][-1].rsplit("/", 1)[-1].removesuffix(".safetensors")
    assert forge.txt2img(f"alice, red hair <lora:{name}:1>") != image_before
    _assert_all_keys_matched(forge.log(), name)


def test_training_on_another_checkpoint_switches_with_forges_loader_and_back(forge, dataset):
    _, options = forge.call("GET", "/sdapi/v1/options")
    loaded = options["sd_model_checkpoint"]
    assert loaded.startswith("tiny-sd1")
    forge.txt2img("alice")  # Forge loads lazily: the user's model is in memory once it has generated
    before = forge.fingerprint()
    job, trained_on = forge.train_on("tiny-sdxl.safetensors", "base", "on-sdxl", dataset, **{**FAST, "epochs": 1})
    assert trained_on["arch"] == "sdxl" and trained_on["name"].startswith("tiny-sdxl")
    from safetensors import safe_open

    with safe_open(job["checkpoints"][-1], "pt") as handle:
        keys = list(handle.keys())
    assert any(k.startswith("lora_te2_") for k in keys)  # an SDXL file: both text encoders
    _, options = forge.call("GET", "/sdapi/v1/options")
    # the user's checkpoint is chosen again (Forge's checkpoint change writes its full title, "tiny-sd1.safetensors
    # [hash]", where the options API had been given "tiny-sd1") and loaded again
    assert options["sd_model_checkpoint"].startswith(loaded.removesuffix(".safetensors"))
    assert_same_model_but_new_objects(before, forge.fingerprint())
    body = {"project": "base", "version": "nope", "dataset": str(dataset), "base_model": "nope", "settings": FAST}
    status, answer = forge.call("POST", "/train-tools/v1/train", body)
    assert status == 422 and answer["detail"]["field"] == "base_model"


def test_a_run_holds_forges_queue_reports_in_its_progress_and_stops_at_its_interrupt(forge, dataset):
    forge.txt2img("alice <lora:tiny_kohya:1>")  # a LoRA merged in, to be taken out and put back on this path too
    before, live = forge.fingerprint(), forge.fingerprint(live=True)
    status, _ = forge.call("POST", "/train-tools/v1/train", {"project": "exits", "version": "interrupted",
                           "dataset": str(dataset), "settings": {**FAST, "epochs": 50}})  # fmt: skip
    assert status == 200
    deadline = time.time() + 300
    while forge.call("GET", "/train-tools/v1/status")[1]["step"] < 1 and time.time() < deadline:
        time.sleep(0.5)
    _, progress = forge.call("GET", "/sdapi/v1/progress?skip_current_image=true")
    assert progress["state"]["job"] == "train_tools" and "LoRA training: epoch" in progress["textinfo"], progress
    generated: dict = {}
    # the same LoRA: Forge keeps its merge, so that the live fingerprint can be compared after this generation too
    generation = threading.Thread(target=lambda: generated.update(image=forge.txt2img("alice <lora:tiny_kohya:1>")))
    generation.start()
    time.sleep(3)
    assert generation.is_alive(), "a generation ran while the job held Forge's queue"
    forge.call("POST", "/sdapi/v1/interrupt")  # what Forge's Interrupt button does
    job = forge.wait_job()
    assert job["state"] == "stopped", job["message"]
    generation.join(300)
    assert "image" in generated  # the generation ran once the job let the queue go
    assert forge.fingerprint() == before and forge.fingerprint(live=True) == live


def test_a_run_that_raises_restores_the_model(forge, dataset):
    before, live = forge.fingerprint(), forge.fingerprint(live=True)
    first = forge.train("exits", "raises", dataset, **{**FAST, "epochs": 1, "save_state": True,
                                                      "gradient_checkpointing": True})  # fmt: skip
    assert first["state"] == "done", first["message"]
    assert forge.fingerprint() == before  # gradient checkpointing undone too
    # a damaged optimiser state: the resumed run fails after the adapters are in the model and the optimiser is built
    state = Path(first["checkpoints"][-1]).parents[1] / "state"
    (state / "optimizer.pt").write_bytes(b"not a torch file")
    status, answer = forge.call("POST", "/train-tools/v1/train", {"project": "exits", "version": "raises",
                                "resume": True, "settings": {**FAST, "epochs": 2, "save_state": True}})  # fmt: skip
    assert status == 200, answer
    job = forge.wait_job()
    assert job["state"] == "error", job
    assert forge.fingerprint() == before and forge.fingerprint(live=True) == live


def test_the_tagger_api_answers(forge):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
    status, answer = forge.call("GET", "/tagger/v1/interrogators")
    assert status == 200 and "wd14-vit.v2" in answer["models"], answer
    body = {"image": base64.b64encode(buffer.getvalue()).decode(), "model": "wd14-vit.v2", "threshold": 0.5}
    status, answer = forge.call("POST", "/tagger/v1/interrogate", body)
    assert status == 200 and "red_background" in answer["caption"]["tag"], answer


def test_epoch_compare_renders_with_forges_processing(forge, dataset):
    job = forge.train("cmp", "v1", dataset, **FAST)
    assert job["state"] == "done", job["message"]
    body = {"project": "cmp", "version": "v1", "prompts": ["alice, red hair"], "weights": "0.5, 1", "seeds": "1234",
            "width": 64, "height": 64, "steps": 4, "sampler": "Euler", "score": False}  # fmt: skip
    status, answer = forge.call("POST", "/train-tools/v1/compare", body, timeout=1800)
    assert status == 200, answer
    assert len(answer["grids"]) == 1 and not answer["interrupted"], answer["notes"]
    assert len(answer["cells"]) == 2 * 2 + 1  # 2 epochs x 2 weights + the no-LoRA reference
    images = [Image.open(p).convert("RGB").tobytes() for p in answer["cells"]]
    assert len(set(images)) == len(images), "every epoch x weight cell should differ for a fixed seed"
    # the X/Y/Z hand-off: Forge's own X/Y/Z plot (same script arguments as A1111's) redraws every cell
    xyz = answer["xyz"][0]
    assert (xyz["x_values"], xyz["y_values"]) == (":0.5>,:1>,:0>", "-000001,")  # "" = the final file
    assert_xyz_plot_redraws_every_cell(forge, answer, ("e000001", "final"))
