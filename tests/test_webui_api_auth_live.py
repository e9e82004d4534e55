"""Inside a real WebUI v1.10.x started with ``--api-auth``: every route this extension adds refuses a request
without the credentials and answers one with them (the WebUI guards only its own /sdapi routes)."""

from __future__ import annotations

import pytest
from webui_server import WebUI, skip_reason

pytestmark = [pytest.mark.webui, pytest.mark.slow]
if skip_reason():
    pytest.skip(skip_reason(), allow_module_level=True)

CREDENTIALS = "alice:s3cret,bob:other"  # the WebUI splits users on "," and each on its one ":"
USER = "alice:s3cret"
OUR_PREFIXES = ("/train-tools/", "/tagger/")


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    server = WebUI(tmp_path_factory.mktemp("webui"))
    try:
        server.start("tiny-sd1", extra_args=("--api-auth", CREDENTIALS))
        yield server
    finally:
        server.stop()


def _our_routes(webui) -> list[tuple[str, str]]:
    status, openapi = webui.call("GET", "/openapi.json", auth=USER)
    assert status == 200
    routes = [
        (method.upper(), path)
        for path, operations in openapi["paths"].items()
        if path.startswith(OUR_PREFIXES)
        for method in operations
    ]
    assert len(routes) >= 10  # training, compare, tagger and tag editor routes are all mounted
    return routes


def test_every_route_of_ours_refuses_a_request_without_credentials(webui):
    assert webui.call("GET", "/sdapi/v1/options")[0] == 401  # the flag is in force for the WebUI's own routes
    for method, path in _our_routes(webui):
        concrete = path.replace("{", "").replace("}", "")  # path parameters: any value, auth comes first
        body = {} if method == "POST" else None
        status, _ = webui.call(method, concrete, body)
        assert status == 401, f"{method} {path} answered {status} without credentials"
        status, _ = webui.call(method, concrete, body, auth="alice:wrong")
        assert status == 401, f"{method} {path} answered {status} to a wrong password"


def test_routes_answer_with_the_credentials(webui):
    status, projects = webui.call("GET", "/train-tools/v1/projects", auth=USER)
    assert status == 200 and isinstance(projects, list)
    status, models = webui.call("GET", "/tagger/v1/interrogators", auth=USER)
    assert status == 200 and "models" in models
    status, _ = webui.call("GET", "/train-tools/v1/tag-editor/status", auth=USER)
    assert status == 200
    assert webui.call("GET", "/train-tools/v1/projects", auth="bob:other")[0] == 200  # every user of the flag
