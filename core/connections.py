"""Process-wide connections to shared services."""

from __future__ import annotations

from functools import cache

import redis
from django.conf import settings


@cache
def redis_client() -> redis.Redis:
    """The process's Redis client for rate limits, slots, locks and events (thread-safe, with its own connection
    pool). Nothing sent through it blocks on the server, so a Redis that hangs fails fast instead of stalling
    requests: creates then go on without a rate limit or an event, as when Redis is down."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
