"""Schema-driven fuzzing of the API: Schemathesis against /api/schema/ of the real uvicorn server, checking for 5xx.

Run from the repository root: ``python -m bench.fuzz [options]`` (Schemathesis is a development tool, see
docs/chaos.md). Like the chaos run it uses a PostgreSQL and a Redis of its own in a temporary folder. It serves
the project with uvicorn as deployed, gives a user credits and runs ``schemathesis run`` on every operation of the
schema with the ``not_a_server_error`` check and a bounded number of examples per operation, valid and invalid
inputs both. Every exchange is kept in a HAR file, from which the figures are counted: requests per operation and
status, and each 5xx with the request that caused it. /api/events/ is a never-ending stream that the schema leaves
out; it is excluded all the same, should it ever come in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from bench import report
from bench.chaos import code_measured, on_own_services, run_on_own_services
from bench.loadgen import LOCALHOST
from bench.machine import machine_description
from bench.stack import bench_environment, bench_users, web_server

BASE_DIR = Path(__file__).resolve().parent.parent
EXCLUDED = r"^/api/events/"
# Request headers worth keeping with a 5xx; the token is not one of them.
KEPT_HEADERS = {"content-type", "idempotency-key", "accept", "content-length"}


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200, help="examples per operation (default 200)")
    parser.add_argument("--seed", type=int, default=1, help="Hypothesis seed (default 1)")
    # With more than one worker, Schemathesis 4.32 cut some operations' fuzzing short and its counts varied from run
    # to run with the same seed; one worker gives every operation its examples, reproducibly.
    parser.add_argument("--workers", type=int, default=1, help="concurrent Schemathesis workers (default 1)")
    parser.add_argument(
        "--checks", default="not_a_server_error", help="Schemathesis checks (default not_a_server_error)"
    )
    parser.add_argument("--output", type=Path, help="where to write the JSON (default bench/results/fuzz-*.json)")
    return parser.parse_args(argv)


def schemathesis_command(
    args: argparse.Namespace, port: int, token: str, har: Path, schema: dict[str, Any]
) -> list[str]:
    """``schemathesis run`` on every operation of the live schema, every phase, valid and invalid inputs."""
    # A filter that matches nothing draws a warning, so the stream is excluded only once the schema lists it.
    streams = [path for path in schema["paths"] if re.match(EXCLUDED, path)]
    return [
        sys.executable, "-m", "schemathesis.cli", "run", f"http://{LOCALHOST}:{port}/api/schema/",
        "--checks", args.checks,
        "--mode", "all",
        "--max-examples", str(args.examples),
        "--seed", str(args.seed),
        "--workers", str(args.workers),
        "--header", f"Authorization: Token {token}",
        *(["--exclude-path-regex", EXCLUDED] if streams else []),
        "--request-timeout", "10",
        "--generation-database", "none",
        "--suppress-health-check", "all",
        "--report", "har",
        "--report-har-path", str(har),
        "--no-color",
    ]  # fmt: skip


def operation_patterns(schema: dict[str, Any]) -> list[tuple[re.Pattern[str], str]]:
    """A regular expression per path template of the schema, so that a concrete URL finds its operation."""
    patterns = []
    for template in schema["paths"]:
        expression = "".join(
            "[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[^}]+\})", template)
        )
        patterns.append((re.compile(f"^{expression}$"), template))
    return patterns


def _operation(method: str, url: str, patterns: list[tuple[re.Pattern[str], str]]) -> str:
    path = urlsplit(url).path
    template = next((template for pattern, template in patterns if pattern.match(path)), path)
    return f"{method} {template}"


def har_figures(har: Path, patterns: list[tuple[re.Pattern[str], str]]) -> dict[str, Any]:
    """Requests per operation and status, and every 5xx with the request that caused it, from the HAR file."""
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    server_errors = []
    for entry in entries:
        request, response = entry["request"], entry["response"]
        operation = _operation(request["method"], request["url"], patterns)
        statuses[operation][response["status"]] += 1
        if response["status"] >= 500:
            server_errors.append(
                {
                    "operation": operation,
                    "url": request["url"],
                    "headers": {h["name"]: h["value"] for h in request["headers"] if h["name"].lower() in KEPT_HEADERS},
                    "body": request.get("postData", {}).get("text", ""),
                    "status": response["status"],
                    "answer": response.get("content", {}).get("text", "")[:500],
                }
            )
    return {
        "requests": len(entries),
        "operations": {
            operation: {"requests": sum(counts.values()), "statuses": {str(k): v for k, v in sorted(counts.items())}}
            for operation, counts in sorted(statuses.items())
        },
        "server_errors": server_errors,
    }


def render(results: dict[str, Any]) -> str:
    """The run as plain text; the probes with methods the schema does not list (405s) on one line."""
    figures = results["figures"]
    lines = [
        f"Schemathesis {results['schemathesis']}, checks {results['settings']['checks']}, "
        f"{results['settings']['examples']} examples per operation, seed {results['settings']['seed']}: "
        f"{figures['requests']} requests in {results['seconds']} s, exit code {results['exit_code']}",
        "",
        f"  {'operation':<34} {'requests':>8}  statuses",
    ]
    unlisted: Counter[str] = Counter()
    for operation, counts in figures["operations"].items():
        if operation in results["operations"]:
            statuses = " ".join(f"{status}:{count}" for status, count in counts["statuses"].items())
            lines.append(f"  {operation:<34} {counts['requests']:>8}  {statuses}")
        else:
            unlisted.update(counts["statuses"])
    lines += [
        f"  {'methods the schema does not list':<34} {sum(unlisted.values()):>8}  "
        + " ".join(f"{status}:{count}" for status, count in sorted(unlisted.items())),
        "",
        f"5xx answers: {len(figures['server_errors'])}",
    ]
    lines += [
        f"  {error['status']} for {error['operation']}: {error['url']} {error['body'][:200]!r}"
        for error in figures["server_errors"][:20]
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """Serve the project, fuzz it with Schemathesis and count what it did."""
    from schemathesis import SCHEMATHESIS_VERSION

    log_dir = path.with_name(f"{path.stem}-logs")
    har = log_dir / "schemathesis.har"
    results: dict[str, Any] = {"settings": {**vars(args), "output": str(path)}, "code": code_measured()}
    results["schemathesis"] = SCHEMATHESIS_VERSION
    with bench_environment(log_dir=log_dir) as plain:
        results["machine"] = machine_description(database_url=plain.database_url, redis_url=plain.redis_url)
        [token] = bench_users(1)
        # Valid video requests should reach the charge, not stop at the per-user cap of waiting videos.
        bench = dataclasses.replace(plain, env={**plain.env, "VIDEO_MAX_QUEUED_PER_USER": "1000000"})
        with web_server(bench, workers=1) as server:
            schema = requests.get(f"http://{LOCALHOST}:{server.port}/api/schema/?format=json", timeout=10).json()
            started = time.monotonic()
            with (log_dir / "schemathesis.log").open("w") as output:
                # Run from the log folder: whatever Schemathesis leaves behind stays out of the repository.
                completed = subprocess.run(
                    schemathesis_command(args, server.port, token, har, schema),
                    cwd=log_dir,
                    env=bench.env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            results["seconds"] = round(time.monotonic() - started, 1)
    results["exit_code"] = completed.returncode
    results["figures"] = har_figures(har, operation_patterns(schema))
    results["operations"] = [
        f"{method.upper()} {path}" for path, operations in schema["paths"].items() for method in operations
    ]
    return results


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not on_own_services():
        run_on_own_services("bench.fuzz", arguments)
    args = parse_arguments(arguments)
    path = args.output or report.RESULTS_DIR / f"fuzz-{time.strftime('%Y%m%d-%H%M%S')}.json"
    results = run(args, path)
    report.write_json(results, path)
    print(render(results))
    print(f"\nResults written to {path}; Schemathesis' output and HAR file in {path.with_name(f'{path.stem}-logs')}/")
    sys.exit(1 if results["figures"]["server_errors"] or not results["figures"]["requests"] else 0)


if __name__ == "__main__":
    main()
