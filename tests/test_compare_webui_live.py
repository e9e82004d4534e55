"""Epoch Compare in a real AUTOMATIC1111 WebUI v1.10.x on the CPU (set LORA_TRAIN_TOOLS_WEBUI; uses the WebUI
harness in tests/webui_server.py): a trained 3-epoch version (epochs 1 and 2 with suffixes, the last as the final
file, as kohya names them) renders a 3 x k grid through the API, the cells differ
across epochs and weights for a fixed seed, the returned X/Y/Z plot payload reproduces every cell pixel for pixel,
scoring runs with a tiny tagger graph, and the pick is published under the clean name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

pytestmark = [pytest.mark.webui, pytest.mark.slow]
webui_server = pytest.importorskip("webui_server", reason="the WebUI test harness (tests/webui_server.py) is not here")
if webui_server.skip_reason():
    pytest.skip(webui_server.skip_reason(), allow_module_level=True)
tagger_graphs = pytest.importorskip("tagger_graphs", reason="the tagger test graphs are not here")

FAST = dict(rank=4, alpha=4, resolution=64, min_bucket_side=64, max_bucket_side=128, batch_size=1, epochs=3,
            mixed_precision="no", unet_lr=1e-2, te_lr=1e-3, seed=7)  # fmt: skip
BODY = {"project": "cmp", "version": "v1", "prompts": ["alice_x, solo, smile, blue background"], "weights": "0.5, 1",
        "seeds": "1234", "width": 64, "height": 64, "steps": 4, "sampler": "Euler", "negative_prompt": "lowres"}  # fmt: skip


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    work = tmp_path_factory.mktemp("webui")
    data = work / "dataset" / "2_alice"
    data.mkdir(parents=True)
    for i, colour in enumerate([(220, 30, 30), (200, 40, 60)]):
        Image.new("RGB", (64, 64), colour).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text("alice_x, red hair, smile", encoding="utf-8")
    server = webui_server.WebUI(work)
    try:
        server.start("tiny-sd1")
        tagger_graphs.make_model_folder(server.models / "tagger" / "tiny-tagger")
        job = server.train("cmp", "v1", work / "dataset", **FAST)
        assert job["state"] == "done", job
        status, answer = server.call("POST", "/train-tools/v1/compare", BODY, timeout=1800)
        assert status == 200, answer
        yield server, answer
    finally:
        server.stop()


def test_api_renders_a_3_by_k_grid_whose_cells_differ(compared):
    _, answer = compared
    assert len(answer["grids"]) == 1 and not answer["interrupted"], answer["notes"]
    assert len(answer["cells"]) == 3 * 2 + 1  # 3 epochs x 2 weights + the shared no-LoRA reference
    images = [Image.open(p).convert("RGB").tobytes() for p in answer["cells"]]
    assert len(set(images)) == len(images), "every epoch x weight cell should differ for a fixed seed"
    grid = Image.open(answer["grids"][0])
    assert json.loads(grid.info["lora_compare"])["seeds"] == [1234] and grid.width > 3 * 64


def test_xyz_plot_reproduces_every_cell(compared):
    server, answer = compared
    xyz = answer["xyz"][0]
    assert (xyz["x_values"], xyz["y_values"]) == (":0.5>,:1>,:0>", "-000001,-000002,")  # "" = the final file
    webui_server.assert_xyz_plot_redraws_every_cell(server, answer, ("e000001", "e000002", "final"))


def test_scores_come_from_the_tiny_tagger(compared):
    _, answer = compared
    assert answer["scores"] is not None, answer["notes"]
    assert len(answer["scores"]["table"]) == 3 * 3 and answer["score_chart"]
    assert any("tiny-tagger" in n for n in answer["notes"])


def test_pick_is_published_with_card_metadata(compared):
    server, _ = compared
    body = {"project": "cmp", "version": "v1", "epoch": 2, "weight": 0.7, "publish": True, "activation_text": "alice_x"}
    status, answer = server.call("POST", "/train-tools/v1/compare/pick", body)
    assert status == 200, answer
    sidecar = json.loads(Path(answer["sidecar"]).read_text(encoding="utf-8"))
    assert answer["published"].endswith("cmp-v1.safetensors") and sidecar["preferred weight"] == 0.7
