"""Writes specific to image jobs."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from generation.models import Job
from generation.prices import image_cost, image_model_default
from generation.services.jobs import job_open

logger = logging.getLogger(__name__)


@transaction.atomic(durable=True)
def image_job_create(
    *,
    user_id: int,
    prompt: str,
    aspect_ratio: str,
    quantity: int,
    image_urls: list[str],
    project_id: str = "",
    idempotency_key: str = "",
    start_within_seconds: int | None = None,
    model: str = "",
    webhook_url: str = "",
    webhook_events: list[str] | None = None,
) -> Job:
    """Charge the user for the images (at the catalog's price of ``model``, the default one when blank) and queue
    the job, in one transaction."""
    model = model or image_model_default()
    # Only a job with a webhook carries its fields: every other request keeps the fingerprint it always had.
    webhook: dict[str, Any] = (
        {"webhook_url": webhook_url, "webhook_events": webhook_events or ["completed"]} if webhook_url else {}
    )
    job = job_open(
        idempotency_key=idempotency_key,
        start_within_seconds=start_within_seconds,
        user_id=user_id,
        kind=Job.Kind.IMAGE,
        prompt=prompt,
        params={"aspect_ratio": aspect_ratio, "image_urls": image_urls, "model": model},
        quantity=quantity,
        credit_cost=image_cost(model=model, quantity=quantity),
        project_id=project_id,
        **webhook,
    )
    logger.info("job %s queued: %d image(s) for user %s, %d credits", job.id, quantity, user_id, job.credit_cost)
    return job
