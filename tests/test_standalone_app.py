"""The standalone app served in-process: the four tabs, the Settings tab and the model picker in its config, our
scripts in the page, and the HTTP API with the same basic-auth rules as the WebUI's ``--api-auth``."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request

import pytest

from lib_lora_train.hosts.tiny_model import save_tiny_model
from lib_lora_train.standalone.models import candidates
from lib_lora_train.standalone.runtime import StandaloneRuntime
from lib_lora_train.ui import runtime as ui_runtime
from lib_lora_train.ui.page import serve


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, auth: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("standalone")
    base = save_tiny_model(root / "models" / "tiny-sd1")
    save_tiny_model(root / "models" / "other-sd1", seed=1)
    runtime = StandaloneRuntime(outputs=root / "outputs" / "train_tools", models_dir=root / "models" / "tagger",
                                lora_dir=root / "models" / "Lora", cache_dir=root / "cache")  # fmt: skip
    with ui_runtime.installed(runtime):
        runtime.model.load(base)
        runtime.choices = candidates(base, [])
        demo, url = serve(runtime, listen="127.0.0.1", port=_port(), auth="alice:pa:ss,bob:pw")
        try:
            yield url.rstrip("/"), runtime
        finally:
            demo.close()


def test_the_api_answers_only_with_the_credentials(app):
    url, _ = app
    assert _get(f"{url}/train-tools/v1/status")[0] == 401
    assert _get(f"{url}/train-tools/v1/status", "alice:wrong")[0] == 401
    for user in ("alice:pa:ss", "bob:pw"):
        status, body = _get(f"{url}/train-tools/v1/status", user)
        assert status == 200 and json.loads(body)["state"] == "idle"
    status, body = _get(f"{url}/tagger/v1/interrogators", "bob:pw")
    assert status == 200 and "models" in json.loads(body)


def test_the_page_holds_the_tabs_the_picker_and_our_scripts(app):
    url, runtime = app
    assert _get(f"{url}/config")[0] in (401, 403)  # the page itself asks for the login too
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    data = b"username=bob&password=pw"
    opener.open(urllib.request.Request(f"{url}/login", data=data), timeout=30)
    config = opener.open(f"{url}/config", timeout=30).read().decode()
    for elem_id in ("tab_lora_train_tagger", "tab_lora_train_tag_editor", "tab_lora_train_tools",
                    "tab_lora_train_compare", "tab_lora_train_settings", "lora_train_standalone_model"):  # fmt: skip
        assert elem_id in config, elem_id
    assert "other-sd1" in config  # a sibling of --base is offered by the picker
    tree = json.loads(config)
    by_elem = {c.get("props", {}).get("elem_id"): c["id"] for c in tree["components"]}

    def places(node, wanted):
        return (node.get("id") == wanted) + sum(places(child, wanted) for child in node.get("children", []))

    for elem_id in ("lora_train_tools_start", "lora_train_tagger_start", "lora_compare_project"):
        count = places(tree["layout"], by_elem[elem_id])
        assert count == 1, f"{elem_id} is laid out {count} times"  # once, inside its own tab
    page = opener.open(f"{url}/", timeout=30).read().decode()
    assert "lora-train-tag-autocomplete" in page  # javascript/tag_editor.js is in the page
    assert runtime.model_arch() == "sd1"
