"""HTTP plumbing shared by the remote providers: request helpers and one table from failures to errors.

Every call runs on a fresh session of its own within one total deadline, the client's timeout, which covers
connecting, the answer, its body and any redirects (see ``deadline``); passing it is a transient ``provider_timeout``.

A 2xx answer that is not the documented shape (unparseable JSON, missing fields, undecodable image bytes) is a
transient ``malformed_response``, since a truncated or garbled answer may well succeed next time; a well-formed
answer that simply holds no image is a permanent ``no_image``, since the model declined and tends to do so again.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
import urllib3

from generation.providers.base import GeneratedImage, PermanentProviderError, ProviderError, TransientProviderError
from generation.providers.deadline import Deadline, bounded_session

# OpenAI's error codes for a prompt or reference image refused by its safety system.
_REFUSAL_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
# Provider messages end up in job errors shown to users; a whole HTML error page does not belong there.
_MESSAGE_LIMIT = 300
_IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


class BearerJsonEndpoint:
    """One JSON endpoint of a provider that authenticates with a bearer key, each call bounded by ``timeout``."""

    def __init__(self, *, url: str, api_key: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        # Holds the headers every call sends; each call runs on a bounded session of its own.
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    def post(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload`` as JSON and return the JSON object answered, raising a typed provider error otherwise."""
        return post_json(self.session, self.url, payload, timeout=self.timeout)


def post_json(session: requests.Session, url: str, payload: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """POST ``payload`` as JSON with ``session``'s headers, the whole call within ``timeout`` seconds.

    Returns the JSON object answered, raising a typed provider error otherwise.
    """
    with bounded_call(session, timeout) as call:
        response = call.post(url, json=payload, timeout=timeout)
    body = json_or_none(response)
    if not 200 <= response.status_code < 300:
        raise error_for_status(response.status_code, body)
    if not isinstance(body, dict):
        raise malformed_response("the body is not a JSON object")
    relayed = body.get("error")
    if isinstance(relayed, dict):
        # Gateways may relay an upstream failure inside a 200, with the upstream HTTP status as its code.
        code = relayed.get("code")
        raise error_for_status(code if isinstance(code, int) and 400 <= code < 600 else 502, body)
    return body


@contextmanager
def bounded_call(template: requests.Session, timeout: float) -> Iterator[requests.Session]:
    """Yield a fresh session with ``template``'s headers on which everything the block does ends within ``timeout``.

    A failure inside the block, reading a streamed body too, becomes a transient provider error; so does a deadline
    that passed by the end of the block, since a body the deadline cut short can look complete.
    """
    with bounded_session(timeout) as session, transport_errors(timeout, deadline=session.deadline):
        session.headers.update(template.headers)
        yield session
        session.deadline.check()


@contextmanager
def transport_errors(timeout: float, *, deadline: Deadline | None = None) -> Iterator[None]:
    """Turn a timeout or a connection failure inside the block, reading a streamed body too, into a transient error.

    A connection failure once ``deadline`` has passed is its watchdog's doing, so it counts as a timeout.
    """
    try:
        yield
    except requests.RequestException as error:
        if _never_connected(error):
            # Nothing reached the provider: a caller may be sure that no work was started.
            raise TransientProviderError(
                f"The provider could not be connected to ({type(error).__name__}).", code="provider_unreachable"
            ) from error
        if isinstance(error, requests.Timeout) or (deadline is not None and deadline.expired):
            raise TransientProviderError(
                f"The provider did not answer within {timeout:g} s.", code="provider_timeout"
            ) from error
        raise TransientProviderError(
            f"The connection to the provider failed ({type(error).__name__}).", code="provider_connection_lost"
        ) from error


def _never_connected(error: requests.RequestException) -> bool:
    """Whether the request failed before a connection was made (refused, name not resolved, connect timeout)."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(error, requests.ConnectionError) and isinstance(reason, urllib3.exceptions.NewConnectionError)


def json_or_none(response: requests.Response) -> object:
    """Return the decoded JSON body of ``response``, or ``None`` when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def read_limited(response: requests.Response, limit: int) -> bytes | None:
    """Read a streamed body, or return ``None`` as soon as it turns out larger than ``limit`` bytes."""
    # Content-Length may be absent or wrong, so the bytes actually read are what count.
    content = bytearray()
    for chunk in response.iter_content(64 * 1024):
        content += chunk
        if len(content) > limit:
            return None
    return bytes(content)


def error_for_status(status: int, body: object, *, retry_after: float | None = None) -> ProviderError:
    """Map a failed HTTP answer to a transient or permanent provider error with a stable code.

    ``retry_after`` is the delay the provider asked for, when it said; it is kept on a rate-limit error.
    """
    suffix = status_detail(status, body)
    if status == 429:
        return TransientProviderError(
            f"The provider is rate limiting requests{suffix}", code="rate_limited", retry_after=retry_after
        )
    if status == 408:
        return TransientProviderError(f"The provider timed out{suffix}", code="provider_timeout")
    if status == 402:
        return PermanentProviderError(f"The provider account is out of funds{suffix}", code="provider_out_of_funds")
    if status in (401, 403):
        return PermanentProviderError(f"The provider rejected the credentials{suffix}", code="provider_auth")
    if 400 <= status < 500:
        error = _error(body)
        if isinstance(error, dict) and error.get("code") in _REFUSAL_CODES:
            return PermanentProviderError(f"The provider refused the content{suffix}", code="content_refused")
        return PermanentProviderError(f"The provider rejected the request{suffix}", code="invalid_request")
    return TransientProviderError(f"The provider is unavailable{suffix}", code="provider_unavailable")


def status_detail(status: int, body: object) -> str:
    """Return the end of an error sentence naming the HTTP status and the provider's own message, if any."""
    detail = provider_message(body)
    return f" (HTTP {status}): {detail}" if detail else f" (HTTP {status})."


def provider_message(body: object) -> str:
    """Return the human-readable error message in a provider's JSON error body, or an empty string."""
    error = _error(body)
    message = error.get("message") if isinstance(error, dict) else error
    return shorten(message) if isinstance(message, str) else ""


def shorten(message: str) -> str:
    """Cut a provider's message to a length that fits in a job's error."""
    return message[:_MESSAGE_LIMIT]


def decode_image(encoded: str) -> GeneratedImage:
    """Decode base64 PNG, JPEG or WebP bytes into an image, raising ``malformed_response`` for anything else."""
    try:
        content = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as error:
        raise malformed_response("the image is not valid base64") from error
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return GeneratedImage(content=content, mime_type="image/webp")
    for signature, mime_type in _IMAGE_SIGNATURES:
        if content.startswith(signature):
            return GeneratedImage(content=content, mime_type=mime_type)
    raise malformed_response("the image is not a PNG, JPEG or WebP file")


def malformed_response(reason: str) -> TransientProviderError:
    """Return the error for a successful answer that is not in the documented shape."""
    return TransientProviderError(f"The provider's answer is malformed: {reason}.", code="malformed_response")


def _error(body: object) -> object:
    return body.get("error") if isinstance(body, dict) else None
