"""What the fake provider servers share: a background HTTP server, answers scripted per prompt, JSON replies."""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast


class FakeServer(ABC):
    """A thread-safe fake HTTP server on 127.0.0.1 whose answers are scripted per prompt substring."""

    handler_class: type[BaseHTTPRequestHandler]
    base_path = ""
    thread_name = "fake-server"

    def __init__(self, *, api_key: str = "test-key", port: int = 0) -> None:
        self.api_key = api_key
        self._port = port
        # Guards every piece of state the handler threads and the test thread share.
        self._lock = threading.Lock()
        self._scripts: dict[str, list[str]] = {}
        self._served: dict[str, int] = {}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL to configure a client with, ending in ``base_path``."""
        if self._httpd is None:
            raise RuntimeError("The fake server is not started.")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{self.base_path}"

    def script(self, prompt_contains: str, behaviours: Sequence[str]) -> None:
        """Answer the requests whose prompt contains ``prompt_contains`` with ``behaviours`` in turn.

        The last behaviour repeats once the others are used up; the first script added that matches wins, and
        an empty substring matches every prompt.
        """
        if not behaviours:
            raise ValueError("A script needs at least one behaviour.")
        for behaviour in behaviours:
            self._check_behaviour(behaviour)
        with self._lock:
            self._scripts[prompt_contains] = list(behaviours)
            self._served[prompt_contains] = 0

    def reset(self) -> None:
        """Forget the scripts and everything recorded."""
        with self._lock:
            self._scripts.clear()
            self._served.clear()
            self._forget()

    def start(self) -> Self:
        """Listen in a background thread."""
        self._httpd = _HTTPServer(("127.0.0.1", self._port), self.handler_class, self)
        # A short poll interval keeps stop() quick; the default half second adds up over a test suite.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening; requests still sleeping in a scripted delay are abandoned."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @abstractmethod
    def _check_behaviour(self, behaviour: str) -> None:
        """Raise ``ValueError`` for a behaviour this server does not know."""

    @abstractmethod
    def _forget(self) -> None:
        """Clear what the subclass recorded; called with the lock held."""

    def _next_behaviour(self, prompt: str) -> str:
        with self._lock:
            for prompt_contains, behaviours in self._scripts.items():
                if prompt_contains in prompt:
                    served = self._served[prompt_contains]
                    self._served[prompt_contains] = served + 1
                    return behaviours[min(served, len(behaviours) - 1)]
        return "ok"


def delay(behaviour: str, prefix: str) -> float | None:
    """Return the seconds in a behaviour such as ``slow:1.5`` when it starts with ``prefix``, else ``None``."""
    if not behaviour.startswith(prefix):
        return None
    return float(behaviour.removeprefix(prefix))


class _HTTPServer(ThreadingHTTPServer):
    # A handler sleeping in a scripted delay must not hold up stop(); its client gave up long ago.
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: FakeServer) -> None:
        super().__init__(address, handler)
        self.fake = fake

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that timed out has hung up before a slow answer; that is the point of the test, not an error.
        pass


ServerT = TypeVar("ServerT", bound=FakeServer)


class JsonHandler(BaseHTTPRequestHandler, Generic[ServerT]):
    """A request handler that reads and writes JSON on behalf of its fake server."""

    @property
    def fake(self) -> ServerT:
        """The fake server this request arrived at."""
        return cast(ServerT, cast(_HTTPServer, self.server).fake)

    def read_json(self) -> dict[str, Any] | None:
        """Read the request body, returning it when it is a JSON object."""
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def send_json(self, status: int, payload: Mapping[str, Any]) -> None:
        """Answer ``payload`` as JSON with ``status``."""
        self.send_body(status, json.dumps(payload).encode())

    def send_body(
        self,
        status: int,
        content: bytes,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer ``content`` with ``status``, its type and length, and any extra ``headers``."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:
        # The recorded requests are the log; stderr noise would drown test output.
        pass


def closed_port_url(base_path: str) -> str:
    """Return a URL on 127.0.0.1 at a port nothing listens on, for testing refused connections."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{base_path}"


def argument_parser(description: str | None) -> argparse.ArgumentParser:
    """Return a command-line parser with the options every fake server takes."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("script", nargs="?", default="{}", help='JSON such as {"cat": ["500", "ok"]}')
    return parser


def serve_in_foreground(server: FakeServer, scripts: str) -> None:
    """Apply the JSON ``scripts``, print the server's URL once it listens, and serve until interrupted."""
    for prompt_contains, behaviours in json.loads(scripts).items():
        server.script(prompt_contains, behaviours)
    with server:
        print(server.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
