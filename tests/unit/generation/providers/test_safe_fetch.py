"""Fetching user-supplied URLs: public addresses only, redirects checked again, size, type and time bounded."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from generation.providers import frames as frames_module
from generation.providers import safe_fetch
from generation.providers.base import PermanentProviderError, ProviderError, TransientProviderError
from generation.providers.frames import fetch_frame
from generation.providers.safe_fetch import fetch_public, is_public_address
from testing.fakes.frames import PNG as FRAME_PNG
from testing.fakes.frames import FakeFrameServer

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
LOOPBACK = ipaddress.ip_address("127.0.0.1")
Route = Callable[["_Handler"], None]


class LocalServer:
    """An HTTP server on 127.0.0.1 that answers each path with a route and records what it was asked."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        # (path, Host header) of every request, in order.
        self.requests: list[tuple[str, str]] = []
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler, self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # A handler still sleeping for a timeout test must not hold up stop().
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], local: LocalServer) -> None:
        super().__init__(address, handler)
        self.local = local

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up on a body it refused is what the tests provoke.
        pass


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        local = self.server.local  # type: ignore[attr-defined]
        local.requests.append((self.path, self.headers.get("Host", "")))
        local.routes.get(self.path, not_found)(self)

    def send_body(self, status: int, content: bytes, content_type: str = "image/png") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def not_found(handler: _Handler) -> None:
    handler.send_body(404, b"not found", "text/plain")


def png(handler: _Handler) -> None:
    handler.send_body(200, PNG)


def redirect_to(location: str) -> Route:
    return lambda handler: handler.redirect(location)


class FakeDns:
    """Answers for made-up host names; every other name is resolved for real."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []
        self._real = socket.getaddrinfo

    def add(self, name: str, *answers: list[str]) -> None:
        """Answer ``name`` with each list of addresses in turn, repeating the last."""
        self.answers[name] = list(answers)

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in self.answers:
            return self._real(host, port, *args, **kwargs)
        self.lookups.append(host)
        queue = self.answers[host]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))
            if ":" in address
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
            for address in addresses
        ]


@pytest.fixture(autouse=True)
def _private_addresses_refused(settings: Any) -> None:
    """Refuse private addresses here whatever the test settings allow for the other tests' fake servers."""
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = False


@pytest.fixture
def server() -> Iterator[LocalServer]:
    local = LocalServer()
    local.start()
    yield local
    local.stop()


@pytest.fixture
def frames(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFrameServer]:
    """The hostile frame host, reachable on 127.0.0.1, with fetch_frame's deadline cut to one second."""
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = True
    monkeypatch.setattr(frames_module, "FRAME_TIMEOUT", 1.0)
    with FakeFrameServer(drip_seconds=0.2) as server:
        yield server


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    fake = FakeDns()
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
    return fake


@pytest.fixture
def loopback_counts_as_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the local server stand in for a public host; every other address is judged as usual."""
    judge = safe_fetch.is_public_address
    monkeypatch.setattr(safe_fetch, "is_public_address", lambda address: address == LOOPBACK or judge(address))


def fetch(url: str, *, max_bytes: int = 1024 * 1024, timeout: float = 2.0) -> tuple[bytes, str]:
    return fetch_public(url, max_bytes=max_bytes, timeout=timeout)


def fetch_error(url: str, **options: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        fetch(url, **options)
    return caught.value


def test_fetches_a_local_image_when_private_addresses_are_allowed(server: LocalServer, settings: Any) -> None:
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = True
    server.routes["/cat.png"] = png

    assert fetch(server.url("/cat.png")) == (PNG, "image/png")


def test_fetch_frame_returns_the_image_as_a_video_frame(server: LocalServer, settings: Any) -> None:
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = True
    server.routes["/start.png"] = png

    frame = fetch_frame(server.url("/start.png"))

    assert (frame.content, frame.mime_type) == (PNG, "image/png")


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost", "[::ffff:127.0.0.1]"])
def test_refuses_a_loopback_url_by_default(server: LocalServer, host: str) -> None:
    server.routes["/cat.png"] = png

    error = fetch_error(server.url("/cat.png", host=host))

    assert isinstance(error, PermanentProviderError)
    assert error.code == "url_refused"
    assert server.requests == []


@pytest.mark.parametrize(
    "addresses",
    [["10.0.0.5"], ["169.254.169.254"], ["fd00:ec2::254"], ["100.64.0.1"], ["93.184.216.34", "192.168.1.10"]],
    ids=["private", "metadata", "metadata-ipv6", "cgnat", "one-of-several"],
)
def test_refuses_a_hostname_that_resolves_to_a_private_address(dns: FakeDns, addresses: list[str]) -> None:
    dns.add("public.example", addresses)

    error = fetch_error("http://public.example/cat.png")

    assert isinstance(error, PermanentProviderError)
    assert error.code == "url_refused"


@pytest.mark.usefixtures("loopback_counts_as_public")
@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://internal.example/admin",
        "https://[::ffff:10.0.0.5]/",
        "file:///etc/passwd",
    ],
)
def test_refuses_a_redirect_to_a_private_address_or_another_scheme(
    server: LocalServer, dns: FakeDns, target: str
) -> None:
    dns.add("public.example", ["127.0.0.1"])
    dns.add("internal.example", ["10.0.0.5"])
    server.routes["/redirect"] = redirect_to(target)

    error = fetch_error(server.url("/redirect", host="public.example"))

    assert isinstance(error, PermanentProviderError)
    assert error.code == "url_refused"
    assert [path for path, _ in server.requests] == ["/redirect"]


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_follows_a_redirect_to_a_public_address_naming_the_host_in_the_host_header(
    server: LocalServer, dns: FakeDns
) -> None:
    dns.add("public.example", ["127.0.0.1"])
    server.routes["/redirect"] = redirect_to("/cat.png")
    server.routes["/cat.png"] = png

    assert fetch(server.url("/redirect", host="public.example")) == (PNG, "image/png")
    host = f"public.example:{server.port}"
    assert server.requests == [("/redirect", host), ("/cat.png", host)]


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_refuses_a_fourth_redirect(server: LocalServer) -> None:
    for hop in range(4):
        server.routes[f"/{hop}"] = redirect_to(f"/{hop + 1}")
    server.routes["/4"] = png

    error = fetch_error(server.url("/0"))

    assert isinstance(error, PermanentProviderError)
    assert error.code == "url_refused"
    assert len(server.requests) == 4


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_connects_to_the_address_it_checked_when_the_name_changes_its_answer(server: LocalServer, dns: FakeDns) -> None:
    # Nothing listens on 127.0.0.2: resolving the name a second time to connect would fail.
    dns.add("public.example", ["127.0.0.1"], ["127.0.0.2"])
    server.routes["/cat.png"] = png

    assert fetch(server.url("/cat.png", host="public.example")) == (PNG, "image/png")
    assert dns.lookups == ["public.example"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/cat.png", "gopher://example.com/"])
def test_refuses_a_url_that_is_not_http(url: str) -> None:
    error = fetch_error(url)

    assert isinstance(error, PermanentProviderError)
    assert error.code == "url_refused"


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_refuses_a_body_over_the_limit_without_reading_it_all(server: LocalServer) -> None:
    total = 64 * 1024 * 1024
    sent: list[int] = []
    done = threading.Event()

    def endless_png(handler: _Handler) -> None:
        # No Content-Length: only the bytes read can tell that the body is too large.
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.end_headers()
        written = 0
        try:
            while written < total:
                handler.wfile.write(b"\x00" * 65536)
                written += 65536
        except OSError:
            pass
        sent.append(written)
        done.set()

    server.routes["/huge.png"] = endless_png

    error = fetch_error(server.url("/huge.png"), max_bytes=1024)

    assert isinstance(error, PermanentProviderError)
    assert error.code == "url_too_large"
    assert done.wait(5)
    assert sent[0] < total


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_refuses_a_declared_length_over_the_limit_before_reading(server: LocalServer) -> None:
    def announced_png(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", str(10**9))
        handler.end_headers()
        handler.wfile.write(PNG)

    server.routes["/huge.png"] = announced_png

    error = fetch_error(server.url("/huge.png"), max_bytes=1024)

    assert isinstance(error, PermanentProviderError)
    assert error.code == "url_too_large"


@pytest.mark.usefixtures("loopback_counts_as_public")
@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream", ""])
def test_refuses_a_body_that_is_not_an_image(server: LocalServer, content_type: str) -> None:
    server.routes["/page"] = lambda handler: handler.send_body(200, b"<html></html>", content_type)

    error = fetch_error(server.url("/page"))

    assert isinstance(error, PermanentProviderError)
    assert error.code == "url_wrong_type"


@pytest.mark.usefixtures("loopback_counts_as_public")
@pytest.mark.parametrize(
    ("status", "kind"), [(404, PermanentProviderError), (403, PermanentProviderError), (503, TransientProviderError)]
)
def test_maps_an_error_status_to_a_permanent_or_transient_error(
    server: LocalServer, status: int, kind: type[ProviderError]
) -> None:
    server.routes["/cat.png"] = lambda handler: handler.send_body(status, b"no", "text/plain")

    error = fetch_error(server.url("/cat.png"))

    assert type(error) is kind
    assert error.code == "url_unavailable"


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_a_server_that_does_not_answer_in_time_is_a_transient_error(server: LocalServer) -> None:
    def slow(handler: _Handler) -> None:
        time.sleep(1)
        png(handler)

    server.routes["/slow.png"] = slow

    error = fetch_error(server.url("/slow.png"), timeout=0.2)

    assert isinstance(error, TransientProviderError)
    assert error.code == "url_timeout"


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_a_server_that_drips_its_body_is_cut_off_at_the_timeout(server: LocalServer) -> None:
    def drip(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.end_headers()
        try:
            # Each byte comes well within the read timeout; the whole body would take ten times the timeout.
            for _ in range(60):
                handler.wfile.write(b"\x00")
                handler.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    server.routes["/drip.png"] = drip
    started = time.monotonic()

    error = fetch_error(server.url("/drip.png"), timeout=0.3)

    assert isinstance(error, TransientProviderError)
    assert "in time" in error.message
    # Cut at the 0.3 s timeout, before the 3 s the whole body would take (with room for a loaded machine).
    assert time.monotonic() - started < 2.5


def frame_error(url: str) -> tuple[ProviderError, float]:
    """The error fetch_frame raises for ``url``, and how many seconds it took to raise it."""
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        fetch_frame(url)
    return caught.value, time.monotonic() - started


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_the_deadline_covers_every_redirect_together(server: LocalServer) -> None:
    def slow_redirect(target: str) -> Route:
        def answer(handler: _Handler) -> None:
            # Each hop answers well within the timeout; the three together take longer.
            time.sleep(0.4)
            handler.redirect(target)

        return answer

    server.routes["/0"] = slow_redirect("/1")
    server.routes["/1"] = slow_redirect("/2")
    server.routes["/2"] = slow_redirect("/cat.png")
    server.routes["/cat.png"] = png
    started = time.monotonic()

    error = fetch_error(server.url("/0"), timeout=1.0)

    assert isinstance(error, TransientProviderError)
    assert error.code == "url_timeout"
    assert time.monotonic() - started < 1.0 + 2


def test_fetch_frame_returns_the_frame_servers_png(frames: FakeFrameServer) -> None:
    frame = fetch_frame(frames.url("png"))

    assert (frame.content, frame.mime_type) == (FRAME_PNG, "image/png")


@pytest.mark.parametrize("behaviour", ["drip_headers", "endless_slow_body"])
def test_a_frame_host_that_drips_is_cut_off_at_the_total_deadline(frames: FakeFrameServer, behaviour: str) -> None:
    error, elapsed = frame_error(frames.url(behaviour))

    assert isinstance(error, TransientProviderError)
    assert error.code == "url_timeout"
    assert "within 1 s" in error.message
    # The behaviour under test is the timing: the deadline of one second, plus a generous margin, not minutes.
    assert elapsed < 1.0 + 2


def test_a_deadline_that_cuts_the_headers_short_is_a_timeout_not_a_wrong_type(settings: Any) -> None:
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = True
    # The status line (17 bytes) has arrived after about 0.85 s, the Content-Type header only after about 2.1 s:
    # the deadline falls between them, leaving a 200 answer without a type.
    with FakeFrameServer(drip_seconds=0.05) as server, pytest.raises(ProviderError) as caught:
        fetch_public(server.url("drip_headers"), max_bytes=1_000_000, timeout=1.3)

    assert isinstance(caught.value, TransientProviderError)
    assert caught.value.code == "url_timeout"


def test_a_redirect_to_a_host_name_with_an_overlong_label_is_refused(frames: FakeFrameServer) -> None:
    error, _ = frame_error(frames.url("long_label_redirect"))

    assert isinstance(error, PermanentProviderError)
    assert error.code == "url_refused"
    assert "not a valid host name" in error.message
    assert [path for _, path in frames.requests] == ["/long_label_redirect"]


@pytest.mark.parametrize("label", ["a" * 64, "a..b", ".a"])
def test_a_url_whose_host_name_cannot_be_encoded_is_refused(label: str) -> None:
    error = fetch_error(f"http://{label}.example/cat.png")

    assert isinstance(error, PermanentProviderError)
    assert error.code == "url_refused"


def test_a_redirect_to_an_unparseable_url_is_refused(server: LocalServer, settings: Any) -> None:
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = True
    server.routes["/redirect"] = redirect_to("http://[::1/cat.png")

    error = fetch_error(server.url("/redirect"))

    assert isinstance(error, PermanentProviderError)
    assert error.code == "url_refused"


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [
        ("html", "url_wrong_type"),
        ("huge_declared", "url_too_large"),
        ("huge_undeclared", "url_too_large"),
        ("endless_fast_body", "url_too_large"),
    ],
)
def test_a_frame_host_serving_the_wrong_thing_is_refused(frames: FakeFrameServer, behaviour: str, code: str) -> None:
    error, elapsed = frame_error(frames.url(behaviour))

    assert isinstance(error, PermanentProviderError)
    assert error.code == code
    assert elapsed < 1.0 + 2


def test_the_frame_server_stops_promptly_while_a_handler_drips() -> None:
    server = FakeFrameServer(drip_seconds=5).start()
    client = socket.create_connection(("127.0.0.1", server.port))
    client.sendall(b"GET /endless_slow_body HTTP/1.0\r\n\r\n")
    # The status line and the PNG signature come at once; the handler is then waiting to drip.
    client.recv(1024)
    started = time.monotonic()

    server.stop()

    # Long before the 5 s the handler would wait to drip its next byte (with room for a loaded machine).
    assert time.monotonic() - started < 3
    client.close()


def test_the_frame_server_rejects_an_unknown_behaviour() -> None:
    with FakeFrameServer() as server, pytest.raises(ValueError, match="drip_headers"):
        server.url("drip_everything")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.5",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "255.255.255.255",
        "100.64.0.1",
        "100.100.100.200",
        "224.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fd00:ec2::254",
        "ff0e::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:100.64.0.1",
        "::7f00:1",
        "64:ff9b::a00:5",
        "2002:a00:5::1",
    ],
)
def test_an_address_off_the_public_internet_is_not_public(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_a_public_internet_address_is_public(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))
