"""The tagger API inside a real AUTOMATIC1111 WebUI v1.10.x on the CPU (set LORA_TRAIN_TOOLS_WEBUI, optionally
LORA_TRAIN_TOOLS_WEBUI_PYTHON): images by URL and by data URL go through the WebUI's own decoder under its options
(a local URL is refused by default, fetched once ``api_forbid_local_requests`` is off), the WD14 tagger extension's
names and queue protocol answer, and with the extension itself installed beside ours (set LORA_TRAIN_TOOLS_WD14_TAGGER
to a checkout of picobyte/stable-diffusion-webui-wd14-tagger, or its bare git directory) its routes are left to it.
URLs point at a server on 127.0.0.1 started here."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
import webui_server
from tagger_graphs import make_mld_folder, make_model_folder
from tagger_http import ImageServer, png_bytes
from webui_server import WebUI, skip_reason

pytestmark = [pytest.mark.webui, pytest.mark.slow]
if skip_reason():
    pytest.skip(skip_reason(), allow_module_level=True)

ROOT = "/tagger/v1"
M = "wd14-vit.v2"  # the fork's name for the folder wd-v1-4-vit-tagger-v2, which holds the tiny WD14 graph here
MLD_NAME = "mld-tresnetd.6-30000"


def start_webui(workdir: Path, *, options: dict | None = None, neighbours: dict[str, Path] | None = None) -> WebUI:
    """A WebUI with the tiny taggers in its models folder, ``options`` in its config.json and ``neighbours``
    (name -> folder) installed as extensions beside ours."""
    server = WebUI(workdir)
    make_model_folder(server.models / "tagger" / "wd-v1-4-vit-tagger-v2")
    make_mld_folder(server.models / "tagger" / MLD_NAME, "TResnet-D-FLq_ema_6-30000.onnx")
    server.data.mkdir(parents=True)
    (server.data / "config.json").write_text(json.dumps(options or {}), encoding="utf-8")
    real_popen = subprocess.Popen

    def popen(args, *rest, **kwargs):  # the extensions folder exists once start() launches the WebUI itself
        if "launch.py" in args:
            for name, folder in (neighbours or {}).items():
                (server.data / "extensions" / name).symlink_to(folder)
        return real_popen(args, *rest, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(webui_server.subprocess, "Popen", popen)
        for name in ("NO_PROXY", "no_proxy"):  # the WebUI's requests must reach 127.0.0.1 directly
            patch.setenv(name, "127.0.0.1,localhost")
        try:
            server.start("tiny-sd1")
        except Exception:
            server.stop()
            raise
    return server


def b64(colour="white") -> str:
    return base64.b64encode(png_bytes(colour)).decode()


def interrogate(webui: WebUI, **body):
    return webui.call("POST", f"{ROOT}/interrogate", {"model": M, "threshold": 0.5, **body})


@pytest.fixture(scope="module")
def images():
    with ImageServer(png_bytes("red")) as server:
        yield server


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    server = start_webui(tmp_path_factory.mktemp("webui-urls"), options={"api_forbid_local_requests": False})
    try:
        yield server
    finally:
        server.stop()


def test_a_url_and_a_data_url_are_tagged_through_the_webuis_decoder(webui, images):
    status, plain = interrogate(webui, image=b64("red"))
    assert status == 200, plain
    assert plain["caption"]["tag"]["red_background"] > 0.9 and set(plain["caption"]["rating"]) >= {"general"}
    status, by_url = interrogate(webui, image=images.url("/image.png"))
    assert status == 200 and by_url == plain, by_url
    status, by_data_url = interrogate(webui, image="data:image/png;base64," + b64("red"))
    assert status == 200 and by_data_url == plain, by_data_url
    assert images.user_agents  # the WebUI fetched it (api_forbid_local_requests is off in this config)


def test_decoder_errors_are_the_webuis(webui, images):
    status, answer = interrogate(webui, image=images.url("/page"))
    assert (status, answer["detail"]) == (500, "Invalid image url")
    status, answer = interrogate(webui, image="bm90IGFuIGltYWdl")
    assert (status, answer["detail"]) == (500, "Invalid encoded image")
    # "data:image/png,<no ;base64>" fails inside the WebUI's decoder outside its try: its own middleware reports
    # the raw IndexError (our copy of the decoder would have said "Invalid encoded image")
    status, answer = interrogate(webui, image="data:image/png," + b64())
    assert status == 500 and answer["error"] == "IndexError"
    status, answer = interrogate(webui, image=b64(), model="nope")
    assert (status, answer["detail"]) == (404, "Model not found")


def test_the_forks_names_and_queue_protocol_answer(webui):
    status, listing = webui.call("GET", f"{ROOT}/interrogators")
    assert status == 200 and {M, "wd14-vit-v2-git", MLD_NAME, "wd-v1-4-vit-tagger-v2"} <= set(listing["models"])
    assert interrogate(webui, image=b64(), queue="live", name_in_queue="a")[1] == {"caption": {M: {"live": 1.0}}}
    status, answer = interrogate(webui, image=b64("red"), model=MLD_NAME, queue="live", name_in_queue="b")
    assert status == 200 and answer["caption"][MLD_NAME] == {"live": 1.0}
    status, collected = interrogate(webui, queue="live")  # no image: collecting never reads one
    assert status == 200 and list(collected["caption"]) == ["a", "b"]
    assert "rating:general" in collected["caption"]["a"] and "red_theme" in collected["caption"]["b"]
    status, mld = interrogate(webui, image=b64("red"), model=MLD_NAME, threshold=0.6)
    assert (
        status == 200
        and mld["caption"]["rating"] == {}
        and list(mld["caption"]["tag"]) == ["1girl", "red_theme", "smile"]
    )


@pytest.fixture(scope="module")
def webui_defaults(tmp_path_factory):
    server = start_webui(tmp_path_factory.mktemp("webui-defaults"))
    try:
        yield server
    finally:
        server.stop()


def test_under_the_webuis_defaults_a_local_url_is_refused_as_the_fork_refuses_it(webui_defaults, images):
    # api_forbid_local_requests is on by default: the WebUI's decoder refuses before fetching anything
    before = len(images.user_agents)
    status, answer = interrogate(webui_defaults, image=images.url("/image.png"))
    assert (status, answer["detail"]) == (500, "Request to local resource not allowed")
    assert answer["error"] == "HTTPException" and len(images.user_agents) == before
    status, answer = interrogate(webui_defaults, image="data:image/png;base64," + b64("red"))
    assert status == 200 and answer["caption"]["tag"]["red_background"] > 0.9


def _wd14_tagger_checkout(tmp_path: Path) -> Path | None:
    """A folder holding the WD14 tagger extension, from LORA_TRAIN_TOOLS_WD14_TAGGER (a folder or a bare git dir)."""
    source = os.environ.get("LORA_TRAIN_TOOLS_WD14_TAGGER")
    if not source:
        return None
    source = Path(source)
    if (source / "tagger" / "api.py").is_file():
        return source
    target = tmp_path / "stable-diffusion-webui-wd14-tagger"
    target.mkdir()
    archive = subprocess.run(["git", f"--git-dir={source}", "archive", "HEAD"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


@pytest.fixture(scope="module")
def webui_with_the_wd14_tagger(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("webui-neighbour")
    fork = _wd14_tagger_checkout(workdir)
    if fork is None:
        pytest.skip("set LORA_TRAIN_TOOLS_WD14_TAGGER to picobyte/stable-diffusion-webui-wd14-tagger to run this")
    server = start_webui(workdir, neighbours={"stable-diffusion-webui-wd14-tagger": fork})  # default options
    try:
        yield server
    finally:
        server.stop()


def test_beside_the_wd14_tagger_its_routes_are_left_to_it(webui_with_the_wd14_tagger, images):
    webui = webui_with_the_wd14_tagger
    log = webui.log()
    assert "stable-diffusion-webui-wd14-tagger also serves the WD14 tagger's HTTP routes" in log
    status, config = webui.call("GET", "/config")
    assert status == 200 and "stable-diffusion-webui-wd14-tagger also serves" in json.dumps(config)  # the tab says so
    status, openapi = webui.call("GET", "/openapi.json")
    assert status == 200 and f"{ROOT}/batch" in openapi["paths"]  # our own route stays
    status, listing = webui.call("GET", f"{ROOT}/interrogators")
    assert status == 200 and "wd14-vit.v1" in listing["models"]  # the fork's answer (its list, not ours)
    assert "wd-v1-4-vit-tagger-v2" not in listing["models"]
    # its route under the WebUI's default options: a local URL is refused by the WebUI's decoder, which is what our
    # route calls too (test_a_url_and_a_data_url_are_tagged_through_the_webuis_decoder)
    status, answer = webui.call("POST", f"{ROOT}/interrogate", {"model": "wd14-vit.v2", "image": images.url("/x.png")})
    assert (status, answer["detail"]) == (500, "Request to local resource not allowed")
