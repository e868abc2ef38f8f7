"""Downloading a finished video and completing its job, under a renewed lease; independent of the dispatcher."""

from __future__ import annotations

import logging
from uuid import UUID

from django.conf import settings

from generation.dispatch import message_send
from generation.providers import PermanentProviderError, ProviderError, TransientProviderError, get_video_provider
from generation.videos import stages

logger = logging.getLogger(__name__)


def video_download(job_id: str) -> None:
    """Download the job's finished video and complete the job; retried on the backoff schedule when it fails."""
    lease = settings.VIDEO_SLOT_LEASE
    job = stages.video_download_claim(job_id=job_id, lease_seconds=lease)
    if job is None or job.claim_token is None:
        return
    token = job.claim_token
    provider = get_video_provider()
    try:
        with stages.video_lease_kept(job_id=job.id, claim_token=token, lease_seconds=lease):
            # The operation is asked again rather than its URI stored: it is cheap, and the URI it gives is fresh.
            operation = provider.poll(job.operation_name)
            if not operation.video_uri:
                raise PermanentProviderError("The finished operation holds no video.", code="operation_failed")
            video = provider.download(operation.video_uri)
    except ProviderError as error:
        _failed(job.id, token, error)
        return
    except Exception as error:
        logger.exception("job %s: the download failed unexpectedly", job.id)
        unexpected = TransientProviderError(f"The download failed ({type(error).__name__}).", code="internal_error")
        _failed(job.id, token, unexpected)
        return
    if stages.video_delivered(job_id=job.id, claim_token=token, video=video):
        logger.info("job %s: video stored (%d bytes)", job.id, len(video.content))


def _failed(job_id: UUID, token: UUID, error: ProviderError) -> None:
    delay = stages.video_retry_or_fail(job_id=job_id, claim_token=token, error=error)
    if delay is not None:
        message_send("download_video", str(job_id), delay=delay)
