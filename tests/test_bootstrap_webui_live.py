"""The bootstrap loop inside a real AUTOMATIC1111 WebUI v1.10.x on the CPU, through the API: one picture cut into 4
crops -> round 1 -> candidates rendered by the WebUI with the round's LoRA -> auto-select -> round 2 on 8 images ->
round 3 on 12 -> the final version; the loaded model's fingerprint is the same at the end, and every round's LoRA
loads in txt2img with every key matched. Skipped without LORA_TRAIN_TOOLS_WEBUI."""

from __future__ import annotations

import time

import pytest
from PIL import Image
from webui_server import serve, skip_reason

pytestmark = [pytest.mark.webui, pytest.mark.slow]
if skip_reason():
    pytest.skip(skip_reason(), allow_module_level=True)

FAST = dict(rank=4, alpha=4, min_bucket_side=64, max_bucket_side=128, batch_size=1, epochs=2, max_steps=2,
            mixed_precision="no", unet_lr=1e-2, te_lr=1e-3, cache_latents="memory", seed=7)  # fmt: skip


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    yield from serve(tmp_path_factory.mktemp("webui"))


def test_four_crops_grow_to_twelve_images_and_the_model_is_left_as_it_was(webui, tmp_path):
    picture = Image.new("RGB", (128, 128), (200, 40, 40))
    for x in range(64, 128):
        for y in range(64):
            picture.putpixel((x, y), (40, 40, 200))
    picture.save(tmp_path / "alice.png")
    before = webui.fingerprint()
    started = time.time()
    body = {"project": "boot", "images": str(tmp_path / "alice.png"), "crop": True, "activation_tag": "bootchan",
            "traits": ["red hair"], "targets": [8, 12], "views": ["from side", "from behind"], "seeds_per_view": 3,
            "resolution": 64, "settings": FAST}  # fmt: skip
    status, answer = webui.call("POST", "/train-tools/v1/bootstrap/start", body)
    assert status == 200, answer
    deadline = time.time() + 1500
    while time.time() < deadline:
        _, answer = webui.call("GET", "/train-tools/v1/bootstrap/status?project=boot")
        if not answer["running"]:
            break
        time.sleep(2)
    print(f"bootstrap loop in the WebUI: {time.time() - started:.0f} s")
    assert (answer["phase"], answer["version"], answer["error"]) == ("done", "v3", ""), answer
    _, projects = webui.call("GET", "/train-tools/v1/projects")
    versions = {v["name"]: v for p in projects if p["name"] == "boot" for v in p["versions"]}
    assert sorted(versions) == ["v1", "v2", "v3"]
    assert webui.fingerprint() == before
    for name in ("boot-v1", "boot-v2", "boot-v3"):
        webui.txt2img(f"bootchan <lora:{name}:1>")
        assert [line for line in webui.log().splitlines() if name in line and "didn't match keys" in line] == []
        assert f"Couldn't find network with name {name}" not in webui.log()
