"""POST /train-tools/v1/compare and /compare/pick with the real service and a stand-in renderer."""

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from lib_lora_train.compare.run import RenderedCell
from lib_lora_train.compare.service import compare_version
from lib_lora_train.store import ProjectStore
from lib_lora_train.ui.api_auth import basic_auth_dependency
from lib_lora_train.ui.compare.api import mount_compare_api


@pytest.fixture
def api(tmp_path):
    store = ProjectStore(tmp_path / "train_tools")
    version = store.create_version("alice", "v1")
    version.checkpoints.mkdir(parents=True, exist_ok=True)
    for epoch in (1, 2, 3):
        version.checkpoint_file(epoch).write_bytes(f"e{epoch}".encode())

    def render(plan, cell):
        return RenderedCell(
            Image.new("RGB", (plan.width, plan.height), ((cell.epoch.epoch or 0) * 60, 0, 0)), cell.prompt
        )

    def run(request):
        return compare_version(request, store.version(request.project, request.version), render)

    app = FastAPI()
    mount_compare_api(app, run=run, store_factory=lambda: store, lora_dir=lambda: tmp_path / "Lora")
    client = TestClient(app)
    client.store, client.lora = store, tmp_path / "Lora"
    return client


BODY = {"project": "alice", "version": "v1", "prompts": ["alice_x, smile"], "weights": "0.5, 1", "seeds": "42",
        "width": 64, "height": 64, "steps": 4, "score": False}  # fmt: skip


def test_compare_returns_grids_and_a_ready_xyz_payload(api):
    reply = api.post("/train-tools/v1/compare", json=BODY)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert len(data["grids"]) == 1 and Image.open(data["grids"][0]).size[0] > 3 * 64
    assert len(data["cells"]) == 3 * 2 + 1 and data["seeds"] == [42]
    xyz = data["xyz"][0]
    assert (xyz["x_values"], xyz["y_values"]) == (":0.5>,:1>,:0>", "-000001,-000002,-000003")
    payload = xyz["txt2img_payload"]
    assert payload["script_name"] == "x/y/z plot" and payload["seed"] == 42 and payload["steps"] == 4
    assert payload["script_args"][:2] == [7, ":0.5>,:1>,:0>"] and len(payload["script_args"]) == 18
    assert payload["prompt"] == "alice_x, smile <lora:alice-v1-000001:0.5>"


def test_bad_settings_and_missing_versions(api):
    reply = api.post("/train-tools/v1/compare", json={**BODY, "weights": "heavy"})
    assert reply.status_code == 422 and reply.json()["detail"]["field"] == "weights"
    reply = api.post("/train-tools/v1/compare", json={**BODY, "version": "v9"})
    assert reply.status_code == 404 and "v9" in reply.json()["detail"]
    reply = api.post("/train-tools/v1/compare", json={**BODY, "epochs": "subset", "subset": "7"})
    assert reply.status_code == 422 and "epoch" in reply.json()["detail"]["message"]


def test_pick_records_and_publishes(api):
    reply = api.post(
        "/train-tools/v1/compare/pick",
        json={
            "project": "alice",
            "version": "v1",
            "epoch": 2,
            "weight": 0.8,
            "publish": True,
            "activation_text": "alice_x",
        },
    )
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["checkpoint"] == "alice-v1-000002.safetensors" and data["published"].endswith("alice-v1.safetensors")
    assert (api.lora / "alice-v1.safetensors").read_bytes() == b"e2"
    assert json.loads((api.lora / "alice-v1.json").read_text())["preferred weight"] == 0.8
    reply = api.post(
        "/train-tools/v1/compare/pick", json={"project": "alice", "version": "v1", "epoch": 5, "weight": 1}
    )
    assert reply.status_code == 422 and "epoch 5" in reply.json()["detail"]


def test_routes_honour_api_auth(tmp_path):
    app = FastAPI()
    mount_compare_api(
        app, basic_auth_dependency("u:p"), run=lambda r: None, store_factory=lambda: None, lora_dir=lambda: tmp_path
    )
    client = TestClient(app)
    assert client.post("/train-tools/v1/compare", json=BODY).status_code == 401
    assert (
        client.post(
            "/train-tools/v1/compare/pick", json={"project": "a", "version": "b", "epoch": 1, "weight": 1}
        ).status_code
        == 401
    )
