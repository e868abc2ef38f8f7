"""The ASGI wrapper that serves the event streams the Django view has accepted.

Django answers ``GET /api/events/`` like any request: authentication, validation, headers. When the view has
accepted a stream (``core.events.views.ACCEPTED`` in the scope), this wrapper sends Django's headers, lets Django
finish the request, and then writes the events to the connection itself. A stream costs the connection, its
``Subscription`` with the process's hub and one pending ``receive()``: no Redis connection, thread or Django
request of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, cast

import redis

from core.events.hub import RESYNC, EventHub, EventId, Subscription, event_hub, event_id, event_id_text
from core.events.publish import stream_key
from core.events.views import ACCEPTED, AcceptedStream
from core.limits import open_files_raise

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A comment line this often keeps proxies and browsers from closing an idle stream.
KEEP_ALIVE_SECONDS = 15
# How long a browser waits before reconnecting, in milliseconds.
RECONNECT_MS = 3000
# A replay reads the history this many events at a time.
REPLAY_PAGE = 100


def _format(entry_id: EventId, event: str, data: str) -> bytes:
    return f"id: {event_id_text(entry_id)}\nevent: {event}\ndata: {data}\n\n".encode()


def _wanted(event: str, data: str, project_id: str) -> bool:
    if not project_id or event != "job":
        return True
    return bool(json.loads(data).get("project_id") == project_id)


async def _missed(hub: EventHub, subscription: Subscription) -> AsyncIterator[tuple[EventId, str, str]]:
    """The events of the user's history after the last one the stream has seen, oldest first."""
    key = stream_key(subscription.user_id)
    while True:
        read = await hub.client.xrange(key, min=f"({event_id_text(subscription.last)}", count=REPLAY_PAGE)
        entries = cast(list[tuple[str, dict[str, str]]], read)
        for entry_id, fields in entries:
            yield event_id(entry_id), fields["event"], fields["data"]
        if len(entries) < REPLAY_PAGE:
            return


async def _events(hub: EventHub, subscription: Subscription, accepted: AcceptedStream) -> AsyncIterator[bytes]:
    """The stream's body: ``ready``, the missed events when resuming, then each event as it comes."""
    project_id = accepted.project_id
    yield f"retry: {RECONNECT_MS}\nevent: ready\ndata: {{}}\n\n".encode()
    replay = accepted.last is not None
    while not subscription.ended:
        if replay:
            async for entry_id, event, data in _missed(hub, subscription):
                subscription.last = entry_id
                if _wanted(event, data, project_id):
                    yield _format(entry_id, event, data)
        try:
            delivery = await subscription.get(KEEP_ALIVE_SECONDS)
        except TimeoutError:
            yield b": keep-alive\n\n"
            continue
        if delivery is None:
            return
        replay = delivery is RESYNC
        if replay or delivery[0] <= subscription.last:
            continue
        entry_id, event, data = delivery
        subscription.last = entry_id
        if _wanted(event, data, project_id):
            yield _format(entry_id, event, data)


async def _serve(
    hub: EventHub, subscription: Subscription, accepted: AcceptedStream, receive: Receive, send: Send
) -> None:
    # The client hanging up is the only message left to receive: it ends the stream at once.
    hung_up = asyncio.ensure_future(receive())
    hung_up.add_done_callback(lambda _done: subscription.end())
    try:
        try:
            async for chunk in _events(hub, subscription, accepted):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except redis.RedisError:
            # Without the history the stream cannot promise to miss nothing: the client reconnects and replays.
            logger.warning("event stream of user %s ended: its history is unreadable", subscription.user_id)
        if not hung_up.done():
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if not subscription.dropped:
            raise
        # The hub dropped the stream of a client that reads too slowly; the server closes the connection.
    finally:
        hung_up.cancel()


class EventStreams:
    """ASGI middleware around Django: serves the streams its events view accepts (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Each open stream holds a socket: 10,000 streams need 10,000 descriptors.
        open_files_raise()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hub: EventHub | None = None
        subscription: Subscription | None = None

        async def send_or_take_over(message: Message) -> None:
            nonlocal hub, subscription
            accepted: AcceptedStream | None = scope.get(ACCEPTED)
            if accepted is None:
                await send(message)
            elif message["type"] == "http.response.start":
                hub = event_hub()
                try:
                    subscription = await hub.subscribe(accepted.user_id, accepted.last)
                except TimeoutError:
                    await send(_unavailable(accepted))
                    await send({"type": "http.response.body", "body": accepted.unavailable})
                    return
                # The view's empty body is no longer the whole answer: the stream is chunked.
                headers = [(name, value) for name, value in message["headers"] if name.lower() != b"content-length"]
                await send({**message, "headers": headers})
            # The view's empty body is left out: the events follow once Django is done.

        try:
            await self.app(scope, receive, send_or_take_over)
            if hub is not None and subscription is not None:
                subscription.task = asyncio.current_task()
                await _serve(hub, subscription, scope[ACCEPTED], receive, send)
        finally:
            if hub is not None and subscription is not None:
                hub.unsubscribe(subscription)


def _unavailable(accepted: AcceptedStream) -> Message:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(accepted.unavailable)).encode())]
    return {"type": "http.response.start", "status": 503, "headers": headers}
