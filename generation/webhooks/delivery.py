"""One signed delivery attempt over HTTP: public addresses only, no redirects followed, one total deadline.

Signatures follow the Standard Webhooks scheme: ``v1,`` and the base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``
keyed with the base64-decoded part of a ``whsec_`` secret after its prefix; with several secrets (a rotation's
overlap) the header carries one space-separated signature per secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
import urllib3
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from generation.providers.base import PermanentProviderError, ProviderError

# The safe fetcher's adapter: it resolves the host once, refuses any address that is not public and connects to
# the address it checked, so that a name cannot point the service at its own network between check and connect.
from generation.providers.safe_fetch import public_session

SECRET_PREFIX = "whsec_"
USER_AGENT = "genservice-webhooks/1.0"
# Errors that say the URL itself is unusable: another attempt would fail the same way.
_INVALID_URL_ERRORS = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    urllib3.exceptions.LocationValueError,
)


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt came to: the receiver's status code, or the error that stopped it."""

    attempted_at: datetime
    latency_ms: int
    status_code: int | None = None
    error: str = ""
    # The URL was refused before anything was sent (not a public address, not a valid URL): retries cannot help.
    refused: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def webhook_body(payload: dict[str, Any]) -> bytes:
    """The bytes posted, and signed, for a delivery's payload: compact JSON."""
    return json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False).encode()


def webhook_signature(*, secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one message with one ``whsec_`` secret."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return f"v1,{base64.b64encode(digest).decode()}"


def webhook_post(*, url: str, message_id: str, body: bytes, secrets: list[str], timeout: float) -> AttemptOutcome:
    """Post ``body`` to ``url`` once, signed with each of ``secrets``, and say how it went; the receiver's faults
    come back as an outcome, never as an exception."""
    attempted_at = timezone.now()
    started = time.monotonic()
    timestamp = int(time.time())
    signatures = (webhook_signature(secret=s, message_id=message_id, timestamp=timestamp, body=body) for s in secrets)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }

    def outcome(**result: Any) -> AttemptOutcome:
        return AttemptOutcome(attempted_at=attempted_at, latency_ms=int((time.monotonic() - started) * 1000), **result)

    with public_session(timeout) as session:
        try:
            # The body of the answer is never read: its status is all a delivery needs.
            with session.post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False, stream=True
            ) as response:
                status, location = response.status_code, response.headers.get("Location", "")
        except PermanentProviderError as error:
            return outcome(error=error.message, refused=True)
        except ProviderError as error:
            return outcome(error=error.message)
        except _INVALID_URL_ERRORS as error:
            return outcome(error=f"The URL is not valid: {error}"[:500], refused=True)
        except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
            if session.deadline.expired or isinstance(error, requests.Timeout):
                return outcome(error=f"No answer within {timeout:g} s.")
            return outcome(error=f"The request failed: {type(error).__name__}: {error}"[:500])
    if 300 <= status < 400:
        return outcome(status_code=status, error=f"HTTP {status}: redirect to {location[:300]!r} not followed.")
    if not 200 <= status < 300:
        return outcome(status_code=status, error=f"HTTP {status}")
    return outcome(status_code=status)
