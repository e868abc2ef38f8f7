"""Fixtures of the webhook tests: a local receiver and a real worker that delivers to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest

from testing.fakes.receiver import WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def webhook_worker(
    start_worker: Callable[[set[str]], dramatiq.Worker], gateway_settings: Any, settings: Any
) -> dramatiq.Worker:
    """A real worker for images and webhooks; the receiver listens on 127.0.0.1, so private addresses are allowed."""
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = True
    settings.WEBHOOK_RETRY_DELAYS = (0.2, 0.4)
    settings.WEBHOOK_TIMEOUT = 3
    return start_worker({"images", "webhooks"})
