"""Waiting on state, not on the clock: poll a condition (a row, a Redis key, a fake's records) until it holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from generation.models import Job


def wait_for(
    predicate: Callable[[], Any], timeout: float = 15, message: str = "condition", *, interval: float = 0.02
) -> Any:
    """Poll until the predicate is truthy and return its value, failing the test after the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")


def wait_finished(job_id: Any, timeout: float = 15) -> Job:
    """Wait until the job has left ``queued`` and ``processing``; the job as it ended."""
    unfinished = (Job.Status.QUEUED, Job.Status.PROCESSING)
    return wait_for(
        lambda: Job.objects.filter(id=job_id).exclude(status__in=unfinished).first(), timeout, f"job {job_id} to end"
    )


def settled(*jobs: Job, timeout: float = 30) -> list[Job]:
    """Wait until every job has a final status and is done with the provider; the jobs as they ended."""
    ids = [job.id for job in jobs]
    final = Job.objects.filter(id__in=ids, stage=Job.Stage.DONE, status__in=Job.FINISHED_STATUSES)
    wait_for(lambda: final.count() == len(ids), timeout=timeout, message="every job final and done")
    return [Job.objects.get(id=job_id) for job_id in ids]


def poll_until_finished(base: str, headers: dict[str, str], job_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll ``GET /api/jobs/{id}/`` on a live server, as a frontend would, until the job has ended; its JSON."""

    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = requests.get(f"{base}/api/jobs/{job_id}/", headers=headers, timeout=5).json()
        return job if job["status"] not in ("queued", "processing") else None

    return wait_for(finished, timeout=timeout, message=f"job {job_id} to end", interval=0.1)
