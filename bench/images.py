"""Benchmark POST /api/images/ on the production web server and jobs/s through one worker; print and save the figures.

Run from the repository root: ``python -m project.embedded run -- python -m bench.images [options]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench import report, wrk
from bench.api import LoadShape, api_scenarios, wrk_scenarios
from bench.machine import code_revision, machine_description
from bench.pipeline import PipelineShape, backlog_run, live_run
from bench.stack import BenchEnvironment, bench_environment, bench_users, web_server
from bench.trivial import loadgen_capacity


def _worker_counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100, help="open-loop requests/s (default 100)")
    parser.add_argument("--duration", type=float, default=20, help="measured seconds per API run (default 20)")
    parser.add_argument("--warmup", type=float, default=3, help="unmeasured seconds before each API run (default 3)")
    parser.add_argument("--clients", type=int, default=16, help="closed-loop clients (default 16)")
    parser.add_argument("--users", type=int, default=16, help="users the requests are spread over (default 16)")
    parser.add_argument(
        "--workers", type=_worker_counts, default=[2], help="uvicorn worker processes, a comma list such as 1,2"
    )
    parser.add_argument("--jobs", type=int, default=500, help="jobs per end-to-end run (default 500)")
    parser.add_argument("--threads", type=int, default=8, help="threads of the one worker process (default 8)")
    parser.add_argument("--timeout", type=float, default=300, help="give up an end-to-end run after these seconds")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60,
        help="before each run, wait up to this many seconds for other work on the machine to calm down (default 60)",
    )
    parser.add_argument("--no-wrk", action="store_true", help="skip the wrk cross-check even when wrk is installed")
    parser.add_argument("--skip-api", action="store_true", help="skip the API measurements")
    parser.add_argument("--skip-pipeline", action="store_true", help="skip the end-to-end measurements")
    parser.add_argument("--output", type=Path, help="where to write the JSON (default bench/results/images-*.json)")
    return parser.parse_args(argv)


def measure_api(bench: BenchEnvironment, tokens: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """The API scenarios once per uvicorn worker count, with no worker running, so that messages only queue up."""
    shape = LoadShape(args.rate, args.clients, args.duration, args.warmup, quiet_timeout=args.quiet_wait)
    results = {}
    for workers in args.workers:
        print(f"Measuring the API with uvicorn --workers {workers}...", file=sys.stderr)
        with web_server(bench, workers=workers) as server:
            api = api_scenarios(bench, server, tokens, shape)
            if wrk.available() and not args.no_wrk:
                api["wrk"] = wrk_scenarios(bench, server, tokens, shape)
        api["targets"] = report.targets(api)
        results[str(workers)] = api
    return results


def measure_pipeline(bench: BenchEnvironment, tokens: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Jobs/s through one worker process, beside the web server with the last worker count tried."""
    print(f"Measuring {args.jobs} jobs through one worker process...", file=sys.stderr)
    shape = PipelineShape(args.jobs, args.threads, args.clients, args.timeout, quiet_timeout=args.quiet_wait)
    with web_server(bench, workers=args.workers[-1]) as server:
        return {
            "threads": args.threads,
            "web_workers": args.workers[-1],
            "backlog": backlog_run(bench, server, tokens, shape),
            "live": live_run(bench, server, tokens, shape),
        }


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    path = args.output or report.default_path()
    log_dir = path.with_name(f"{path.stem}-logs")
    results: dict[str, Any] = {"settings": {key: str(value) for key, value in vars(args).items()}}
    results["code"] = code_revision()
    print("Measuring the load generator against a trivial server...", file=sys.stderr)
    results["loadgen_capacity"] = loadgen_capacity(clients=args.clients, rate=args.rate, duration=5)
    try:
        with bench_environment(log_dir=log_dir) as bench:
            results["machine"] = machine_description(database_url=bench.database_url, redis_url=bench.redis_url)
            tokens = bench_users(args.users)
            if not args.skip_api:
                results["api"] = measure_api(bench, tokens, args)
            if not args.skip_pipeline:
                results["pipeline"] = measure_pipeline(bench, tokens, args)
    finally:
        # Whatever was measured before a failure is kept.
        report.write_json(results, path)
    print(report.render(results))
    print(f"\nResults written to {path}, the servers' logs to {log_dir}/")


if __name__ == "__main__":
    main()
