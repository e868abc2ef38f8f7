"""Where events live in Redis, and how one is appended to its user's history and announced to the web processes."""

from __future__ import annotations

import json
import logging
from functools import cache
from typing import Any

import redis
from django.conf import settings
from redis.commands.core import Script

from core.connections import redis_client

logger = logging.getLogger(__name__)

# Each user's stream keeps about this many events: enough to replay what a reconnecting client missed.
HISTORY_LENGTH = 1000

# Appends the event to the user's stream and publishes it, with the id the stream gave it, on the channel every
# web process listens to: one round trip, and no process can see the announcement before the history has it.
# The message is "<user id> <event id> <event> <data>": the web processes route it without decoding the data.
_APPEND = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[3], 'data', ARGV[4])
redis.call('PUBLISH', KEYS[2], ARGV[2] .. ' ' .. id .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
return id
"""


def stream_key(user_id: int) -> str:
    """The Redis stream holding the user's recent events, which ``Last-Event-ID`` replays."""
    return f"{settings.REDIS_KEY_PREFIX}:events:user:{user_id}"


def channel() -> str:
    """The one channel on which every event is announced to every web process."""
    return f"{settings.REDIS_KEY_PREFIX}:events"


def streams_count_key(process: str = "*") -> str:
    """Where a web process reports how many streams it holds open (``*``: the pattern matching them all)."""
    return f"{settings.REDIS_KEY_PREFIX}:events:streams:{process}"


def streams_dropped_key() -> str:
    """The count of streams dropped because their client read too slowly, over all web processes."""
    return f"{settings.REDIS_KEY_PREFIX}:events:dropped"


@cache
def _append_script() -> Script:
    return redis_client().register_script(_APPEND)


def event_append(*, user_id: int, event: str, data: dict[str, Any]) -> None:
    """Append an event to the user's stream and announce it; call it after the change has committed."""
    try:
        _append_script()(
            keys=[stream_key(user_id), channel()],
            args=[HISTORY_LENGTH, user_id, event, json.dumps(data, default=str)],
        )
    except redis.RedisError:
        # Events are a convenience on top of the database: clients can always poll the job.
        logger.warning("could not publish %s event for user %s", event, user_id, exc_info=True)
