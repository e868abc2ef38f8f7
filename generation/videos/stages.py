"""Every transition of a video's stage, each a conditional update from the stage it expects.

    preparing ─▶ waiting ─▶ starting ─▶ generating ─▶ downloading ─▶ done
        │           ▲  │        │  │          │                │
        │           └──┼────────┘  └──▶ stopping ◀─────────────┘(job ended while the provider may run it)
        └──────────────┴──────────────────────┴──▶ done (failed or canceled, nothing at the provider)

Owners: ``preparing`` and ``downloading`` belong to the worker holding the job's claim token and lease (the
reconciler re-sends the message when the lease runs out); ``waiting`` and ``starting`` to the dispatcher, which
alone starts operations (a ``starting`` job whose dispatcher died is an ambiguous start); ``generating`` and
``stopping`` to the poll chain, whose slot lease every poll renews (the dispatcher adopts a running operation
whose lease ran out before it starts anything new). The job's public ``status`` moves along: queued while
preparing or waiting, processing from starting to downloading, final once done or stopping.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from uuid import UUID, uuid4

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from core.leases import renewed_in_background
from generation.events import job_changed, video_positions_changed
from generation.models import Job
from generation.providers.base import GeneratedFile, ProviderError, TransientProviderError
from generation.services.endings import job_fail_locked, job_lock
from generation.services.jobs import generation_record, job_before_start_deadline, job_complete

logger = logging.getLogger(__name__)

# Broker timers and the database clock are read on different machines: a message that arrives this much before
# the time it was meant for still counts as on time.
_EARLY_TOLERANCE = timedelta(seconds=1)


def _due(now: object) -> Q:
    return Q(next_run_at__isnull=True) | Q(next_run_at__lte=now)


def _unleased(now: object) -> Q:
    return Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now)


def _lease(seconds: float) -> object:
    return timezone.now() + timedelta(seconds=seconds)


# --- preparing: fetching the frames, by whoever holds the claim ---------------------------------------------


def _leased_claim(*, job_id: UUID | str, stage: str, lease_seconds: float) -> UUID | None:
    """Claim a due job in ``stage`` that no live lease holds, under a new token, for ``lease_seconds``."""
    now = timezone.now()
    token = uuid4()
    claimed = (
        Job.objects.filter(id=job_id, stage=stage)
        .filter(_due(now + _EARLY_TOLERANCE), _unleased(now))
        .update(claim_token=token, lease_expires_at=_lease(lease_seconds), next_run_at=None, updated_at=now)
    )
    return token if claimed else None


def video_prepare_claim(*, job_id: UUID | str, lease_seconds: float) -> UUID | None:
    """Claim a due video that still needs its frames, for ``lease_seconds``; its claim token, or None."""
    if not Job.objects.filter(job_before_start_deadline(timezone.now()), id=job_id).exists():
        return None
    return _leased_claim(job_id=job_id, stage=Job.Stage.PREPARING, lease_seconds=lease_seconds)


@transaction.atomic(durable=True)
def video_prepared(*, job_id: UUID | str, claim_token: UUID, frames: dict[str, dict[str, str]]) -> bool:
    """Record the stored frames and put the video in line for a slot; False when the claim was lost."""
    job = Job.objects.select_for_update().filter(id=job_id, claim_token=claim_token, stage=Job.Stage.PREPARING).first()
    if job is None:
        return False
    job.params = {**job.params, "frames": frames}
    job.stage = Job.Stage.WAITING
    job.claim_token = None
    job.lease_expires_at = None
    job.save(update_fields=["params", "stage", "claim_token", "lease_expires_at", "updated_at"])
    job_changed(job_id=job.id)
    video_positions_changed()
    logger.info("job %s: frames stored, waiting for a slot", job.id)
    return True


# --- waiting -> starting -> generating: the dispatcher ------------------------------------------------------


def video_start_intent(*, job_id: UUID | str) -> UUID | None:
    """Write the intent to start a waiting video before the provider call; the attempt's claim token, or None."""
    now = timezone.now()
    token = uuid4()
    claimed = (
        Job.objects.filter(id=job_id, stage=Job.Stage.WAITING, status=Job.Status.QUEUED)
        .filter(_due(now), job_before_start_deadline(now))
        .update(
            stage=Job.Stage.STARTING,
            status=Job.Status.PROCESSING,
            claim_token=token,
            started_at=now,
            next_run_at=None,
            operation_name="",
            updated_at=now,
        )
    )
    if not claimed:
        return None
    job_changed(job_id=job_id)
    return token


@transaction.atomic(durable=True)
def video_started(*, job_id: UUID | str, claim_token: UUID, operation_name: str, poll: UUID) -> Job | None:
    """Record the operation the provider started, even for a job that ended during the call (it is then stopped),
    and hand the job to the poll message ``poll``; the job, or None when this attempt is not the job's any more."""
    job = Job.objects.select_for_update().filter(id=job_id, claim_token=claim_token).first()
    if job is None or job.stage not in (Job.Stage.STARTING, Job.Stage.STOPPING):
        return None
    now = timezone.now()
    job.operation_name = operation_name
    job.claim_token = poll
    if job.stage == Job.Stage.STARTING:
        job.stage = Job.Stage.GENERATING
        job.started_at = now
        job.next_poll_at = now + timedelta(seconds=settings.VIDEO_FIRST_POLL)
    else:
        job.next_poll_at = now
    job.save(update_fields=["operation_name", "claim_token", "stage", "started_at", "next_poll_at", "updated_at"])
    job_changed(job_id=job.id)
    logger.info("job %s started at the provider as %s (%s)", job.id, operation_name, job.stage)
    return job


@transaction.atomic(durable=True)
def video_start_abandoned(*, job_id: UUID | str, claim_token: UUID, error: ProviderError) -> float | None:
    """End a start attempt that left no known operation: back in line on the backoff schedule for a transient
    error, failed with a full refund otherwise or once retries are used up; the delay before the next try, or
    None."""
    job = job_lock(job_id=job_id)
    if job is None or job.claim_token != claim_token:
        return None
    if job.stage == Job.Stage.STOPPING:
        # The job ended during the call and was already refunded; no operation is known to stop.
        _done(job)
        return None
    if job.stage != Job.Stage.STARTING:
        return None
    delay = _retry_delay(job, error)
    if delay is None:
        # Nothing is known to run at the provider: an ambiguous start holds a slot of its own meanwhile.
        job.stage = Job.Stage.DONE
        job_fail_locked(job=job, error_code=error.code, error_message=error.message)
        return None
    job.stage = Job.Stage.WAITING
    job.status = Job.Status.QUEUED
    job.started_at = None
    _retry_later(job, delay, error)
    video_positions_changed()
    return delay


def _done(job: Job) -> None:
    job.stage = Job.Stage.DONE
    job.claim_token = None
    job.next_poll_at = None
    job.save(update_fields=["stage", "claim_token", "next_poll_at", "updated_at"])
    job_changed(job_id=job.id)


def _retry_delay(job: Job, error: ProviderError) -> float | None:
    delays = settings.IMAGE_RETRY_DELAYS
    if not isinstance(error, TransientProviderError) or job.retries >= len(delays):
        return None
    # A provider that says how long to wait (Gemini's RetryInfo) is listened to.
    return max(delays[job.retries], error.retry_after or 0)


def _retry_later(job: Job, delay: float, error: ProviderError) -> None:
    job.retries += 1
    job.next_run_at = timezone.now() + timedelta(seconds=delay)
    job.claim_token = None
    job.lease_expires_at = None
    job.error_code = error.code
    job.error_message = error.message
    job.save()
    job_changed(job_id=job.id)
    logger.warning("job %s: %s retry %d in %.1f s after %s", job.id, job.stage, job.retries, delay, error.code)


@transaction.atomic(durable=True)
def video_retry_or_fail(*, job_id: UUID | str, claim_token: UUID, error: ProviderError) -> float | None:
    """After a failed frame fetch or download, retry in the same stage on the backoff schedule, or fail with a
    refund; the delay before the next try, or None."""
    job = job_lock(job_id=job_id)
    if job is None or job.claim_token != claim_token or job.is_finished:
        return None
    delay = _retry_delay(job, error)
    if delay is None:
        job_fail_locked(job=job, error_code=error.code, error_message=error.message)
        return None
    _retry_later(job, delay, error)
    return delay


# --- generating / stopping: the poll chain ------------------------------------------------------------------


_POLLED = (Job.Stage.GENERATING, Job.Stage.STOPPING)


def video_poll_claim(*, job_id: UUID | str, poll: UUID) -> Job | None:
    """The running job, when ``poll`` is the message that owns its next poll; None for any other message (a
    duplicate, or one of a chain that was replaced) and for a finished operation."""
    claimed = Job.objects.filter(id=job_id, stage__in=_POLLED, claim_token=poll).exclude(operation_name="")
    # Until the poll schedules the next one, the job counts as polled one slot lease from now.
    if not claimed.update(next_poll_at=_lease(settings.VIDEO_SLOT_LEASE)):
        return None
    return claimed.first()


def video_poll_later(*, job_id: UUID | str, poll: UUID, next_poll: UUID, delay: float) -> bool:
    """Hand the job's polling from the message ``poll`` to ``next_poll``, due in ``delay`` seconds; False when
    ``poll`` no longer owns it."""
    return bool(
        Job.objects.filter(id=job_id, stage__in=_POLLED, claim_token=poll).update(
            claim_token=next_poll, next_poll_at=_lease(delay)
        )
    )


def video_poll_adopt(*, job_id: UUID | str, poll: UUID) -> bool:
    """Give a running job whose poll chain went quiet to a new poll message; any message of the old chain that
    turns up later is dropped."""
    return bool(
        Job.objects.filter(id=job_id, stage__in=_POLLED)
        .exclude(operation_name="")
        .update(claim_token=poll, next_poll_at=timezone.now())
    )


@transaction.atomic(durable=True)
def video_generation_timed_out(*, job_id: UUID | str) -> Job | None:
    """Fail a generation that outran ``VIDEO_TIMEOUT``; it moves to stopping, keeping its slot."""
    job = job_lock(job_id=job_id)
    if job is None or job.stage != Job.Stage.GENERATING:
        return None
    job_fail_locked(
        job=job,
        error_code="timeout",
        error_message=f"The provider did not finish the video within {settings.VIDEO_TIMEOUT:g} s.",
    )
    return job


def video_generated(*, job_id: UUID | str) -> bool:
    """Hand a finished generation over to its download; its slot is free from here on."""
    handed = Job.objects.filter(id=job_id, stage=Job.Stage.GENERATING, status=Job.Status.PROCESSING).update(
        stage=Job.Stage.DOWNLOADING,
        next_poll_at=None,
        claim_token=None,
        lease_expires_at=None,
        updated_at=timezone.now(),
    )
    if handed:
        job_changed(job_id=job_id)
    return bool(handed)


@transaction.atomic(durable=True)
def video_operation_ended(*, job_id: UUID | str, error: ProviderError | None = None) -> Job | None:
    """The provider says the operation ended without a video (or can no longer see it): a generating job fails
    with a refund, a stopping one is done."""
    job = job_lock(job_id=job_id)
    if job is None or job.stage not in (Job.Stage.GENERATING, Job.Stage.STOPPING):
        return None
    if job.is_finished:
        _done(job)
        return job
    # The provider says the operation ended: nothing is left to stop.
    job.stage = Job.Stage.DONE
    error = error or ProviderError("The provider ended the generation without a video.", code="operation_failed")
    job_fail_locked(job=job, error_code=error.code, error_message=error.message)
    return job


# --- downloading: whoever holds the claim -------------------------------------------------------------------


def video_download_claim(*, job_id: UUID | str, lease_seconds: float) -> Job | None:
    """Claim a finished generation's due download for ``lease_seconds``; the job with its token, or None."""
    claimed = _leased_claim(job_id=job_id, stage=Job.Stage.DOWNLOADING, lease_seconds=lease_seconds)
    return Job.objects.get(id=job_id) if claimed else None


@contextmanager
def video_lease_kept(*, job_id: UUID | str, claim_token: UUID, lease_seconds: float) -> Iterator[None]:
    """Renew the claim's lease every third of it while the block runs (a frame fetch, a download)."""

    def renew() -> bool:
        try:
            leased = Job.objects.filter(id=job_id, claim_token=claim_token)
            return bool(leased.update(lease_expires_at=_lease(lease_seconds)))
        finally:
            # The renewing thread gives its database connection back at once: a worker has few of them.
            connection.close()

    with renewed_in_background(renew, period=lease_seconds / 3, name=f"lease-{job_id}"):
        yield


def video_delivered(*, job_id: UUID | str, claim_token: UUID, video: GeneratedFile) -> bool:
    """Store the video and complete the job; idempotent: a video stored by an earlier attempt completes it too."""
    generation_record(job_id=job_id, claim_token=claim_token, index=0, result=video)
    with transaction.atomic(durable=True):
        job = Job.objects.select_for_update().filter(id=job_id, claim_token=claim_token).first()
        if job is None or job.stage != Job.Stage.DOWNLOADING or not job.generations.filter(index=0).exists():
            return False
        job.stage = Job.Stage.DONE
        job.save(update_fields=["stage", "updated_at"])
        return job_complete(job_id=job_id, claim_token=claim_token)
