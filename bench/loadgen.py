"""A small HTTP/1.1 keep-alive load generator on asyncio: open loop at a fixed rate, or closed loop with N clients."""

from __future__ import annotations

import asyncio
import gc
import itertools
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from bench.latency import RunResult

# Requests still unanswered this long after the run ends count as errors, so every run stops by itself.
GRACE_SECONDS = 10.0
# An open-loop run opens more connections while all are busy, up to this many.
MAX_OPEN_LOOP_CONNECTIONS = 512
# Closed-loop clients open their connections this far apart.
CONNECT_STAGGER_SECONDS = 0.02
# Connections opened before an open-loop schedule starts, so that the first sends do not pay for a connect.
PREOPENED_CONNECTIONS = 8
LOCALHOST = "127.0.0.1"
_BODY_SAMPLE = 300


def free_port() -> int:
    """A TCP port on this machine that nothing listens on."""
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10) -> None:
    """Wait until something accepts connections on the port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((LOCALHOST, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def build_request(
    method: str, path: str, *, port: int, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    """The bytes of one HTTP/1.1 request to this machine, body included."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {LOCALHOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in {"POST", "PUT", "PATCH"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive connection to a server on this machine."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        # The start of the last response's body, to show what an error said.
        self.body = b""

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(LOCALHOST, self.port)
        return self

    async def exchange(self, request: bytes) -> int:
        """Send one request and read the whole response; return its status code."""
        if self.reader is not None and self.reader.at_eof():
            # The server closed the idle connection (uvicorn does after 5 s): open a new one, as HTTP clients do.
            self.close()
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        status, close, self.body = await _read_response(self.reader)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length: int | None = None
    chunked = close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    body = b""
    if chunked:
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
    elif length is not None:
        body = await reader.readexactly(length)
    else:
        body = await reader.read()
        close = True
    return status, close, body[:_BODY_SAMPLE]


async def _finish(tasks: Sequence[asyncio.Task[None]], result: RunResult, *, end: float) -> None:
    """Wait for the tasks until GRACE_SECONDS after the run's end; count those still waiting as timeouts."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, end - time.perf_counter()) + GRACE_SECONDS)
    for task in pending:
        task.cancel()
        result.exceptions["timeout"] += 1


async def open_loop(
    name: str, port: int, requests: Sequence[bytes], *, rate: float, duration: float, warmup: float
) -> RunResult:
    """Send at fixed intervals whatever the answers do; latency counts from the scheduled send time."""
    result = RunResult(name=name, mode=f"open loop, {rate:g} requests/s", window=duration)
    idle = [await Connection(port).open() for _ in range(PREOPENED_CONNECTIONS)]
    opened = len(idle)
    cpu_before = time.process_time()
    start = time.perf_counter() + 0.1
    measured_from = start + warmup

    async def fire(index: int, scheduled: float) -> None:
        nonlocal opened
        if scheduled >= measured_from:
            result.send_lateness.append(time.perf_counter() - scheduled)
        if idle:
            connection = idle.pop()
        else:
            connection, opened = Connection(port), opened + 1
        try:
            status = await connection.exchange(requests[index % len(requests)])
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            connection.close()
            if scheduled >= measured_from:
                result.exceptions[type(error).__name__] += 1
            return
        result.answered_total += 1
        if scheduled >= measured_from:
            latency = time.perf_counter() - scheduled
            result.record(status, latency, connection.body)
            result.timeline.append((scheduled - measured_from, latency))
        idle.append(connection)

    # When the measured window (timeline_ms's zero) starts, on the wall clock (as in PostgreSQL's and Redis's logs)
    # and on the monotonic clock (as in `perf record -k CLOCK_MONOTONIC`), to line slow requests up with them.
    wall_from = time.time() + measured_from - time.perf_counter()
    result.extra["window_start"] = {"unix": round(wall_from, 6), "monotonic": round(measured_from, 6)}
    tasks = []
    for index in range(int(rate * (warmup + duration))):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if opened >= MAX_OPEN_LOOP_CONNECTIONS and not idle:
            result.exceptions["too_many_connections"] += 1
            continue
        tasks.append(asyncio.create_task(fire(index, scheduled)))
    await _finish(tasks, result, end=time.perf_counter())
    result.cpu_seconds = time.process_time() - cpu_before
    result.wall_seconds = time.perf_counter() - start
    result.extra["connections_opened"] = opened
    for connection in idle:
        connection.close()
    return result


async def closed_loop(
    name: str,
    port: int,
    requests: Sequence[bytes],
    *,
    clients: int,
    duration: float,
    warmup: float = 0.0,
    total: int | None = None,
) -> RunResult:
    """Each client sends its next request as soon as the last is answered, for a duration or a total count."""
    result = RunResult(name=name, mode=f"closed loop, {clients} clients", window=duration)
    tickets: Iterator[int] = iter(range(total)) if total is not None else itertools.count()
    cpu_before = time.process_time()
    start = time.perf_counter()
    measured_from, end = start + warmup, start + warmup + duration
    last_answer = start

    async def client(index: int, request: bytes) -> None:
        nonlocal last_answer
        # Clients arrive one after the other, as real ones do: connections opened all at once are mostly accepted
        # by whichever uvicorn process wakes first, which would leave the other one idle for the whole run.
        await asyncio.sleep(index * CONNECT_STAGGER_SECONDS)
        connection = Connection(port)
        try:
            while (sent := time.perf_counter()) < end and next(tickets, None) is not None:
                try:
                    status = await connection.exchange(request)
                except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                    connection.close()
                    result.exceptions[type(error).__name__] += 1
                    continue
                answered = time.perf_counter()
                result.answered_total += 1
                if measured_from <= sent and answered <= end:
                    result.record(status, answered - sent, connection.body)
                    last_answer = max(last_answer, answered)
        finally:
            connection.close()

    tasks = [asyncio.create_task(client(index, requests[index % len(requests)])) for index in range(clients)]
    await _finish(tasks, result, end=end)
    result.cpu_seconds = time.process_time() - cpu_before
    result.wall_seconds = time.perf_counter() - start
    if total is not None:
        # A counted run ends when the count is done: its window is the time it took.
        result.window = last_answer - measured_from
    return result


def run(coroutine_factory: Callable[[], Any]) -> Any:
    """Run a load coroutine on uvloop when it is installed (uvicorn[standard] brings it), else on asyncio.

    The objects alive before the run are frozen out of the garbage collector while it lasts: this process holds
    Django and the benchmark's set-up, about 120,000 objects, and a full collection of them took 20 to 50 ms,
    during which no request is sent and no answer read, which the open loop would count as the server's latency.
    """
    pauses: list[float] = []
    started: list[float] = []

    def time_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            pauses.append(time.perf_counter() - started.pop())

    gc.collect()
    gc.freeze()
    gc.callbacks.append(time_collection)
    try:
        result = _run_loop(coroutine_factory)
    finally:
        gc.callbacks.remove(time_collection)
        gc.unfreeze()
    if isinstance(result, RunResult):
        result.collector_pauses = pauses
    return result


def _run_loop(coroutine_factory: Callable[[], Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine_factory())
    return uvloop.run(coroutine_factory())
