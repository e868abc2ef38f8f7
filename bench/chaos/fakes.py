"""The fake providers of a chaos run: the tests' fakes, with a Veo slow enough in places for a kill to land there."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import cast
from urllib.parse import urlsplit

from testing.fakes.frames import FakeFrameServer
from testing.fakes.provider import FakeProviderServer
from testing.fakes.provider import _Handler as ImageHandler
from testing.fakes.veo import FILE_PATH, MEDIA_PATH, START_PATH, FakeVeoServer
from testing.fakes.veo import _Handler as VeoHandler

# A dripped frame (about 65 header bytes, one every DRIP_SECONDS) takes about 2 s, well within the fetch's 10 s.
DRIP_SECONDS = 0.03
# Each worker reaches the fakes under a path prefix of its own (/w07/v1beta/...); the fakes' handlers take it off
# and put it in this header, which the fakes record with every request, so that they tell which worker called.
WORKER_HEADER = "X-Chaos-Worker"
_WORKER_PREFIX = re.compile(r"/(?P<worker>w\d+)(?P<rest>/.*)")


def worker_url(url: str, worker: str) -> str:
    """The fake's base ``url`` as ``worker`` is to reach it."""
    parts = urlsplit(url)
    return parts._replace(path=f"/{worker}{parts.path}").geturl()


def _take_worker(handler: BaseHTTPRequestHandler) -> None:
    if match := _WORKER_PREFIX.fullmatch(handler.path):
        handler.path = match["rest"]
        handler.headers[WORKER_HEADER] = match["worker"]


class _ImageHandler(ImageHandler):
    def do_POST(self) -> None:
        _take_worker(self)
        super().do_POST()


class ChaosImages(FakeProviderServer):
    """The fake image provider, recording which worker made each request."""

    handler_class = _ImageHandler


class _Handler(VeoHandler):
    def do_POST(self) -> None:
        _take_worker(self)
        with self._in_flight("start" if START_PATH.fullmatch(self.path) else ""):
            super().do_POST()

    def do_GET(self) -> None:
        _take_worker(self)
        path = urlsplit(self.path).path
        with self._in_flight("download" if MEDIA_PATH.fullmatch(path) or FILE_PATH.fullmatch(path) else ""):
            if MEDIA_PATH.fullmatch(path):
                # The bytes come after a while, as from Google's storage: a worker is downloading for that long.
                time.sleep(self._veo.download_seconds)
            super().do_GET()

    @property
    def _veo(self) -> ChaosVeo:
        return cast(ChaosVeo, self.fake)

    @contextmanager
    def _in_flight(self, route: str) -> Iterator[None]:
        port = self.client_address[1]
        with self._veo.calls_lock:
            self._veo.calls[port] = route
        try:
            yield
        finally:
            with self._veo.calls_lock:
                self._veo.calls.pop(port, None)


class ChaosVeo(FakeVeoServer):
    """The fake Veo whose video bytes take ``download_seconds`` to come, whose cancels are best effort only, and that
    tells which calls are in flight.

    Google documents a cancel as best effort: here a canceled generation runs on to its end, so that a canceled video
    stays in ``stopping`` for seconds and keeps its slot meanwhile.
    """

    handler_class = _Handler

    def __init__(self, *, api_key: str, generation_seconds: float, download_seconds: float) -> None:
        super().__init__(api_key=api_key, generation_seconds=generation_seconds)
        self.download_seconds = download_seconds
        self.honours_cancel = False
        # The client port of every call being answered, and its route ("start", "download" or "" for the others).
        self.calls: dict[int, str] = {}
        self.calls_lock = threading.Lock()

    def client_ports(self, route: str) -> set[int]:
        """The client ports of the calls to ``route`` being answered now."""
        with self.calls_lock:
            return {port for port, called in self.calls.items() if called == route}


@dataclass(frozen=True)
class CallSite:
    """Where a worker's call goes while it owns a stage: a fake's port and, at Veo, the route (start or download)."""

    port: int
    veo: ChaosVeo | None = None
    route: str = ""

    def client_ports(self) -> set[int] | None:
        """The client ports of the calls in flight to that route, or None for any call to the port."""
        return self.veo.client_ports(self.route) if self.veo is not None else None


def call_sites(veo: ChaosVeo, frames: FakeFrameServer) -> dict[str, CallSite]:
    """The call each stage that a worker owns makes: the frame fetch, the start call, the download."""
    veo_port = urlsplit(veo.url).port
    assert veo_port is not None
    return {
        "preparing": CallSite(frames.port),
        "starting": CallSite(veo_port, veo, "start"),
        "downloading": CallSite(veo_port, veo, "download"),
    }


def frame_server() -> FakeFrameServer:
    """The frame server the framed videos' start frames come from."""
    return FakeFrameServer(drip_seconds=DRIP_SECONDS)
