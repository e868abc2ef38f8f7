"""Estimates of when a queued job will start and finish, from measured recent durations and the work ahead of it.

A duration is the median time from start to finish of the last ``RECENT`` completed jobs of the same kind (and
model, for videos). Images start as soon as a worker takes them (or their retry is due). Videos start when a slot
frees: the line is played forward, each waiting video taking the slot that frees first, the running ones freeing
theirs once their median duration has passed since their start.
"""

from __future__ import annotations

import heapq
import statistics
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from generation.models import Job

RECENT = 50
# Until a job of the kind has completed, a guess: the local image provider's second, a typical Veo minute.
DEFAULT_SECONDS = {Job.Kind.IMAGE: 10.0, Job.Kind.VIDEO: 60.0}
# Medians are read again at most this often per process: a queue's snapshot asks for them once per job.
_CACHE_SECONDS = 5.0
_cache: dict[tuple[str, str], tuple[float, float]] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class Estimate:
    """When a queued job should start and finish."""

    start_at: datetime
    finish_at: datetime


def recent_duration(*, kind: str, model: str = "") -> float:
    """The median seconds from start to finish of the last ``RECENT`` completed jobs of this kind (and model)."""
    key = (kind, model)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and time.monotonic() - cached[1] < _CACHE_SECONDS:
        return cached[0]
    completed = Job.objects.filter(kind=kind, status=Job.Status.COMPLETED, started_at__isnull=False)
    if model:
        completed = completed.filter(params__model=model)
    spans = completed.order_by("-finished_at").values_list("started_at", "finished_at")[:RECENT]
    durations = [(finished - started).total_seconds() for started, finished in spans if started and finished]
    if durations:
        median = statistics.median(durations)
    else:
        # A model nobody used lately is assumed to take as long as its kind does.
        median = recent_duration(kind=kind) if model else DEFAULT_SECONDS[Job.Kind(kind)]
    with _cache_lock:
        _cache[key] = (median, time.monotonic())
    return median


def job_estimate(*, job: Job) -> Estimate | None:
    """When the job should start and finish, while it is queued; None otherwise, or while a video prepares."""
    if job.status != Job.Status.QUEUED:
        return None
    if job.kind == Job.Kind.VIDEO:
        return video_line_estimates().get(job.id)
    now = timezone.now()
    start = max(now, job.next_run_at or now)
    return Estimate(start, start + timedelta(seconds=recent_duration(kind=Job.Kind.IMAGE)))


def video_line_estimates() -> dict[object, Estimate]:
    """The estimate of every video waiting in line, from the slots' expected release and the line's order."""
    now = timezone.now()
    running = Job.objects.filter(stage__in=Job.OPERATION_STAGES).values_list("started_at", "params__model")
    # Seconds from now until each slot frees; a running video past its median is expected to end any moment.
    frees = [_video_duration(model) - (now - started).total_seconds() if started else 0.0 for started, model in running]
    frees = [max(0.0, free) for free in frees]
    slots = sorted(frees)[: settings.VIDEO_MAX_CONCURRENT]
    slots += [0.0] * (settings.VIDEO_MAX_CONCURRENT - len(slots))
    heapq.heapify(slots)
    estimates: dict[object, Estimate] = {}
    waiting = Job.objects.filter(stage=Job.Stage.WAITING).order_by("created_at", "id")
    for job_id, next_run_at, model in waiting.values_list("id", "next_run_at", "params__model"):
        due = max(0.0, (next_run_at - now).total_seconds()) if next_run_at else 0.0
        duration = _video_duration(model)
        start = max(heapq.heappop(slots), due)
        heapq.heappush(slots, start + duration)
        estimates[job_id] = Estimate(now + timedelta(seconds=start), now + timedelta(seconds=start + duration))
    return estimates


def _video_duration(model: str | None) -> float:
    return recent_duration(kind=Job.Kind.VIDEO, model=model or "")
