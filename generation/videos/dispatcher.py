"""The dispatcher: starts waiting videos in order within the cluster's slots, one round at a time.

A round reads the database and Redis and makes the provider's start calls, nothing else: frames were fetched and
stored before the video joined the line (generation/videos/preparing.py). A slot stands for an operation the
provider may be running, from before its start call until the provider says it ended; so before anything new
starts, a round gives back their slots to the operations whose poll chain went quiet, and turns the start calls of a
dispatcher that died into ambiguous starts.
"""

from __future__ import annotations

import logging
from uuid import UUID

from django.conf import settings
from django.core.files.storage import default_storage

from core.leases import SlotLimiter
from generation import selectors
from generation.dispatch import message_enqueue, message_new, message_send, message_send_on_commit
from generation.events import video_positions_changed
from generation.models import Job
from generation.providers import (
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    VideoFrame,
    VideoProvider,
    VideoRequest,
    get_video_provider,
)
from generation.videos import stages
from generation.videos.poller import video_poll_schedule
from generation.videos.slots import video_dispatcher, video_slots

logger = logging.getLogger(__name__)

# Start errors that prove nothing was started: the provider refused the call before creating an operation, or no
# connection to it was ever made.
_NOT_STARTED_CODES = frozenset({"rate_limited", "provider_unreachable"})


def video_dispatch() -> None:
    """Start waiting videos while slots are free; one dispatcher runs at a time across the cluster."""
    video_dispatcher().run(_round)


def _round() -> None:
    slots = video_slots()
    provider = get_video_provider()
    started = False
    try:
        while _adopt_orphans(slots) and (job := selectors.video_job_next_due()) is not None:
            holder = str(job.id)
            if not slots.acquire(holder):
                return
            if _orphans(slots):
                # A poll chain's lease ran out since the orphans were adopted: that operation still runs at the
                # provider, so the slot is its own, not the next video's.
                slots.release(holder)
                continue
            token = stages.video_start_intent(job_id=job.id)
            if token is None:
                slots.release(holder)
                continue
            started = True
            _start(provider, slots, job, token)
    finally:
        # Once per round and after the provider calls: publishing every waiting video's position takes about a
        # millisecond per video, which must not delay the start of the next one.
        if started:
            video_positions_changed()


def _orphans(slots: SlotLimiter) -> list[Job]:
    """Videos the provider may be running whose slot lease ran out: nobody has polled or started them lately."""
    live = slots.holders()
    return [job for job in selectors.video_jobs_at_provider() if str(job.id) not in live]


def _adopt_orphans(slots: SlotLimiter) -> bool:
    """Give each orphan its slot back before any waiting video starts; False when the slots ran out."""
    for job in _orphans(slots):
        if job.operation_name:
            if not slots.acquire(str(job.id)):
                return False
            logger.warning("job %s: nobody polled %s lately; polling it again", job.id, job.operation_name)
            # The new message owns the polling: a message of the old chain that turns up late is dropped.
            video_poll_schedule(job.id, poll=None, delay=0)
        elif job.claim_token is not None:
            # Its dispatcher died around the start call: an operation may or may not exist.
            if not slots.acquire(_ambiguous_holder(job.id, job.claim_token), lease_seconds=_hold()):
                return False
            logger.warning("job %s: its dispatcher died during the start call; treating it as ambiguous", job.id)
            _abandon(job.id, job.claim_token, _ambiguous_error("the dispatcher stopped during the call"))
    return True


def _start(provider: VideoProvider, slots: SlotLimiter, job: Job, token: UUID) -> None:
    """Make one start call; whatever happens, the job ends up generating, back in line, or failed."""
    holder = str(job.id)
    try:
        request = _request(job)
    except Exception as error:
        # Nothing reached the provider: the stored frames could not be read back.
        logger.exception("job %s: could not build its start request", job.id)
        slots.release(holder)
        _abandon(
            job.id, token, PermanentProviderError(f"The request could not be built: {error}", code="internal_error")
        )
        return
    try:
        with slots.renewing(holder):
            operation_name = provider.start(request)
    except (TransientProviderError, PermanentProviderError) as error:
        if isinstance(error, PermanentProviderError) or error.code in _NOT_STARTED_CODES:
            slots.release(holder)
        else:
            _hold_ambiguous(slots, job.id, token)
        _abandon(job.id, token, error)
        return
    except Exception as error:
        logger.exception("job %s: the start call failed unexpectedly", job.id)
        _hold_ambiguous(slots, job.id, token)
        _abandon(job.id, token, _ambiguous_error(type(error).__name__))
        return
    poll = message_new("poll_video", str(job.id))
    started = stages.video_started(
        job_id=job.id, claim_token=token, operation_name=operation_name, poll=UUID(poll.message_id)
    )
    if started is None:
        # The attempt lost its job during the call (only a dispatcher whose slot lease ran out can): the operation
        # belongs to nobody, so it is stopped, and its slot is held as for an ambiguous start.
        logger.error(
            "job %s: operation %s started for an attempt that lost its job; stopping it", job.id, operation_name
        )
        _hold_ambiguous(slots, job.id, token)
        message_send("cancel_video_operation", operation_name)
        return
    if started.stage == Job.Stage.STOPPING:
        logger.info("job %s ended during its start call; stopping %s", job.id, operation_name)
        message_send("cancel_video_operation", operation_name)
    message_enqueue(poll, delay=0 if started.stage == Job.Stage.STOPPING else settings.VIDEO_FIRST_POLL)


def _request(job: Job) -> VideoRequest:
    params = job.params
    frames = params.get("frames", {})
    return VideoRequest(
        prompt=job.prompt,
        aspect_ratio=params["aspect_ratio"],
        duration_seconds=params["duration"],
        negative_prompt=params.get("negative_prompt", ""),
        start_frame=_stored_frame(frames.get("start")),
        end_frame=_stored_frame(frames.get("end")),
        model=params.get("model", ""),
        resolution=params.get("resolution", ""),
    )


def _stored_frame(stored: dict[str, str] | None) -> VideoFrame | None:
    if stored is None:
        return None
    with default_storage.open(stored["file"], "rb") as file:
        return VideoFrame(content=file.read(), mime_type=stored["mime_type"])


def _abandon(job_id: UUID, token: UUID, error: ProviderError) -> None:
    delay = stages.video_start_abandoned(job_id=job_id, claim_token=token, error=error)
    if delay is not None:
        message_send_on_commit("dispatch_videos", delay=delay)


def _hold() -> float:
    return settings.VIDEO_AMBIGUOUS_START_HOLD


def _ambiguous_holder(job_id: UUID, token: UUID) -> str:
    return f"{job_id}:ambiguous:{token}"


def _hold_ambiguous(slots: SlotLimiter, job_id: UUID, token: UUID) -> None:
    """Keep the attempt's slot for ``VIDEO_AMBIGUOUS_START_HOLD`` seconds, in case the provider runs it."""
    ambiguous = _ambiguous_holder(job_id, token)
    if not slots.hand_over(str(job_id), ambiguous, lease_seconds=_hold()) and not slots.acquire(
        ambiguous, lease_seconds=_hold()
    ):
        logger.error("job %s: no slot left to hold for its ambiguous start", job_id)


def _ambiguous_error(reason: str) -> TransientProviderError:
    return TransientProviderError(
        f"The provider's answer to the start call was lost ({reason}); it is tried again.", code="start_ambiguous"
    )
