"""Writes specific to video jobs: create within the per-user cap, claim in order, record the provider's operation."""

from __future__ import annotations

import logging
from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from generation.errors import TooManyQueuedVideos
from generation.models import Job
from generation.providers.base import TransientProviderError
from generation.services.jobs import (
    job_changed,
    job_fail,
    job_open,
    job_retry_schedule,
    video_positions_changed,
)

logger = logging.getLogger(__name__)


@transaction.atomic
def video_job_create(
    *,
    user_id: int,
    prompt: str,
    aspect_ratio: str,
    duration: int,
    negative_prompt: str = "",
    start_frame: str = "",
    end_frame: str = "",
    project_id: str = "",
    idempotency_key: str = "",
) -> Job:
    """Charge the user for a video and put it in line, unless the user already has too many waiting."""

    def admit() -> None:
        # Runs under the account lock that job_open takes, so two requests cannot both slip under the cap.
        waiting = Job.objects.filter(user_id=user_id, kind=Job.Kind.VIDEO, status=Job.Status.QUEUED).count()
        limit = settings.VIDEO_MAX_QUEUED_PER_USER
        if waiting >= limit:
            raise TooManyQueuedVideos(TooManyQueuedVideos.default_message % {"limit": limit}, extra={"limit": limit})

    job = job_open(
        idempotency_key=idempotency_key,
        admit=admit,
        user_id=user_id,
        kind=Job.Kind.VIDEO,
        prompt=prompt,
        params={
            "aspect_ratio": aspect_ratio,
            "duration": duration,
            "negative_prompt": negative_prompt,
            "start_frame": start_frame,
            "end_frame": end_frame,
        },
        quantity=1,
        credit_cost=settings.CREDITS_PER_VIDEO,
        project_id=project_id,
    )
    logger.info("job %s queued: %d s video for user %s, %d credits", job.id, duration, user_id, job.credit_cost)
    return job


def video_job_claim(*, job_id: UUID | str) -> bool:
    """Move a due queued video to processing, for the dispatcher that holds its slot."""
    now = timezone.now()
    claimed = Job.objects.filter(id=job_id, kind=Job.Kind.VIDEO, status=Job.Status.QUEUED).update(
        status=Job.Status.PROCESSING, started_at=now, next_run_at=None, operation_name="", updated_at=now
    )
    if claimed:
        job_changed(job_id=job_id)
    return bool(claimed)


def video_job_started(*, job_id: UUID | str, operation_name: str) -> bool:
    """Record the provider's operation, so that a worker that dies later resumes it instead of paying again."""
    now = timezone.now()
    recorded = Job.objects.filter(id=job_id, status=Job.Status.PROCESSING, operation_name="").update(
        operation_name=operation_name, started_at=now, updated_at=now
    )
    if recorded:
        logger.info("job %s started at the provider as %s", job_id, operation_name)
    return bool(recorded)


def video_job_delivering(*, job_id: UUID | str) -> None:
    """Lease a finished generation's download to its watcher for one slot lease, after which another may take it."""
    lease = timezone.now() + timedelta(seconds=settings.VIDEO_SLOT_LEASE)
    Job.objects.filter(id=job_id, status=Job.Status.PROCESSING).update(lease_expires_at=lease)


def video_job_requeue(*, job_id: UUID | str) -> bool:
    """Put back in line a video whose dispatcher died before the provider call: waiting costs no retry."""
    now = timezone.now()
    requeued = Job.objects.filter(id=job_id, status=Job.Status.PROCESSING, operation_name="").update(
        status=Job.Status.QUEUED, started_at=None, updated_at=now
    )
    if requeued:
        job_changed(job_id=job_id)
        video_positions_changed()
        logger.warning("job %s was claimed by a dispatcher that died; back in line", job_id)
    return bool(requeued)


def video_start_failed(*, job: Job, error: TransientProviderError) -> float | None:
    """After a transient start error, schedule the next try (the delay in seconds) or fail the job with a refund."""
    delays = settings.IMAGE_RETRY_DELAYS
    if job.retries >= len(delays):
        job_fail(job_id=job.id, error_code=error.code, error_message=error.message)
        return None
    # A provider that says how long to wait (Gemini's RetryInfo) is listened to.
    delay = max(delays[job.retries], error.retry_after or 0)
    job_retry_schedule(
        job_id=job.id, retries=job.retries + 1, delay=delay, error_code=error.code, error_message=error.message
    )
    return delay
