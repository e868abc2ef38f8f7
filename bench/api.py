"""The API measurements: POST /api/images/ at a steady rate and at its peak, beside trivial authenticated GETs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import wrk
from bench.cpu import cpu_meter, wait_until_quiet
from bench.latency import RunResult
from bench.loadgen import build_request, closed_loop, open_loop, run
from bench.spread import SpreadSampler
from bench.stack import BenchEnvironment, WebServer, redis_flush
from bench.stalls import StallMonitor


@dataclass(frozen=True)
class LoadShape:
    """How hard and how long to push: the open-loop rate, the closed-loop clients, the measured and warm-up seconds."""

    rate: float
    clients: int
    duration: float
    warmup: float
    quiet_timeout: float = 0.0


def image_body(*, project_id: str = "") -> bytes:
    """The JSON of a one-image request, as a frontend would send it."""
    payload: dict[str, Any] = {"prompt": "a lighthouse at dawn, benchmark", "quantity": 1}
    if project_id:
        payload["project_id"] = project_id
    return json.dumps(payload).encode()


def image_requests(port: int, tokens: list[str], *, project_id: str = "") -> list[bytes]:
    """One POST /api/images/ per user."""
    body = image_body(project_id=project_id)
    return [
        build_request("POST", "/api/images/", port=port, headers=_headers(token, json_body=True), body=body)
        for token in tokens
    ]


def _headers(token: str, *, json_body: bool = False) -> dict[str, str]:
    headers = {"Authorization": f"Token {token}"}
    if json_body:
        headers["Content-Type"] = "application/json"
    return headers


def _job_detail_requests(port: int, tokens: list[str]) -> list[bytes]:
    from rest_framework.authtoken.models import Token

    from generation.models import Job

    requests = []
    for token in tokens:
        user_id = Token.objects.get(key=token).user_id
        job_id = Job.objects.filter(user_id=user_id).values_list("id", flat=True).first()
        requests.append(build_request("GET", f"/api/jobs/{job_id}/", port=port, headers=_headers(token)))
    return requests


def _measured(bench: BenchEnvironment, server: WebServer, load: Any, shape: LoadShape) -> dict[str, Any]:
    """Run one load with the CPU meter on, then drop the messages it queued so that Redis starts the next one empty."""
    busy_before = wait_until_quiet(timeout=shape.quiet_timeout)
    meter = cpu_meter(trees={"web": server.process.pid, **bench.service_pids}, single={"loadgen": os.getpid()})
    # uvicorn's processes share one listening socket and a keep-alive connection stays with the process that
    # accepted it, so how the connections fall can change the peak from one run to the next: it is recorded.
    sampler = SpreadSampler(server.process.pid, server.port, after=shape.warmup + shape.duration / 2).start()
    # Moments when the whole machine stood still (its host ran something else): every request in flight waits.
    with StallMonitor() as monitor, meter.measure():
        started = time.monotonic()
        result: RunResult = run(load)
        ended = time.monotonic()
    redis_flush(bench.redis_url, bench.redis_prefix)
    # The open loop's stalls are counted from the start of its measured window, as its timeline is.
    window = result.extra.get("window_start", {}).get("monotonic")
    since, until = (window, window + shape.duration) if window is not None else (started, ended)
    return {
        **result.summary(),
        "cpu_cores": meter.cores(),
        "cpu_ms_per_request": meter.per_item(result.answered_total),
        "busy_cores_before": busy_before,
        "load_average": [round(value, 2) for value in meter.load],
        "cpu_pressure_percent": round(100 * meter.pressure, 1) if meter.pressure is not None else None,
        "connections_per_web_process": sampler.stop(),
        "machine_stalls": monitor.summary(since=since, until=until),
    }


def api_scenarios(bench: BenchEnvironment, server: WebServer, tokens: list[str], shape: LoadShape) -> dict[str, Any]:
    """Open loop POST at the offered rate; closed loop POST, GET /api/credits/ and GET /api/jobs/{id}/ at peak."""
    port, duration, warmup = server.port, shape.duration, shape.warmup
    posts = image_requests(port, tokens)
    credits = [build_request("GET", "/api/credits/", port=port, headers=_headers(token)) for token in tokens]

    def peak(name: str, requests: Callable[[], list[bytes]]) -> Callable[[], Any]:
        return lambda: closed_loop(name, port, requests(), clients=shape.clients, duration=duration, warmup=warmup)

    loads: dict[str, Callable[[], Any]] = {
        "post_open_loop": lambda: open_loop(
            "POST /api/images/", port, posts, rate=shape.rate, duration=duration, warmup=warmup
        ),
        "post_closed_loop": peak("POST /api/images/", lambda: posts),
        "get_credits_closed_loop": peak("GET /api/credits/", lambda: credits),
        # Built when its turn comes: it reads one job of each user, which the POST runs have created by then.
        "get_job_closed_loop": peak("GET /api/jobs/{id}/", lambda: _job_detail_requests(port, tokens)),
    }
    return {name: _measured(bench, server, load, shape) for name, load in loads.items()}


def wrk_scenarios(bench: BenchEnvironment, server: WebServer, tokens: list[str], shape: LoadShape) -> dict[str, Any]:
    """The closed-loop POST and GET /api/credits/ again, measured by wrk instead of the Python load generator."""
    common: dict[str, Any] = {"port": server.port, "tokens": tokens, "clients": shape.clients}
    common["duration"] = shape.duration
    runs = {}
    for name, path, body in (("post", "/api/images/", image_body().decode()), ("get_credits", "/api/credits/", None)):
        wait_until_quiet(timeout=shape.quiet_timeout)
        runs[name] = wrk.wrk_run(path, body=body, **common)
        redis_flush(bench.redis_url, bench.redis_prefix)
    return runs
