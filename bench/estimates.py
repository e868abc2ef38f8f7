"""Benchmark how well the queue estimates when a waiting video starts: estimated against real start, on a steady queue.

Run from the repository root: ``python -m project.embedded run -- python -m bench.estimates [options]``.

A worker process and the web server run against a fake Veo whose generations take T seconds, with the deployed
poll schedule (nothing overridden) and two slots. A warm-up batch gives the queue its measured durations; then
N videos are queued at once and each one's ``estimated_start_at`` is read from its ``202`` answer. The error of a
video is |estimated start - real start| (``started_at``, when its start call went out); the target is a mean
absolute error of at most 20 % of the mean real wait (real start - submission).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from bench.loadgen import LOCALHOST
from bench.machine import code_revision, machine_description
from bench.pipeline import _wait_finished
from bench.stack import bench_environment, bench_users, web_server
from testing.fakes.veo import FakeVeoServer
from testing.live import start_worker, stop, wait_until_ready

API_KEY = "bench-veo-key"
ERROR_TARGET = 0.20
RESULTS = Path(__file__).resolve().parent / "results"


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=12, help="videos queued at once per run (default 12)")
    parser.add_argument("--warmup", type=int, default=4, help="videos run first to measure durations (default 4)")
    parser.add_argument("--seconds", type=float, default=15, help="seconds the fake takes per video (default 15)")
    parser.add_argument("--runs", type=int, default=2, help="measured runs (default 2)")
    parser.add_argument("--timeout", type=float, default=900, help="give up a batch after these seconds")
    return parser.parse_args(argv)


def _submit(port: int, token: str, tag: str, count: int) -> list[dict[str, Any]]:
    """POST the videos one after the other; return each answer with the moment it was sent."""
    answers = []
    with requests.Session() as session:
        for index in range(count):
            sent = time.time()
            response = session.post(
                f"http://{LOCALHOST}:{port}/api/videos/",
                json={"prompt": f"{tag} {index}", "duration": 4, "project_id": tag},
                headers={"Authorization": f"Token {token}"},
                timeout=10,
            )
            if response.status_code != 202:
                raise RuntimeError(f"submitting failed: {response.status_code} {response.text[:200]}")
            answers.append({**response.json(), "sent": sent})
    return answers


def _seconds(moment: str) -> float:
    return datetime.fromisoformat(moment).timestamp()


def measured_run(port: int, token: str, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """Queue the videos at once and compare each one's estimated start with its real one."""
    from generation.models import Job

    answers = _submit(port, token, tag, args.videos)
    _wait_finished(tag, args.videos, args.timeout)
    started = {str(job.id): job.started_at for job in Job.objects.filter(project_id=tag)}
    errors, waits, estimated = [], [], []
    for answer in answers:
        real = started[answer["id"]]
        assert real is not None, answer["id"]
        errors.append(abs(_seconds(answer["estimated_start_at"]) - real.timestamp()))
        waits.append(real.timestamp() - answer["sent"])
        estimated.append(_seconds(answer["estimated_start_at"]) - answer["sent"])
    ratio = statistics.mean(errors) / statistics.mean(waits)
    return {
        "mean_absolute_error_s": round(statistics.mean(errors), 2),
        "max_error_s": round(max(errors), 2),
        "mean_wait_s": round(statistics.mean(waits), 2),
        "error_to_wait": round(ratio, 3),
        "errors_s": [round(error, 2) for error in errors],
        "waits_s": [round(wait, 2) for wait in waits],
        "estimated_waits_s": [round(wait, 2) for wait in estimated],
        "positions": [answer["position"] for answer in answers],
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with (
        FakeVeoServer(api_key=API_KEY, generation_seconds=args.seconds) as veo,
        bench_environment(log_dir=RESULTS / f"estimates-{stamp}") as bench,
    ):
        bench.env.update(VIDEO_PROVIDER="veo", GEMINI_API_BASE=veo.url, GEMINI_API_KEY=API_KEY)
        bench.env.update(VIDEO_MAX_CONCURRENT="2", VIDEO_MAX_QUEUED_PER_USER="1000")
        [token] = bench_users(1)
        log = bench.log_dir / "worker.log"
        process = start_worker(bench.env, log, threads=8)
        try:
            wait_until_ready(process, log, timeout=60)
            with web_server(bench, workers=1) as server:
                _submit(server.port, token, "warmup", args.warmup)
                _wait_finished("warmup", args.warmup, args.timeout)
                runs = [measured_run(server.port, token, args, f"run{index}") for index in range(args.runs)]
        finally:
            stop(process)
        machine = machine_description(database_url=bench.database_url, redis_url=bench.redis_url)
    results = {"args": vars(args), "runs": runs, "code": code_revision(), "machine": machine}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"estimates-{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    for index, run in enumerate(runs):
        verdict = "met" if run["error_to_wait"] <= ERROR_TARGET else "MISSED"
        print(
            f"run {index}: mean |error| {run['mean_absolute_error_s']} s, mean wait {run['mean_wait_s']} s, "
            f"ratio {run['error_to_wait']:.1%} (target <= {ERROR_TARGET:.0%}: {verdict})"
        )
    sys.exit(0 if all(run["error_to_wait"] <= ERROR_TARGET for run in runs) else 1)


if __name__ == "__main__":
    main()
