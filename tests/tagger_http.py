"""A throw-away HTTP server on 127.0.0.1 for the tagger's URL tests: serves a PNG, a page that is no image, and a
redirect to the PNG. Never anything but the loopback address."""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


def png_bytes(colour="white", side: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buffer, "PNG")
    return buffer.getvalue()


class ImageServer:
    """``url(path)``: ``/image.png`` (the PNG), ``/page`` (HTML), ``/redirect`` (302 to the PNG at 127.0.0.1).
    ``user_agents`` records the User-Agent header of every request."""

    def __init__(self, image: bytes):
        self.image = image
        self.user_agents: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server name
                server.user_agents.append(self.headers.get("User-Agent", ""))
                if self.path == "/image.png":
                    self._answer(200, "image/png", server.image)
                elif self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{server.port}/image.png")
                    self.end_headers()
                else:
                    self._answer(200, "text/html", b"<html>no image here</html>")

            def _answer(self, status, kind, body):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep the test output clean
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def __enter__(self) -> ImageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
