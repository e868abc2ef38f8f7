"""The image actor: a thin wrapper that loads a job by id, calls the provider and records the outcome through
services (the video actors are in generation/videos/actors.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import dramatiq
from django.conf import settings
from dramatiq.broker import MessageProxy

from generation import services
from generation.images.retries import message_claim, message_claim_record
from generation.providers import ImageRequest, PermanentProviderError, ProviderError, get_image_provider

logger = logging.getLogger(__name__)


def _image_retry_delays() -> Sequence[float]:
    # Read at each failure, so that a settings change applies without restarting the workers.
    return settings.IMAGE_RETRY_DELAYS


def _error_of(exception: BaseException) -> tuple[str, str]:
    if isinstance(exception, ProviderError):
        return exception.code, exception.message
    return "internal_error", f"{type(exception).__name__}: {exception}"


def _record_retry(message: MessageProxy, delay: float, exception: BaseException) -> bool:
    code, text = _error_of(exception)
    return services.job_retry_schedule(
        job_id=message.args[0], claim_token=message_claim(message), delay=delay, error_code=code, error_message=text
    )


def _fail_job(message: MessageProxy, exception: BaseException) -> None:
    code, text = _error_of(exception)
    services.job_fail(job_id=message.args[0], claim_token=message_claim(message), error_code=code, error_message=text)


@dramatiq.actor(
    queue_name="images",
    backoff_delays=_image_retry_delays,
    backoff_on_retry=_record_retry,
    backoff_on_give_up=_fail_job,
    time_limit=30 * 60 * 1000,
)
def generate_images(job_id: str) -> None:
    """Generate the images a job still misses, storing each one as it arrives."""
    job = services.job_claim(job_id=job_id)
    if job is None or job.claim_token is None:
        return
    token = job.claim_token
    message_claim_record(token)
    request = ImageRequest(
        prompt=job.prompt,
        aspect_ratio=job.params["aspect_ratio"],
        reference_urls=tuple(job.params.get("image_urls", ())),
        model=job.params.get("model", ""),
    )
    provider = get_image_provider()
    for index in services.job_missing_indexes(job=job):
        try:
            image = provider.generate_image(request)
        except PermanentProviderError as error:
            services.job_fail(job_id=job_id, claim_token=token, error_code=error.code, error_message=error.message)
            return
        # Transient errors propagate to the BackoffRetries middleware, which schedules the next attempt.
        if services.generation_record(job_id=job_id, claim_token=token, index=index, result=image) is None:
            logger.info("job %s left processing (or this worker's claim) while it ran; stopping", job_id)
            return
    services.job_complete(job_id=job_id, claim_token=token)
