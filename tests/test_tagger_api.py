"""The tagger HTTP API on a bare FastAPI app: the existing extension's shapes, its queue protocol, our batch route.
(test_tagger_api_compat.py holds the WD14 tagger extension's own facts, case by case.)"""

import base64
import io
import shutil

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from PIL import Image
from tagger_graphs import make_model_folder

from lib_lora_train.tagger.service import TaggerConfig, TaggerService
from lib_lora_train.ui.tagger.api import mount_tagger_api

ROOT = "/tagger/v1"


@pytest.fixture()
def models_dir(tmp_path):
    make_model_folder(tmp_path / "models" / "tiny-local")
    return tmp_path / "models"


@pytest.fixture()
def client(models_dir):
    app = FastAPI()
    mount_tagger_api(app, service=TaggerService(TaggerConfig(str(models_dir), use_gpu=False, allow_download=False)))
    return TestClient(app)


def b64_image(colour="white", fmt="PNG", side=32):
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buffer, fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def test_interrogators_lists_models(client):
    response = client.get(f"{ROOT}/interrogators")
    assert response.status_code == 200 and response.json() == {"models": ["tiny-local"]}


def test_interrogate_answers_tag_and_rating_confidences(client):
    response = client.post(f"{ROOT}/interrogate", json={"image": b64_image(), "model": "tiny-local", "threshold": 0.5})
    assert response.status_code == 200, response.text
    caption = response.json()["caption"]
    assert set(caption) == {"tag", "rating"}
    assert caption["rating"] == pytest.approx(
        {"general": 0.7, "sensitive": 0.2, "questionable": 0.05, "explicit": 0.01}
    )
    assert caption["tag"]["1girl"] == pytest.approx(0.9) and caption["tag"]["long_hair"] == pytest.approx(0.7)
    assert "mid_tag" not in caption["tag"]  # 0.5 is not above a 0.5 threshold
    assert "hatsune_miku" in caption["tag"]  # characters come back too, under the same threshold


def test_threshold_defaults_to_everything_and_data_urls_work(client):
    body = {"image": "data:image/png;base64," + b64_image(), "model": "tiny-local"}
    tags = client.post(f"{ROOT}/interrogate", json=body).json()["caption"]["tag"]
    assert len(tags) == 12  # every non-rating tag of the tiny model


def test_an_unknown_model_is_explained_on_the_console(client, caplog):
    response = client.post(f"{ROOT}/interrogate", json={"image": b64_image(), "model": "nope"})
    assert response.status_code == 404 and response.json() == {"detail": "Model not found"}
    assert "'nope'" in caplog.text and "tiny-local" in caplog.text  # the client gets the fork's words, we the list


def test_queue_protocol_of_the_extension(client):
    def post(**fields):
        body = {"model": "tiny-local", "threshold": 0.5, **fields}
        return client.post(f"{ROOT}/interrogate", json=body).json()["caption"]

    assert post(image=b64_image(), queue="q", name_in_queue="a") == {"tiny-local": {"q": 1.0}}
    assert post(image=b64_image("red"), queue="q", name_in_queue="b") == {"tiny-local": {"q": 2.0}}
    collected = post(image=b64_image(), queue="q", name_in_queue="")
    assert set(collected) == {"a", "b"}
    assert collected["a"]["rating:general"] == pytest.approx(0.7)
    assert collected["b"]["red_background"] > 0.9 and "red_background" not in collected["a"]


def test_unload_reports_the_count(client):
    client.post(f"{ROOT}/interrogate", json={"image": b64_image(), "model": "tiny-local"})
    assert client.post(f"{ROOT}/unload-interrogators").json() == "Successfully unload 1 model(s)"
    assert client.post(f"{ROOT}/unload-interrogators").json() == "Successfully unload 0 model(s)"
    again = client.post(f"{ROOT}/interrogate", json={"image": b64_image(), "model": "tiny-local"})
    assert again.status_code == 200  # reloads on demand


def test_batch_route_tags_a_folder(client, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.new("RGB", (20, 20), "white").save(data / f"{i}.png")
    (data / "0.txt").write_text("kept", encoding="utf-8")
    body = {"input_dir": str(data), "model": "tiny-local", "existing": "skip", "exclude": ["solo"], "max_tags": 3}
    response = client.post(f"{ROOT}/batch", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["written"] == 2 and result["skipped_existing"] == 1 and result["errors"] == []
    assert result["frequencies"]["1girl"] == 2 and "solo" not in result["frequencies"]
    assert (data / "0.txt").read_text(encoding="utf-8") == "kept"
    assert len((data / "1.txt").read_text(encoding="utf-8").split(", ")) == 3


@pytest.mark.parametrize("fast_jpeg", [True, False])
def test_batch_route_passes_the_jpeg_decoding_choice(client, tmp_path, monkeypatch, fast_jpeg):
    from lib_lora_train.tagger import inference

    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (20, 20), "white").save(data / "a.jpg")
    asked = []
    real = inference.load_rgb
    monkeypatch.setattr(inference, "load_rgb", lambda path, min_side=None: asked.append(min_side) or real(path))
    body = {"input_dir": str(data), "model": "tiny-local", "fast_jpeg": fast_jpeg}
    assert client.post(f"{ROOT}/batch", json=body).json()["written"] == 1
    assert (asked[0] is not None) == fast_jpeg


@pytest.mark.parametrize(
    "extra", [{"existing": "clobber"}, {"unknown_field": 1}, {"pattern": "../x.txt"}, {"input_dir": "/does/not/exist"}]
)
def test_batch_route_refuses_bad_requests(client, tmp_path, extra):
    response = client.post(f"{ROOT}/batch", json={"input_dir": str(tmp_path), "model": "tiny-local", **extra})
    assert response.status_code == 422


def test_auth_dependency_guards_every_route(models_dir):
    def deny():
        raise HTTPException(401, "Incorrect username or password")

    app = FastAPI()
    service = TaggerService(TaggerConfig(str(models_dir), use_gpu=False, allow_download=False))
    mount_tagger_api(app, auth_dependency=deny, service=service)
    client = TestClient(app)
    assert client.get(f"{ROOT}/interrogators").status_code == 401
    assert client.post(f"{ROOT}/unload-interrogators").status_code == 401


def test_dropped_in_model_appears_without_restart(client, models_dir):
    shutil.copytree(models_dir / "tiny-local", models_dir / "another")
    assert client.get(f"{ROOT}/interrogators").json() == {"models": ["another", "tiny-local"]}
