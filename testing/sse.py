"""A small Server-Sent Events client for tests and benchmarks: reads a stream in a thread into a queue."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests


@dataclass(frozen=True)
class Event:
    """One event as received: its id, type, decoded data and arrival time (``time.time()``)."""

    id: str
    event: str
    data: Any
    received_at: float


class EventStreamClient:
    """Follows ``GET /api/events/`` until closed, collecting parsed events."""

    def __init__(self, url: str, *, headers: dict[str, str], params: dict[str, str] | None = None) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        # Events passed over by next(event=...) wait here for a later call that asks for their type.
        self._skipped: list[Event] = []
        self.response = requests.get(url, headers=headers, params=params, stream=True, timeout=(5, 60))
        self.response.raise_for_status()
        self._thread = threading.Thread(target=self._read, name="sse-client", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            # chunk_size=None hands over data as it arrives instead of waiting to fill a buffer.
            for raw in self.response.iter_lines(chunk_size=None, decode_unicode=True):
                if raw:
                    if not raw.startswith(":"):
                        name, _, value = raw.partition(":")
                        fields[name] = value.removeprefix(" ")
                    continue
                if "data" in fields:
                    self.events.put(
                        Event(
                            fields.get("id", ""),
                            fields.get("event", "message"),
                            json.loads(fields["data"]),
                            time.time(),
                        )
                    )
                fields = {}
        except (requests.RequestException, AttributeError, ValueError):
            # The stream was closed under the reader: that is how a test ends it.
            return

    def next(self, *, event: str | None = None, timeout: float = 10) -> Event:
        """The next event (of that type, when given), or AssertionError after the timeout."""
        for index, skipped in enumerate(self._skipped):
            if event is None or skipped.event == event:
                return self._skipped.pop(index)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                received = self.events.get(timeout=left)
            except queue.Empty:
                break
            if event is None or received.event == event:
                return received
            self._skipped.append(received)
        raise AssertionError(f"no {event or 'event'} within {timeout} s")

    def drain(self, *, wait: float) -> list[Event]:
        """Every event not yet taken, after waiting ``wait`` seconds for stragglers."""
        time.sleep(wait)
        drained, self._skipped = self._skipped, []
        while True:
            try:
                drained.append(self.events.get_nowait())
            except queue.Empty:
                return drained

    def close(self) -> None:
        """Hang up, as a browser tab being closed would."""
        # Shutting the socket down wakes the reader thread at once; closing alone waits for its read to end.
        connection = getattr(self.response.raw, "_connection", None)
        if connection is not None and connection.sock is not None:
            connection.sock.shutdown(socket.SHUT_RDWR)
        self.response.close()
        self._thread.join(timeout=5)
