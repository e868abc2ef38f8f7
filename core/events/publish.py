"""Where events live in Redis, and how one is appended to its user's history and announced to the web processes."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from functools import cache
from typing import Any, NamedTuple

import redis
from django.conf import settings
from redis.commands.core import Script

from core.connections import redis_client

logger = logging.getLogger(__name__)

# Each user's stream keeps about this many events: enough to replay what a reconnecting client missed.
HISTORY_LENGTH = 1000

# Appends each event to its user's stream and publishes it, with the id the stream gave it, on the channel every
# web process listens to: one round trip for many events, and no process can see an announcement before the history
# has it. KEYS are the channel, then each event's stream; ARGV the history length, then each event's user id, name
# and data. The message is "<user id> <event id> <event> <data>": the web processes route it without decoding the data.
_APPEND = """
for i = 2, #KEYS do
  local at = (i - 2) * 3 + 1
  local id = redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[at + 2], 'data', ARGV[at + 3])
  redis.call('PUBLISH', KEYS[1], ARGV[at + 1] .. ' ' .. id .. ' ' .. ARGV[at + 2] .. ' ' .. ARGV[at + 3])
end
"""
# A script holds Redis while it runs: a long list of events is sent this many at a time.
APPEND_BATCH = 200


class Event(NamedTuple):
    """One event for one user: its name (the SSE ``event:`` field) and its JSON data."""

    user_id: int
    event: str
    data: dict[str, Any]


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


def events_append(events: Iterable[Event]) -> None:
    """Append events to their users' streams and announce them, in order, ``APPEND_BATCH`` per round trip; call it
    after the change has committed."""
    pending = list(events)
    for start in range(0, len(pending), APPEND_BATCH):
        batch = pending[start : start + APPEND_BATCH]
        args: list[int | str] = [HISTORY_LENGTH]
        for event in batch:
            args += [event.user_id, event.event, json.dumps(event.data, default=str)]
        try:
            _append_script()(keys=[channel(), *(stream_key(event.user_id) for event in batch)], args=args)
        except redis.RedisError:
            # Events are a convenience on top of the database: clients can always poll the job.
            first = batch[0]
            logger.warning(
                "could not publish all of %d event(s), the first %s for user %s",
                len(batch),
                first.event,
                first.user_id,
                exc_info=True,
            )


def event_append(*, user_id: int, event: str, data: dict[str, Any]) -> None:
    """Append an event to the user's stream and announce it; call it after the change has committed."""
    events_append([Event(user_id, event, data)])
