"""Preparing a video: fetch the frames the user gave as URLs, check them and store them once, outside any lock.

An ordinary actor does it, so a frame server that drips bytes or never answers holds one worker thread for at
most the fetch's total deadline, and nobody else's video. It works under a short lease that it renews. A video
joins the line for a slot only once prepared.
"""

from __future__ import annotations

import logging
from uuid import UUID

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from generation.dispatch import message_send
from generation.models import Job
from generation.providers import ProviderError, TransientProviderError
from generation.providers.base import GeneratedFile
from generation.providers.frames import fetch_frame
from generation.videos import stages

logger = logging.getLogger(__name__)

# Which frames a video may have, by the request field that holds each one's URL.
FRAME_FIELDS = {"start": "start_frame", "end": "end_frame"}


def video_prepare(job_id: str) -> None:
    """Fetch and store the job's frames, then put it in line; a failed fetch is retried or fails the job."""
    # A short lease, renewed while the frames are fetched: a worker that dies leaves the video to another soon.
    lease = settings.VIDEO_SLOT_LEASE
    token = stages.video_prepare_claim(job_id=job_id, lease_seconds=lease)
    if token is None:
        return
    job = Job.objects.get(id=job_id)
    try:
        with stages.video_lease_kept(job_id=job.id, claim_token=token, lease_seconds=lease):
            frames = {
                name: _frame_store(job, name, job.params[field])
                for name, field in FRAME_FIELDS.items()
                if job.params.get(field)
            }
    except ProviderError as error:
        logger.warning("job %s: a frame could not be fetched (%s): %s", job.id, error.code, error.message)
        _failed(job.id, token, error)
        return
    except Exception as error:
        # Whatever a hostile URL makes go wrong ends this one job, retried or failed, never the worker.
        logger.exception("job %s: fetching a frame failed unexpectedly", job.id)
        _failed(
            job.id,
            token,
            TransientProviderError(f"A frame could not be fetched ({type(error).__name__}).", code="frame_unavailable"),
        )
        return
    if stages.video_prepared(job_id=job.id, claim_token=token, frames=frames):
        message_send("dispatch_videos")
    else:
        for stored in frames.values():
            default_storage.delete(stored["file"])


def _frame_store(job: Job, name: str, url: str) -> dict[str, str]:
    frame = fetch_frame(url)
    extension = GeneratedFile(content=b"", mime_type=frame.mime_type).extension
    path = default_storage.save(f"frames/{job.user_id}/{job.id}/{name}.{extension}", ContentFile(frame.content))
    return {"file": path, "mime_type": frame.mime_type}


def _failed(job_id: UUID, token: UUID, error: ProviderError) -> None:
    delay = stages.video_retry_or_fail(job_id=job_id, claim_token=token, error=error)
    if delay is not None:
        message_send("prepare_video", str(job_id), delay=delay)
