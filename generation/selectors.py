"""Reads of jobs and generations."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import Q, QuerySet
from django.utils import timezone

from generation.errors import JobNotFound
from generation.models import Generation, Job


def job_list(*, user_id: int, filters: dict[str, Any] | None = None) -> QuerySet[Job]:
    """The user's jobs, newest first, optionally narrowed by project_id, status and kind."""
    jobs = Job.objects.filter(user_id=user_id)
    for field in ("project_id", "status", "kind"):
        value = (filters or {}).get(field)
        if value:
            jobs = jobs.filter(**{field: value})
    return jobs.order_by("-created_at")


def job_get(*, user_id: int, job_id: UUID | str) -> Job:
    """The user's job with that id, or JobNotFound: another user's job does not exist for the caller."""
    job = Job.objects.filter(user_id=user_id, id=job_id).first()
    if job is None:
        raise JobNotFound()
    return job


def generation_list(*, user_id: int, project_id: str = "") -> QuerySet[Generation]:
    """The user's generated files, newest first."""
    generations = Generation.objects.filter(user_id=user_id).select_related("job")
    if project_id:
        generations = generations.filter(job__project_id=project_id)
    return generations.order_by("-created_at", "index")


def job_position(*, job: Job) -> int | None:
    """A queued video's place in the line (1 = next to start), counting the queued videos created before it."""
    if job.kind != Job.Kind.VIDEO or job.status != Job.Status.QUEUED:
        return None
    ahead = Job.objects.filter(kind=Job.Kind.VIDEO, status=Job.Status.QUEUED, created_at__lt=job.created_at).count()
    return ahead + 1


def video_job_next_due() -> Job | None:
    """The video that should start next: the oldest queued video that is not waiting for a retry."""
    now = timezone.now()
    return (
        Job.objects.filter(kind=Job.Kind.VIDEO, status=Job.Status.QUEUED)
        .filter(Q(next_run_at__isnull=True) | Q(next_run_at__lte=now))
        .order_by("created_at", "id")
        .first()
    )


def video_jobs_processing() -> QuerySet[Job]:
    """The videos that are running (or about to run) at the provider, oldest first."""
    return Job.objects.filter(kind=Job.Kind.VIDEO, status=Job.Status.PROCESSING).order_by("started_at", "id")
