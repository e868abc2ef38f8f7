"""End-to-end jobs/s through one worker process: a backlog drained from a cold start, and jobs submitted live."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from bench.api import image_requests
from bench.cpu import cpu_meter, wait_until_quiet
from bench.latency import latency_summary
from bench.loadgen import closed_loop, run
from bench.stack import BenchEnvironment, WebServer, redis_flush, worker

POLL_SECONDS = 0.05


@dataclass(frozen=True)
class PipelineShape:
    """How many jobs, through how many worker threads, submitted by how many clients, within what time."""

    jobs: int
    threads: int
    clients: int
    timeout: float
    quiet_timeout: float = 0.0


def _finished(tag: str) -> int:
    from generation.models import Job

    return Job.objects.filter(project_id=tag, status__in=Job.FINISHED_STATUSES).count()


def _wait_finished(tag: str, count: int, timeout: float) -> float:
    """Poll the database until ``count`` jobs of the tag have finished; return when that was seen."""
    deadline = time.time() + timeout
    while (finished := _finished(tag)) < count:
        if time.time() > deadline:
            raise TimeoutError(f"only {finished} of {count} jobs finished within {timeout:.0f} s")
        time.sleep(POLL_SECONDS)
    return time.time()


def _submit(server: WebServer, tokens: list[str], tag: str, shape: PipelineShape, count: int) -> dict[str, Any]:
    posts = image_requests(server.port, tokens, project_id=tag)
    result = run(
        lambda: closed_loop("submit", server.port, posts, clients=shape.clients, duration=shape.timeout, total=count)
    )
    if result.statuses.get(202, 0) != count:
        raise RuntimeError(f"submitting {count} jobs failed: {result.summary()}")
    return result.summary()


def _retire_earlier_jobs() -> int:
    """Mark every unfinished job canceled: those of the API runs lost their messages with the Redis keys."""
    from django.utils import timezone

    from generation.models import Job

    # Left queued, the worker's reconciler would re-send them in the middle of the measurement. A bulk update
    # rather than the cancel service: the bench database is thrown away, so nothing needs refunding.
    unfinished = Job.objects.filter(status__in=[Job.Status.QUEUED, Job.Status.PROCESSING])
    return unfinished.update(status=Job.Status.CANCELED, finished_at=timezone.now())


def _job_figures(tag: str) -> dict[str, Any]:
    """Statuses, first start and last finish, and each job's time from creation to finish, from the database."""
    from django.db.models import Count, Max, Min

    from generation.models import Job

    jobs = Job.objects.filter(project_id=tag)
    span = jobs.aggregate(created=Min("created_at"), started=Min("started_at"), finished=Max("finished_at"))
    durations = [
        (finished - created).total_seconds()
        for created, finished in jobs.values_list("created_at", "finished_at")
        if finished is not None
    ]
    return {
        "statuses": dict(jobs.values_list("status").annotate(count=Count("id")).order_by()),
        "first_created": span["created"].timestamp() if span["created"] else None,
        "first_started": span["started"].timestamp() if span["started"] else None,
        "last_finished": span["finished"].timestamp() if span["finished"] else None,
        "created_to_finished_ms": latency_summary(durations),
    }


def backlog_run(bench: BenchEnvironment, server: WebServer, tokens: list[str], shape: PipelineShape) -> dict[str, Any]:
    """Queue the jobs with no worker running, then start one worker and time it until all have finished."""
    tag = "bench-backlog"
    redis_flush(bench.redis_url, bench.redis_prefix)
    retired = _retire_earlier_jobs()
    submitted = _submit(server, tokens, tag, shape, shape.jobs)
    busy_before = wait_until_quiet(timeout=shape.quiet_timeout)
    started = time.time()
    with worker(bench, threads=shape.threads) as process:
        meter = cpu_meter(trees={"worker": process.pid, **bench.service_pids}, single={"loadgen": os.getpid()})
        with meter.measure():
            done = _wait_finished(tag, shape.jobs, shape.timeout)
    figures = _job_figures(tag)
    draining = figures["last_finished"] - figures["first_started"]
    return {
        "jobs": shape.jobs,
        "earlier_jobs_retired": retired,
        "busy_cores_before": busy_before,
        "submit": submitted,
        "seconds_from_worker_start": round(done - started, 3),
        "worker_startup_s": round(figures["first_started"] - started, 3),
        "jobs_per_s_from_worker_start": round(shape.jobs / (done - started), 1),
        "jobs_per_s_first_start_to_last_finish": round(shape.jobs / draining, 1),
        "cpu_cores": meter.cores(),
        "cpu_ms_per_job": meter.per_item(shape.jobs),
        **figures,
    }


def live_run(bench: BenchEnvironment, server: WebServer, tokens: list[str], shape: PipelineShape) -> dict[str, Any]:
    """With one worker already running, submit the jobs as fast as the clients can and time them until all finished."""
    tag = "bench-live"
    redis_flush(bench.redis_url, bench.redis_prefix)
    with worker(bench, threads=shape.threads) as process:
        # One job through first: the worker is then up and has loaded everything.
        _submit(server, tokens[:1], "bench-probe", shape, 1)
        _wait_finished("bench-probe", 1, shape.timeout)
        busy_before = wait_until_quiet(timeout=shape.quiet_timeout)
        trees = {"worker": process.pid, "web": server.process.pid, **bench.service_pids}
        meter = cpu_meter(trees=trees, single={"loadgen": os.getpid()})
        with meter.measure():
            started = time.time()
            submitted = _submit(server, tokens, tag, shape, shape.jobs)
            done = _wait_finished(tag, shape.jobs, shape.timeout)
    figures = _job_figures(tag)
    return {
        "jobs": shape.jobs,
        "submit": submitted,
        "busy_cores_before": busy_before,
        "seconds_from_first_submit": round(done - started, 3),
        "jobs_per_s": round(shape.jobs / (done - started), 1),
        "cpu_cores": meter.cores(),
        "cpu_ms_per_job": meter.per_item(shape.jobs),
        **figures,
    }
