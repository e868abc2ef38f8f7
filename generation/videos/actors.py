"""The video pipeline's actors: thin, each loading a job by id and handing it to the module that owns its stage."""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import CurrentMessage

from generation.videos import delivery, dispatcher, poller, preparing


@dramatiq.actor(queue_name="videos", time_limit=10 * 60 * 1000)
def prepare_video(job_id: str) -> None:
    """Fetch and store a video's frames, then put it in line."""
    preparing.video_prepare(job_id)


@dramatiq.actor(queue_name="videos", time_limit=10 * 60 * 1000)
def dispatch_videos() -> None:
    """Start waiting videos in order while the provider has free slots."""
    dispatcher.video_dispatch()


@dramatiq.actor(queue_name="videos", time_limit=10 * 60 * 1000)
def poll_video(job_id: str) -> None:
    """Poll a running generation once and schedule the next poll."""
    message = CurrentMessage.get_current_message()
    assert message is not None, "the CurrentMessage middleware is installed"
    poller.video_poll(job_id, message_id=message.message_id)


@dramatiq.actor(queue_name="videos", time_limit=30 * 60 * 1000)
def download_video(job_id: str) -> None:
    """Download a finished video and complete its job."""
    delivery.video_download(job_id)


@dramatiq.actor(queue_name="videos", max_age=60 * 60 * 1000)
def cancel_video_operation(operation_name: str) -> None:
    """Ask the provider to stop a generation whose job ended; best effort, never retried."""
    poller.video_operation_cancel(operation_name)
