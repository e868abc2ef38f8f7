"""Benchmark the video queue with two worker processes against a fake Veo: makespan, concurrency, dispatch gaps.

Run from the repository root: ``python -m project.embedded run -- python -m bench.videos [options]``.

Each run queues N videos over HTTP while two ``rundramatiq`` processes (as two machines) are up, with the fake
taking T seconds per generation; the ideal makespan is ceil(N / 2) x T. The dispatch gap pairs the k-th start at
the provider (k >= 3) with the (k - 2)-th job to finish: with two slots, that finish is the one that let the
start happen. It runs from the job's ``finished_at`` (the watcher has downloaded and stored the video and
committed the completion; it then frees the slot and runs the dispatcher) to the moment the fake records the
next ``predictLongRunning``. The provider idle gap runs from that finished generation's end at the provider to
the same start, so it adds the poll that notices the end, the download and the storage to the dispatch gap.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from bench import report
from bench.loadgen import LOCALHOST, latency_summary
from bench.machine import code_revision, machine_description
from bench.pipeline import _wait_finished
from bench.stack import BenchEnvironment, bench_environment, bench_users, web_server
from tests.fake_veo import FakeVeoServer
from tests.live import start_worker, stop, wait_until_ready

API_KEY = "bench-veo-key"
WORKERS = 2
# VIDEO_MAX_CONCURRENT as deployed: the generations the provider runs at once.
SLOTS = 2
STARTUP_TIMEOUT = 60.0
MAKESPAN_TARGET = 1.03
DISPATCH_GAP_P99_TARGET_MS = 250.0


def _intervals(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=10, help="videos queued per run (default 10)")
    parser.add_argument("--seconds", type=float, default=5, help="seconds the fake takes per video (default 5)")
    parser.add_argument(
        "--poll-intervals",
        type=_intervals,
        default=[0.2, 10],
        help="VIDEO_POLL_INTERVAL values to measure, a comma list (default 0.2,10; 10 is the deployed default)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per poll interval (default 3)")
    parser.add_argument("--threads", type=int, default=8, help="threads of each worker process (default 8)")
    parser.add_argument("--users", type=int, default=3, help="users the videos are spread over (default 3)")
    parser.add_argument("--timeout", type=float, default=600, help="give up a run after these seconds")
    parser.add_argument("--output", type=Path, help="where to write the JSON (default bench/results/videos-*.json)")
    return parser.parse_args(argv)


@contextmanager
def _workers(bench: BenchEnvironment, threads: int, name: str) -> Iterator[None]:
    """Run the worker processes, each as on a machine of its own, once all take messages; stop them at the end."""
    logs = [bench.log_dir / f"worker-{name}-{index + 1}.log" for index in range(WORKERS)]
    processes = [start_worker(bench.env, log, threads=threads) for log in logs]
    try:
        # A worker still booting would be measured as dispatch delay.
        for process, log in zip(processes, logs, strict=True):
            wait_until_ready(process, log, timeout=STARTUP_TIMEOUT)
        yield
    finally:
        stop(*processes)


def _wait_slots_free(timeout: float = 30) -> None:
    """Wait until the last watcher of the previous run has given its slot back."""
    from generation.slots import video_slots

    deadline = time.monotonic() + timeout
    while video_slots().holders():
        if time.monotonic() > deadline:
            raise RuntimeError("video slots still held after every job finished")
        time.sleep(0.02)


def _submit(port: int, tokens: list[str], tag: str, count: int) -> list[tuple[str, float]]:
    """POST the videos one after the other, spread over the users; return each prompt with when it was sent."""
    sent = []
    with requests.Session() as session:
        for index in range(count):
            prompt = f"{tag} video {index}"
            moment = time.time()
            response = session.post(
                f"http://{LOCALHOST}:{port}/api/videos/",
                json={"prompt": prompt, "duration": 4, "project_id": tag},
                headers={"Authorization": f"Token {tokens[index % len(tokens)]}"},
                timeout=10,
            )
            if response.status_code != 202:
                raise RuntimeError(f"submitting {prompt!r} failed: {response.status_code} {response.text[:200]}")
            sent.append((prompt, moment))
    return sent


def queue_run(port: int, tokens: list[str], veo: FakeVeoServer, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """Queue the videos with the workers idle and time them through the two slots."""
    from generation.models import Job

    _wait_slots_free()
    veo.reset()
    veo.generation_seconds = args.seconds
    sent = _submit(port, tokens, tag, args.videos)
    _wait_finished(tag, args.videos, args.timeout)
    jobs = list(Job.objects.filter(project_id=tag))
    finished = {job.prompt: job.finished_at.timestamp() for job in jobs if job.finished_at is not None}
    started = {start.prompt: start.started_at for start in veo.starts}
    start_times = sorted(started.values())
    by_finish = sorted(finished, key=finished.__getitem__)
    dispatch_gaps, idle_gaps = [], []
    for position in range(SLOTS, len(start_times)):
        freed_by = by_finish[position - SLOTS]
        dispatch_gaps.append(start_times[position] - finished[freed_by])
        idle_gaps.append(start_times[position] - (started[freed_by] + args.seconds))
    first_submit = sent[0][1]
    makespan = max(finished.values()) - first_submit
    ideal = math.ceil(args.videos / SLOTS) * args.seconds
    return {
        "completed": sum(job.status == Job.Status.COMPLETED for job in jobs),
        "starts_in_submit_order": [start.prompt for start in veo.starts] == [prompt for prompt, _ in sent],
        "start_attempts": veo.start_attempts,
        "max_concurrency": veo.max_concurrency,
        "submit_s": round(sent[-1][1] - first_submit, 3),
        "first_start_ms": round(1000 * (start_times[0] - first_submit), 1),
        "makespan_s": round(makespan, 3),
        "ideal_s": ideal,
        "makespan_ratio": round(makespan / ideal, 4),
        "dispatch_gaps_s": [round(gap, 4) for gap in dispatch_gaps],
        "provider_idle_gaps_s": [round(gap, 4) for gap in idle_gaps],
        "completion_lag_ms": latency_summary(
            [finished[prompt] - (started[prompt] + args.seconds) for prompt in finished]
        ),
    }


def measure_poll_interval(
    bench: BenchEnvironment, port: int, tokens: list[str], veo: FakeVeoServer, args: argparse.Namespace, poll: float
) -> dict[str, Any]:
    """Start two workers with this poll interval, warm them with one pair of short videos, then measure the runs."""
    polled = dataclasses.replace(bench, env={**bench.env, "VIDEO_POLL_INTERVAL": f"{poll:g}"})
    with _workers(polled, args.threads, f"poll-{poll:g}"):
        veo.generation_seconds = 0.1
        _submit(port, tokens, f"warm-up-{poll:g}", SLOTS)
        _wait_finished(f"warm-up-{poll:g}", SLOTS, args.timeout)
        runs = []
        for index in range(args.runs):
            print(f"VIDEO_POLL_INTERVAL={poll:g}: run {index + 1} of {args.runs}...", file=sys.stderr)
            runs.append(queue_run(port, tokens, veo, args, f"videos-{poll:g}-{index}"))
    gaps = [gap for run in runs for gap in run["dispatch_gaps_s"]]
    idle = [gap for run in runs for gap in run["provider_idle_gaps_s"]]
    worst_ratio = max(run["makespan_ratio"] for run in runs)
    summary = {
        "poll_interval_s": poll,
        "makespan_s": [run["makespan_s"] for run in runs],
        "worst_makespan_ratio": worst_ratio,
        "max_concurrency": max(run["max_concurrency"] for run in runs),
        "dispatch_gap_ms": latency_summary(gaps),
        "provider_idle_gap_ms": latency_summary(idle),
    }
    summary["targets"] = {
        "makespan_met": worst_ratio <= MAKESPAN_TARGET,
        "concurrency_met": all(run["max_concurrency"] == SLOTS for run in runs),
        "dispatch_gap_met": (summary["dispatch_gap_ms"]["p99"] or math.inf) <= DISPATCH_GAP_P99_TARGET_MS,
        "all_completed_in_order_once": all(
            run["completed"] == args.videos and run["starts_in_submit_order"] and run["start_attempts"] == args.videos
            for run in runs
        ),
    }
    return {**summary, "runs": runs}


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    """The figures of every poll interval as plain text."""
    machine = results["machine"]
    lines = [
        f"Machine: {machine['cpu_model']}, {machine['cpus']} CPUs, Python {machine['python']}, "
        f"PostgreSQL {machine['postgresql']}, Redis {machine['redis']}; "
        f"load average at start {' '.join(map(str, machine['load_average_at_start']))}",
        f"{args.videos} videos of {args.seconds:g} s each, {WORKERS} worker processes x {args.threads} threads, "
        f"{args.runs} runs per poll interval; ideal makespan {math.ceil(args.videos / SLOTS) * args.seconds:g} s",
    ]
    for figures in results["poll_intervals"].values():
        gap, idle, targets = figures["dispatch_gap_ms"], figures["provider_idle_gap_ms"], figures["targets"]
        lines += [
            "",
            f"VIDEO_POLL_INTERVAL={figures['poll_interval_s']:g} s",
            f"  makespan {', '.join(f'{value:.2f}' for value in figures['makespan_s'])} s; worst ratio "
            f"{figures['worst_makespan_ratio']:.3f} (target <= {MAKESPAN_TARGET}: {_verdict(targets['makespan_met'])})",
            f"  highest concurrency at the provider {figures['max_concurrency']} "
            f"(target exactly {SLOTS}: {_verdict(targets['concurrency_met'])}); every video completed, started "
            f"once and in submit order: {'yes' if targets['all_completed_in_order_once'] else 'NO'}",
            f"  dispatch gap (finished_at -> next start) p50 {gap['p50']} ms, p99 {gap['p99']} ms, max {gap['max']} ms "
            f"(target p99 <= {DISPATCH_GAP_P99_TARGET_MS:g}: {_verdict(targets['dispatch_gap_met'])})",
            f"  provider idle gap (generation end -> next start) p50 {idle['p50']} ms, p99 {idle['p99']} ms",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    path = args.output or report.RESULTS_DIR / f"videos-{time.strftime('%Y%m%d-%H%M%S')}.json"
    log_dir = path.with_name(f"{path.stem}-logs")
    results: dict[str, Any] = {"settings": {key: str(value) for key, value in vars(args).items()}}
    results["code"] = code_revision()
    try:
        with bench_environment(log_dir=log_dir) as plain, FakeVeoServer(api_key=API_KEY) as veo:
            results["machine"] = machine_description(database_url=plain.database_url, redis_url=plain.redis_url)
            tokens = bench_users(args.users)
            # The web server needs the per-user cap too; slot lease, dispatch tick and thread counts stay as deployed.
            bench = dataclasses.replace(
                plain,
                env={
                    **plain.env,
                    "VIDEO_PROVIDER": "veo",
                    "GEMINI_API_BASE": veo.url,
                    "GEMINI_API_KEY": API_KEY,
                    "VIDEO_MAX_QUEUED_PER_USER": str(args.videos),
                },
            )
            results["poll_intervals"] = {}
            with web_server(bench, workers=1) as server:
                for poll in args.poll_intervals:
                    figures = measure_poll_interval(bench, server.port, tokens, veo, args, poll)
                    results["poll_intervals"][f"{poll:g}"] = figures
    finally:
        # Whatever was measured before a failure is kept.
        report.write_json(results, path)
    print(render(results, args))
    print(f"\nResults written to {path}, the servers' logs to {log_dir}/")


if __name__ == "__main__":
    main()
