"""The webhooks app's receiver of job changes, connected in its AppConfig.ready()."""

from __future__ import annotations

import logging
from typing import Any

from generation.models import Job
from generation.webhooks.services import webhook_deliveries_open

logger = logging.getLogger(__name__)


def job_published_to_webhooks(sender: object, *, job: Job, snapshot: dict[str, Any], **kwargs: Any) -> None:
    """Make the webhook deliveries a committed job change produced, without ever failing the change's publisher."""
    if not job.webhook_url:
        return
    try:
        webhook_deliveries_open(job=job, snapshot=snapshot)
    except Exception:
        # The worker or request that changed the job must not pay for a webhook problem; the job's next change
        # makes any event this one missed, since events are worked out from the job's current state.
        logger.exception("could not make the webhook deliveries of job %s", job.id)
