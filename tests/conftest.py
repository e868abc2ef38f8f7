"""Fixtures shared by the suite: users with credits, API clients, the broker, a fake provider server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.connections import redis_client
from credits.services import credit_grant
from generation.videos.slots import video_dispatcher, video_slots
from tests.factories import UserFactory
from tests.fake_provider import FakeProviderServer
from tests.fake_veo import FakeVeoServer


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


def token_client(user: Any) -> APIClient:
    """An API client that authenticates as the user with a token, as a frontend would."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


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


def video_queue_forget() -> None:
    """Drop the video slots and the dispatcher's lock, which live in Redis under the run's prefix: a test's holds
    (an ambiguous start's, or a worker's stopped mid-generation) must not reach the next test."""
    dispatcher = video_dispatcher()
    redis_client().delete(video_slots().key, dispatcher.lock_key, dispatcher.request_key)


def run_worker(broker: dramatiq.Broker, queues: set[str]) -> dramatiq.Worker:
    """Start a real worker consuming the given queues from Redis in this process."""
    worker = dramatiq.Worker(broker, queues=queues, worker_threads=4, worker_timeout=20)
    worker.start()
    return worker
