"""``/train-tools/v1/bootstrap/…`` over a host without a model: training through the shared job runner (a stand-in
training function), candidates from the runtime's renderer, the loop in the background; automatic and manual rounds,
the errors a client meets, and auth."""

from __future__ import annotations

import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from webui_fakes import FakeHost, FakeResult

from lib_lora_train.store import ProjectStore
from lib_lora_train.ui import services
from lib_lora_train.ui.api_auth import basic_auth_dependency
from lib_lora_train.ui.runtime import UIRuntime, installed
from lib_lora_train.ui.train import bootstrap_runner as runner_module
from lib_lora_train.ui.train.bootstrap_api import mount_bootstrap_api
from lib_lora_train.ui.train.jobs import JobRunner


class Host(UIRuntime):
    """A runtime whose renderer draws a different picture for every call, and no tagger on disk."""

    def __init__(self, root):
        super().__init__()
        self.root, self.calls = root, 0

    def data_dir(self):
        return self.root

    def model_arch(self):
        return "sd1"

    def render_sample(self, request):
        self.calls += 1
        image = Image.new("RGB", (64, 64), ((self.calls * 37) % 256, (self.calls * 91) % 256, 40))
        for x in range(0, 64, 1 + self.calls % 5):
            image.putpixel((x, (x * self.calls) % 64), (255, 255, 255))
        return image


def train(host, settings, version, *, resume=False):
    written = []
    for epoch in range(1, 3):
        path = version.checkpoint_file(epoch if epoch < 2 else None)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"lora")
        written.append(path)
    return FakeResult("done", written, 4, 0.2, "trained")


@pytest.fixture
def api(tmp_path, monkeypatch):
    runtime = Host(tmp_path)
    store = ProjectStore(tmp_path / "outputs" / "train_tools")
    monkeypatch.setattr(services, "_runner", JobRunner(make_host=FakeHost, store_factory=lambda: store, train_fn=train))
    monkeypatch.setattr(runner_module, "_runner", None)
    app = FastAPI()
    mount_bootstrap_api(app, basic_auth_dependency("alice:pw"))
    picture = tmp_path / "alice.png"
    Image.new("RGB", (128, 96), (200, 50, 50)).save(picture)
    with installed(runtime):
        client = TestClient(app)
        client.auth = ("alice", "pw")
        yield client, store, picture
        runner_module.bootstrap_runner().stop()
        runner_module.bootstrap_runner().wait(30)


def _wait(client, project, phase=None, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get("/train-tools/v1/bootstrap/status", params={"project": project}).json()
        if not status["running"] and (phase is None or status["phase"] == phase):
            return status
        time.sleep(0.1)
    raise TimeoutError(status)


def _body(picture, **extra):
    return {"project": "alice", "images": str(picture), "crop": True, "activation_tag": "alicechan",
            "traits": ["fox ears"], "targets": [6, 8], "views": ["from side", "from behind"], "seeds_per_view": 2,
            "resolution": 64, "settings": {"min_bucket_side": 64, "max_bucket_side": 128}, **extra}  # fmt: skip


def test_an_automatic_loop_runs_to_the_character_version(api):
    client, store, picture = api
    answer = client.post("/train-tools/v1/bootstrap/start", json=_body(picture))
    assert answer.status_code == 200, answer.text
    status = _wait(client, "alice", "done")
    assert (status["version"], status["round"], status["error"]) == ("v3", 3, "")
    sizes = {v.name: sum(1 for _ in store.version("alice", v.name).dataset.rglob("*.png"))
             for v in store.list_versions("alice")}  # fmt: skip
    assert sizes == {"v1": 4, "v2": 6, "v3": 8}  # 4 crops, then grown to each target


def test_a_manual_round_waits_shows_its_candidates_and_goes_on_with_the_kept(api):
    client, store, picture = api
    assert client.post("/train-tools/v1/bootstrap/start", json=_body(picture, auto_select=False)).status_code == 200
    assert _wait(client, "alice", "select")["round"] == 1
    listed = client.get("/train-tools/v1/bootstrap/candidates", params={"project": "alice"}).json()
    names = [c["file"] for c in listed["candidates"]]
    assert len(names) == 4 and all(c["reasons"] for c in listed["candidates"])
    from lib_lora_train.ui.train.bootstrap_panel import candidate_view, status_markdown

    items, choices, checked = candidate_view("alice")  # what the panel shows: ranked, with the automatic picks
    assert [path.rsplit("/", 1)[-1] for path, _ in items] == names == choices and len(checked) == 2
    assert "Keep the candidates that show your character" in status_markdown(_wait(client, "alice", "select"))
    refused = client.post("/train-tools/v1/bootstrap/select", json={"project": "alice", "kept": ["nope.png"]})
    assert refused.status_code == 422 and "not candidates of round 1" in refused.text
    kept = client.post("/train-tools/v1/bootstrap/select", json={"project": "alice", "kept": names[:2]})
    assert kept.status_code == 200
    status = _wait(client, "alice", "select")
    assert (status["version"], status["round"]) == ("v2", 2)
    v2 = store.version("alice", "v2")
    assert sorted(p.name for p in v2.dataset.rglob("r1-*.png")) == sorted(f"r1-{n}" for n in names[:2])


def test_bad_requests_are_answered_before_anything_starts_and_auth_is_required(api):
    client, store, picture = api
    bad = client.post("/train-tools/v1/bootstrap/start", json=_body(picture, settings={"rank": 0}))
    assert bad.status_code == 422 and bad.json()["detail"]["field"] == "rank"
    missing = client.post("/train-tools/v1/bootstrap/start", json=_body(picture, images="/no/such/picture.png"))
    assert missing.status_code == 422 and "no such image or folder" in missing.text
    boxes = client.post("/train-tools/v1/bootstrap/start", json=_body(picture, boxes="0, 0, 500, 50"))
    assert boxes.status_code == 422 and "outside the 128x96 image" in boxes.text
    assert not store.has_version("alice", "v1")
    assert client.get("/train-tools/v1/bootstrap/candidates", params={"project": "bob"}).status_code == 404
    client.auth = None
    assert client.get("/train-tools/v1/bootstrap/status", params={"project": "alice"}).status_code == 401
