"""Benchmark the video pipeline at its default poll settings against a fake Veo: makespan, idle gaps, polls, isolation.

Run from the repository root: ``python -m project.embedded run -- python -m bench.videos --scenario NAME [options]``.

The real uvicorn server and real ``rundramatiq`` processes (each standing for a machine) run on a database and
Redis prefix of their own; the fake Gemini API runs in this process and records every start and poll. Scenarios:

- ``default``: 10 videos of 30 s through 2 slots (VIDEO_MAX_CONCURRENT=2), 2 worker processes x 8 threads. Ideal
  makespan ceil(N / S) x T = 150 s; targets: makespan <= 1.05 x ideal, provider idle gap p99 <= 1.5 s.
- ``wide``: 100 videos of 20 s through 50 slots, 1 worker process x 8 threads. Ideal 40 s; targets: makespan
  <= 1.10 x ideal and exactly 50 generations at once at the provider.
- ``hostile-frame``: a video whose start frame drips its headers a byte every 2 s is being prepared, then another
  user submits a plain video; target: that one starts at the provider within 2 s of its submission.

VIDEO_FIRST_POLL and VIDEO_POLL_INTERVAL are never set: the deployed defaults (10 s, then 1 s) are measured.
How each figure is computed: bench/video_runs.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import report
from bench.machine import code_revision, machine_description
from bench.pipeline import _wait_finished
from bench.stack import BenchEnvironment, bench_environment, bench_users, web_server
from bench.video_runs import TimedFakeVeo, hostile_trial, queue_run, runs_summary, videos_submit
from testing.fakes.frames import FakeFrameServer
from testing.live import start_worker, stop, wait_until_ready

API_KEY = "bench-veo-key"
STARTUP_TIMEOUT = 60.0
IDLE_GAP_P99_TARGET_MS = 1500.0
HOSTILE_START_TARGET_S = 2.0
DRIP_SECONDS = 2.0


@dataclasses.dataclass(frozen=True)
class Scenario:
    """How many videos of how long, through how many slots and worker processes, and what counts as good enough."""

    videos: int
    seconds: float
    slots: int
    workers: int
    threads: int
    runs: int
    users: int
    clients: int
    makespan_target: float
    dripping: int = 0


SCENARIOS = {
    "default": Scenario(
        videos=10, seconds=30, slots=2, workers=2, threads=8, runs=3, users=3, clients=1, makespan_target=1.05
    ),
    # Four clients submit at once: one after the other, the 100 POSTs would take seconds of the 40 s ideal.
    "wide": Scenario(
        videos=100, seconds=20, slots=50, workers=1, threads=8, runs=3, users=10, clients=4, makespan_target=1.10
    ),
    "hostile-frame": Scenario(
        videos=1, seconds=1, slots=2, workers=2, threads=8, runs=5, users=2, clients=1, makespan_target=0, dripping=1
    ),
}


def parse_arguments(argv: list[str] | None = None) -> tuple[str, Scenario, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="default", help="what to measure")
    overrides = {
        "videos": (int, "videos queued per run"),
        "seconds": (float, "seconds the fake takes per generation"),
        "slots": (int, "VIDEO_MAX_CONCURRENT"),
        "workers": (int, "rundramatiq processes"),
        "threads": (int, "threads of each worker process"),
        "runs": (int, "runs (trials for hostile-frame)"),
        "users": (int, "users the videos are spread over"),
        "clients": (int, "threads submitting at once"),
        "dripping": (int, "hostile-frame: dripping videos ahead of the plain one"),
    }
    for name, (kind, text) in overrides.items():
        parser.add_argument(f"--{name}", type=kind, help=f"{text} (default: the scenario's)")
    parser.add_argument("--output", type=Path, help="where to write the JSON (default bench/results/videos-*.json)")
    args = parser.parse_args(argv)
    given = {name: getattr(args, name) for name in overrides if getattr(args, name) is not None}
    return args.scenario, dataclasses.replace(SCENARIOS[args.scenario], **given), args


@contextmanager
def _workers(bench: BenchEnvironment, scenario: Scenario) -> Iterator[None]:
    """Run the worker processes, each as on a machine of its own, once all take messages; stop them at the end."""
    logs = [bench.log_dir / f"worker-{index + 1}.log" for index in range(scenario.workers)]
    processes = [start_worker(bench.env, log, threads=scenario.threads) for log in logs]
    try:
        # A worker still booting would be measured as dispatch delay.
        for process, log in zip(processes, logs, strict=True):
            wait_until_ready(process, log, timeout=STARTUP_TIMEOUT)
        yield
    finally:
        stop(*processes)


def measure(name: str, scenario: Scenario, port: int, tokens: list[str], veo: TimedFakeVeo) -> dict[str, Any]:
    """Warm the workers with two short videos, then make the scenario's runs."""
    veo.generation_seconds = 0.1
    videos_submit(port, tokens, "warm-up", 2)
    _wait_finished("warm-up", 2, timeout=120)
    runs = []
    if scenario.dripping:
        with FakeFrameServer(drip_seconds=DRIP_SECONDS) as frames:
            for index in range(scenario.runs):
                print(f"{name}: trial {index + 1} of {scenario.runs}...", file=sys.stderr)
                tag = f"hostile-{index}"
                runs.append(hostile_trial(port, tokens, veo, frames, tag=tag, dripping=scenario.dripping))
        latencies = [run["submit_to_start_s"] for run in runs]
        summary = {"median_submit_to_start_s": statistics.median(latencies), "max_submit_to_start_s": max(latencies)}
        summary["target_met"] = max(latencies) <= HOSTILE_START_TARGET_S
        return {**summary, "load_average_1min": [run["load_average_before"][0] for run in runs], "runs": runs}
    shape = {key: getattr(scenario, key) for key in ("videos", "seconds", "slots", "clients")}
    for index in range(scenario.runs):
        print(f"{name}: run {index + 1} of {scenario.runs}...", file=sys.stderr)
        runs.append(queue_run(port, tokens, veo, **shape, tag=f"{name}-{index}"))
    summary = runs_summary(runs, videos=scenario.videos, slots=scenario.slots)
    summary["targets"] = {
        "makespan_met_runs": sum(run["makespan_ratio"] <= scenario.makespan_target for run in runs),
        "makespan_met_median": summary["median_makespan_ratio"] <= scenario.makespan_target,
        "idle_gap_p99_met": (summary["provider_idle_gap_ms"]["p99"] or 0) <= IDLE_GAP_P99_TARGET_MS,
    }
    return {**summary, "runs": runs}


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def _hostile_lines(figures: dict[str, Any]) -> list[str]:
    latencies = ", ".join(str(run["submit_to_start_s"]) for run in figures["runs"])
    return [
        f"submission -> start at the provider: {latencies} s; median {figures['median_submit_to_start_s']} s, "
        f"max {figures['max_submit_to_start_s']} s (target <= {HOSTILE_START_TARGET_S:g} s: "
        f"{_verdict(figures['target_met'])})"
    ]


def _queue_lines(figures: dict[str, Any], scenario: Scenario) -> list[str]:
    idle, targets, polls = figures["provider_idle_gap_ms"], figures["targets"], figures["polls_per_video"]
    chain = figures["chain_polls_per_video"]
    detection, dispatch = figures["detection_delay_ms"], figures["dispatch_delay_ms"]
    return [
        f"makespan {', '.join(f'{value:.2f}' for value in figures['makespan_s'])} s; median ratio "
        f"{figures['median_makespan_ratio']:.3f}, worst {figures['worst_makespan_ratio']:.3f} (target <= "
        f"{scenario.makespan_target}: {_verdict(targets['makespan_met_median'])} for the median, in "
        f"{targets['makespan_met_runs']} of {figures['run_count']} runs)",
        f"highest concurrency at the provider {figures['max_concurrency']} (target exactly {scenario.slots}: "
        f"{_verdict(figures['concurrency_exact'])}); every video completed and started once: "
        f"{'yes' if figures['all_completed_once'] else 'NO'}",
        f"provider idle gap p50 {idle['p50']} ms, p99 {idle['p99']} ms, max {idle['max']} ms "
        f"(target p99 <= {IDLE_GAP_P99_TARGET_MS:g}: {_verdict(targets['idle_gap_p99_met'])})",
        f"  of which the end's detection p50 {detection['p50']} / p99 {detection['p99']} ms, "
        f"then the dispatch p50 {dispatch['p50']} / p99 {dispatch['p99']} ms",
        f"operation GETs per video median {polls['median']} (min {polls['min']}, max {polls['max']}), of which the "
        f"poll chain {chain['median']} ({chain['min']} to {chain['max']}) and the download's one; "
        f"poll period median {figures['poll_period_median_ms']} ms",
    ]


def render(results: dict[str, Any], scenario: Scenario) -> str:
    """The scenario's figures as plain text."""
    machine, figures = results["machine"], results["figures"]
    lines = [
        f"Machine: {machine['cpu_model']}, {machine['cpus']} CPUs; commit {results['code']['commit'][:7]} "
        f"({results['code']['changed_files']} files changed); load average (1 min) at each run "
        f"{', '.join(map(str, figures['load_average_1min']))}",
        f"{results['scenario']}: {scenario}",
    ]
    lines += _hostile_lines(figures) if scenario.dripping else _queue_lines(figures, scenario)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    name, scenario, args = parse_arguments(argv)
    path = args.output or report.RESULTS_DIR / f"videos-{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    log_dir = path.with_name(f"{path.stem}-logs")
    results: dict[str, Any] = {"scenario": name, "settings": dataclasses.asdict(scenario), "code": code_revision()}
    try:
        with bench_environment(log_dir=log_dir) as plain, TimedFakeVeo(api_key=API_KEY) as veo:
            results["machine"] = machine_description(database_url=plain.database_url, redis_url=plain.redis_url)
            tokens = bench_users(scenario.users)
            # The web server needs the per-user cap too; poll timings, slot lease and dispatch tick stay as deployed.
            env = {
                "VIDEO_PROVIDER": "veo",
                "GEMINI_API_BASE": veo.url,
                "GEMINI_API_KEY": API_KEY,
                "VIDEO_MAX_CONCURRENT": str(scenario.slots),
                "VIDEO_MAX_QUEUED_PER_USER": str(max(scenario.videos, 5)),
            }
            if scenario.dripping:
                # The dripping frame server listens on 127.0.0.1.
                env["FETCH_ALLOW_PRIVATE_ADDRESSES"] = "1"
            bench = dataclasses.replace(plain, env={**plain.env, **env})
            with web_server(bench, workers=1) as server, _workers(bench, scenario):
                results["figures"] = measure(name, scenario, server.port, tokens, veo)
    finally:
        # Whatever was measured before a failure is kept.
        report.write_json(results, path)
    print(render(results, scenario))
    print(f"\nResults written to {path}, the servers' logs to {log_dir}/")


if __name__ == "__main__":
    main()
