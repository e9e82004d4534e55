"""Our tagger API side by side with the WD14 tagger extension's, case by case.

The extension's behaviour is written down here as data (field names, types, defaults, status codes, messages,
answers), read from the maintained fork's code (picobyte/stable-diffusion-webui-wd14-tagger at e72d984:
tagger/api.py, tagger/api_models.py, tagger/utils.py, tagger/interrogator.py, tagger/dbimutils.py), the original's
(toriato/stable-diffusion-webui-wd14-tagger at 99bf7d8: tagger/utils.py) and the WebUI v1.10.1 decoder they call
(modules/api/api.py); the queue answers were observed by running the fork's API on a bare FastAPI app with the
WebUI's pydantic 1.10 / FastAPI 0.94. No code of theirs is used: each test sends the same request to our routes and
compares with the facts.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import sys
import types
from pathlib import Path

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from PIL import Image
from tagger_graphs import MLD_TAGS, TAGS, expected_probs, make_mld_folder, make_model_folder, mld_expected_probs
from tagger_http import ImageServer, png_bytes

from lib_lora_train.tagger.image_input import UrlPolicy, decode_image_input
from lib_lora_train.tagger.models import KNOWN_MODELS, MLD, find_model
from lib_lora_train.tagger.other_taggers import other_tagger_extensions, serves_tagger_api
from lib_lora_train.tagger.service import TaggerConfig, TaggerService
from lib_lora_train.ui import runtime as ui_runtime
from lib_lora_train.ui.tagger.api import mount_tagger_api

ROOT = "/tagger/v1"
REQUIRED = object()

# --- the fork's models (tagger/api_models.py): field -> (JSON schema type, default); REQUIRED has none ------------
FORK_REQUEST = {
    "image": ("string", ""),  # inherited from the WebUI's InterrogateRequest
    "model": ("string", REQUIRED),  # redeclared without a default: required (the WebUI's "clip" default is gone)
    "threshold": ("number", 0.0),  # no ge/le: any number is accepted
    "queue": ("string", ""),
    "name_in_queue": ("string", ""),
}
FORK_RESPONSE = {"caption": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties":
                                                                       {"type": "number"}}}}  # fmt: skip
FORK_INTERROGATORS_RESPONSE = {"models": {"type": "array", "items": {"type": "string"}}}
FORK_UNLOAD_ANSWER = "Successfully unload {} model(s)"

# --- the names its /interrogators lists and the files behind them: name -> (repo, file, revision) ------------------
FORK_NAMES = {  # picobyte tagger/utils.py, in its order
    "wd14-vit.v1": ("SmilingWolf/wd-v1-4-vit-tagger", "model.onnx", None),
    "wd14-vit.v2": ("SmilingWolf/wd-v1-4-vit-tagger-v2", "model.onnx", None),
    "wd14-convnext.v1": ("SmilingWolf/wd-v1-4-convnext-tagger", "model.onnx", None),
    "wd14-convnext.v2": ("SmilingWolf/wd-v1-4-convnext-tagger-v2", "model.onnx", None),
    "wd14-convnextv2.v1": ("SmilingWolf/wd-v1-4-convnextv2-tagger-v2", "model.onnx", None),
    "wd14-swinv2-v1": ("SmilingWolf/wd-v1-4-swinv2-tagger-v2", "model.onnx", None),
    "wd-v1-4-moat-tagger.v2": ("SmilingWolf/wd-v1-4-moat-tagger-v2", "model.onnx", None),
    "mld-caformer.dec-5-97527": ("deepghs/ml-danbooru-onnx", "ml_caformer_m36_dec-5-97527.onnx", None),
    "mld-tresnetd.6-30000": ("deepghs/ml-danbooru-onnx", "TResnet-D-FLq_ema_6-30000.onnx", None),
}
ORIGINAL_NAMES = {  # toriato tagger/utils.py: the names without "-git" pinned the hub revision v2.0
    "wd14-convnextv2-v2": ("SmilingWolf/wd-v1-4-convnextv2-tagger-v2", "model.onnx", "v2.0"),
    "wd14-vit-v2": ("SmilingWolf/wd-v1-4-vit-tagger-v2", "model.onnx", "v2.0"),
    "wd14-convnext-v2": ("SmilingWolf/wd-v1-4-convnext-tagger-v2", "model.onnx", "v2.0"),
    "wd14-swinv2-v2": ("SmilingWolf/wd-v1-4-swinv2-tagger-v2", "model.onnx", "v2.0"),
    "wd14-convnextv2-v2-git": ("SmilingWolf/wd-v1-4-convnextv2-tagger-v2", "model.onnx", None),
    "wd14-vit-v2-git": ("SmilingWolf/wd-v1-4-vit-tagger-v2", "model.onnx", None),
    "wd14-convnext-v2-git": ("SmilingWolf/wd-v1-4-convnext-tagger-v2", "model.onnx", None),
    "wd14-swinv2-v2-git": ("SmilingWolf/wd-v1-4-swinv2-tagger-v2", "model.onnx", None),
    "wd14-vit": ("SmilingWolf/wd-v1-4-vit-tagger", "model.onnx", None),
    "wd14-convnext": ("SmilingWolf/wd-v1-4-convnext-tagger", "model.onnx", None),
}

M = "wd14-vit.v2"  # served here from a local folder holding the tiny WD14 graph
MLD_NAME = "mld-tresnetd.6-30000"  # the tiny ML-Danbooru graph under the fork's name
BAD = "bm90IGFuIGltYWdl"  # base64 of "not an image"


def b64(colour="white", side=32, fmt="PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buffer, fmt)
    return base64.b64encode(buffer.getvalue()).decode()


# --- status codes and messages of /interrogate: (case, body, status, detail or None for a validation list) ---------
FORK_ERRORS = [
    ("unknown model, checked before the image", {"image": "xx", "model": "nope"}, 404, "Model not found"),
    ("empty model name", {"image": b64(), "model": ""}, 404, "Model not found"),
    ("no image: the WebUI decoder gets ''", {"model": M}, 500, "Invalid encoded image"),
    ("empty image", {"image": "", "model": M}, 500, "Invalid encoded image"),
    ("base64 of text", {"image": BAD, "model": M}, 500, "Invalid encoded image"),
    ("image null (pydantic 1: none is not an allowed value)", {"image": None, "model": M}, 422, None),
    ("no model", {"image": b64()}, 422, None),
    ("threshold not a number", {"image": b64(), "model": M, "threshold": "abc"}, 422, None),
]


@pytest.fixture()
def models_dir(tmp_path):
    make_model_folder(tmp_path / "models" / "wd-v1-4-vit-tagger-v2")  # the folder behind "wd14-vit.v2"
    mld = next(m for m in KNOWN_MODELS if m.name == MLD_NAME)
    make_mld_folder(tmp_path / "models" / MLD_NAME, mld.model_file)
    return tmp_path / "models"


def make_client(models_dir, *, allow_download=False, decoder=None, others=(), downloader=None) -> TestClient:
    app = FastAPI()
    config = TaggerConfig(str(models_dir), use_gpu=False, allow_download=allow_download)
    service = TaggerService(config, downloader=downloader) if downloader else TaggerService(config)
    mount_tagger_api(app, service=service, image_decoder=decoder, other_apis=others)
    return TestClient(app)


@pytest.fixture()
def client(models_dir):
    return make_client(models_dir)


def post(client, **body):
    return client.post(f"{ROOT}/interrogate", json=body)


def single(client, **body) -> dict:
    response = post(client, **{"model": M, **body})
    assert response.status_code == 200, response.text
    return response.json()["caption"]


# --- request and response models ---------------------------------------------------------------------------------


def test_request_and_response_models_match_the_forks(client):
    schemas = client.app.openapi()["components"]["schemas"]
    ours = schemas["TaggerInterrogateRequest"]
    for field, (kind, default) in FORK_REQUEST.items():
        prop = ours["properties"][field]
        assert prop["type"] == kind, field
        if default is REQUIRED:
            assert field in ours["required"]
        else:
            assert prop["default"] == default and field not in ours.get("required", [])
        assert "minimum" not in prop and "maximum" not in prop
    extra = set(ours["properties"]) - set(FORK_REQUEST)
    assert extra == {"tag_order"} and "tag_order" not in ours["required"]  # our one addition is optional
    assert ours["required"] == ["model"]
    response = schemas["TaggerInterrogateResponse"]
    assert {k: {"type": v["type"], "additionalProperties": v["additionalProperties"]}
            for k, v in response["properties"].items()} == FORK_RESPONSE  # fmt: skip
    assert response["required"] == ["caption"]
    listing = schemas["TaggerInterrogatorsResponse"]
    assert {k: {"type": v["type"], "items": v["items"]} for k, v in listing["properties"].items()} == (
        FORK_INTERROGATORS_RESPONSE
    )
    paths = client.app.openapi()["paths"]
    assert set(paths[f"{ROOT}/interrogate"]) == {"post"} and set(paths[f"{ROOT}/interrogators"]) == {"get"}
    assert set(paths[f"{ROOT}/unload-interrogators"]) == {"post"}


def test_unknown_request_fields_are_ignored_as_the_fork_does(client):
    assert single(client, image=b64(), unknown_field=1, threshold=0.5)["tag"]


@pytest.mark.parametrize(("case", "body", "status", "detail"), FORK_ERRORS, ids=[c[0] for c in FORK_ERRORS])
def test_status_codes_and_messages_match_the_forks(client, case, body, status, detail):
    response = post(client, **body)
    assert response.status_code == status, (case, response.text)
    if detail is not None:
        assert response.json() == {"detail": detail}
    else:
        assert isinstance(response.json()["detail"], list)  # FastAPI's validation errors


def test_a_data_url_without_base64_is_a_500_as_in_the_webui(client):
    # the WebUI's decoder fails there outside its try (a raw 500); ours names the problem with the same status
    response = post(client, image="data:image/png," + b64(), model=M)
    assert response.status_code == 500


@pytest.mark.parametrize("threshold", [2.0, 1.0, -1.0, 0.95, 0.85, 0.5])
def test_any_threshold_is_accepted_and_tags_must_be_strictly_above_it(client, threshold):
    # the fork: no bounds on threshold, "if v > threshold", ratings always all there
    everything = single(client, image=b64(), threshold=-1.0)
    caption = single(client, image=b64(), threshold=threshold)
    assert caption["tag"] == {k: v for k, v in everything["tag"].items() if v > threshold}
    assert set(caption["rating"]) == {"general", "sensitive", "questionable", "explicit"}
    assert (
        len(everything["tag"]) == len(TAGS) - 4 and "mid_tag" not in single(client, image=b64(), threshold=0.5)["tag"]
    )


def test_tags_come_in_the_models_order_and_ours_on_request(client):
    caption = single(client, image=b64(), threshold=0.35)
    csv_order = [t[0] for t in TAGS[4:]]
    assert list(caption["tag"]) == [name for name in csv_order if name in caption["tag"]]  # the fork's order
    by_confidence = single(client, image=b64(), threshold=0.35, tag_order="confidence")["tag"]
    assert list(by_confidence.values()) == sorted(by_confidence.values(), reverse=True)
    assert by_confidence == caption["tag"] and list(by_confidence) != list(caption["tag"])
    assert post(client, image=b64(), model=M, tag_order="alphabetical").status_code == 422


def test_small_images_are_padded_up_to_the_models_size_as_the_fork_does(client):
    # 16x16 red into the 32 px model: the fork's make_square pads with white to 32x32 (a quarter stays red);
    # enlarging the image instead would make the whole input red (red_background ~1.0)
    red = TAGS.index(next(t for t in TAGS if t[0] == "red_background"))
    caption = single(client, image=b64("red", side=16))
    expected = expected_probs((0.75, 0.75, 1.0))[red]
    assert caption["tag"]["red_background"] == pytest.approx(expected, abs=1e-4) and expected < 0.6


def test_unload_answers_the_forks_sentence(client):
    single(client, image=b64())
    assert client.post(f"{ROOT}/unload-interrogators").json() == FORK_UNLOAD_ANSWER.format(1)
    assert client.post(f"{ROOT}/unload-interrogators").json() == FORK_UNLOAD_ANSWER.format(0)


# --- names -------------------------------------------------------------------------------------------------------


def fake_downloader(tmp_path):
    wd, mld = make_model_folder(tmp_path / "hub-wd"), make_mld_folder(tmp_path / "hub-mld", "graph.onnx")
    calls = []

    def download(spec, models_dir, progress=None):
        calls.append(spec)
        target = Path(models_dir) / spec.name
        if spec.family != MLD:
            return shutil.copytree(wd, target)
        target.mkdir(parents=True)
        shutil.copy(mld / "graph.onnx", target / spec.model_file)
        shutil.copy(mld / "classes.json", target / spec.tags_file)
        return target

    return download, calls


@pytest.mark.parametrize("names", [FORK_NAMES, ORIGINAL_NAMES], ids=["fork", "original"])
def test_every_name_of_the_fork_and_the_original_is_listed_and_means_the_same_files(tmp_path, names):
    download, calls = fake_downloader(tmp_path)
    client = make_client(tmp_path / "empty", allow_download=True, downloader=download)
    listed = client.get(f"{ROOT}/interrogators").json()["models"]
    assert set(names) <= set(listed) and len(listed) == len(set(listed))
    for name, (repo, model_file, revision) in names.items():
        spec = find_model(name, tmp_path / "empty").spec
        assert (spec.repo_id, spec.model_file, spec.revision) == (repo, model_file, revision), name
        response = post(client, image=b64(), model=name)
        assert response.status_code == 200, (name, response.text)
    assert len(calls) == len({spec.name for spec in calls})  # one download per model, whatever it was called


def test_with_downloads_off_only_models_on_disk_are_listed_and_others_explained(client, models_dir):
    listed = client.get(f"{ROOT}/interrogators").json()["models"]
    assert listed[:2] == ["wd-v1-4-vit-tagger-v2", "wd14-vit.v2"] and "wd14-vit.v1" not in listed
    assert MLD_NAME in listed
    response = post(client, image=b64(), model="wd14-vit.v1")  # known, not on disk: no raw 500 any more
    assert response.status_code == 404
    assert response.json()["detail"].startswith("Model not found: wd-v1-4-vit-tagger is not in")
    assert "downloads are off" in response.json()["detail"]


def test_a_failed_download_is_a_500_that_says_how_to_get_the_model(tmp_path):
    from lib_lora_train.tagger.hub import DownloadError

    def offline(spec, models_dir, progress=None):
        raise DownloadError(f"could not download {spec.repo_id} (no network); put the files into {models_dir}")

    client = make_client(tmp_path / "empty", allow_download=True, downloader=offline)
    response = post(client, image=b64(), model="wd14-vit.v1")
    assert response.status_code == 500 and "could not download SmilingWolf/wd-v1-4-vit-tagger" in response.text


# --- ML-Danbooru -----------------------------------------------------------------------------------------------


def test_mld_answers_like_the_forks_no_ratings_tags_in_class_order(client):
    # the fork: ratings {}; tags = sigmoid(logits) zipped with classes.json, filtered "> threshold"
    caption = single(client, model=MLD_NAME, image=b64((0, 0, 255), side=40), threshold=0.6)
    probs = mld_expected_probs((0.0, 0.0, 1.0))
    expected = [(t[0], p) for t, p in zip(MLD_TAGS, probs, strict=True) if p > 0.6]
    assert caption["rating"] == {} and list(caption["tag"]) == [name for name, _ in expected]
    assert list(caption["tag"].values()) == pytest.approx([p for _, p in expected], rel=1e-5)


# --- the queue protocol ------------------------------------------------------------------------------------------

# The fork's answers, request by request, from a fresh start (threshold 0.5, images as noted). "counts" answers are
# {model name as sent: {queue: images so far}}; a collect answers the queue's results or, without one, the counts.
FORK_QUEUE_SESSION = [
    ("collect a queue that never existed", {"queue": "nothing"}, 200, {M: {}}),
    ("add a", {"queue": "q", "name_in_queue": "a", "image": "white"}, 200, {M: {"q": 1.0}}),
    ("add b", {"queue": "q", "name_in_queue": "b", "image": "red"}, 200, {M: {"q": 2.0}}),
    ("add a again: stored as a#0", {"queue": "q", "name_in_queue": "a", "image": "white"}, 200, {M: {"q": 3.0}}),
    ("add under another model", {"model": MLD_NAME, "queue": "q2", "name_in_queue": "x", "image": "white"}, 200,
     {M: {"q": 3.0}, MLD_NAME: {"q2": 1.0}}),
    ("a broken image: 500, yet counted and named", {"queue": "q", "name_in_queue": "bad", "image": BAD}, 500,
     {"detail": "Invalid encoded image"}),
    ("collect q: no image needed", {"queue": "q"}, 200, ["a", "b", "a#0", "bad"]),
    ("collect q again: gone, so the counts", {"queue": "q"}, 200, {M: {}, MLD_NAME: {"q2": 1.0}}),
    ("collect q2 under another model: results are per queue", {"queue": "q2", "image": "xx"}, 200, ["x"]),
    ("collect q2 under its model: the counts", {"model": MLD_NAME, "queue": "q2"}, 200, {M: {}, MLD_NAME: {}}),
]  # fmt: skip


def test_the_queue_protocol_answers_as_the_forks(client):
    singles = {colour: single(client, image=b64(colour), threshold=0.5) for colour in ("white", "red")}
    for case, fields, status, expected in FORK_QUEUE_SESSION:
        body = {"model": M, "threshold": 0.5, **fields}
        if body.get("image") in singles:
            body["image"] = b64(body["image"])
        response = post(client, **body)
        assert response.status_code == status, (case, response.text)
        answer = response.json()
        if isinstance(expected, list):  # collected results: their names in order, each the single answer's tags
            assert list(answer["caption"]) == expected, case
            results = answer["caption"]
        else:
            assert answer == (expected if status != 200 else {"caption": expected}), case
    white_mld = {t[0]: p for t, p in zip(MLD_TAGS, mld_expected_probs((1.0, 1.0, 1.0)), strict=True) if p > 0.5}
    assert results["x"] == pytest.approx(white_mld, rel=1e-5) and list(results["x"]) == list(white_mld)


def test_queued_results_are_the_single_answers_with_rating_prefixes(client):
    white = single(client, image=b64(), threshold=0.5)
    post(client, model=M, image=b64(), queue="q", name_in_queue="a", threshold=0.5)
    post(client, model=M, image=b64(), queue="q", name_in_queue="bad#", threshold=0.5)
    post(client, model=M, image=BAD, queue="q", name_in_queue="broken", threshold=0.5)
    results = post(client, model=M, queue="q").json()["caption"]
    expected = {**white["tag"], **{f"rating:{k}": v for k, v in white["rating"].items()}}
    assert results == {"a": expected, "bad#": expected, "broken": {}}
    assert list(results["a"]) == list(expected)  # tags first (model order), then the ratings


def test_a_queue_name_is_made_up_when_only_a_name_is_given(client, caplog):
    counts = post(client, model=M, image=b64(), name_in_queue="solo").json()["caption"]
    (made_up,) = counts[M]
    assert re.fullmatch(r"[A-Z0-9]{8}", made_up) and counts[M][made_up] == 1.0
    assert made_up in caplog.text  # the console says it, as the fork prints it
    assert list(post(client, model=M, queue=made_up).json()["caption"]) == ["solo"]


def test_sha256_names_an_image_by_its_text_once(client):
    # the fork crashes here (sha256 of a str: TypeError, a raw 500); we hash the text's UTF-8 bytes as intended
    import hashlib

    image = b64()
    first = post(client, model=M, image=image, queue="h", name_in_queue="<sha256>")
    again = post(client, model=M, image=image, queue="h", name_in_queue="<sha256>")
    assert first.json()["caption"] == again.json()["caption"] == {M: {"h": 1.0}}  # a duplicate is not tagged twice
    results = post(client, model=M, queue="h").json()["caption"]
    assert list(results) == [hashlib.sha256(image.encode()).hexdigest()]


def test_queue_counts_are_keyed_by_the_name_the_client_sent(client):
    post(client, model="wd-v1-4-vit-tagger-v2", image=b64(), queue="k", name_in_queue="1")
    counts = post(client, model=M, image=b64(), queue="k", name_in_queue="2").json()["caption"]
    assert counts == {"wd-v1-4-vit-tagger-v2": {"k": 1.0}, M: {"k": 1.0}}


# --- URLs, through the host's decoder ----------------------------------------------------------------------------


def test_urls_follow_the_webui_rules_by_default(client):
    # outside the WebUI our copy of its decoder applies, with its defaults: local URLs are refused
    with ImageServer(png_bytes("red")) as server:
        response = post(client, model=M, image=server.url("/image.png"))
    assert response.status_code == 500 and response.json() == {"detail": "Request to local resource not allowed"}


def test_a_url_is_fetched_and_tagged_when_local_requests_are_allowed(models_dir):
    client = make_client(models_dir, decoder=lambda data: decode_image_input(data, UrlPolicy(forbid_local=False)))
    with ImageServer(png_bytes("red")) as server:
        by_url = single(client, image=server.url("/image.png"))
        not_image = post(client, model=M, image=server.url("/page"))
        queued = post(client, model=M, image=server.url("/image.png"), queue="u", name_in_queue="r")
    assert by_url == single(client, image=b64("red")) and by_url["tag"]["red_background"] > 0.9
    assert not_image.status_code == 500 and not_image.json() == {"detail": "Invalid image url"}
    assert queued.status_code == 200 and post(client, model=M, queue="u").json()["caption"]["r"]["red_background"] > 0.9


def test_the_hosts_decoder_is_used_and_its_errors_pass_through(models_dir):
    seen = []

    class WebUILike(ui_runtime.UIRuntime):
        def decode_api_image(self, data):
            seen.append(data)
            if data.startswith("http"):
                raise HTTPException(status_code=500, detail="Requests not allowed")
            return Image.open(io.BytesIO(base64.b64decode(data)))

    with ui_runtime.installed(WebUILike()):
        client = make_client(models_dir)
        response = post(client, model=M, image="https://example.invalid/a.png")
        assert response.status_code == 500 and response.json() == {"detail": "Requests not allowed"}
        assert single(client, image=b64())["tag"] and seen == ["https://example.invalid/a.png", b64()]


def test_the_webui_runtime_calls_the_webuis_decoder(monkeypatch):
    from lib_lora_train.webui.runtime import WebUIRuntime

    calls = []
    api = types.ModuleType("modules.api.api")
    api.decode_base64_to_image = lambda encoding: calls.append(encoding) or "decoded"
    monkeypatch.setitem(sys.modules, "modules", types.ModuleType("modules"))
    monkeypatch.setitem(sys.modules, "modules.api", types.ModuleType("modules.api"))
    monkeypatch.setitem(sys.modules, "modules.api.api", api)
    assert WebUIRuntime().decode_api_image("http://x/y.png") == "decoded" and calls == ["http://x/y.png"]


# --- another tagger extension beside ours --------------------------------------------------------------------------


def fake_extension(root: Path, name: str, code: str) -> Path:
    folder = root / name
    (folder / "tagger").mkdir(parents=True)
    (folder / "scripts").mkdir()
    (folder / "scripts" / "tagger.py").write_text("from tagger.api import on_app_started\n", encoding="utf-8")
    (folder / "tagger" / "api.py").write_text(code, encoding="utf-8")
    return folder


def test_a_tagger_extension_is_recognised_by_its_routes(tmp_path):
    fork = fake_extension(tmp_path, "stable-diffusion-webui-wd14-tagger", "Api(app, queue_lock, '/tagger/v1')\n")
    other = fake_extension(tmp_path, "sd-webui-other", "app.add_api_route('/other/v1/x', f)\n")
    ours = Path(__file__).resolve().parents[1]
    assert serves_tagger_api(fork) and not serves_tagger_api(other)
    found = other_tagger_extensions([("lora-train-tools", ours), (fork.name, fork), (other.name, other)], ours)
    assert found == ["stable-diffusion-webui-wd14-tagger"]


def test_the_webui_runtime_lists_other_tagger_extensions(tmp_path, monkeypatch):
    from lib_lora_train.webui.runtime import WebUIRuntime

    fork = fake_extension(tmp_path, "stable-diffusion-webui-wd14-tagger", "PREFIX = '/tagger/v1'\n")
    ours = Path(__file__).resolve().parents[1]
    (tmp_path / "lora-train-tools").symlink_to(ours)  # installed the way users clone it
    extensions = types.ModuleType("modules.extensions")
    extensions.active = lambda: [
        types.SimpleNamespace(name=p.name, path=str(p)) for p in (tmp_path / "lora-train-tools", fork)
    ]
    modules = types.ModuleType("modules")
    modules.extensions = extensions
    monkeypatch.setitem(sys.modules, "modules", modules)
    monkeypatch.setitem(sys.modules, "modules.extensions", extensions)
    assert WebUIRuntime().other_tagger_apis() == ["stable-diffusion-webui-wd14-tagger"]


@pytest.mark.parametrize("theirs_first", [True, False])
def test_another_tagger_extensions_routes_are_left_alone(models_dir, caplog, theirs_first):
    app = FastAPI()

    def theirs():
        return {"models": ["wd14-vit.v1"]}

    if theirs_first:
        app.add_api_route(f"{ROOT}/interrogators", theirs, methods=["GET"])
    service = TaggerService(TaggerConfig(str(models_dir), use_gpu=False, allow_download=False))
    others = () if theirs_first else ["stable-diffusion-webui-wd14-tagger"]
    added = mount_tagger_api(app, service=service, other_apis=others)
    if not theirs_first:
        app.add_api_route(f"{ROOT}/interrogators", theirs, methods=["GET"])
    assert added == [f"{ROOT}/batch"]
    paths = [getattr(route, "path", "") for route in app.routes]
    assert paths.count(f"{ROOT}/interrogators") == 1 and f"{ROOT}/interrogate" not in paths
    assert TestClient(app).get(f"{ROOT}/interrogators").json() == {"models": ["wd14-vit.v1"]}  # its answer
    assert "left to it" in caplog.text and ("another extension" if theirs_first else "wd14-tagger") in caplog.text


def test_the_tab_says_whose_routes_they_are(models_dir, monkeypatch):
    gr = pytest.importorskip("gradio")
    from lib_lora_train.ui.tagger import settings as tagger_settings
    from lib_lora_train.ui.tagger.tab import build_tagger_tab

    service = TaggerService(TaggerConfig(str(models_dir), use_gpu=False, allow_download=False))
    monkeypatch.setattr(tagger_settings, "_service", service)

    class WithFork(ui_runtime.UIRuntime):
        def other_tagger_apis(self):
            return ["stable-diffusion-webui-wd14-tagger"]

    def notes(runtime):
        with ui_runtime.installed(runtime):
            tab = build_tagger_tab()
        return [b.value for b in tab.blocks.values() if isinstance(b, gr.Markdown) and "HTTP API" in str(b.value)]

    (note,) = notes(WithFork())
    assert "stable-diffusion-webui-wd14-tagger" in note and "/tagger/v1/interrogate" in note and "left to it" in note
    assert notes(ui_runtime.UIRuntime()) == []
