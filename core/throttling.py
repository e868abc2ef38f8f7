"""Rate limits per user, counted in Redis."""

from __future__ import annotations

import logging
import math
import time
import uuid
from functools import cache
from typing import TYPE_CHECKING

import redis
from django.conf import settings
from redis.commands.core import Script
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle, SimpleRateThrottle

from core.connections import redis_client

if TYPE_CHECKING:
    # Imported for the annotation only: DRF loads throttle classes while rest_framework.views is importing.
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)


# Drops the requests that left the window, then counts the caller's request only if the window has room: one
# atomic round trip. Answers -1 when it counted it, else the time of the oldest request in the window.
_COUNT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1] - ARGV[2])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return -1
end
return redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
"""


@cache
def _count_script() -> Script:
    return redis_client().register_script(_COUNT)


class RedisSlidingWindowThrottle(SimpleRateThrottle):
    """DRF's sliding-window count, kept in a Redis sorted set and updated in one atomic round trip.

    DRF's own reads the request history from the cache, trims it in Python and writes it back: two round trips
    (plus a new cache client per request under ASGI) and a read-modify-write that lets concurrent requests
    through together. Here a script trims the window and counts the request only when it is allowed, so that, as
    in DRF, only accepted requests count.
    """

    num_requests: int
    duration: int
    retry_after: float | None = None

    def allow_request(self, request: Request, view: APIView) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        now = time.time()
        oldest = _count_script()(
            keys=[f"{settings.REDIS_KEY_PREFIX}:{self.key}"],
            args=[now, self.duration, self.num_requests, f"{now}:{uuid.uuid4().hex}", math.ceil(self.duration)],
        )
        if oldest == -1:
            return True
        self.retry_after = max(0.0, float(oldest) + self.duration - now)
        return False

    def wait(self) -> float | None:
        return self.retry_after


class ScopedRateThrottleFailOpen(ScopedRateThrottle, RedisSlidingWindowThrottle):
    """DRF's scoped throttle (the view's ``throttle_scope`` picks the rate) counted in Redis, letting requests
    through when Redis cannot count them.

    The create endpoints must accept jobs while Redis is down (the job is committed and dispatched later), so an
    unavailable rate counter must not turn them into errors.
    """

    def get_rate(self) -> str | None:
        # Read at each request rather than once at import, so that a settings change applies.
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope or "")
        return str(rate) if rate is not None else None

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            # ScopedRateThrottle picks the rate, then hands over to RedisSlidingWindowThrottle for the count.
            return super().allow_request(request, view)
        except redis.RedisError:
            logger.warning("rate limit not checked: Redis is unavailable")
            return True
