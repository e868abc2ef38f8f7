"""Fixtures shared by the suite: users with credits, API clients, the broker, the fake provider servers; and the
markers that a test's folder implies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from credits.services import credit_grant
from testing.clients import token_client
from testing.factories import UserFactory
from testing.fakes.provider import FakeProviderServer
from testing.fakes.veo import FakeVeoServer
from testing.videos import video_queue_forget
from testing.workers import run_worker

TESTS = Path(__file__).resolve().parent
# The folders whose every test carries a marker, so that ``-m "not e2e and not browser"`` leaves them all out.
FOLDER_MARKERS = {"e2e": pytest.mark.e2e, "browser": pytest.mark.browser}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test in e2e/ (real server and worker processes) and browser/ (headless Chromium) as such."""
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])


@pytest.fixture(scope="session", autouse=True)
def _redis_keys_cleaned() -> Iterator[None]:
    """Remove every Redis key this run wrote: the prefix is unique to the run."""
    yield
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def broker() -> Iterator[dramatiq.Broker]:
    """The project's real Redis broker, emptied after the test."""
    current = dramatiq.get_broker()
    yield current
    current.flush_all()


@pytest.fixture
def start_worker(broker: dramatiq.Broker) -> Iterator[Callable[[set[str]], dramatiq.Worker]]:
    """Start real workers consuming the given queues from Redis in this process; each stops when the test ends."""
    started: list[dramatiq.Worker] = []

    def start(queues: set[str]) -> dramatiq.Worker:
        started.append(run_worker(broker, queues))
        return started[-1]

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def make_user(db: None) -> Any:
    """Create a user holding the given credits."""

    def make(credits: int = 0, **fields: Any) -> Any:
        user = UserFactory.create(**fields)
        if credits:
            credit_grant(user_id=user.pk, amount=credits, note="test")
        return user

    return make


@pytest.fixture
def user(make_user: Any) -> Any:
    return make_user(credits=10)


@pytest.fixture
def api(user: Any) -> APIClient:
    return token_client(user)


@pytest.fixture
def provider() -> Iterator[FakeProviderServer]:
    """A local HTTP server speaking the gateway and OpenAI shapes, with scripted behaviours."""
    with FakeProviderServer(api_key="test-key") as server:
        yield server


@pytest.fixture
def gateway_settings(settings: Any, provider: FakeProviderServer) -> FakeProviderServer:
    """Point the image pipeline at the fake gateway with short retry delays."""
    settings.IMAGE_PROVIDER = "gateway"
    settings.AI_GATEWAY_URL = provider.url
    settings.AI_GATEWAY_API_KEY = "test-key"
    settings.PROVIDER_TIMEOUT = 5
    settings.IMAGE_RETRY_DELAYS = (0.3, 0.6, 1.2)
    return provider


@pytest.fixture
def veo() -> Iterator[FakeVeoServer]:
    """A local fake of the Gemini API's Veo endpoints that records starts, order and concurrency."""
    with FakeVeoServer(api_key="veo-key", generation_seconds=0.5) as server:
        yield server


@pytest.fixture
def veo_settings(settings: Any, veo: FakeVeoServer) -> Iterator[FakeVeoServer]:
    """Point the video pipeline at the fake Veo with fast polling, short leases and short retry delays."""
    settings.VIDEO_PROVIDER = "veo"
    settings.GEMINI_API_BASE = veo.url
    settings.GEMINI_API_KEY = "veo-key"
    settings.PROVIDER_TIMEOUT = 5
    settings.VIDEO_FIRST_POLL = 0.2
    settings.VIDEO_POLL_INTERVAL = 0.05
    settings.VIDEO_AMBIGUOUS_START_HOLD = 2.0
    settings.VIDEO_STOP_GRACE = 2.0
    settings.VIDEO_SLOT_LEASE = 1.5
    settings.VIDEO_DISPATCH_TICK = 0.2
    settings.IMAGE_RETRY_DELAYS = (0.3, 0.6, 1.2)
    video_queue_forget()
    yield veo
    video_queue_forget()
