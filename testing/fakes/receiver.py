"""A webhook receiver on 127.0.0.1 that records every delivery and answers as scripted per URL path."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from testing.fakes.server import FakeServer, JsonHandler, delay

# ok: 200; 500 and 410: that status; redirect: 302 to /redirected; hang:SECONDS: no answer for that long.
_BEHAVIOURS = {"ok", "500", "410", "redirect"}


@dataclass(frozen=True)
class ReceivedWebhook:
    """One request the receiver got, exactly as it arrived."""

    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


class _WebhookHandler(JsonHandler["WebhookReceiver"]):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        behaviour = self.fake._next_behaviour(self.path)
        self.fake._record(
            ReceivedWebhook(
                self.path, {name.lower(): value for name, value in self.headers.items()}, body, time.monotonic()
            )
        )
        hang = delay(behaviour, "hang:")
        if hang is not None:
            self.fake.released.wait(hang)
            return
        if behaviour == "redirect":
            self.send_body(302, b"", headers={"Location": "/redirected"})
        elif behaviour in ("500", "410"):
            self.send_body(int(behaviour), b"")
        else:
            self.send_body(200, b"{}")


class WebhookReceiver(FakeServer):
    """Answers each request by the first script whose key the request's path contains ("ok" when none does)."""

    handler_class = _WebhookHandler
    thread_name = "fake-webhook-receiver"

    def __init__(self) -> None:
        super().__init__()
        self._received: list[ReceivedWebhook] = []
        # Set at stop, so that a hanging answer ends with the test.
        self.released = threading.Event()

    def url_for(self, path: str) -> str:
        """The full URL of ``path`` on this receiver."""
        return f"{self.url}{path}"

    def received(self, path: str | None = None) -> list[ReceivedWebhook]:
        """What arrived, in order, at ``path`` (or anywhere)."""
        with self._lock:
            return [hook for hook in self._received if path is None or hook.path == path]

    def stop(self) -> None:
        self.released.set()
        super().stop()

    def _record(self, hook: ReceivedWebhook) -> None:
        with self._lock:
            self._received.append(hook)

    def _check_behaviour(self, behaviour: str) -> None:
        if behaviour not in _BEHAVIOURS and delay(behaviour, "hang:") is None:
            raise ValueError(f"Unknown behaviour {behaviour!r}")

    def _forget(self) -> None:
        self._received.clear()
