"""Rate limits per user, counted in Redis through Django's cache."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import redis
from django.core.cache import caches
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle

if TYPE_CHECKING:
    # Imported for the annotation only: DRF loads throttle classes while rest_framework.views is importing.
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)


class ScopedRateThrottleFailOpen(ScopedRateThrottle):
    """DRF's scoped throttle that lets requests through when Redis cannot count them.

    The create endpoints must accept jobs while Redis is down (the job is committed and dispatched later), so an
    unavailable rate counter must not turn them into errors.
    """

    # DRF's default, django.core.cache.cache, is a new client with a new Redis connection in every request
    # under ASGI (the cache handler is per async context): one client per process is enough.
    cache = caches.create_connection("default")

    def get_rate(self) -> str | None:
        # Read at each request rather than once at import, so that a settings change applies.
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope or "")
        return str(rate) if rate is not None else None

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return super().allow_request(request, view)
        except redis.RedisError:
            logger.warning("rate limit not checked: Redis is unavailable")
            return True
