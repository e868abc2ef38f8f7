"""Benchmark of the event stream on one server process: many idle streams, and commit-to-client latency under load.

Run with ``python -m project.embedded run -- python -m bench.events`` (``make bench-events``). Two phases against
one uvicorn process: first the latency with no idle streams, then the cost of ``--idle`` streams (memory,
threads, descriptors, Redis connections) and the latency again while they stay open.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from bench import report
from bench.latency import latency_summary, percentile
from bench.loadgen import LOCALHOST
from bench.machine import code_revision, machine_description
from bench.stack import BenchEnvironment, bench_environment, bench_users, web_server
from core.limits import open_files_raise
from testing.sse import EventStreamClient


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle", type=int, default=10_000, help="idle streams held open at once")
    parser.add_argument("--users", type=int, default=100, help="users creating jobs, each following its stream")
    parser.add_argument("--rate", type=float, default=50, help="jobs created per second, over all users")
    parser.add_argument("--duration", type=float, default=30, help="seconds of job creation per phase")
    parser.add_argument("--output", type=Path, default=None)
    return parser.parse_args(argv)


def idle_tokens(count: int) -> list[str]:
    """API tokens of ``count`` users who only watch, each holding one stream (created in bulk: fast)."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    users = get_user_model().objects.bulk_create(get_user_model()(username=f"viewer-{index}") for index in range(count))
    tokens = Token.objects.bulk_create(Token(user=user, key=Token.generate_key()) for user in users)
    return [token.key for token in tokens]


def _create(user_id: int, index: int) -> tuple[str, float]:
    """Create one job through the service; return its id and the moment the call began.

    The create service is a durable transaction of its own, so the commit cannot be stamped from outside: timing
    from the call's start gives an upper bound of commit -> event, which also counts the create's own queries."""
    from generation.images.services import image_job_create

    started = time.time()
    job = image_job_create(user_id=user_id, prompt=f"timed {index}", aspect_ratio="1:1", quantity=1, image_urls=[])
    return str(job.id), started


def commit_to_event(base: str, tokens: list[str], rate: float, duration: float) -> dict[str, Any]:
    """Users create jobs at ``rate`` per second in all, round robin; each job's event is timed from the create call
    to its arrival on its user's stream."""
    from django.contrib.auth.models import User

    users = [User.objects.get(auth_token__key=token).pk for token in tokens]
    streams = [EventStreamClient(f"{base}/api/events/", headers={"Authorization": f"Token {t}"}) for t in tokens]
    committed: dict[str, float] = {}
    try:
        for stream in streams:
            stream.next(event="ready")
        total = int(rate * duration)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = []
            for index in range(total):
                # Paced from the start, not from the last create: a slow create does not lower the offered rate.
                time.sleep(max(0.0, started + index / rate - time.monotonic()))
                futures.append(pool.submit(_create, users[index % len(users)], index))
            for future in futures:
                job_id, moment = future.result()
                committed[job_id] = moment
        received: dict[str, float] = {}
        for stream in streams:
            for event in stream.drain(wait=0):
                received.setdefault(event.data.get("id", ""), event.received_at)
        deadline = time.monotonic() + 10
        while set(committed) - set(received) and time.monotonic() < deadline:
            for stream in streams:
                for event in stream.drain(wait=0.05):
                    received.setdefault(event.data.get("id", ""), event.received_at)
    finally:
        for stream in streams:
            stream.close()
    latencies = [received[job] - moment for job, moment in committed.items() if job in received]
    return {
        "jobs": len(committed),
        "events": len(latencies),
        "missing": len(committed) - len(latencies),
        "offered_rate": rate,
        "achieved_rate": round(len(committed) / max(duration, 1e-9), 1),
        **latency_summary(latencies),
        "p95": round(1000 * percentile(sorted(latencies), 0.95), 2) if latencies else None,
    }


class IdleStreams:
    """Holds ``count`` streams open from a thread of its own (an asyncio loop on raw sockets) until closed."""

    def __init__(self, port: int, tokens: list[str]) -> None:
        self.port, self.tokens = port, tokens
        self.opened = threading.Event()
        self.open_seconds = 0.0
        self._loop = asyncio.new_event_loop()
        self._writers: list[asyncio.StreamWriter] = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(timeout=600)

    async def _one(self, token: str) -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection(LOCALHOST, self.port)
        writer.write(f"GET /api/events/ HTTP/1.1\r\nHost: {LOCALHOST}\r\nAuthorization: Token {token}\r\n\r\n".encode())
        await asyncio.wait_for(reader.readuntil(b"event: ready"), timeout=120)
        return writer

    async def _open(self) -> None:
        started = time.monotonic()
        # In batches, as browsers arriving over some seconds would, so that opening does not time out.
        for first in range(0, len(self.tokens), 200):
            self._writers += await asyncio.gather(*(self._one(token) for token in self.tokens[first : first + 200]))
        self.open_seconds = time.monotonic() - started

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def server_reading(bench: BenchEnvironment, pid: int) -> dict[str, Any]:
    """The server process's memory, threads and descriptors, and the Redis connections its event hub holds."""
    import redis

    server = psutil.Process(pid)
    clients = redis.Redis.from_url(bench.redis_url).client_list()
    hub_name = f"{bench.redis_prefix}:events:"
    return {
        "rss_mib": round(server.memory_info().rss / 2**20, 1),
        "threads": server.num_threads(),
        "descriptors": server.num_fds(),
        "hub_redis_connections": sum(client["name"].startswith(hub_name) for client in clients),
        "redis_connections_all": len(clients),
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


def run(bench: BenchEnvironment, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"open_files_limit": open_files_raise()}
    timed = bench_users(args.users)
    viewers = idle_tokens(args.idle)
    # One server process, so that the idle streams' cost is one process's.
    with web_server(bench, workers=1) as server:
        base = f"http://{LOCALHOST}:{server.port}"
        results["without_idle_streams"] = commit_to_event(base, timed, args.rate, args.duration)
        results["before"] = server_reading(bench, server.process.pid)
        idle = IdleStreams(server.port, viewers)
        try:
            time.sleep(5)
            results["during"] = server_reading(bench, server.process.pid)
            results["open_seconds"] = round(idle.open_seconds, 1)
            results["with_idle_streams"] = commit_to_event(base, timed, args.rate, args.duration)
            results["after_load"] = server_reading(bench, server.process.pid)
        finally:
            idle.close()
    growth = results["during"]["rss_mib"] - results["before"]["rss_mib"]
    results["rss_per_stream_kib"] = round(1024 * growth / max(args.idle, 1), 1)
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    path = args.output or report.RESULTS_DIR / f"events-{time.strftime('%Y%m%d-%H%M%S')}.json"
    results: dict[str, Any] = {"settings": {key: str(value) for key, value in vars(args).items()}}
    results["code"] = code_revision()
    try:
        with bench_environment(log_dir=path.with_name(f"{path.stem}-logs")) as bench:
            results["machine"] = machine_description(database_url=bench.database_url, redis_url=bench.redis_url)
            results.update(run(bench, args))
    finally:
        report.write_json(results, path)
    quiet, loaded = results.get("without_idle_streams", {}), results.get("with_idle_streams", {})
    during = results.get("during", {})
    print(
        f"create -> event at the client, {args.users} users, {args.rate:g} jobs/s: p50 {quiet.get('p50')} / p95 "
        f"{quiet.get('p95')} ms with no idle stream, p50 {loaded.get('p50')} / p95 {loaded.get('p95')} ms with "
        f"{args.idle} open (missing: {quiet.get('missing')} / {loaded.get('missing')})\n"
        f"{args.idle} idle streams: {results.get('rss_per_stream_kib')} KiB each, RSS {during.get('rss_mib')} MiB, "
        f"{during.get('threads')} threads, {during.get('descriptors')} descriptors, "
        f"{during.get('hub_redis_connections')} Redis connections for the hub\nresults: {path}"
    )


if __name__ == "__main__":
    main()
