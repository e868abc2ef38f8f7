"""The poll chain: one poll of a running operation per message, the next one sent with a delay.

No thread waits while a video generates: each message polls once, renews the slot and schedules the next poll.
The first poll comes ``VIDEO_FIRST_POLL`` seconds after the start (near the model's shortest generation), then
one every ``VIDEO_POLL_INTERVAL`` seconds, so that a slot goes to the next video within about a poll interval of
the provider finishing. A stopping operation (its job ended) is polled the same way until the provider says it
ended, and keeps its slot meanwhile.
"""

from __future__ import annotations

import logging
import math
import time
from uuid import UUID

from django.conf import settings

from generation.dispatch import message_enqueue, message_new, message_send, message_send_on_commit
from generation.models import Job
from generation.providers import (
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    VideoOperation,
    get_video_provider,
)
from generation.videos import stages
from generation.videos.slots import video_slots

logger = logging.getLogger(__name__)


def video_poll(job_id: str, *, message_id: str) -> None:
    """Poll the job's operation once and act on the answer, if the message ``message_id`` owns the job's polling;
    a duplicate or stale message does nothing."""
    poll = UUID(message_id)
    job = stages.video_poll_claim(job_id=job_id, poll=poll)
    if job is None:
        return
    slots = video_slots()
    if not slots.acquire(str(job.id)):
        # Only when its lease ran out and a dispatcher gave the slot away meanwhile; the dispatcher adopts
        # operations before starting new ones, so this is a narrow race, worth an alarm.
        logger.error(
            "job %s: operation %s runs without a slot: all %d are taken", job.id, job.operation_name, slots.limit
        )
    if job.stage == Job.Stage.GENERATING and _past(job, settings.VIDEO_TIMEOUT):
        job = stages.video_generation_timed_out(job_id=job.id) or job
    provider = get_video_provider()
    try:
        operation = provider.poll(job.operation_name)
    except TransientProviderError as error:
        logger.warning("job %s: polling %s failed (%s); polling on", job.id, job.operation_name, error.code)
        operation = VideoOperation(done=False)
    except PermanentProviderError as error:
        # The operation can no longer be seen (gone, or no access): nothing is left to wait for.
        _ended(job.id, error)
        return
    if operation.done:
        _finished(job, operation)
    elif job.stage == Job.Stage.STOPPING and _past(job, settings.VIDEO_TIMEOUT + settings.VIDEO_STOP_GRACE):
        logger.warning("job %s: %s may still run at the provider; its slot is given back", job.id, job.operation_name)
        _ended(job.id, None)
    else:
        video_poll_schedule(job.id, poll=poll, delay=_next_poll_in(job))


def video_poll_schedule(job_id: UUID, *, poll: UUID | None, delay: float) -> None:
    """Send the job's next poll after ``delay`` seconds, once it owns the polling: taken over from ``poll``, or
    adopted from a chain that went quiet when ``poll`` is None."""
    message = message_new("poll_video", str(job_id))
    next_poll = UUID(message.message_id)
    if poll is None:
        owned = stages.video_poll_adopt(job_id=job_id, poll=next_poll)
    else:
        owned = stages.video_poll_later(job_id=job_id, poll=poll, next_poll=next_poll, delay=delay)
    if owned:
        message_enqueue(message, delay=delay)


def _next_poll_in(job: Job) -> float:
    """Seconds to the next point of the poll grid (the first poll, then every interval), so that the time a poll
    takes does not add up from one poll to the next."""
    assert job.started_at is not None
    interval = settings.VIDEO_POLL_INTERVAL
    since_first = time.time() - job.started_at.timestamp() - settings.VIDEO_FIRST_POLL
    return (math.floor(since_first / interval) + 1) * interval - since_first


def _past(job: Job, seconds: float) -> bool:
    assert job.started_at is not None
    return time.time() > job.started_at.timestamp() + seconds


def _finished(job: Job, operation: VideoOperation) -> None:
    if job.stage == Job.Stage.GENERATING and not operation.error_code:
        if stages.video_generated(job_id=job.id):
            message_send_on_commit("download_video", str(job.id))
        _slot_free(job.id)
        return
    error = None
    if operation.error_code:
        error = ProviderError(operation.error_message, code=operation.error_code)
    _ended(job.id, error)


def _ended(job_id: UUID, error: ProviderError | None) -> None:
    stages.video_operation_ended(job_id=job_id, error=error)
    _slot_free(job_id)


def _slot_free(job_id: UUID) -> None:
    """Give the operation's slot to the next video at once."""
    video_slots().release(str(job_id))
    # Sent rather than run here: a round's error must never touch this operation's delivery.
    message_send("dispatch_videos")


def video_operation_cancel(operation_name: str) -> None:
    """Ask the provider to stop a generation; best effort: a refusal is logged, never raised."""
    try:
        get_video_provider().cancel(operation_name)
    except ProviderError as error:
        logger.warning("the provider did not cancel %s: %s", operation_name, error.message)
