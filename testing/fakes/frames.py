"""A hostile image host on 127.0.0.1, for tests of the frame URLs users give and of clients' total deadlines.

In a test: ``with FakeFrameServer() as frames: fetch_frame(frames.url("drip_headers"))``. A behaviour is the first
segment of the path and whatever follows it is ignored, so a behaviour's URL also serves as a provider client's base
URL; GET and POST are answered alike. Behaviours:

- ``png``: a small, real PNG.
- ``html``: a page, as ``text/html``.
- ``drip_headers``: the status line and headers of a PNG one byte every ``drip_seconds``, then the PNG.
- ``long_label_redirect``: a redirect to a host name with a 64-character label, which no resolver accepts.
- ``endless_slow_body``: PNG headers without Content-Length, then a byte every ``drip_seconds``, never ending.
- ``endless_fast_body``: the same, as fast as the client reads.
- ``huge_declared``: ``huge_bytes`` of PNG with a Content-Length saying so.
- ``huge_undeclared``: the same without Content-Length, the end marked by closing the connection.

Any other path answers 404. ``stop()`` is prompt whatever the handlers are doing: every drip waits on an event it
sets, and it shuts down the connections still open before waiting for the handler threads.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self, cast

from PIL import Image

from generation.providers.frames import MAX_FRAME_BYTES

BEHAVIOURS = frozenset(
    {
        "png",
        "html",
        "drip_headers",
        "long_label_redirect",
        "endless_slow_body",
        "endless_fast_body",
        "huge_declared",
        "huge_undeclared",
    }
)
LONG_LABEL_HOST = f"{'a' * 64}.example"
_CHUNK = 64 * 1024
_BEHAVIOUR_IN_PATH = re.compile(r"/([a-z_]+)")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 60, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


class FakeFrameServer:
    """Serves each hostile behaviour at ``url(behaviour)`` and records the requests it was sent."""

    def __init__(self, *, drip_seconds: float = 0.2, huge_bytes: int = MAX_FRAME_BYTES + 1) -> None:
        self.drip_seconds = drip_seconds
        self.huge_bytes = huge_bytes
        # (method, path) of every request, in order; appended by the handler threads.
        self.requests: list[tuple[str, str]] = []
        self.stopping = threading.Event()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler, self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-frames", daemon=True
        )

    def url(self, behaviour: str) -> str:
        """The address at which the server acts out ``behaviour``."""
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"Unknown behaviour {behaviour!r}; known: {', '.join(sorted(BEHAVIOURS))}.")
        return f"http://127.0.0.1:{self.port}/{behaviour}"

    def start(self) -> Self:
        """Listen in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, end every handler, dripping or not, and wait for their threads."""
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # server_close() joins the handler threads, which the stop event and the shut connections end quickly.
    block_on_close = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], frames: FakeFrameServer
    ) -> None:
        super().__init__(address, handler)
        self.frames = frames
        # Guards the open connections, which handler threads add and remove while stop() shuts them.
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open connection, so that a handler blocked writing to a client that stalls returns."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up, or stop() shutting the connection, ends a handler mid-write: the point of the tests.
        pass


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        match = _BEHAVIOUR_IN_PATH.match(self.path)
        behaviour = match.group(1) if match else ""
        self.frames.requests.append((self.command, self.path))
        self._behaviours().get(behaviour, self._not_found)()

    def do_POST(self) -> None:
        # Read the request body first: closing with it unread would reset the connection under the answer.
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    @property
    def frames(self) -> FakeFrameServer:
        return cast(_HTTPServer, self.server).frames

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _behaviours(self) -> dict[str, Callable[[], None]]:
        return {
            "png": lambda: self._send_whole(PNG, "image/png"),
            "html": lambda: self._send_whole(b"<html><body>Not an image.</body></html>", "text/html; charset=utf-8"),
            "drip_headers": self._drip_headers,
            "long_label_redirect": self._long_label_redirect,
            "endless_slow_body": self._endless_slow_body,
            "endless_fast_body": self._endless_fast_body,
            "huge_declared": lambda: self._huge(declared=True),
            "huge_undeclared": lambda: self._huge(declared=False),
        }

    def _send_whole(self, content: bytes, content_type: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def _not_found(self) -> None:
        self._send_whole(b"not found", "text/plain", status=404)

    def _drip_headers(self) -> None:
        head = f"HTTP/1.0 200 OK\r\nContent-Type: image/png\r\nContent-Length: {len(PNG)}\r\n\r\n".encode()
        for index in range(len(head)):
            if self.frames.stopping.wait(self.frames.drip_seconds):
                return
            self.wfile.write(head[index : index + 1])
        self.wfile.write(PNG)

    def _long_label_redirect(self) -> None:
        self.send_response(302)
        self.send_header("Location", f"http://{LONG_LABEL_HOST}:{self.frames.port}/png")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _endless_slow_body(self) -> None:
        self._start_undeclared_png()
        self.wfile.write(PNG[:8])
        while not self.frames.stopping.wait(self.frames.drip_seconds):
            self.wfile.write(b"\x00")

    def _endless_fast_body(self) -> None:
        self._start_undeclared_png()
        while not self.frames.stopping.is_set():
            self.wfile.write(b"\x00" * _CHUNK)

    def _huge(self, *, declared: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        if declared:
            self.send_header("Content-Length", str(self.frames.huge_bytes))
        self.end_headers()
        written = 0
        while written < self.frames.huge_bytes and not self.frames.stopping.is_set():
            chunk = min(_CHUNK, self.frames.huge_bytes - written)
            self.wfile.write(b"\x00" * chunk)
            written += chunk

    def _start_undeclared_png(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
