"""Set the stack up, submit under chaos, wait for every job, check, print and write the results."""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench.chaos
from bench import report
from bench.chaos.checks import analyse, audit_credits
from bench.chaos.client import Api, submit_all, wait_finished
from bench.chaos.disruptions import Chaos
from bench.chaos.end_state import ambiguous_starts, slots_at_end
from bench.chaos.fakes import ChaosImages, ChaosVeo, call_sites, frame_server
from bench.chaos.own_services import code_measured, on_own_services, run_on_own_services
from bench.chaos.plan import API_KEY, plan_jobs
from bench.chaos.render import render
from bench.chaos.verdicts import summarise
from bench.chaos.watch import LockWatch
from bench.chaos.workers import WorkerPool
from bench.loadgen import LOCALHOST
from bench.machine import machine_description
from bench.stack import bench_environment, bench_users, web_server


def _knobs(images_url: str, veo_url: str, args: argparse.Namespace) -> dict[str, str]:
    """Short timings so that a crash is noticed in seconds and the whole run takes a few minutes."""
    return {
        "IMAGE_PROVIDER": "gateway",
        "AI_GATEWAY_URL": images_url,
        "AI_GATEWAY_API_KEY": API_KEY,
        "VIDEO_PROVIDER": "veo",
        "GEMINI_API_BASE": veo_url,
        "GEMINI_API_KEY": API_KEY,
        # The frame server listens on 127.0.0.1.
        "FETCH_ALLOW_PRIVATE_ADDRESSES": "1",
        "IMAGE_RETRY_DELAYS": "0.5,1,2",
        "JOB_LEASE_SECONDS": "10",
        "VIDEO_SLOT_LEASE": "5",
        "VIDEO_DISPATCH_TICK": "1",
        "VIDEO_FIRST_POLL": "0.5",
        "VIDEO_POLL_INTERVAL": "0.3",
        # An ambiguous start's slot outlasts the generation the provider may run for it: its slow start, its video
        # seconds and some slack.
        "VIDEO_AMBIGUOUS_START_HOLD": f"{args.slow_start + args.video_seconds + 2:g}",
        "VIDEO_STOP_GRACE": "10",
        "VIDEO_TIMEOUT": "120",
        "VIDEO_MAX_QUEUED_PER_USER": "1000",
        "RECONCILE_INTERVAL": "2",
        "RECONCILE_AFTER": "5",
        # What a worker logged just before its SIGKILL must be in its log.
        "PYTHONUNBUFFERED": "1",
    }


def _pair(text: str) -> tuple[float, float]:
    low, high = (float(part) for part in text.split(","))
    return low, high


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=bench.chaos.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--images", type=int, default=200, help="image jobs (default 200)")
    add("--videos", type=int, default=20, help="video jobs (default 20)")
    add("--users", type=int, default=4, help="users the jobs are spread over (default 4)")
    add("--threads", type=int, default=4, help="threads of each worker process (default 4)")
    add("--submit-seconds", type=float, default=45, help="seconds the submissions span (default 45)")
    add("--image-cancels", type=int, default=12, help="image jobs canceled (default 12)")
    add("--video-cancels", type=int, default=3, help="video jobs canceled soon after their 202 (default 3)")
    add("--video-stop-cancels", type=int, default=2, help="video jobs canceled once generating (default 2)")
    add("--framed-videos", type=int, default=6, help="videos with a start frame to fetch, half dripped (default 6)")
    add("--image-latency", type=float, default=0.3, help="seconds per image at the fake (default 0.3)")
    add("--video-seconds", type=float, default=3, help="seconds per video at the fake (default 3)")
    add("--slow-start", type=float, default=2, help="seconds a slow start call takes at the fake (default 2)")
    add("--download-seconds", type=float, default=1, help="seconds a video download takes (default 1)")
    add("--kill-every", type=_pair, default=(3.0, 6.0), help="seconds between random kills, MIN,MAX")
    add("--stage-kills", type=int, default=1, help="kills aimed at each video stage (default 1)")
    add("--chaos-seconds", type=float, default=100, help="kills stop this long after the start")
    add(
        "--aim-at-locks",
        action="store_true",
        help="time each random kill, within 2 s, for a moment when a worker holds a cluster-wide lock",
    )
    add("--redis-at", type=float, default=15, help="seconds into the run Redis goes down")
    add("--postgres-at", type=float, default=30, help="seconds into the run PostgreSQL goes down")
    add("--outage-seconds", type=float, default=3, help="how long each server stays down")
    add("--timeout", type=float, default=180, help="give up waiting this long after the submissions")
    add("--seed", type=int, default=1, help="random seed of the plan and the kills (default 1)")
    add("--output", type=Path, help="where to write the JSON (default bench/results/chaos-*.json)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """Set the stack up, submit under chaos, wait for every job, check, and return the results."""
    rng = random.Random(args.seed)
    results: dict[str, Any] = {"settings": {**vars(args), "output": str(path)}, "code": code_measured()}
    with (
        bench_environment(log_dir=path.with_name(f"{path.stem}-logs")) as plain,
        ChaosImages(api_key=API_KEY) as images,
        ChaosVeo(api_key=API_KEY, generation_seconds=args.video_seconds, download_seconds=args.download_seconds) as veo,
        frame_server() as frames,
    ):
        results["machine"] = machine_description(database_url=plain.database_url, redis_url=plain.redis_url)
        specs = plan_jobs(args, bench_users(args.users), rng)
        for spec in specs:
            (images if spec.kind == "image" else veo).script(spec.tag, spec.behaviours)
        results["knobs"] = knobs = _knobs(images.url, veo.url, args)
        bench = dataclasses.replace(plain, env={**plain.env, **knobs})
        pool = WorkerPool(bench, args.threads)
        with web_server(bench, workers=1) as server:
            try:
                pool.start_all()
                api = Api(f"http://{LOCALHOST}:{server.port}", retry_seconds=60)
                locks = LockWatch(bench.redis_url)
                chaos = Chaos(pool, locks, rng, args, started=time.time(), calls=call_sites(veo, frames))
                thread = threading.Thread(target=chaos.run, name="chaos", daemon=True)
                thread.start()
                try:
                    submitted = submit_all(api, specs, chaos.started, f"http://127.0.0.1:{frames.port}")
                    moments: dict[str, float | None] = {"all_submitted": time.time()}
                    accepted = sum(len(by_index) for by_index in submitted.values())
                    moments["all_finished"] = wait_finished(accepted, args.timeout)
                finally:
                    chaos.stop.set()
                    thread.join()
            finally:
                pool.stop()
        by_job, by_code = ambiguous_starts(bench.log_dir)
        end = {"slots": slots_at_end(bench.redis_url), "ambiguous_by_code": dict(by_code)}
        analysis = analyse(specs, submitted, images, veo, pool, chaos.disruptions, by_job)
        audit = audit_credits(bench)
        results["summary"] = summarise(api, chaos, analysis, audit, moments, veo, end)
        results["workers_started"] = [worker.name for worker in pool.started]
    return results


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not on_own_services():
        run_on_own_services("bench.chaos", arguments)
    args = parse_arguments(arguments)
    path = args.output or report.RESULTS_DIR / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}.json"
    results = run(args, path)
    report.write_json(results, path)
    print(render(results))
    print(f"\nResults written to {path}, the servers' logs to {path.with_name(f'{path.stem}-logs')}/")
    sys.exit(0 if all(results["summary"]["verdicts"].values()) else 1)
