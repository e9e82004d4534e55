"""An image sent to the tagger's HTTP API as text: base64, a ``data:image/...`` URL, or an ``http(s)://`` URL.

Inside the WebUI the API hands this to the WebUI's own decoder (``modules.api.api.decode_base64_to_image``), as
the WD14 tagger extension does. This module is the same set of rules for hosts without it (the standalone app,
tests): the WebUI v1.10 options ``api_enable_requests`` (URLs allowed at all; default yes),
``api_forbid_local_requests`` (every address the host name resolves to must be global; default yes) and
``api_useragent`` (default: none of our own), the 30 s timeout, and its status and messages (all 500:
"Requests not allowed", "Request to local resource not allowed", "Invalid image url", "Invalid encoded image").

Two deliberate differences, both only ever refuse more: the host name is checked without its port (the WebUI
resolves ``host:port`` as a name, which fails, so it refuses every URL with a port), and each redirect's target is
checked again (the WebUI follows redirects unchecked, so a global URL could redirect to a local one).
"""

from __future__ import annotations

import base64
import io
import ipaddress
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

from PIL import Image, ImageOps

REQUESTS_NOT_ALLOWED = "Requests not allowed"
LOCAL_NOT_ALLOWED = "Request to local resource not allowed"
INVALID_URL = "Invalid image url"
INVALID_IMAGE = "Invalid encoded image"


class ImageInputError(ValueError):
    """An image that cannot be used, with the HTTP status and message the WebUI's decoder gives."""

    def __init__(self, detail: str, status: int = 500):
        self.status, self.detail = status, detail
        super().__init__(detail)


@dataclass(frozen=True)
class UrlPolicy:
    """The WebUI's rules for image URLs, with its defaults."""

    enable_requests: bool = True
    forbid_local: bool = True
    user_agent: str = ""
    timeout_s: float = 30.0


# host name -> every IP address it resolves to (tests replace it)
Resolver = Callable[[str], list[str]]


def resolve_all(host: str) -> list[str]:
    """Every address ``host`` resolves to, IPv4 and IPv6."""
    return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})


def is_global_url(url: str, resolve: Resolver = resolve_all) -> bool:
    """True when every address of the URL's host is a global one; False when it cannot be resolved."""
    host = urlparse(url).hostname
    if not host:
        return False
    try:
        addresses = resolve(host)
        return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_global for a in addresses)
    except (OSError, ValueError):
        return False


def is_url(data: str) -> bool:
    return data.startswith(("http://", "https://"))


def decode_image_input(data: str, policy: UrlPolicy | None = None, *, resolve: Resolver = resolve_all) -> Image.Image:
    """``data`` -> an upright, fully loaded PIL image; ``ImageInputError`` with the WebUI's status and message."""
    policy = policy or UrlPolicy()
    if is_url(data):
        return _open(fetch_url(data, policy, resolve=resolve), INVALID_URL)
    if data.startswith("data:image/"):
        try:
            data = data.split(";")[1].split(",")[1]
        except IndexError:  # "data:image/png,..." without ";base64": the WebUI fails here too
            raise ImageInputError(INVALID_IMAGE) from None
    try:
        raw = base64.b64decode(data)
    except ValueError:  # binascii.Error: bad padding
        raise ImageInputError(INVALID_IMAGE) from None
    return _open(raw, INVALID_IMAGE)


def fetch_url(url: str, policy: UrlPolicy, *, resolve: Resolver = resolve_all) -> bytes:
    """The body at ``url`` under ``policy``; redirects are followed only to URLs the policy allows too."""
    if not policy.enable_requests:
        raise ImageInputError(REQUESTS_NOT_ALLOWED)
    if policy.forbid_local and not is_global_url(url, resolve):
        raise ImageInputError(LOCAL_NOT_ALLOWED)
    headers = {"User-Agent": policy.user_agent} if policy.user_agent else {}
    opener = urllib.request.build_opener(_CheckedRedirects(policy, resolve))
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=policy.timeout_s) as answer:
            return answer.read()
    except ImageInputError:
        raise
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts, a bad URL: nothing to decode
        raise ImageInputError(INVALID_URL) from exc


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, policy: UrlPolicy, resolve: Resolver):
        self.policy, self.resolve = policy, resolve

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not is_url(newurl):  # urllib would also follow ftp://
            raise ImageInputError(INVALID_URL)
        if self.policy.forbid_local and not is_global_url(newurl, self.resolve):
            raise ImageInputError(LOCAL_NOT_ALLOWED)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(raw: bytes, message: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except Exception as exc:  # any decoder failure is "not an image" to the client
        raise ImageInputError(message) from exc
    return upright(image)


def upright(image: Image.Image) -> Image.Image:
    """EXIF orientation applied and a palette/RGB transparency made an alpha channel, as the WebUI's reader does."""
    try:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGB", "P") and isinstance(image.info.get("transparency"), bytes):
            image = image.convert("RGBA")
    except Exception:  # a broken EXIF block: keep the pixels as they are (the WebUI does the same)
        pass
    return image
