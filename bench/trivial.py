"""A trivial keep-alive HTTP server answering every GET with a fixed response, to measure the load generator itself."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

from bench.loadgen import LOCALHOST, build_request, closed_loop, free_port, open_loop, run, wait_for_port

RESPONSE = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


class TrivialProtocol(asyncio.Protocol):
    """Answers each request head (GET, no body) as soon as its blank line arrives."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, though they behave as one.
        self.transport = cast(asyncio.Transport, transport)
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        requests = self.buffer.count(b"\r\n\r\n")
        if requests:
            self.buffer = self.buffer.rsplit(b"\r\n\r\n", 1)[1]
            self.transport.write(RESPONSE * requests)


async def serve(port: int, seconds: float) -> None:
    """Serve on this machine for a bounded time."""
    server = await asyncio.get_running_loop().create_server(TrivialProtocol, LOCALHOST, port)
    async with server:
        await asyncio.sleep(seconds)


def loadgen_capacity(*, clients: int, rate: float, duration: float) -> dict[str, Any]:
    """What the load generator does against this server in another process: closed-loop peak and open-loop latency."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.trivial", "--port", str(port), "--seconds", str(2 * duration + 30)],
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        wait_for_port(port)
        request = [build_request("GET", "/", port=port, headers={"Authorization": "Token calibration"})]
        peak = run(lambda: closed_loop("trivial GET", port, request, clients=clients, duration=duration, warmup=1))
        steady = run(lambda: open_loop("trivial GET", port, request, rate=rate, duration=duration, warmup=1))
    finally:
        server.terminate()
        server.wait()
    return {"closed_loop": peak.summary(), "open_loop": steady.summary()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    run(lambda: serve(args.port, args.seconds))


if __name__ == "__main__":
    main()
