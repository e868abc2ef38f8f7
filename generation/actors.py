"""Dramatiq actors: thin wrappers that load a job by id, call the provider and record the outcome through services."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import dramatiq
from django.conf import settings
from dramatiq.broker import MessageProxy

from generation import services, video_queue
from generation.providers import (
    ImageRequest,
    PermanentProviderError,
    ProviderError,
    get_image_provider,
)

logger = logging.getLogger(__name__)


def _image_retry_delays() -> Sequence[float]:
    # Read at each failure, so that a settings change applies without restarting the workers.
    return settings.IMAGE_RETRY_DELAYS


def _error_of(exception: BaseException) -> tuple[str, str]:
    if isinstance(exception, ProviderError):
        return exception.code, exception.message
    return "internal_error", f"{type(exception).__name__}: {exception}"


def _record_retry(message: MessageProxy, attempt: int, delay: float, exception: BaseException) -> None:
    code, text = _error_of(exception)
    services.job_retry_schedule(
        job_id=message.args[0], retries=attempt, delay=delay, error_code=code, error_message=text
    )


def _fail_job(message: MessageProxy, exception: BaseException) -> None:
    code, text = _error_of(exception)
    services.job_fail(job_id=message.args[0], error_code=code, error_message=text)


@dramatiq.actor(
    queue_name="images",
    retry_delays=_image_retry_delays,
    on_retry=_record_retry,
    on_retry_exhausted=_fail_job,
    time_limit=30 * 60 * 1000,
)
def generate_images(job_id: str) -> None:
    """Generate the images a job still misses, storing each one as it arrives."""
    job = services.job_claim(job_id=job_id)
    if job is None:
        return
    request = ImageRequest(
        prompt=job.prompt,
        aspect_ratio=job.params["aspect_ratio"],
        reference_urls=tuple(job.params.get("image_urls", ())),
    )
    provider = get_image_provider()
    for index in services.job_missing_indexes(job=job):
        try:
            image = provider.generate_image(request)
        except PermanentProviderError as error:
            services.job_fail(job_id=job_id, error_code=error.code, error_message=error.message)
            return
        # Transient errors propagate to the BackoffRetries middleware, which schedules the next attempt.
        if services.generation_record(job_id=job_id, index=index, result=image) is None:
            logger.info("job %s left processing while it ran; stopping", job_id)
            return
    services.job_complete(job_id=job_id)


@dramatiq.actor(queue_name="videos", time_limit=10 * 60 * 1000)
def dispatch_videos() -> None:
    """Start waiting videos in order while the provider has free slots."""
    video_queue.video_dispatch()


@dramatiq.actor(
    queue_name="videos",
    # Only a failed download comes back here; polling itself rides out transient errors until VIDEO_TIMEOUT.
    retry_delays=_image_retry_delays,
    on_retry_exhausted=_fail_job,
    time_limit=int((settings.VIDEO_TIMEOUT + 600) * 1000),
)
def watch_video(job_id: str) -> None:
    """Follow a started video generation to its end while holding its slot."""
    video_queue.video_watch(job_id)


@dramatiq.actor(queue_name="videos", max_age=60 * 60 * 1000)
def cancel_video_operation(operation_name: str) -> None:
    """Ask the provider to stop a generation whose job was canceled; best effort, never retried."""
    video_queue.video_cancel(operation_name)
