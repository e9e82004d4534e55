"""The /train-tools/v1 API: projects, train (answers at once), status, stop, fingerprint, and --api-auth."""

import threading

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from webui_fakes import FakeHost, fake_train, make_dataset

from lib_lora_train.hosts.model_state import PartFingerprint
from lib_lora_train.store import ProjectStore
from lib_lora_train.ui.api_auth import basic_auth_dependency, parse_credentials
from lib_lora_train.ui.train.api import mount_train_api
from lib_lora_train.ui.train.jobs import JobRunner


@pytest.fixture
def api(tmp_path):
    gate = threading.Event()
    store = ProjectStore(tmp_path / "train_tools")
    runner = JobRunner(make_host=FakeHost, store_factory=lambda: store, train_fn=fake_train(gate))
    app = FastAPI()
    part = PartFingerprint("w", "s", "f", "p", 3)
    mount_train_api(app, jobs=runner, store_factory=lambda: store, fingerprint_fn=lambda live=False: {"unet": part})
    client = TestClient(app)
    client.gate, client.runner, client.dataset = gate, runner, make_dataset(tmp_path / "data")
    yield client
    gate.set()
    runner.wait(10)


def test_train_answers_at_once_then_status_reports_done_and_projects_list_the_checkpoints(api):
    body = {"project": "alice", "version": "v1", "dataset": str(api.dataset), "settings": {"rank": 8, "epochs": 2}}
    started = api.post("/train-tools/v1/train", json=body)
    assert started.status_code == 200, started.text
    assert started.json()["state"] == "running"
    api.gate.set()
    api.runner.wait(10)
    status = api.get("/train-tools/v1/status").json()
    assert status["state"] == "done" and status["step"] == 4 and status["loss"] == 0.25
    assert len(status["checkpoints"]) == 2 and "losses" in status and status["losses"] == []
    assert len(api.get("/train-tools/v1/status?history=true").json()["losses"]) == 4
    projects = api.get("/train-tools/v1/projects").json()
    assert projects[0]["name"] == "alice"
    checkpoints = projects[0]["versions"][0]["checkpoints"]
    assert [(c["name"], c["epoch"]) for c in checkpoints] == [("alice-v1-000001", 1), ("alice-v1-000002", 2)]


def test_a_second_train_while_running_is_409_and_stop_ends_it(api):
    body = {"project": "alice", "version": "v1", "dataset": str(api.dataset)}
    assert api.post("/train-tools/v1/train", json=body).status_code == 200
    assert api.post("/train-tools/v1/train", json=body).status_code == 409
    assert api.get("/train-tools/v1/host-fingerprint").status_code == 409
    api.post("/train-tools/v1/stop")
    api.gate.set()
    api.runner.wait(10)
    assert api.get("/train-tools/v1/status").json()["state"] == "stopped"


@pytest.mark.parametrize(
    ("settings", "field"), [({"rank": 0}, "rank"), ({"epochz": 3}, "epochz"), ({"resolution": 500}, "resolution")]
)
def test_bad_settings_are_422_naming_the_field(api, settings, field):
    body = {"project": "a", "version": "v1", "dataset": str(api.dataset), "settings": settings}
    answer = api.post("/train-tools/v1/train", json=body)
    assert answer.status_code == 422 and answer.json()["detail"]["field"] == field


def test_bad_names_and_missing_folders_are_400(api, tmp_path):
    assert (
        api.post(
            "/train-tools/v1/train", json={"project": "../x", "version": "v1", "dataset": str(api.dataset)}
        ).status_code
        == 400
    )
    missing = api.post(
        "/train-tools/v1/train", json={"project": "a", "version": "v1", "dataset": str(tmp_path / "nope")}
    )
    assert missing.status_code == 400 and "not found" in missing.json()["detail"]
    assert api.get("/train-tools/v1/status").json()["state"] == "idle"


def test_fingerprint_route_combines_parts(api):
    answer = api.get("/train-tools/v1/host-fingerprint").json()
    assert answer["parts"]["unet"]["tensors"] == 3 and len(answer["digest"]) == 64


def test_api_auth_protects_every_route(tmp_path):
    store = ProjectStore(tmp_path / "s")
    runner = JobRunner(make_host=FakeHost, store_factory=lambda: store, train_fn=fake_train())
    app = FastAPI()
    mount_train_api(app, jobs=runner, store_factory=lambda: store, auth_dependency=basic_auth_dependency("u:p:w"))
    client = TestClient(app)
    for method, path in [("get", "/projects"), ("get", "/status"), ("post", "/stop"), ("post", "/train")]:
        assert getattr(client, method)("/train-tools/v1" + path).status_code == 401
    assert client.get("/train-tools/v1/status", auth=("u", "wrong")).status_code == 401
    assert client.get("/train-tools/v1/status", auth=("u", "p:w")).json()["state"] == "idle"


def test_credentials_parse_like_the_webui_flag():
    assert parse_credentials("a:1, b:2:3") == {"a": "1", "b": "2:3"}
    assert basic_auth_dependency("") is None and basic_auth_dependency(None) is None


def test_a_base_model_the_host_cannot_switch_to_is_422_before_anything_is_made(api, tmp_path):
    body = {"project": "alice", "version": "other-model", "dataset": str(api.dataset), "base_model": "xl.safetensors"}
    answer = api.post("/train-tools/v1/train", json=body)
    assert answer.status_code == 422 and answer.json()["detail"]["field"] == "base_model"
    assert "loaded model only" in answer.json()["detail"]["message"]
    assert not (tmp_path / "train_tools" / "alice").exists()


def test_a_host_that_cannot_train_says_so_before_anything_is_made(tmp_path):
    store = ProjectStore(tmp_path / "train_tools")
    runner = JobRunner(make_host=FakeHost, store_factory=lambda: store, train_fn=fake_train())

    def forge():
        raise ValueError("training inside Stable Diffusion WebUI Forge is not supported yet; train in ...")

    app = FastAPI()
    mount_train_api(app, jobs=runner, store_factory=lambda: store, check_host=forge)
    body = {"project": "alice", "version": "v1", "dataset": str(make_dataset(tmp_path / "data"))}
    answer = TestClient(app).post("/train-tools/v1/train", json=body)
    assert answer.status_code == 501 and "Forge is not supported yet" in answer.json()["detail"]
    assert not (tmp_path / "train_tools" / "alice").exists()
