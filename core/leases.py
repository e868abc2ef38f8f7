"""Cluster-wide slots through Redis: a concurrency limit made of renewable leases, and a lock for one dispatcher."""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

logger = logging.getLogger(__name__)

# Scripts read Redis's own clock, so that every worker machine agrees on when a lease runs out.
_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"

_ACQUIRE = f"""
{_NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
    return 1
end
return 0
"""

_RENEW = f"""
{_NOW}
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) > now then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
    return 1
end
return 0
"""

_HAND_OVER = f"""
{_NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    redis.call('ZREM', KEYS[1], ARGV[1])
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
    return 1
end
return 0
"""

_LIVE = f"""
{_NOW}
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""

_RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@contextmanager
def renewed_in_background(renew: Callable[[], bool], *, period: float, name: str) -> Iterator[None]:
    """Call ``renew()`` every ``period`` seconds in a thread until the block ends."""
    stop = threading.Event()

    def renew_until_stopped() -> None:
        # Three renewals per lease: one missed renewal (a slow Redis answer) does not lose the lease.
        while not stop.wait(period):
            try:
                if not renew():
                    logger.error("the lease %s ran out while its holder was still working", name)
            except redis.RedisError:
                logger.warning("could not renew the lease %s; trying again", name, exc_info=True)

    renewer = threading.Thread(target=renew_until_stopped, name=name, daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()


class SlotLimiter:
    """At most ``limit`` holders at once; a holder's slot is a lease that runs out unless renewed.

    A holder that dies without releasing (a worker killed with SIGKILL) loses its slot ``lease_seconds``
    later at the latest. Dramatiq's ConcurrentRateLimiter keeps one counter whose expiry every acquire
    refreshes, so under steady traffic a leaked slot there never comes back.
    """

    def __init__(self, *, client: redis.Redis, key: str, limit: int, lease_seconds: float) -> None:
        self.client = client
        self.key = key
        self.limit = limit
        self.lease_ms = int(lease_seconds * 1000)

    def acquire(self, holder: str, *, lease_seconds: float | None = None) -> bool:
        """Take a slot for the holder (or renew the one it has) for one lease, or ``lease_seconds``; False when all
        slots are taken."""
        lease_ms = self.lease_ms if lease_seconds is None else int(lease_seconds * 1000)
        return bool(self.client.eval(_ACQUIRE, 1, self.key, holder, self.limit, lease_ms))

    def hand_over(self, holder: str, new_holder: str, *, lease_seconds: float) -> bool:
        """Move the holder's live slot to ``new_holder`` for ``lease_seconds``, in one step, so that nobody can take
        it in between; False when the holder had no live slot."""
        return bool(self.client.eval(_HAND_OVER, 1, self.key, holder, new_holder, int(lease_seconds * 1000)))

    def renew(self, holder: str) -> bool:
        """Extend the holder's lease; False when it had already run out (the slot may be someone else's now)."""
        return bool(self.client.eval(_RENEW, 1, self.key, holder, self.lease_ms))

    def release(self, holder: str) -> None:
        """Give the holder's slot back."""
        self.client.zrem(self.key, holder)

    def holders(self) -> set[str]:
        """The holders whose lease is still running."""
        return {member.decode() for member in self.client.eval(_LIVE, 1, self.key)}

    @contextmanager
    def renewing(self, holder: str) -> Iterator[None]:
        """Keep the holder's slot renewed while the block runs (a provider call that may outlast one lease)."""
        with renewed_in_background(lambda: self.renew(holder), period=self.lease_ms / 3000, name=f"slot-{holder}"):
            yield


class SingleRunner:
    """Lets one caller at a time run a routine across the cluster, without losing a call made while it ran.

    A caller that finds the routine busy leaves a request behind; the running caller sees it when it is
    done and runs the routine once more, so a wake-up is never dropped.
    """

    def __init__(self, *, client: redis.Redis, key: str, lock_seconds: float) -> None:
        self.client = client
        self.lock_key = f"{key}:lock"
        self.request_key = f"{key}:requested"
        self.lock_ms = int(lock_seconds * 1000)

    def run(self, routine: Callable[[], object]) -> bool:
        """Run ``routine()`` now or leave it to the caller already running it; True when it ran here."""
        ran = False
        while True:
            self.client.set(self.request_key, 1)
            token = uuid.uuid4().hex
            if not self.client.set(self.lock_key, token, nx=True, px=self.lock_ms):
                return ran
            try:
                self.client.delete(self.request_key)
                # Renewed while the routine runs, the lock of a caller that dies runs out within lock_seconds.
                with renewed_in_background(
                    functools.partial(self._renew_lock, token), period=self.lock_ms / 3000, name=self.lock_key
                ):
                    routine()
                ran = True
            finally:
                self.client.eval(_RELEASE_LOCK, 1, self.lock_key, token)
            if not self.client.exists(self.request_key):
                return ran

    def _renew_lock(self, token: str) -> bool:
        return bool(self.client.eval(_RENEW_LOCK, 1, self.lock_key, token, self.lock_ms))
