"""A frontend's side of webhooks: creating a job that posts to a receiver, and checking what the receiver got."""

from __future__ import annotations

from typing import Any

from standardwebhooks.webhooks import Webhook

from testing.fakes.receiver import ReceivedWebhook, WebhookReceiver
from testing.waits import wait_for

ALL_EVENTS = ["start", "progress", "completed"]


def submit(api: Any, url: str, **fields: Any) -> str:
    """Create an image job whose events go to ``url``; its id."""
    body = {"prompt": "a fox", "webhook_url": url, **fields}
    response = api.post("/api/images/", body, format="json")
    assert response.status_code == 202, response.json()
    return str(response.json()["id"])


def signing_secret(api: Any) -> str:
    return str(api.get("/api/webhooks/secret/").json()["secret"])


def verified(hook: ReceivedWebhook, secret: str) -> dict[str, Any]:
    """The body of a delivery whose signature ``secret`` verifies, as a receiver would check it."""
    return dict(Webhook(secret).verify(hook.body, hook.headers))


def hooks_at(receiver: WebhookReceiver, path: str, count: int) -> list[ReceivedWebhook]:
    """Wait until at least ``count`` deliveries reached ``path``; all of them."""
    return wait_for(lambda: len(receiver.received(path)) >= count and receiver.received(path), message=path)
