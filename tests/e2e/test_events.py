"""The event stream through the real ASGI server: auth, filtering, resume and isolation between users."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.conf import settings

from core.connections import redis_client
from core.events.publish import event_append
from core.metrics import collector
from testing.clients import token_headers
from testing.live import child_env, web_server
from testing.sse import EventStreamClient
from testing.waits import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def server(django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The project served by uvicorn with no worker: jobs stay queued, which is all these tests need."""
    with django_db_blocker.unblock():
        env = child_env()
    with web_server(env, tmp_path_factory.mktemp("events") / "web.log") as base:
        yield base


def submit(base: str, headers: dict[str, str], prompt: str, project_id: str = "") -> dict[str, Any]:
    response = requests.post(
        f"{base}/api/images/", json={"prompt": prompt, "project_id": project_id}, headers=headers, timeout=5
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def test_requires_credentials(server):
    assert requests.get(f"{server}/api/events/", timeout=5).status_code == 401
    bad = requests.get(f"{server}/api/events/", headers={"Authorization": "Token nope"}, timeout=5)
    assert bad.status_code == 401


def test_streams_the_callers_job_and_credit_changes(server, make_user):
    user = make_user(credits=5)
    stream = EventStreamClient(f"{server}/api/events/", headers=token_headers(user))
    try:
        assert stream.next().event == "ready"
        assert stream.response.headers["Content-Type"].startswith("text/event-stream")
        job = submit(server, token_headers(user), "watched")
        event = stream.next(event="job")
        assert event.data["id"] == job["id"]
        assert event.data["status"] == "queued"
        assert stream.next(event="credits").data == {"balance": 4}
    finally:
        stream.close()


def test_filters_job_events_by_project(server, make_user):
    user = make_user(credits=5)
    stream = EventStreamClient(f"{server}/api/events/", headers=token_headers(user), params={"project_id": "alpha"})
    try:
        stream.next(event="ready")
        submit(server, token_headers(user), "other project", project_id="beta")
        wanted = submit(server, token_headers(user), "this project", project_id="alpha")
        assert stream.next(event="job").data["id"] == wanted["id"]
    finally:
        stream.close()


def test_resumes_after_a_reconnect_without_missing_events(server, make_user):
    user = make_user(credits=5)
    first = EventStreamClient(f"{server}/api/events/", headers=token_headers(user))
    first.next(event="ready")
    submit(server, token_headers(user), "before the cut")
    last_seen = first.next(event="job").id
    first.close()
    missed = [submit(server, token_headers(user), f"while away {index}")["id"] for index in range(3)]
    second = EventStreamClient(f"{server}/api/events/", headers={**token_headers(user), "Last-Event-ID": last_seen})
    try:
        second.next(event="ready")
        replayed = [second.next(event="job").data["id"] for _ in missed]
        assert replayed == missed
    finally:
        second.close()


def test_never_delivers_another_users_events(server, make_user):
    alice, bob = make_user(credits=5), make_user(credits=5)
    stream = EventStreamClient(f"{server}/api/events/", headers=token_headers(alice))
    try:
        stream.next(event="ready")
        for index in range(3):
            submit(server, token_headers(bob), f"bob's secret {index}")
        mine = submit(server, token_headers(alice), "alice's own")
        received = [stream.next(event="job"), stream.next(event="credits"), *stream.drain(wait=0.3)]
        assert [event.data["id"] for event in received if event.event == "job"] == [mine["id"]]
        assert all("secret" not in str(event.data) for event in received)
    finally:
        stream.close()


def test_refuses_a_malformed_last_event_id(server, make_user):
    user = make_user()
    response = requests.get(f"{server}/api/events/", headers={**token_headers(user), "Last-Event-ID": "x"}, timeout=5)
    assert response.status_code == 400


def hub_connections() -> list[dict[str, Any]]:
    """The Redis connections of the web server's event hub, which carry its name."""
    name = f"{settings.REDIS_KEY_PREFIX}:events:"
    return [client for client in redis_client().client_list() if client["name"].startswith(name)]


def streams_reported() -> dict[str, float]:
    """The open streams per web process, as ``/metrics`` exports them."""
    metrics = {family.name: family for family in collector.collect()}
    return {sample.labels["process"]: sample.value for sample in metrics["genservice_event_streams_open"].samples}


def test_streams_share_the_processs_few_redis_connections_and_are_counted(server, make_user):
    streams = [EventStreamClient(f"{server}/api/events/", headers=token_headers(make_user())) for _ in range(20)]
    try:
        for stream in streams:
            stream.next(event="ready")
        assert 1 <= len(hub_connections()) <= 3
        wait_for(lambda: list(streams_reported().values()) == [20], timeout=10, message="20 streams counted")
    finally:
        for stream in streams:
            stream.close()
    # The last stream gone, the hub lets go of Redis and its count.
    wait_for(lambda: not hub_connections() and not streams_reported(), timeout=10, message="the hub let go")


def test_a_lost_subscription_replays_what_was_published_meanwhile(server, make_user):
    user = make_user(credits=5)
    stream = EventStreamClient(f"{server}/api/events/", headers=token_headers(user))
    try:
        stream.next(event="ready")
        for client in hub_connections():
            if client["flags"] == "P":  # the subscription, not the pool's query connections
                redis_client().client_kill_filter(_id=client["id"])
        # Published while the hub has no subscription: only the history has it.
        event_append(user_id=user.pk, event="note", data={"n": 1})
        assert stream.next(event="note", timeout=10).data == {"n": 1}
        event_append(user_id=user.pk, event="note", data={"n": 2})
        assert stream.next(event="note", timeout=10).data == {"n": 2}
        assert stream.drain(wait=0.3) == []
    finally:
        stream.close()


def test_a_client_that_stops_reading_is_dropped(server, make_user):
    user = make_user()
    host, port = server.removeprefix("http://").split(":")
    reader = socket.socket()
    # A small receive window, so that the server's buffers fill after a few events, not megabytes.
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect((host, int(port)))
    token = token_headers(user)["Authorization"]
    reader.sendall(f"GET /api/events/ HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\n\r\n".encode())
    received = reader.recv(4096)
    while b"event: ready" not in received:
        received += reader.recv(4096)
    data = {"padding": "x" * 4000}
    try:
        # Far more than the socket buffers and the stream's queue hold, while the client reads nothing.
        for _ in range(2000):
            event_append(user_id=user.pk, event="note", data=data)
        wait_for(lambda: not streams_reported(), timeout=10, message="the reader dropped")
        dropped = {family.name: family for family in collector.collect()}["genservice_event_streams_dropped"]
        assert dropped.samples[0].value >= 1
        # What was already buffered still arrives, then the server closes the connection.
        reader.settimeout(10)
        while chunk := reader.recv(65536):
            received += chunk
        assert 0 < received.count(b"event: note") < 2000
    finally:
        reader.close()
