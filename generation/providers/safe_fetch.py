"""Fetching a user-supplied URL from public internet addresses only, with its size, type and time bounded.

A URL a user gives must not reach the service's own network: loopback, private, link-local, CGNAT and cloud
metadata addresses are refused, for the URL and for every redirect, which is followed by hand.

The check and the connection use the same DNS answer. Were urllib3 left to resolve the name again when connecting,
a name could answer a public address to the check and a private one a moment later (DNS rebinding). requests has no
option for the address it connects to, so ``PinnedAdapter`` resolves and checks the host itself, asks urllib3 for
a connection pool on the checked IP, and keeps the host name where it is still needed: in the ``Host`` header, and
as urllib3's ``server_hostname``, which TLS uses for SNI and for verifying the certificate. Proxies from the
environment are ignored, since a proxy would resolve the name itself.

The whole fetch, every redirect included, runs within one deadline (see ``deadline``): a server that drips its
headers or its body a byte at a time cannot hold the caller past it. Whatever goes wrong comes out as a provider
error: ``url_refused`` (not http or https, not a valid host name, not a public address, too many redirects),
``url_timeout`` (the deadline passed), ``url_unavailable`` (unreachable, or an error status), ``url_wrong_type`` and
``url_too_large``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from django.conf import settings
from requests.models import PreparedRequest
from urllib3.connectionpool import ConnectionPool

from generation.providers.base import PermanentProviderError, TransientProviderError
from generation.providers.deadline import BoundedSession, Deadline, DeadlineAdapter, bounded_session

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_REDIRECTS = 3
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# IPv6 ranges ending in an IPv4 address that Python 3.11 counts as global: NAT64 and the deprecated IPv4-compatible.
_IPV4_EMBEDDING_NETWORKS = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::/96"))


@contextmanager
def public_session(seconds: float) -> Iterator[BoundedSession]:
    """A session for one call within ``seconds`` that connects only to the public address it checked."""
    with bounded_session(seconds, adapter_class=PinnedAdapter) as session:
        # A proxy would resolve the host name itself, out of reach of the address check.
        session.trust_env = False
        yield session


def fetch_public(
    url: str, *, max_bytes: int, allowed_types: tuple[str, ...] = ("image/",), timeout: float
) -> tuple[bytes, str]:
    """Download ``url`` from a public address and return its bytes and MIME type, or raise a typed provider error.

    ``timeout`` bounds the whole fetch: connecting, the answer, the body and every redirect together.
    """
    with public_session(timeout) as session:
        for _ in range(MAX_REDIRECTS + 1):
            _refuse_unless_web(url)
            with _transport_errors(url, session.deadline), _get(session, url, timeout) as response:
                # A deadline that shut the connection while the headers arrived leaves an answer that looks
                # complete but lacks them: it is a timeout, not a wrong type.
                session.deadline.check()
                location = response.headers.get("Location")
                if response.status_code not in _REDIRECT_STATUSES or not location:
                    return _read(
                        response, url=url, max_bytes=max_bytes, allowed_types=allowed_types, deadline=session.deadline
                    )
            url = _redirect_target(url, location)
    raise PermanentProviderError(f"The URL redirected more than {MAX_REDIRECTS} times.", code="url_refused")


def resolve_public(host: str, port: int) -> IPAddress:
    """Resolve ``host`` and return the address to connect to, refusing the host if any of its addresses is not public.

    ``FETCH_ALLOW_PRIVATE_ADDRESSES`` turns the refusal off, for local development and tests whose servers listen on
    127.0.0.1.
    """
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except ValueError as error:
        # Encoding the name for DNS fails for a label over 63 characters, among others (UnicodeError, IDNAError).
        raise PermanentProviderError(f"The host {host[:100]} is not a valid host name.", code="url_refused") from error
    except OSError as error:
        raise TransientProviderError(f"The host {host} could not be resolved.", code="url_unavailable") from error
    addresses = [ipaddress.ip_address(answer[4][0]) for answer in answers]
    if not getattr(settings, "FETCH_ALLOW_PRIVATE_ADDRESSES", False) and not all(map(is_public_address, addresses)):
        raise PermanentProviderError(f"The host {host} is not on a public address.", code="url_refused")
    return addresses[0]


def is_public_address(address: IPAddress) -> bool:
    """Whether ``address`` is a unicast address on the public internet, judging an embedded IPv4 address by itself."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and any(address in network for network in _IPV4_EMBEDDING_NETWORKS):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
    # Private covers loopback, link-local (169.254.169.254 among them), unique-local (fd00:ec2::254), reserved and
    # unspecified; is_global also leaves out CGNAT. Python 3.11 still counts multicast as global.
    return address.is_global and not address.is_multicast


class PinnedAdapter(DeadlineAdapter):
    """A transport adapter that connects to the address it checked for a host, never to a fresh DNS answer."""

    def get_connection_with_tls_context(
        self,
        request: PreparedRequest,
        verify: bool | str | None,
        proxies: Mapping[str, str] | None = None,
        cert: tuple[str, str] | str | None = None,
    ) -> ConnectionPool:
        host_params, key_attributes = self.build_connection_pool_key_attributes(
            request, True if verify is None else verify, cert
        )
        scheme, host = host_params["scheme"], host_params["host"]
        address = resolve_public(host, host_params["port"] or _DEFAULT_PORTS[scheme])
        pool_kwargs: dict[str, Any] = dict(key_attributes)
        if scheme == "https":
            pool_kwargs["server_hostname"] = host
        return self.watch(
            self.poolmanager.connection_from_host(
                host=str(address), port=host_params["port"], scheme=scheme, pool_kwargs=pool_kwargs
            )
        )

    def add_headers(self, request: PreparedRequest, **kwargs: Any) -> None:
        # The connection is made to an IP address, which urllib3 would otherwise name in the Host header.
        request.headers["Host"] = urlsplit(cast(str, request.url)).netloc.rpartition("@")[2]


def _refuse_unless_web(url: str) -> None:
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as error:
        raise PermanentProviderError(f"The URL {url} is not valid.", code="url_refused") from error
    if scheme not in _DEFAULT_PORTS:
        raise PermanentProviderError(f"Only http and https URLs are fetched, not {url}.", code="url_refused")


def _redirect_target(url: str, location: str) -> str:
    try:
        return urljoin(url, location)
    except ValueError as error:
        raise PermanentProviderError(f"The URL {url} redirected to an invalid URL.", code="url_refused") from error


@contextmanager
def _transport_errors(url: str, deadline: Deadline) -> Iterator[None]:
    try:
        yield
    except (requests.exceptions.InvalidURL, urllib3.exceptions.LocationValueError) as error:
        raise PermanentProviderError(f"The URL {url} is not valid.", code="url_refused") from error
    except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
        # The body is read from urllib3's response directly, whose errors requests does not wrap. A connection the
        # deadline's watchdog shut down fails like any broken one.
        if deadline.expired or isinstance(error, (requests.Timeout, urllib3.exceptions.TimeoutError)):
            raise _timed_out(url, deadline) from error
        raise TransientProviderError(
            f"The URL {url} could not be fetched ({type(error).__name__}).", code="url_unavailable"
        ) from error
    except ValueError as error:
        # requests parses the Location of a redirect it will not follow, and a malformed one raises bare ValueError.
        raise PermanentProviderError(
            f"The URL {url}, or where it redirects, is not valid.", code="url_refused"
        ) from error


def _timed_out(url: str, deadline: Deadline) -> TransientProviderError:
    return TransientProviderError(
        f"The URL {url} did not answer in time (within {deadline.seconds:g} s).", code="url_timeout"
    )


def _get(session: requests.Session, url: str, timeout: float) -> requests.Response:
    # Images are compressed already; asking for identity keeps the byte cap on what the server sends. The session's
    # deadline cuts the per-operation timeout down to the time left.
    return session.get(
        url, timeout=timeout, stream=True, allow_redirects=False, headers={"Accept-Encoding": "identity"}
    )


def _read(
    response: requests.Response, *, url: str, max_bytes: int, allowed_types: tuple[str, ...], deadline: Deadline
) -> tuple[bytes, str]:
    status = response.status_code
    if status >= 500 or status in (408, 429):
        raise TransientProviderError(f"The URL {url} answered HTTP {status}.", code="url_unavailable")
    if not 200 <= status < 300:
        raise PermanentProviderError(f"The URL {url} answered HTTP {status}.", code="url_unavailable")
    mime_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if not mime_type.startswith(allowed_types):
        raise PermanentProviderError(f"The URL {url} holds {mime_type or 'an untyped body'}.", code="url_wrong_type")
    declared = response.headers.get("Content-Length", "")
    too_large = declared.isdigit() and int(declared) > max_bytes
    content = None if too_large else _read_body(response, url=url, max_bytes=max_bytes, deadline=deadline)
    if content is None:
        raise PermanentProviderError(f"The URL {url} holds more than {max_bytes} bytes.", code="url_too_large")
    return content, mime_type


def _read_body(response: requests.Response, *, url: str, max_bytes: int, deadline: Deadline) -> bytes | None:
    """The body, or None as soon as it turns out larger than ``max_bytes``; still arriving at the deadline, an error.

    ``read1`` returns whatever has arrived, so the loop notices the deadline between bytes a server drips; the
    watchdog ends a wait that would outlast it, after which ``read1`` may answer an empty chunk as if the body were
    complete. So the deadline, not the end of the loop, decides whether the body is whole.
    """
    # Content-Length may be absent or wrong, so the bytes actually read are what count.
    content = bytearray()
    while chunk := response.raw.read1(64 * 1024):
        content += chunk
        if len(content) > max_bytes:
            return None
        if deadline.expired:
            break
    if deadline.expired:
        raise _timed_out(url, deadline)
    return bytes(content)
