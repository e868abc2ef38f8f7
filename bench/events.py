"""Benchmark of the event stream: commit-to-client latency, and many idle streams held by one server process.

Run with ``python -m project.embedded run -- python -m bench.events`` (``make bench-events``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from bench import report
from bench.loadgen import LOCALHOST, latency_summary, percentile
from bench.machine import code_revision, machine_description
from bench.stack import bench_environment, bench_users, web_server
from tests.sse import EventStreamClient

HEADER_END = b"\r\n\r\n"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=300, help="job changes whose events are timed")
    parser.add_argument("--idle", type=int, default=1000, help="idle streams held open at once")
    parser.add_argument("--output", type=Path, default=None)
    return parser.parse_args(argv)


def _stamp(moments: list[float]) -> None:
    moments.append(time.time())


def commit_to_event(base: str, token: str, changes: int) -> dict[str, Any]:
    """Create jobs one at a time through the service and time each job event from the commit to its arrival."""
    from django.contrib.auth.models import User
    from django.db import transaction

    from generation.services import image_job_create

    user = User.objects.get(auth_token__key=token)
    committed: dict[str, float] = {}
    stream = EventStreamClient(f"{base}/api/events/", headers={"Authorization": f"Token {token}"})
    latencies = []
    # The event id is Redis's clock in milliseconds when the event was appended: it splits the latency in two.
    to_redis, from_redis = [], []
    try:
        stream.next(event="ready")
        for index in range(changes):
            stamp: list[float] = []
            with transaction.atomic():
                # Registered before the job's own callbacks, so it runs first, right after the commit.
                transaction.on_commit(partial(_stamp, stamp))
                job = image_job_create(
                    user_id=user.pk, prompt=f"timed {index}", aspect_ratio="1:1", quantity=1, image_urls=[]
                )
            committed[str(job.id)] = stamp[0]
            event = stream.next(event="job", timeout=10)
            commit = committed[event.data["id"]]
            appended = int(event.id.split("-")[0]) / 1000
            latencies.append(event.received_at - commit)
            to_redis.append(appended - commit)
            from_redis.append(event.received_at - appended)
            time.sleep(0.01)
    finally:
        stream.close()
    ordered = sorted(latencies)
    return {
        "events": len(latencies),
        **latency_summary(latencies),
        "p95": round(1000 * percentile(ordered, 0.95), 2),
        "commit_to_redis_ms": latency_summary(to_redis),
        "redis_to_client_ms": latency_summary(from_redis),
    }


async def _open_idle(port: int, token: str, count: int) -> list[asyncio.StreamWriter]:
    """Open ``count`` streams and read each up to its ready event; the writers keep them open."""
    request = (
        f"GET /api/events/ HTTP/1.1\r\nHost: {LOCALHOST}\r\nAuthorization: Token {token}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()

    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(LOCALHOST, port)
        writer.write(request)
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"event: ready"), timeout=60)
        return reader, writer

    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    # In batches, as browsers arriving over a few seconds would, so that opening does not time out.
    for start in range(0, count, 100):
        opened += await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    return [writer for _, writer in opened]


def idle_streams(port: int, pid: int, token: str, count: int) -> dict[str, Any]:
    """Hold ``count`` idle streams against one server process and report its memory and threads before and after."""
    server = psutil.Process(pid)
    before = {"rss_mib": round(server.memory_info().rss / 2**20, 1), "threads": server.num_threads()}

    async def hold() -> dict[str, Any]:
        started = time.monotonic()
        writers = await _open_idle(port, token, count)
        opened_s = time.monotonic() - started
        await asyncio.sleep(5)
        during = {"rss_mib": round(server.memory_info().rss / 2**20, 1), "threads": server.num_threads()}
        for writer in writers:
            writer.close()
        return {"open_seconds": round(opened_s, 1), "during": during}

    held = asyncio.run(hold())
    during = held["during"]
    return {
        "streams": count,
        "before": before,
        **held,
        "rss_per_stream_kib": round(1024 * (during["rss_mib"] - before["rss_mib"]) / count, 1),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    path = args.output or report.RESULTS_DIR / f"events-{time.strftime('%Y%m%d-%H%M%S')}.json"
    results: dict[str, Any] = {"settings": {key: str(value) for key, value in vars(args).items()}}
    results["code"] = code_revision()
    try:
        with bench_environment(log_dir=path.with_name(f"{path.stem}-logs")) as bench:
            results["machine"] = machine_description(database_url=bench.database_url, redis_url=bench.redis_url)
            token = bench_users(1)[0]
            # One server process, so that the idle streams' cost is one process's.
            with web_server(bench, workers=1) as server:
                base = f"http://{LOCALHOST}:{server.port}"
                results["commit_to_event_ms"] = commit_to_event(base, token, args.changes)
                results["idle_streams"] = idle_streams(server.port, server.process.pid, token, args.idle)
    finally:
        report.write_json(results, path)
    latency = results.get("commit_to_event_ms", {})
    idle = results.get("idle_streams", {})
    print(
        f"commit -> event at the client: p50 {latency.get('p50')} ms, p95 {latency.get('p95')} ms, "
        f"p99 {latency.get('p99')} ms over {latency.get('events')} events\n"
        f"{idle.get('streams')} idle streams on one server process: RSS {idle.get('before', {}).get('rss_mib')} -> "
        f"{idle.get('during', {}).get('rss_mib')} MiB ({idle.get('rss_per_stream_kib')} KiB each), threads "
        f"{idle.get('before', {}).get('threads')} -> {idle.get('during', {}).get('threads')}\n"
        f"results: {path}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
