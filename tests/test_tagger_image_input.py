"""Our copy of the WebUI v1.10 API decoder's rules, for hosts without the WebUI: base64, data:image URLs and
http(s) URLs under api_enable_requests / api_forbid_local_requests / api_useragent, with its statuses and messages.
URLs go to a server on 127.0.0.1 started here; nothing leaves the machine."""

import base64

import pytest
from PIL import Image
from tagger_http import ImageServer, png_bytes

from lib_lora_train.tagger.image_input import (
    INVALID_URL,
    LOCAL_NOT_ALLOWED,
    REQUESTS_NOT_ALLOWED,
    ImageInputError,
    UrlPolicy,
    decode_image_input,
    is_global_url,
)

ALLOW_LOCAL = UrlPolicy(forbid_local=False)

# the WebUI's decode_base64_to_image (modules/api/api.py, v1.10.1) as facts: (case, input, status, detail)
WEBUI_DECODER_ERRORS = [
    ("empty", "", 500, "Invalid encoded image"),
    ("base64 of text", base64.b64encode(b"not an image").decode(), 500, "Invalid encoded image"),
    ("bad padding", "abc", 500, "Invalid encoded image"),
    ("data URL of text", "data:image/png;base64," + base64.b64encode(b"text").decode(), 500, "Invalid encoded image"),
]


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # 127.0.0.1 must be reached directly


@pytest.fixture(scope="module")
def server():
    with ImageServer(png_bytes("red")) as running:
        yield running


@pytest.mark.parametrize(("case", "data", "status", "detail"), WEBUI_DECODER_ERRORS)
def test_undecodable_input_gets_the_webui_status_and_message(case, data, status, detail):
    with pytest.raises(ImageInputError) as caught:
        decode_image_input(data)
    assert (caught.value.status, caught.value.detail) == (status, detail), case


def test_base64_and_data_urls_decode():
    raw = png_bytes("blue", 12)
    for text in (base64.b64encode(raw).decode(), "data:image/png;base64," + base64.b64encode(raw).decode()):
        image = decode_image_input(text)
        assert image.size == (12, 12) and image.convert("RGB").getpixel((0, 0)) == (0, 0, 255)


def test_a_local_url_is_refused_by_default_as_the_webui_does(server):
    # api_forbid_local_requests is on by default in the WebUI: 500 "Request to local resource not allowed"
    with pytest.raises(ImageInputError) as caught:
        decode_image_input(server.url("/image.png"))
    assert (caught.value.status, caught.value.detail) == (500, LOCAL_NOT_ALLOWED)
    assert server.user_agents == []  # refused before any request was made


def test_urls_off_are_refused(server):
    with pytest.raises(ImageInputError, match=REQUESTS_NOT_ALLOWED):
        decode_image_input(server.url("/image.png"), UrlPolicy(enable_requests=False, forbid_local=False))


def test_an_allowed_url_is_fetched_with_the_user_agent(server):
    image = decode_image_input(server.url("/image.png"), UrlPolicy(forbid_local=False, user_agent="tagger-test/1"))
    assert image.convert("RGB").getpixel((3, 3)) == (255, 0, 0)
    assert server.user_agents[-1] == "tagger-test/1"


@pytest.mark.parametrize("path", ["/page", "/missing.png"])
def test_a_url_that_is_no_image_is_an_invalid_url(server, path):
    with pytest.raises(ImageInputError) as caught:
        decode_image_input(server.url(path), ALLOW_LOCAL)
    assert (caught.value.status, caught.value.detail) == (500, INVALID_URL)


def test_an_unreachable_url_is_an_invalid_url():
    with ImageServer(b"") as gone:
        url = gone.url("/image.png")
    with pytest.raises(ImageInputError, match=INVALID_URL):
        decode_image_input(url, ALLOW_LOCAL)


def test_a_redirect_to_a_local_address_is_refused(server):
    # "localhost" is made to look global, so the first request is allowed; the redirect names 127.0.0.1, which is
    # local: refused (the WebUI would follow it unchecked). Real DNS still sends "localhost" to this machine.
    def resolve(host):
        return ["93.184.216.34"] if host == "localhost" else ["127.0.0.1"]

    with pytest.raises(ImageInputError, match=LOCAL_NOT_ALLOWED):
        decode_image_input(server.url("/redirect", host="localhost"), resolve=resolve)
    assert decode_image_input(server.url("/redirect"), ALLOW_LOCAL).size == (32, 32)  # allowed: followed


def test_global_means_every_address_is_global():
    table = {"public.test": ["93.184.216.34"], "mixed.test": ["93.184.216.34", "10.0.0.2"], "v6.test": ["::1"]}

    def resolve(host):
        if host not in table:
            raise OSError("unknown host")
        return table[host]

    assert is_global_url("https://public.test:8443/a.png", resolve)  # a port does not hide the host
    assert not is_global_url("http://mixed.test/a.png", resolve)
    assert not is_global_url("http://v6.test/a.png", resolve)
    assert not is_global_url("http://nowhere.test/a.png", resolve)  # unresolvable: not global
    assert not is_global_url("http://127.0.0.1:9/a.png")
    assert not is_global_url("http:///a.png", resolve)


def test_exif_orientation_is_applied():
    import io

    image = Image.new("RGB", (20, 10), "white")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    assert decode_image_input(base64.b64encode(buffer.getvalue()).decode()).size == (10, 20)
