"""The video queue: start waiting videos in order within the cluster's slots, and watch each generation to its end.

Both run inside Dramatiq actors (generation/actors.py); the database says which videos wait and which run,
Redis says which running videos still have a live watcher (their slot lease).
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.utils import timezone

from generation import selectors, services
from generation.models import Job
from generation.providers import (
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    VideoOperation,
    VideoProvider,
    VideoRequest,
    get_video_provider,
)
from generation.providers.frames import fetch_frame
from generation.slots import SlotLimiter, video_dispatcher, video_slots

logger = logging.getLogger(__name__)

# A generation that outlived VIDEO_TIMEOUT is canceled, then keeps its slot for at most this many polls while the
# provider confirms that it stopped.
STOP_GRACE_POLLS = 3


def video_dispatch() -> None:
    """Start waiting videos while slots are free; one dispatcher runs at a time across the cluster."""
    video_dispatcher().run(_dispatch_round)


def _dispatch_round() -> None:
    slots = video_slots()
    provider = get_video_provider()
    claimed = False
    orphans = _orphans(slots)
    try:
        while _resume_orphans(slots, orphans) and (job := selectors.video_job_next_due()) is not None:
            holder = str(job.id)
            if not slots.acquire(holder):
                return
            orphans = _orphans(slots)
            if orphans:
                # A watcher's lease ran out since the orphans were resumed: its generation still runs at the
                # provider, so the slot is its own, not the next video's. Resume it first.
                slots.release(holder)
                continue
            if services.video_job_claim(job_id=job.id):
                claimed = True
                _start(provider, job)
            else:
                slots.release(holder)
    finally:
        # Once per round and after the provider calls: publishing every waiting video's position takes
        # about a millisecond per video, which must not delay the start of the next one.
        if claimed:
            services.video_positions_changed()


def _orphans(slots: SlotLimiter) -> list[Job]:
    """Running videos that hold no slot: their watcher died (its lease ran out) and nobody downloads them."""
    live = slots.holders()
    now = timezone.now()
    return [
        running
        for running in selectors.video_jobs_processing()
        # One that is downloading a finished video holds a lease in the database instead of a slot.
        if str(running.id) not in live and (running.lease_expires_at is None or running.lease_expires_at <= now)
    ]


def _resume_orphans(slots: SlotLimiter, orphans: list[Job]) -> bool:
    """Give each orphan its slot back and a new watcher, before any waiting video; False when slots ran out."""
    for running in orphans:
        holder = str(running.id)
        if not slots.acquire(holder):
            return False
        if running.operation_name:
            logger.warning("job %s lost its watcher; resuming operation %s", running.id, running.operation_name)
            _watch_later(running)
        else:
            # Its dispatcher died before the provider call: it goes back in line, with no retry used.
            slots.release(holder)
            services.video_job_requeue(job_id=running.id)
    return True


def _start(provider: VideoProvider, job: Job) -> None:
    params = job.params
    try:
        request = VideoRequest(
            prompt=job.prompt,
            aspect_ratio=params["aspect_ratio"],
            duration_seconds=params["duration"],
            negative_prompt=params.get("negative_prompt", ""),
            start_frame=fetch_frame(params["start_frame"]) if params.get("start_frame") else None,
            end_frame=fetch_frame(params["end_frame"]) if params.get("end_frame") else None,
        )
        operation_name = provider.start(request)
    except TransientProviderError as error:
        video_slots().release(str(job.id))
        delay = services.video_start_failed(job=job, error=error)
        if delay is not None:
            _dispatch_later(delay)
        return
    except PermanentProviderError as error:
        video_slots().release(str(job.id))
        services.job_fail(job_id=job.id, error_code=error.code, error_message=error.message)
        return
    if services.video_job_started(job_id=job.id, operation_name=operation_name):
        job.operation_name = operation_name
        _watch_later(job)


def _watch_later(job: Job) -> None:
    from generation.actors import watch_video

    watch_video.send(str(job.id))


def _dispatch_later(delay: float) -> None:
    from generation.actors import dispatch_videos

    dispatch_videos.send_with_options(delay=int(delay * 1000))


def video_watch(job_id: str) -> None:
    """Poll a running generation while holding its slot; once it has ended, free the slot and store the video."""
    job = Job.objects.filter(id=job_id, status=Job.Status.PROCESSING).exclude(operation_name="").first()
    if job is None:
        return
    provider = get_video_provider()
    with video_slots().holding(job_id):
        operation = _wait_until_done(provider, job)
        if operation is not None:
            # Claims the download for this watcher: the dispatcher must not take the job for an orphan
            # once its slot is gone.
            services.video_job_delivering(job_id=job.id)
    # The generation has ended at the provider: its slot goes to the next video now, before the download.
    video_dispatch()
    if operation is not None:
        _deliver(provider, job, operation)


def _wait_until_done(provider: VideoProvider, job: Job) -> VideoOperation | None:
    """The finished operation, or None when the job ended here (failed, timed out, canceled)."""
    assert job.started_at is not None
    deadline = job.started_at.timestamp() + settings.VIDEO_TIMEOUT
    operation = VideoOperation(done=False)
    while not operation.done:
        if time.time() > deadline:
            services.job_fail(
                job_id=job.id,
                error_code="timeout",
                error_message=f"The provider did not finish the video within {settings.VIDEO_TIMEOUT:g} s.",
            )
            _stop(provider, job, until=time.time() + STOP_GRACE_POLLS * settings.VIDEO_POLL_INTERVAL)
            return None
        if not Job.objects.filter(id=job.id, status=Job.Status.PROCESSING).exists():
            logger.info("job %s left processing while its video was generating; stopping it", job.id)
            _stop(provider, job, until=deadline)
            return None
        try:
            operation = provider.poll(job.operation_name)
        except TransientProviderError as error:
            logger.warning("job %s: polling %s failed (%s); polling on", job.id, job.operation_name, error.code)
        except PermanentProviderError as error:
            services.job_fail(job_id=job.id, error_code=error.code, error_message=error.message)
            return None
        if not operation.done:
            time.sleep(settings.VIDEO_POLL_INTERVAL)
    if operation.error_code:
        services.job_fail(job_id=job.id, error_code=operation.error_code, error_message=operation.error_message)
        return None
    return operation


def _stop(provider: VideoProvider, job: Job, *, until: float) -> None:
    """Ask the provider to stop a generation the job no longer wants, and return once it has (or at ``until``).

    The watcher keeps the slot meanwhile: whatever became of the job, the provider counts the generation
    against the limit until it says it is done, and a cancel is only a request.
    """
    video_cancel(job.operation_name, provider=provider)
    while time.time() < until:
        try:
            if provider.poll(job.operation_name).done:
                return
        except TransientProviderError:
            pass
        except PermanentProviderError:
            # The operation can no longer be seen (gone, or no access): nothing is left to wait for.
            return
        time.sleep(settings.VIDEO_POLL_INTERVAL)
    logger.warning("job %s: %s may still run at the provider; its slot is given back", job.id, job.operation_name)


def video_cancel(operation_name: str, *, provider: VideoProvider | None = None) -> None:
    """Ask the provider to stop a generation; best effort: a refusal is logged, never raised."""
    try:
        (provider or get_video_provider()).cancel(operation_name)
    except ProviderError as error:
        logger.warning("the provider did not cancel %s: %s", operation_name, error.message)


def _deliver(provider: VideoProvider, job: Job, operation: VideoOperation) -> None:
    assert job.started_at is not None
    try:
        # A transient download error leaves the actor to the retry middleware: the operation stays recorded,
        # so the next attempt downloads the same video without a new generation.
        video = provider.download(operation.video_uri)
    except PermanentProviderError as error:
        services.job_fail(job_id=job.id, error_code=error.code, error_message=error.message)
        return
    if services.generation_record(job_id=job.id, index=0, result=video) is not None:
        services.job_complete(job_id=job.id)
    logger.info("job %s: video stored after %.1f s", job.id, (timezone.now() - job.started_at).total_seconds())
