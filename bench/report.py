"""The figures as a table for people and as JSON under bench/results/."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
P99_TARGET_MS = 20.0
RATIO_TARGET = 0.6
_CPU_GROUPS = ("web", "worker", "postgres", "redis", "loadgen")
_WRK_ROWS = {"post": "POST /api/images/", "get_credits": "GET /api/credits/"}
# More than this many cores busy outside the stack under test means other work disturbed the run.
BUSY_MACHINE_CORES = 0.25
_API_ROWS = {
    "post_open_loop": "POST /api/images/ open loop",
    "post_closed_loop": "POST /api/images/ closed loop",
    "get_credits_closed_loop": "GET /api/credits/ closed loop",
    "get_job_closed_loop": "GET /api/jobs/{id}/ closed loop",
}


def targets(api: dict[str, Any]) -> dict[str, Any]:
    """The targets for one web server set-up: p99 at the steady rate, and enqueue peak against the GET's."""
    p99 = api["post_open_loop"]["latency_ms"]["p99"]
    ratio = api["post_closed_loop"]["requests_per_s"] / api["get_credits_closed_loop"]["requests_per_s"]
    return {
        "p99_ms_at_rate": p99,
        "p99_met": p99 is not None and p99 <= P99_TARGET_MS and api["post_open_loop"]["errors"] == 0,
        "post_to_get_ratio": round(ratio, 2),
        "ratio_met": ratio >= RATIO_TARGET,
    }


def _cpu(summary: dict[str, Any], per: str) -> str:
    """CPU milliseconds per request or job by group, and the cores that work outside the stack took meanwhile."""
    spent = summary.get(f"cpu_ms_per_{per}")
    if not spent:
        return ""
    other = summary["cpu_cores"]["other"]
    text = " ".join(f"{name} {spent[name]:.1f}" for name in _CPU_GROUPS if name in spent)
    text += f" | other {other:.2f} cores" + (" (busy machine)" if other > BUSY_MACHINE_CORES else "")
    if "load_average" in summary:
        text += f", load {summary['load_average'][0]:g}"
    if summary.get("cpu_pressure_percent") is not None:
        text += f", CPU pressure {summary['cpu_pressure_percent']:g} %"
    stalls = summary.get("machine_stalls")
    if stalls and stalls["count"]:
        text += f", machine stalled {stalls['count']}x (longest {stalls['max_ms']:g} ms)"
    if stalls and stalls.get("slowdowns"):
        text += f", machine slowed {stalls['slowdowns']}x in 100 ms"
    return text


def _row(label: str, summary: dict[str, Any]) -> str:
    latency = summary["latency_ms"]
    figures = [latency.get(key) for key in ("p50", "p90", "p99", "max")]
    cells = " ".join(f"{value:>7.2f}" if value is not None else f"{'-':>7}" for value in figures)
    errors = summary.get("errors", summary.get("non_2xx", 0))
    spread = "/".join(map(str, summary.get("connections_per_web_process", []))) or "-"
    rate = summary["requests_per_s"]
    return f"  {label:<34} {rate:>7.1f} {cells} {errors:>6} {spread:>7}  {_cpu(summary, 'request')}"


def render(results: dict[str, Any]) -> str:
    """The whole run as a plain-text table."""
    machine = results["machine"]
    embedded = {True: "embedded", False: "external"}
    lines = [
        f"Machine: {machine['cpu_model']}, {machine['cpus']} CPUs, {machine['memory_gib']} GiB RAM, "
        f"Linux {machine['kernel']}, Python {machine['python']}, "
        f"PostgreSQL {machine['postgresql']} ({embedded[machine['postgresql_embedded']]}), "
        f"Redis {machine['redis']} ({embedded[machine['redis_embedded']]}); "
        f"load average at start {' '.join(map(str, machine['load_average_at_start']))}",
    ]
    calibration = results.get("loadgen_capacity")
    if calibration:
        lines.append(
            f"Load generator against a trivial server: {calibration['closed_loop']['requests_per_s']:.0f} requests/s "
            f"closed loop; open loop p99 {calibration['open_loop']['latency_ms']['p99']} ms "
            f"(send lateness p99 {calibration['open_loop']['send_lateness_ms']['p99']} ms)"
        )
    columns = " ".join(f"{name:>7}" for name in ("req/s", "p50", "p90", "p99", "max"))
    header = f"  {'scenario':<34} {columns} {'errors':>6} {'conns':>7}  CPU ms/request"
    for workers, api in results.get("api", {}).items():
        title = f"uvicorn --workers {workers} (latencies in ms; conns: the load's connections per web process)"
        lines += ["", title, header]
        lines += [_row(label, api[key]) for key, label in _API_ROWS.items()]
        for key, summary in api.get("wrk", {}).items():
            lines.append(_row(f"wrk: {_WRK_ROWS[key]}", summary))
        verdict = api["targets"]
        lines.append(
            f"  p99 at the steady rate {verdict['p99_ms_at_rate']} ms (target <= {P99_TARGET_MS:g}: "
            f"{'met' if verdict['p99_met'] else 'NOT met'}); POST/GET peak ratio {verdict['post_to_get_ratio']} "
            f"(target >= {RATIO_TARGET:g}: {'met' if verdict['ratio_met'] else 'NOT met'})"
        )
    pipeline = results.get("pipeline")
    if pipeline:
        backlog, live = pipeline["backlog"], pipeline["live"]
        lines += [
            "",
            f"End to end, one worker process with {pipeline['threads']} threads, local provider at zero latency:",
            f"  backlog of {backlog['jobs']} jobs: {backlog['jobs_per_s_from_worker_start']} jobs/s from worker start "
            f"(start-up {backlog['worker_startup_s']} s), {backlog['jobs_per_s_first_start_to_last_finish']} jobs/s "
            f"from first start to last finish; CPU ms/job {_cpu(backlog, 'job')}",
            f"  {live['jobs']} jobs submitted while the worker runs: {live['jobs_per_s']} jobs/s "
            f"(submitted at {live['submit']['requests_per_s']} requests/s); created to finished p50 "
            f"{live['created_to_finished_ms']['p50']} ms, p99 {live['created_to_finished_ms']['p99']} ms; "
            f"CPU ms/job {_cpu(live, 'job')}",
        ]
    return "\n".join(lines)


def default_path() -> Path:
    """A new file under bench/results/ (git-ignored), named by the time of the run."""
    return RESULTS_DIR / f"images-{time.strftime('%Y%m%d-%H%M%S')}.json"


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
