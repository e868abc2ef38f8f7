"""Writes shared by every kind of job while it runs: open, claim, record results, complete, retry, recover.

How a job ends (fail, cancel, deadline) is in ``generation.services.endings``."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from credits.services import credit_account_lock, credit_charge
from generation.dispatch import job_dispatch
from generation.errors import IdempotencyKeyReused, JobAlreadyFinished
from generation.events import job_changed
from generation.models import Generation, Job
from generation.providers.base import GeneratedFile
from generation.services.endings import job_fail_locked, job_lock

logger = logging.getLogger(__name__)

# Broker timers and the database clock are read on different machines: a retry message that
# arrives this much before the job's next_run_at still counts as on time.
_CLAIM_EARLY_TOLERANCE = timedelta(seconds=1)


def _request_hash(fields: dict[str, Any]) -> str:
    # What the client asked for, not what it costs: a price change must not make a retry look different.
    asked = {name: value for name, value in fields.items() if name not in ("user_id", "credit_cost")}
    return hashlib.sha256(json.dumps(asked, sort_keys=True, default=str).encode()).hexdigest()


def job_open(
    *,
    idempotency_key: str = "",
    admit: Callable[[], None] | None = None,
    start_within_seconds: int | None = None,
    **fields: Any,
) -> Job:
    """Insert a job, charge its owner for it and wake a worker after commit; call it inside the creating transaction.

    With an idempotency key already used by the same user, the first job comes back and nothing is charged;
    otherwise ``admit`` may refuse the request by raising, before anything is written. A job that has not
    started ``start_within_seconds`` from now is canceled with a full refund.
    """
    if idempotency_key or admit is not None:
        # The account lock serialises this user's requests: the key lookup and the admission check below cannot
        # race with another request's charge. Without either, the charge takes the lock itself.
        credit_account_lock(user_id=fields["user_id"])
    request_hash = _request_hash({**fields, "start_within_seconds": start_within_seconds})
    if idempotency_key:
        earlier = Job.objects.filter(user_id=fields["user_id"], idempotency_key=idempotency_key).first()
        if earlier is not None:
            if earlier.request_hash != request_hash:
                raise IdempotencyKeyReused()
            return earlier
    if admit is not None:
        admit()
    if start_within_seconds is not None:
        fields["start_deadline_at"] = timezone.now() + timedelta(seconds=start_within_seconds)
    job = Job.objects.create(idempotency_key=idempotency_key, request_hash=request_hash, **fields)
    if job.credit_cost:
        credit_charge(user_id=job.user_id, amount=job.credit_cost, job_id=job.id)
    job_dispatch(job=job)
    job_changed(job_id=job.id, job=job)
    return job


def job_claim(*, job_id: UUID | str) -> Job | None:
    """Take a due queued image job (or one whose worker's lease ran out) for this worker, under a new claim token;
    None when not ours to run."""
    now = timezone.now()
    due = (
        Q(status=Job.Status.QUEUED)
        & (Q(next_run_at__isnull=True) | Q(next_run_at__lte=now + _CLAIM_EARLY_TOLERANCE))
        & (job_before_start_deadline(now) | Q(started_at__isnull=False))
    )
    abandoned = Q(status=Job.Status.PROCESSING, lease_expires_at__lt=now)
    # One conditional UPDATE: of two workers holding the same message, only one sees a row changed.
    claimed = Job.objects.filter(due | abandoned, id=job_id, kind=Job.Kind.IMAGE).update(
        claim_token=uuid4(),
        status=Job.Status.PROCESSING,
        started_at=Coalesce("started_at", now),
        lease_expires_at=now + timedelta(seconds=settings.JOB_LEASE_SECONDS),
        next_run_at=None,
        updated_at=now,
    )
    if not claimed:
        return None
    logger.info("job %s claimed", job_id)
    job_changed(job_id=job_id)
    return Job.objects.get(id=job_id)


def job_before_start_deadline(now: datetime) -> Q:
    """The jobs that may still start at ``now``: those without a start deadline or before it."""
    return Q(start_deadline_at__isnull=True) | Q(start_deadline_at__gt=now)


def job_missing_indexes(*, job: Job) -> list[int]:
    """The result indexes of a job that have not been delivered yet."""
    delivered = set(job.generations.values_list("index", flat=True))
    return [index for index in range(job.quantity) if index not in delivered]


def generation_record(*, job_id: UUID | str, claim_token: UUID, index: int, result: GeneratedFile) -> Generation | None:
    """Store one result and count it on the job; None when the job is no longer processing under this claim (stop
    working on it) or already holds that result."""
    job = Job.objects.get(id=job_id)
    name = default_storage.save(
        f"generations/{job.user_id}/{job.id}/{index}.{result.extension}", ContentFile(result.content)
    )
    with transaction.atomic(durable=True):
        # The row lock orders concurrent deliveries for the same job, so the count and the URL list stay exact.
        job = Job.objects.select_for_update().get(id=job_id)
        if (
            job.status != Job.Status.PROCESSING
            or job.claim_token != claim_token
            or job.generations.filter(index=index).exists()
        ):
            transaction.on_commit(lambda: default_storage.delete(name))
            return None
        generation = Generation.objects.create(
            job=job,
            user_id=job.user_id,
            index=index,
            file=name,
            mime_type=result.mime_type,
            size=len(result.content),
            prompt=job.prompt,
        )
        job.result_count += 1
        job.lease_expires_at = timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS)
        job.save(update_fields=["result_count", "lease_expires_at", "updated_at"])
    logger.info("job %s delivered result %d of %d", job.id, job.result_count, job.quantity)
    job_changed(job_id=job.id)
    return generation


def job_complete(*, job_id: UUID | str, claim_token: UUID) -> bool:
    """Mark a processing job completed; False when it had already left processing or this claim."""
    now = timezone.now()
    completed = Job.objects.filter(id=job_id, status=Job.Status.PROCESSING, claim_token=claim_token).update(
        status=Job.Status.COMPLETED,
        finished_at=now,
        lease_expires_at=None,
        error_code="",
        error_message="",
        updated_at=now,
    )
    if completed:
        logger.info("job %s completed", job_id)
        job_changed(job_id=job_id)
    return bool(completed)


def job_retry_schedule(
    *, job_id: UUID | str, claim_token: UUID | None, delay: float, error_code: str, error_message: str
) -> bool:
    """Put a processing job claimed under ``claim_token`` back in the queue until its next attempt is due, counting
    the retry on the job; False when the job is no longer this claim's."""
    now = timezone.now()
    scheduled = Job.objects.filter(id=job_id, status=Job.Status.PROCESSING, claim_token=claim_token).update(
        status=Job.Status.QUEUED,
        # Counted by the database, never taken from a message: a late worker cannot move it backwards.
        retries=F("retries") + 1,
        next_run_at=now + timedelta(seconds=delay),
        lease_expires_at=None,
        claim_token=None,
        error_code=error_code,
        error_message=error_message,
        updated_at=now,
    )
    if scheduled:
        job_changed(job_id=job_id)
        logger.warning("job %s: retry in %.1f s after %s: %s", job_id, delay, error_code, error_message)
    return bool(scheduled)


@transaction.atomic(durable=True)
def job_recover(*, job_id: UUID | str) -> Job.Status | None:
    """Put an image job whose worker stopped renewing its lease back in line for its next retry, or fail it with
    a refund when no retry is left; the job's new status, or None when it was no longer abandoned."""
    job = job_lock(job_id=job_id)
    # Checked under the row lock: a worker that renewed its lease meanwhile keeps its job.
    if job is None or job.status != Job.Status.PROCESSING or not job.lease_expired:
        return None
    delays = settings.IMAGE_RETRY_DELAYS
    message = "The worker handling this job stopped responding."
    if job.retries >= len(delays):
        job_fail_locked(job=job, error_code="worker_lost", error_message=message)
        return Job.Status.FAILED
    delay = delays[job.retries]
    job.status = Job.Status.QUEUED
    job.retries += 1
    job.next_run_at = timezone.now() + timedelta(seconds=delay)
    job.lease_expires_at = None
    job.claim_token = None
    job.error_code = "worker_lost"
    job.error_message = message
    job.save()
    job_dispatch(job=job, delay=delay)
    job_changed(job_id=job.id)
    logger.warning("job %s lost its worker; retry %d in %.1f s", job.id, job.retries, delay)
    return Job.Status.QUEUED


@transaction.atomic(durable=True)
def job_retry_now(*, job_id: UUID | str) -> Job:
    """Make a queued job due at once and wake a worker for it (an operator's "retry now")."""
    job = Job.objects.select_for_update().get(id=job_id)
    if job.is_finished:
        raise JobAlreadyFinished()
    if job.status == Job.Status.QUEUED:
        job.next_run_at = None
        job.save(update_fields=["next_run_at", "updated_at"])
    job_dispatch(job=job)
    return job
