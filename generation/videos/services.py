"""Creating a video job: charged and queued in one transaction, within the per-user cap."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction

from generation.errors import TooManyQueuedVideos
from generation.models import Job
from generation.prices import video_cost, video_model_default, video_resolution_default
from generation.services.jobs import job_open

logger = logging.getLogger(__name__)


@transaction.atomic(durable=True)
def video_job_create(
    *,
    user_id: int,
    prompt: str,
    aspect_ratio: str,
    duration: int,
    negative_prompt: str = "",
    start_frame: str = "",
    end_frame: str = "",
    project_id: str = "",
    idempotency_key: str = "",
    start_within_seconds: int | None = None,
    model: str = "",
    resolution: str = "",
    webhook_url: str = "",
    webhook_events: list[str] | None = None,
) -> Job:
    """Charge the user for a video (at the catalog's price of ``model`` and ``resolution``, the defaults when
    blank) and put it in line, unless the user already has too many waiting."""
    model = model or video_model_default()
    resolution = resolution or video_resolution_default(model)
    # Only a job with a webhook carries its fields: every other request keeps the fingerprint it always had.
    webhook: dict[str, Any] = (
        {"webhook_url": webhook_url, "webhook_events": webhook_events or ["completed"]} if webhook_url else {}
    )

    def admit() -> None:
        # Runs under the account lock that job_open takes, so two requests cannot both slip under the cap.
        waiting = Job.objects.filter(user_id=user_id, kind=Job.Kind.VIDEO, status=Job.Status.QUEUED).count()
        limit = settings.VIDEO_MAX_QUEUED_PER_USER
        if waiting >= limit:
            raise TooManyQueuedVideos(TooManyQueuedVideos.default_message % {"limit": limit}, extra={"limit": limit})

    job = job_open(
        idempotency_key=idempotency_key,
        start_within_seconds=start_within_seconds,
        admit=admit,
        user_id=user_id,
        kind=Job.Kind.VIDEO,
        prompt=prompt,
        params={
            "aspect_ratio": aspect_ratio,
            "duration": duration,
            "negative_prompt": negative_prompt,
            "start_frame": start_frame,
            "end_frame": end_frame,
            "model": model,
            "resolution": resolution,
        },
        # Frames given as URLs are fetched before the video joins the line; without any, it joins at once.
        stage=Job.Stage.PREPARING if start_frame or end_frame else Job.Stage.WAITING,
        quantity=1,
        credit_cost=video_cost(model=model, resolution=resolution, duration=duration),
        project_id=project_id,
        **webhook,
    )
    logger.info("job %s queued: %d s video for user %s, %d credits", job.id, duration, user_id, job.credit_cost)
    return job
