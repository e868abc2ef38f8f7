"""A fake Gemini API serving Veo over real HTTP: long-running operations, redirected downloads, scripted failures.

In a test: ``with FakeVeoServer() as veo: veo.script("cat", ["429", "ok"])`` and point a client at ``veo.url``.
It records every generation it starts and how many ran at once, which is how tests check the video queue's
concurrency limit. As a process: ``python -m testing.fakes.veo --port 8766 --seconds 5 '{"cat": ["429", "ok"]}'``
prints its URL once it listens.

Concurrency is counted by the provider's own clock: a generation runs from its creation until its end, whether
anyone polls it or not, and whether or not its creator ever heard of it. A cancel ends a running generation
``cancel_delay`` seconds later (its operation then ends with ``CANCELLED``), not at once, unless ``honours_cancel``
is False: then it is recorded and the generation runs to its end.

Behaviours: ``ok``; ``429``, ``500`` and ``400`` answer the start with that error, creating nothing;
``500_after_create`` creates an ``ok`` generation and then answers 500 ``INTERNAL``; ``reset_after_create`` creates
one and then resets the connection without an answer; ``op_error`` and ``filtered`` start a generation that ends
failed or with its video filtered out; ``hang`` starts one that never ends until ``finish()`` or ``finish_all()``;
``slow_start:<seconds>`` answers the start that much later and starts an ``ok`` generation even when the client has
given up by then, as Google would; ``slow_download:<seconds>`` starts an ``ok`` generation whose video bytes are
sent that much after they are asked for.
"""

from __future__ import annotations

import functools
import math
import re
import socket
import struct
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from generation.providers.local_video import VIDEO_SIZES, render_webm
from testing.fakes.server import FakeServer, JsonHandler, argument_parser, delay, serve_in_foreground

START_PATH = re.compile(r"/v1beta/models/(?P<model>[^/:]+):predictLongRunning")
OPERATION_PATH = re.compile(r"/v1beta/(?P<name>models/[^/:]+/operations/(?P<id>[0-9a-f]+))")
CANCEL_PATH = re.compile(r"/v1beta/models/[^/:]+/operations/(?P<id>[0-9a-f]+):cancel")
FILE_PATH = re.compile(r"/v1beta/files/(?P<id>[0-9a-f]+):download")
MEDIA_PATH = re.compile(r"/v1beta/media/(?P<id>[0-9a-f]+)\.webm")
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
FILTERED_REASON = (
    "Unable to generate videos because the prompt contains words that violate Google's Responsible AI practices."
)
_START_ERRORS: dict[str, tuple[int, str, str, list[dict[str, str]]]] = {
    "429": (
        429,
        "RESOURCE_EXHAUSTED",
        "Resource has been exhausted (e.g. check quota).",
        [{"@type": RETRY_INFO, "retryDelay": "1s"}],
    ),
    "500": (
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in the troubleshooting guide.",
        [],
    ),
    "400": (400, "INVALID_ARGUMENT", "Invalid value at 'instances[0].parameters.durationSeconds'.", []),
}
_OUTCOMES = {"ok", "op_error", "filtered", "hang"}
# A hung generation that finish_all() ended delivers its video like an ok one.
_DELIVERING = {"ok", "hang"}
# Behaviours that create an ok generation and then answer the start call with a failure.
_AFTER_CREATE = {"500_after_create", "reset_after_create"}
_SLOW_START = "slow_start:"
_SLOW_DOWNLOAD = "slow_download:"
# google.longrunning's answer for an operation that a cancel ended.
_CANCELLED = {"code": 1, "message": "Operation was cancelled.", "status": "CANCELLED"}


@dataclass(frozen=True)
class VeoStart:
    """One generation the fake started: its prompt, ``time.time()`` when it started, its name and the request."""

    prompt: str
    started_at: float
    operation_name: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class _Operation:
    start: VeoStart
    outcome: str
    # When the generation ends; infinite while a "hang" generation waits for finish() or finish_all().
    done_at: float
    # How long the video's bytes take to come once asked for.
    download_delay: float = 0.0
    # When the first cancel arrived, a time.time(); None while nobody asked.
    canceled_at: float | None = None


class _Handler(JsonHandler["FakeVeoServer"]):
    def do_POST(self) -> None:
        body = self.read_json()
        if not self._authorised():
            return
        if cancel := CANCEL_PATH.fullmatch(self.path):
            # google.longrunning's cancel: the generation stops and the operation ends with CANCELLED.
            self.fake._cancel(cancel["id"])
            self.send_json(200, {})
            return
        match = START_PATH.fullmatch(self.path)
        if match is None:
            self._send_error(404, "NOT_FOUND", f"No route for POST {self.path}.")
            return
        prompt = _prompt(body)
        if body is None or prompt is None:
            self._send_error(400, "INVALID_ARGUMENT", "instances[0].prompt is required.")
            return
        self._start(self.fake._next_behaviour(prompt), match["model"], prompt, body)

    def do_GET(self) -> None:
        if not self._authorised():
            return
        path = urlsplit(self.path).path
        if match := OPERATION_PATH.fullmatch(path):
            self._answer_operation(match["name"], match["id"])
        elif match := FILE_PATH.fullmatch(path):
            if self._video_ready(match["id"]):
                # Gemini answers a file download with a redirect to where the bytes are.
                self.send_body(302, b"", headers={"Location": f"/v1beta/media/{match['id']}.webm"})
        elif match := MEDIA_PATH.fullmatch(path):
            if self._video_ready(match["id"]):
                time.sleep(self.fake._download_attempt(match["id"]))
                self.fake._record_download(match["id"])
                self.send_body(200, _video(), "video/webm")
        else:
            self._send_error(404, "NOT_FOUND", f"No route for GET {path}.")

    def _authorised(self) -> bool:
        if self.headers.get("x-goog-api-key") == self.fake.api_key:
            return True
        self._send_error(403, "PERMISSION_DENIED", "Permission denied: the API key is missing or not valid.")
        return False

    def _start(self, behaviour: str, model: str, prompt: str, body: dict[str, Any]) -> None:
        self.fake._count_start_attempt()
        seconds = delay(behaviour, _SLOW_START)
        if seconds is not None:
            time.sleep(seconds)
            behaviour = "ok"
        if behaviour in _START_ERRORS:
            status, google_status, message, details = _START_ERRORS[behaviour]
            self._send_error(status, google_status, message, details)
            return
        start = self.fake._start_operation(model, prompt, behaviour, dict(self.headers.items()), body)
        if behaviour == "500_after_create":
            self._send_error(*_START_ERRORS["500"])
        elif behaviour == "reset_after_create":
            self._reset()
        else:
            self.send_json(200, {"name": start.operation_name})

    def _reset(self) -> None:
        """Close the connection with a TCP reset, as a load balancer that drops a request would."""
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN. The socket really closes once the
        # request's reader lets go of it, at the end of this request, before the server's own shutdown.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _answer_operation(self, name: str, operation_id: str) -> None:
        operation = self.fake._poll(name, operation_id)
        if operation is None:
            self._send_error(404, "NOT_FOUND", f"Operation {name} not found.")
        elif time.time() < operation.done_at:
            self.send_json(200, {"name": name, "done": False})
        elif operation.outcome == "op_error":
            error = {"code": 13, "message": "Internal error while generating", "status": "INTERNAL"}
            self.send_json(200, {"name": name, "done": True, "error": error})
        elif operation.outcome == "canceled":
            self.send_json(200, {"name": name, "done": True, "error": _CANCELLED})
        else:
            self.send_json(200, {"name": name, "done": True, "response": self._video_response(operation)})

    def _video_response(self, operation: _Operation) -> dict[str, Any]:
        if operation.outcome == "filtered":
            generated: dict[str, Any] = {"raiMediaFilteredCount": 1, "raiMediaFilteredReasons": [FILTERED_REASON]}
        else:
            # Built from the Host header, so that the URI works however a client reached the server.
            base = f"http://{self.headers['Host']}/v1beta"
            operation_id = operation.start.operation_name.rsplit("/", 1)[1]
            uri = f"{base}/files/{operation_id}:download?alt=media"
            generated = {"generatedSamples": [{"video": {"uri": uri}}]}
        return {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
            "generateVideoResponse": generated,
        }

    def _video_ready(self, operation_id: str) -> bool:
        if self.fake._has_video(operation_id):
            return True
        self._send_error(404, "NOT_FOUND", f"File {operation_id} not found.")
        return False

    def _send_error(
        self, status: int, google_status: str, message: str, details: Sequence[dict[str, str]] = ()
    ) -> None:
        error: dict[str, Any] = {"code": status, "message": message, "status": google_status}
        if details:
            error["details"] = list(details)
        self.send_json(status, {"error": error})


class FakeVeoServer(FakeServer):
    """A thread-safe fake Gemini API on 127.0.0.1 whose Veo generations take ``generation_seconds`` each."""

    handler_class = _Handler
    base_path = "/v1beta"
    thread_name = "fake-veo"

    def __init__(self, *, api_key: str = "test-key", port: int = 0, generation_seconds: float = 1.0) -> None:
        super().__init__(api_key=api_key, port=port)
        # Read at each start, so a test may change it between generations.
        self.generation_seconds = generation_seconds
        # Google documents a cancel as best effort: with False, cancels are recorded and the generation runs on.
        self.honours_cancel = True
        # A cancel Google honours ends the generation a moment later, not at once.
        self.cancel_delay = 0.3
        self._operations: dict[str, _Operation] = {}
        self._polls: Counter[str] = Counter()
        self._downloads: list[str] = []
        self._cancels: list[str] = []
        self._max_concurrency = 0
        self._start_attempts = 0
        self._download_requests: list[str] = []
        # Render the video now: encoding it on the first download would add a second of warm-up to timings.
        _video()

    @property
    def starts(self) -> list[VeoStart]:
        """The generations started so far, in order, those whose start call was answered with a failure included."""
        with self._lock:
            return self._started()

    @property
    def start_attempts(self) -> int:
        """How many start requests arrived with a valid key and prompt, refused ones included."""
        with self._lock:
            return self._start_attempts

    @property
    def max_concurrency(self) -> int:
        """The most generations that were running at once, counted at every start.

        A generation's end only ever moves earlier (a cancel, ``finish_all()``), never past a start that counted it,
        so the count taken at each start is the peak of the whole timeline: the most overlapping generations always
        include one that has just started.
        """
        with self._lock:
            return self._max_concurrency

    @property
    def download_requests(self) -> list[str]:
        """The operation names whose video's bytes were asked for, in order, by clients that went away included."""
        with self._lock:
            return list(self._download_requests)

    @property
    def downloads(self) -> list[str]:
        """The operation names whose video was downloaded, in order."""
        with self._lock:
            return list(self._downloads)

    @property
    def cancels(self) -> list[str]:
        """The operation names a client canceled, in order."""
        with self._lock:
            return list(self._cancels)

    def polls(self, operation_name: str) -> int:
        """How many times the operation was polled."""
        with self._lock:
            return self._polls[operation_name]

    def running_at(self, moment: float) -> int:
        """How many generations were running at ``moment``, a ``time.time()``."""
        with self._lock:
            return self._running(moment)

    def ended_at(self, operation_name: str) -> float:
        """When the generation ended, or will end, a ``time.time()``; infinite while it hangs."""
        with self._lock:
            return self._operations[operation_name.rsplit("/", 1)[1]].done_at

    def canceled_at(self, operation_name: str) -> float | None:
        """When the first cancel of the generation arrived, a ``time.time()``; None when nobody canceled it."""
        with self._lock:
            return self._operations[operation_name.rsplit("/", 1)[1]].canceled_at

    def assert_never_over(self, limit: int) -> None:
        """Fail unless at most ``limit`` generations ran at once over the whole timeline, by the fake's clock."""
        with self._lock:
            peaks = {start.operation_name: self._running(start.started_at) for start in self._started()}
        over = {name: running for name, running in peaks.items() if running > limit}
        assert not over, f"more than {limit} generations ran at once, at the starts of {over}"

    def finish(self, operation_name: str) -> None:
        """End one running generation now, a ``hang`` one included, which then delivers its video."""
        with self._lock:
            operation = self._operations[operation_name.rsplit("/", 1)[1]]
            operation.done_at = min(operation.done_at, time.time())

    def finish_all(self) -> None:
        """End every running generation now, ``hang`` ones included, which then deliver their video."""
        with self._lock:
            now = time.time()
            for operation in self._operations.values():
                operation.done_at = min(operation.done_at, now)

    def stop(self) -> None:
        """Stop listening and end every generation still running."""
        super().stop()
        self.finish_all()

    def _check_behaviour(self, behaviour: str) -> None:
        known = behaviour in _OUTCOMES or behaviour in _START_ERRORS or behaviour in _AFTER_CREATE
        if not known and delay(behaviour, _SLOW_START) is None and delay(behaviour, _SLOW_DOWNLOAD) is None:
            raise ValueError(f"Unknown fake Veo behaviour {behaviour!r}.")

    def _forget(self) -> None:
        self._operations.clear()
        self._polls.clear()
        self._downloads.clear()
        self._cancels.clear()
        self._max_concurrency = 0
        self._start_attempts = 0
        self._download_requests.clear()

    def _running(self, moment: float) -> int:
        return sum(
            1 for operation in self._operations.values() if operation.start.started_at <= moment < operation.done_at
        )

    def _count_start_attempt(self) -> None:
        with self._lock:
            self._start_attempts += 1

    def _started(self) -> list[VeoStart]:
        return [operation.start for operation in self._operations.values()]

    def _start_operation(
        self, model: str, prompt: str, behaviour: str, headers: dict[str, str], body: dict[str, Any]
    ) -> VeoStart:
        operation_id = uuid.uuid4().hex
        download_delay = delay(behaviour, _SLOW_DOWNLOAD)
        # The start failures that come after the creation leave an ok generation running, as does a slow download.
        outcome = "ok" if behaviour in _AFTER_CREATE or download_delay is not None else behaviour
        with self._lock:
            now = time.time()
            start = VeoStart(prompt, now, f"models/{model}/operations/{operation_id}", headers, body)
            done_at = math.inf if outcome == "hang" else now + self.generation_seconds
            self._operations[operation_id] = _Operation(start, outcome, done_at, download_delay or 0.0)
            self._max_concurrency = max(self._max_concurrency, self._running(now))
        return start

    def _cancel(self, operation_id: str) -> None:
        with self._lock:
            operation = self._operations.get(operation_id)
            if operation is None:
                return
            now = time.time()
            self._cancels.append(operation.start.operation_name)
            if operation.canceled_at is None:
                operation.canceled_at = now
            # A generation that has already ended keeps its outcome; a running one ends a moment later, CANCELLED.
            if self.honours_cancel and now < operation.done_at:
                operation.outcome = "canceled"
                operation.done_at = min(operation.done_at, now + self.cancel_delay)

    def _download_attempt(self, operation_id: str) -> float:
        """Record a request for the video's bytes; how long to wait before sending them."""
        with self._lock:
            operation = self._operations[operation_id]
            self._download_requests.append(operation.start.operation_name)
            return operation.download_delay

    def _poll(self, name: str, operation_id: str) -> _Operation | None:
        with self._lock:
            operation = self._operations.get(operation_id)
            if operation is None or operation.start.operation_name != name:
                return None
            self._polls[name] += 1
            return operation

    def _has_video(self, operation_id: str) -> bool:
        with self._lock:
            operation = self._operations.get(operation_id)
            return operation is not None and operation.outcome in _DELIVERING and time.time() >= operation.done_at

    def _record_download(self, operation_id: str) -> None:
        with self._lock:
            self._downloads.append(self._operations[operation_id].start.operation_name)


def _prompt(body: dict[str, Any] | None) -> str | None:
    instances = body.get("instances") if body is not None else None
    first = instances[0] if isinstance(instances, list) and instances else None
    prompt = first.get("prompt") if isinstance(first, dict) else None
    return prompt if isinstance(prompt, str) else None


@functools.cache
def _video() -> bytes:
    return render_webm("fake veo", VIDEO_SIZES["16:9"])


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fake Gemini API in the foreground until interrupted."""
    parser = argument_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="how long each generation runs")
    args = parser.parse_args(argv)
    serve_in_foreground(
        FakeVeoServer(api_key=args.api_key, port=args.port, generation_seconds=args.seconds), args.script
    )


if __name__ == "__main__":
    main()
