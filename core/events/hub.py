"""Each web process's one subscription to the event channel, fanning events out to the process's open streams.

An open stream holds no Redis connection of its own: it registers a ``Subscription`` (a bounded queue) with its
process's ``EventHub``, which listens on the channel every event is published on and puts each event into the
queues of that user's streams. The hub's Redis connections are the subscription plus a small pool that streams
share for replays, however many streams are open.

- A stream whose client reads too slowly fills its queue and is dropped (its response is cancelled), so one slow
  reader cannot grow the process's memory; the client reconnects with ``Last-Event-ID`` and misses nothing.
- When the subscription is lost (Redis restarted, the network broke), every stream replays from its stream's
  history what it may have missed, once the hub has subscribed again.
- The hub runs while at least one stream is open, and reports its count to Redis for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import weakref
from collections import deque
from dataclasses import dataclass, field

import redis
import redis.asyncio
from django.conf import settings

from core.events.publish import channel, streams_count_key, streams_dropped_key

logger = logging.getLogger(__name__)

# An event id: Redis's clock in milliseconds when it was appended, and a sequence number within that millisecond.
EventId = tuple[int, int]
# What a stream is handed: an event (id, name, data), or RESYNC: "replay from the history what you may have missed".
Delivery = tuple[EventId, str, str]
RESYNC: Delivery = ((0, 0), "resync", "")

# Events a stream may have waiting to be sent before its client counts as too slow and the stream is dropped.
MAX_PENDING = 256
# Connections in the hub's pool: one for the subscription, the rest shared by the streams' replays.
POOL_SIZE = 3
POOL_WAIT_SECONDS = 60.0
# How long a new stream waits for the subscription (after Redis went away, say) before it gives up with a 503.
SUBSCRIBE_TIMEOUT = 5.0
# The subscription is pinged this often when quiet, and counts as lost when silent three times as long.
HEALTH_SECONDS = 10.0
# How often each process reports its open streams to Redis, and how long a report outlives a process that died.
REPORT_SECONDS = 5.0
REPORT_TTL = 30
RECONNECT_SECONDS = 1.0
_LAST_SEQUENCE = 2**64 - 1


def event_id(text: str) -> EventId:
    milliseconds, _dash, sequence = text.partition("-")
    return int(milliseconds), int(sequence)


def event_id_text(value: EventId) -> str:
    return f"{value[0]}-{value[1]}"


@dataclass(eq=False, slots=True)
class Subscription:
    """One open stream: the user it follows, the last event it has seen and the events waiting to be sent.

    Lighter than an ``asyncio.Queue`` (a deque and one future at a time): 10,000 of them are held at once."""

    user_id: int
    # Events up to and including this id have been seen (or predate the stream).
    last: EventId
    # The task sending the stream's response: cancelling it ends the response.
    task: asyncio.Task[object] | None = None
    pending: deque[Delivery] = field(default_factory=deque)
    waiter: asyncio.Future[None] | None = None
    # Ended: the client hung up or was dropped. Dropped: its client read too slowly.
    ended: bool = False
    dropped: bool = False

    def put(self, delivery: Delivery) -> bool:
        """Queue a delivery and wake the stream; False when the stream already has too many waiting."""
        if len(self.pending) >= MAX_PENDING:
            return False
        self.pending.append(delivery)
        self._wake()
        return True

    def end(self) -> None:
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self, timeout: float) -> Delivery | None:
        """The next delivery, or None once the stream has ended; ``TimeoutError`` when nothing comes within
        ``timeout`` seconds."""
        if not self.pending and not self.ended:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self.waiter
            finally:
                self.waiter = None
        return None if self.ended else self.pending.popleft()


class EventHub:
    """The event channel's one listener in this process (and event loop), and the registry of its open streams."""

    def __init__(self) -> None:
        self.process = f"{socket.gethostname()}:{os.getpid()}"
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=POOL_SIZE,
            # Streams replaying at once (all of them, after the subscription was lost) wait their turn.
            timeout=POOL_WAIT_SECONDS,
            decode_responses=True,
            client_name=f"{settings.REDIS_KEY_PREFIX}:events:{self.process}",
            socket_connect_timeout=SUBSCRIBE_TIMEOUT,
        )
        self.client = redis.asyncio.Redis(connection_pool=pool)
        self._subscriptions: dict[int, set[Subscription]] = {}
        self._count = 0
        self._dropped = 0
        self._live = asyncio.Event()
        # Redis's clock when the subscription last went live, as the id "just before now".
        self._position: EventId = (0, 0)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping: asyncio.Task[None] | None = None

    @property
    def count(self) -> int:
        return self._count

    async def subscribe(self, user_id: int, last: EventId | None) -> Subscription:
        """Register a stream; from its return on, every event of the user published reaches the queue.

        Raises ``TimeoutError`` when the channel cannot be subscribed to in time."""
        subscription = Subscription(user_id, last or (0, 0))
        self._subscriptions.setdefault(user_id, set()).add(subscription)
        self._count += 1
        if not self._tasks:
            self._live = asyncio.Event()
            self._tasks = [asyncio.create_task(self._listen(self._live)), asyncio.create_task(self._report())]
        try:
            await asyncio.wait_for(self._live.wait(), SUBSCRIBE_TIMEOUT)
        except BaseException:
            self.unsubscribe(subscription)
            raise
        if last is None:
            subscription.last = self._position
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        streams = self._subscriptions.get(subscription.user_id)
        if streams is None or subscription not in streams:
            return
        streams.discard(subscription)
        self._count -= 1
        if not streams:
            del self._subscriptions[subscription.user_id]
        if not self._subscriptions:
            tasks, self._tasks = self._tasks, []
            for task in tasks:
                task.cancel()
            self._stopping = asyncio.create_task(self._stop(tasks))

    def _deliver(self, subscription: Subscription, delivery: Delivery) -> None:
        if not subscription.put(delivery):
            logger.warning("dropping the event stream of user %s: its client reads too slowly", subscription.user_id)
            subscription.dropped = True
            subscription.end()
            self._dropped += 1
            self.unsubscribe(subscription)
            if subscription.task is not None:
                subscription.task.cancel()

    def _dispatch(self, message: str) -> None:
        user, entry_id, event, data = message.split(" ", 3)
        delivery = (event_id(entry_id), event, data)
        for subscription in list(self._subscriptions.get(int(user), ())):
            self._deliver(subscription, delivery)

    async def _listen(self, live: asyncio.Event) -> None:
        """Hold the subscription while streams are open, subscribing again whenever it is lost."""
        lost = False
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(channel())
                seconds, microseconds = await self.client.time()
                self._position = (seconds * 1000 + microseconds // 1000 - 1, _LAST_SEQUENCE)
                live.set()
                if lost:
                    for streams in list(self._subscriptions.values()):
                        for subscription in list(streams):
                            self._deliver(subscription, RESYNC)
                await self._receive(pubsub)
            except (redis.RedisError, OSError) as error:
                logger.warning("event channel lost, subscribing again: %s", error)
                lost = True
            except Exception:
                # Whatever broke, the process's streams depend on this loop going on.
                logger.exception("event channel listener failed, subscribing again")
                lost = True
            finally:
                live.clear()
                await pubsub.aclose()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _receive(self, pubsub: redis.asyncio.client.PubSub) -> None:
        heard = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=HEALTH_SECONDS)
            if message is not None:
                heard = time.monotonic()
                if message["type"] == "message":
                    self._dispatch(message["data"])
            elif time.monotonic() - heard > 3 * HEALTH_SECONDS:
                raise redis.ConnectionError("the event channel has been silent too long")
            else:
                await pubsub.ping()

    async def _report(self) -> None:
        """Tell Redis, for ``/metrics``, how many streams this process holds and how many it dropped."""
        while True:
            await self._write_report()
            await asyncio.sleep(REPORT_SECONDS)

    async def _write_report(self) -> None:
        key = streams_count_key(self.process)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                if self._count:
                    pipe.set(key, self._count, ex=REPORT_TTL)
                else:
                    # No stream open: zero now rather than when the last report expires.
                    pipe.delete(key)
                if self._dropped:
                    pipe.incrby(streams_dropped_key(), self._dropped)
                await pipe.execute()
            self._dropped = 0
        except (redis.RedisError, OSError) as error:
            logger.warning("could not report the open event streams: %s", error)

    async def _stop(self, tasks: list[asyncio.Task[None]]) -> None:
        """The last stream has closed: report it, and let go of Redis."""
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._write_report()
        if not self._tasks:
            await self.client.connection_pool.disconnect()


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EventHub] = weakref.WeakKeyDictionary()


def event_hub() -> EventHub:
    """The hub of the running event loop (one per web process under uvicorn)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = EventHub()
    return hub
