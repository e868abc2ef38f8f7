"""``GET /api/events/``: who may follow which events; ``core.events.asgi`` serves the stream itself.

The view authenticates the caller and validates the request like any Django view, then leaves an
``AcceptedStream`` in the request's ASGI scope and answers with the stream's headers. The ASGI wrapper takes the
connection over once Django has finished with the request, so an open stream keeps none of Django's per-request
objects (request, response, middleware state, the request's thread) for the hours it may stay open.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_safe
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from core.events.hub import EventId, event_id

# The scope key under which the view hands an accepted stream to the ASGI wrapper.
ACCEPTED = "genservice.event_stream"
_EVENT_ID = re.compile(r"\d{1,20}-\d{1,20}")


@dataclass(frozen=True, slots=True)
class AcceptedStream:
    """What the wrapper needs to serve a stream the view has accepted."""

    user_id: int
    # The Last-Event-ID to replay from; None for "from now on".
    last: EventId | None
    project_id: str
    # The answer when events are unavailable, already in the caller's language.
    unavailable: bytes


def _caller_id(request: HttpRequest) -> int | None:
    """The caller by token (API clients) or session (the studio page, whose EventSource sends cookies)."""
    try:
        found = TokenAuthentication().authenticate(Request(request))
    except AuthenticationFailed:
        return None
    if found is not None:
        return int(found[0].pk)
    return int(request.user.pk) if request.user.is_authenticated else None


def _error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


@require_safe
def event_stream(request: HttpRequest) -> HttpResponse:
    """``GET /api/events/``: the caller's job and credit events as Server-Sent Events, resumable with Last-Event-ID."""
    user_id = _caller_id(request)
    if user_id is None:
        return _error("not_authenticated", _("Authentication credentials were not provided."), 401)
    last_event_id = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id", "")
    if last_event_id and not _EVENT_ID.fullmatch(last_event_id):
        return _error("invalid", _("Last-Event-ID is not an event id of this stream."), 400)
    scope = getattr(request, "scope", None)
    if scope is None:
        return _error("asgi_required", _("Event streams are served by the ASGI server only."), 501)
    unavailable = {"error": {"code": "events_unavailable", "message": _("Events are unavailable; try again shortly.")}}
    scope[ACCEPTED] = AcceptedStream(
        user_id=user_id,
        last=event_id(last_event_id) if last_event_id else None,
        project_id=request.GET.get("project_id", ""),
        unavailable=json.dumps(unavailable).encode(),
    )
    response = HttpResponse(content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # Tells nginx-style proxies not to buffer the stream.
    response["X-Accel-Buffering"] = "no"
    return response
