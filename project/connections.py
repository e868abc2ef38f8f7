"""Process-wide connections to shared services."""

from __future__ import annotations

from functools import cache

import redis
from django.conf import settings


@cache
def redis_client() -> redis.Redis:
    """The process's Redis client for slots, locks and events (thread-safe, with its own connection pool)."""
    return redis.Redis.from_url(settings.REDIS_URL)
