"""How a job ends, for every kind: failed, canceled by its owner or by its start deadline, refunded once.

Every ending locks the owner's credit account, then the job (``job_lock``), so that the job's final state and its
refund commit together.
"""

from __future__ import annotations

import logging
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from credits.services import credit_account_lock, credit_refund
from generation.dispatch import message_send_on_commit
from generation.errors import JobAlreadyFinished, JobNotFound
from generation.events import job_changed, video_positions_changed
from generation.models import Job

logger = logging.getLogger(__name__)

# Jobs past their start deadline are canceled this many at a time, so that one sweep stays short.
_DEADLINE_BATCH = 200


def job_deadlines_enforce() -> int:
    """Cancel with a full refund every job that did not start by its start deadline; how many were."""
    late = Job.objects.filter(start_deadline_at__lte=timezone.now(), status=Job.Status.QUEUED, started_at__isnull=True)
    return sum(
        1 for job_id in late.values_list("id", flat=True)[:_DEADLINE_BATCH] if _job_deadline_cancel(job_id=job_id)
    )


@transaction.atomic(durable=True)
def _job_deadline_cancel(*, job_id: UUID) -> bool:
    job = job_lock(job_id=job_id)
    # Checked again under the lock: a worker may have started the job since it was read.
    if job is None or job.status != Job.Status.QUEUED or job.started_at is not None:
        return False
    if job.start_deadline_at is None or job.start_deadline_at > timezone.now():
        return False
    job_finish(
        job=job,
        status=Job.Status.CANCELED,
        error_code="deadline_exceeded",
        error_message="The job did not start before its start deadline.",
        refund=job.undelivered_cost,
        note="start deadline passed",
    )
    logger.info("job %s canceled: it did not start by its deadline", job.id)
    return True


def job_lock(*, job_id: UUID | str, user_id: int | None = None) -> Job | None:
    """Lock the job's owner's credit account, then the job; None when no such job (of that user) exists."""
    owners = Job.objects.filter(id=job_id)
    if user_id is not None:
        owners = owners.filter(user_id=user_id)
    owner_id = owners.values_list("user_id", flat=True).first()
    if owner_id is None:
        return None
    # Lock order everywhere: the credit account, then the job.
    credit_account_lock(user_id=owner_id)
    return Job.objects.select_for_update().get(id=job_id)


def job_finish(*, job: Job, status: str, error_code: str, error_message: str, refund: int, note: str) -> None:
    """End a locked, unfinished job in a final status and refund ``refund`` credits, once.

    A video whose operation the provider may still be running (its start call is out, or it is generating) moves
    to ``stopping``: its slot stays taken until the provider says the operation ended, whatever became of the job.
    """
    was_waiting_video = job.stage == Job.Stage.WAITING
    operation_may_run = job.stage in Job.OPERATION_STAGES
    job.status = status
    job.finished_at = timezone.now()
    job.lease_expires_at = None
    job.next_run_at = None
    job.error_code = error_code
    job.error_message = error_message
    if job.kind == Job.Kind.VIDEO:
        job.stage = Job.Stage.STOPPING if operation_may_run else Job.Stage.DONE
    if job.stage != Job.Stage.STOPPING:
        job.claim_token = None
    job.save()
    if refund > 0:
        credit_refund(user_id=job.user_id, job_id=job.id, amount=refund, note=note)
    job_changed(job_id=job.id)
    if was_waiting_video:
        video_positions_changed()
    if operation_may_run and job.operation_name:
        # The poller keeps polling it (and holding its slot) until the provider confirms it ended.
        message_send_on_commit("cancel_video_operation", job.operation_name)


def job_fail_locked(*, job: Job, error_code: str, error_message: str) -> None:
    """End a locked, unfinished job as failed, refunding what it did not deliver."""
    undelivered = job.quantity - job.result_count
    job_finish(
        job=job,
        status=Job.Status.FAILED,
        error_code=error_code,
        error_message=error_message,
        refund=job.undelivered_cost,
        note=f"{undelivered} of {job.quantity} undelivered",
    )
    logger.warning("job %s failed (%s): %s; %d result(s) refunded", job.id, error_code, error_message, undelivered)


@transaction.atomic(durable=True)
def job_fail(*, job_id: UUID | str, error_code: str, error_message: str, claim_token: UUID | None = None) -> Job | None:
    """End an unfinished job as failed and refund what it did not deliver; None when it had already finished, or
    when ``claim_token`` is given and the job is no longer that claim's."""
    job = job_lock(job_id=job_id)
    if job is None or job.is_finished:
        return None
    if claim_token is not None and job.claim_token != claim_token:
        return None
    job_fail_locked(job=job, error_code=error_code, error_message=error_message)
    return job


def job_cancel_refund(*, job: Job) -> int:
    """What a cancel gives back: every undelivered result, except half of a video the provider may be running.

    A video whose start call has gone out costs the service at the provider whether or not it is kept, so canceling
    it from then on refunds half its price; anything that has not reached the provider is refunded in full.
    """
    if job.stage in (*Job.OPERATION_STAGES, Job.Stage.DOWNLOADING):
        return job.undelivered_cost // 2
    return job.undelivered_cost


@transaction.atomic(durable=True)
def job_cancel(*, job_id: UUID | str, user_id: int) -> Job:
    """Cancel the user's unfinished job and refund per the cancel policy; a video at the provider is stopped too."""
    job = job_lock(job_id=job_id, user_id=user_id)
    if job is None:
        raise JobNotFound()
    if job.is_finished:
        raise JobAlreadyFinished()
    refund = job_cancel_refund(job=job)
    job_finish(
        job=job,
        status=Job.Status.CANCELED,
        error_code="canceled",
        error_message="Canceled by the user.",
        refund=refund,
        note="canceled",
    )
    logger.info("job %s canceled by its owner; %d credits refunded", job.id, refund)
    return job
