"""Reads of the webhooks app."""

from __future__ import annotations

from generation.webhooks.models import WebhookGoneUrl


def webhook_url_gone(*, user_id: int, url: str) -> bool:
    """Whether the receiver at ``url`` answered 410 Gone to one of the user's deliveries: none go there any more."""
    return WebhookGoneUrl.objects.filter(user_id=user_id, url=url).exists()
