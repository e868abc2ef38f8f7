"""The delivery actor: a thin wrapper that loads a due delivery by id, posts it once and records the outcome."""

from __future__ import annotations

import dramatiq
from django.conf import settings
from django.utils import timezone

from generation.webhooks import services
from generation.webhooks.delivery import webhook_body, webhook_post


# A queue of its own: a receiver that hangs or fails takes a webhook worker's time, never a generation's.
@dramatiq.actor(queue_name="webhooks", time_limit=2 * 60 * 1000)
def deliver_webhook(delivery_id: str) -> None:
    """Make one attempt at a due delivery and record it; the service schedules the retry, if any."""
    delivery = services.webhook_delivery_claim(delivery_id=delivery_id)
    if delivery is None:
        return
    secret = services.webhook_secret_get_or_create(user_id=delivery.job.user_id)
    outcome = webhook_post(
        url=delivery.url,
        message_id=delivery.message_id,
        body=webhook_body(delivery.payload),
        secrets=secret.signing_secrets(timezone.now()),
        timeout=settings.WEBHOOK_TIMEOUT,
    )
    services.webhook_attempt_record(delivery_id=delivery.id, outcome=outcome)
