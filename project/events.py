"""Per-user event streams: changes are appended to a Redis stream after commit and served as Server-Sent Events."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import redis
import redis.asyncio
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.translation import gettext as _
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from project.connections import redis_client

logger = logging.getLogger(__name__)

# Each user's stream keeps about this many events: enough to replay what a reconnecting client missed.
HISTORY_LENGTH = 1000
# A comment line this often keeps proxies and browsers from closing an idle stream.
KEEP_ALIVE_SECONDS = 15
# How long a browser waits before reconnecting, in milliseconds.
RECONNECT_MS = 3000
_EVENT_ID = re.compile(r"\d{1,20}-\d{1,20}")


def stream_key(user_id: int) -> str:
    return f"{settings.REDIS_KEY_PREFIX}:events:user:{user_id}"


def stream_client_name() -> str:
    """The name every stream's Redis connection carries, so that operators can count them (CLIENT LIST)."""
    return f"{settings.REDIS_KEY_PREFIX}:sse"


def event_append(*, user_id: int, event: str, data: dict[str, Any]) -> None:
    """Append an event to the user's stream; call it after the change has committed."""
    try:
        redis_client().xadd(
            stream_key(user_id),
            {"event": event, "data": json.dumps(data, default=str)},
            maxlen=HISTORY_LENGTH,
            approximate=True,
        )
    except redis.RedisError:
        # Events are a convenience on top of the database: clients can always poll the job.
        logger.warning("could not publish %s event for user %s", event, user_id, exc_info=True)


def _authenticate(request: HttpRequest) -> Any:
    """The caller by token (API clients) or session (the studio page, whose EventSource sends cookies)."""
    try:
        found = TokenAuthentication().authenticate(Request(request))
        if found is not None:
            return found[0]
        return request.user if request.user.is_authenticated else None
    except AuthenticationFailed:
        return None
    finally:
        # The stream may stay open for hours: it must not keep a database connection while it idles.
        connection.close()


async def _last_id(client: Any, key: str) -> str:
    newest = await client.xrevrange(key, count=1)
    return str(newest[0][0]) if newest else "0-0"


def _format(entry_id: str, fields: dict[str, str]) -> str:
    return f"id: {entry_id}\nevent: {fields['event']}\ndata: {fields['data']}\n\n"


def _wanted(fields: dict[str, str], project_id: str) -> bool:
    if not project_id or fields["event"] != "job":
        return True
    return bool(json.loads(fields["data"]).get("project_id") == project_id)


async def _events(user_id: int, last_event_id: str, project_id: str) -> AsyncIterator[str]:
    client: Any = redis.asyncio.Redis.from_url(
        settings.REDIS_URL, decode_responses=True, client_name=stream_client_name()
    )
    key = stream_key(user_id)
    try:
        # Resolving "now" to a concrete id once means no event slips between two reads.
        last = last_event_id or await _last_id(client, key)
        yield f"retry: {RECONNECT_MS}\nevent: ready\ndata: {{}}\n\n"
        while True:
            batches = await client.xread({key: last}, count=100, block=KEEP_ALIVE_SECONDS * 1000)
            if not batches:
                yield ": keep-alive\n\n"
                continue
            for _stream, entries in batches:
                for entry_id, fields in entries:
                    last = entry_id
                    if _wanted(fields, project_id):
                        yield _format(entry_id, fields)
    finally:
        await client.aclose()


async def event_stream(request: HttpRequest) -> HttpResponseBase:
    """``GET /api/events/``: the caller's job and credit events as Server-Sent Events, resumable with Last-Event-ID."""
    user = await sync_to_async(_authenticate)(request)
    if user is None or isinstance(user, AnonymousUser):
        body = {"error": {"code": "not_authenticated", "message": _("Authentication credentials were not provided.")}}
        return JsonResponse(body, status=401)
    last_event_id = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id", "")
    if last_event_id and not _EVENT_ID.fullmatch(last_event_id):
        body = {"error": {"code": "invalid", "message": _("Last-Event-ID is not an event id of this stream.")}}
        return JsonResponse(body, status=400)
    response = StreamingHttpResponse(
        _events(user.pk, last_event_id, request.GET.get("project_id", "")), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    # Tells nginx-style proxies not to buffer the stream.
    response["X-Accel-Buffering"] = "no"
    return response
