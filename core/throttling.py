"""Rate limits per user, counted in Redis."""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import TYPE_CHECKING

import redis
from django.conf import settings
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle, SimpleRateThrottle

from core.connections import redis_client

if TYPE_CHECKING:
    # Imported for the annotation only: DRF loads throttle classes while rest_framework.views is importing.
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)


class RedisSlidingWindowThrottle(SimpleRateThrottle):
    """DRF's sliding-window count, kept in a Redis sorted set and updated in one atomic round trip.

    DRF's own reads the request history from the cache, trims it in Python and writes it back: two round trips
    (plus a new cache client per request under ASGI) and a read-modify-write that lets concurrent requests
    through together. Here each request adds itself and reads the count in one MULTI/EXEC; a refused request
    takes itself back out, so that, as in DRF, only accepted requests count.
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
        key = f"{settings.REDIS_KEY_PREFIX}:{self.key}"
        now = time.time()
        member = f"{now}:{uuid.uuid4().hex}"
        with redis_client().pipeline() as pipe:
            pipe.zremrangebyscore(key, 0, now - self.duration)
            pipe.zadd(key, {member: now})
            pipe.zcard(key)
            pipe.zrange(key, 0, 0, withscores=True)
            pipe.expire(key, math.ceil(self.duration))
            _, _, count, oldest, _ = pipe.execute()
        if count <= self.num_requests:
            return True
        redis_client().zrem(key, member)
        self.retry_after = max(0.0, oldest[0][1] + self.duration - now)
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
