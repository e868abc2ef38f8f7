"""The event stream through the real ASGI server: auth, filtering, resume and isolation between users."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from rest_framework.authtoken.models import Token

from project.connections import redis_client
from project.events import stream_client_name
from tests.live import child_env, web_server
from tests.sse import EventStreamClient

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def server(django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The project served by uvicorn with no worker: jobs stay queued, which is all these tests need."""
    with django_db_blocker.unblock():
        env = child_env()
    with web_server(env, tmp_path_factory.mktemp("events") / "web.log") as base:
        yield base


def auth(user: Any) -> dict[str, str]:
    return {"Authorization": f"Token {Token.objects.get_or_create(user=user)[0].key}"}


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
    stream = EventStreamClient(f"{server}/api/events/", headers=auth(user))
    try:
        assert stream.next().event == "ready"
        assert stream.response.headers["Content-Type"].startswith("text/event-stream")
        job = submit(server, auth(user), "watched")
        event = stream.next(event="job")
        assert event.data["id"] == job["id"]
        assert event.data["status"] == "queued"
        assert stream.next(event="credits").data == {"balance": 4}
    finally:
        stream.close()


def test_filters_job_events_by_project(server, make_user):
    user = make_user(credits=5)
    stream = EventStreamClient(f"{server}/api/events/", headers=auth(user), params={"project_id": "alpha"})
    try:
        stream.next(event="ready")
        submit(server, auth(user), "other project", project_id="beta")
        wanted = submit(server, auth(user), "this project", project_id="alpha")
        assert stream.next(event="job").data["id"] == wanted["id"]
    finally:
        stream.close()


def test_resumes_after_a_reconnect_without_missing_events(server, make_user):
    user = make_user(credits=5)
    first = EventStreamClient(f"{server}/api/events/", headers=auth(user))
    first.next(event="ready")
    submit(server, auth(user), "before the cut")
    last_seen = first.next(event="job").id
    first.close()
    missed = [submit(server, auth(user), f"while away {index}")["id"] for index in range(3)]
    second = EventStreamClient(f"{server}/api/events/", headers={**auth(user), "Last-Event-ID": last_seen})
    try:
        second.next(event="ready")
        replayed = [second.next(event="job").data["id"] for _ in missed]
        assert replayed == missed
    finally:
        second.close()


def test_never_delivers_another_users_events(server, make_user):
    alice, bob = make_user(credits=5), make_user(credits=5)
    stream = EventStreamClient(f"{server}/api/events/", headers=auth(alice))
    try:
        stream.next(event="ready")
        for index in range(3):
            submit(server, auth(bob), f"bob's secret {index}")
        mine = submit(server, auth(alice), "alice's own")
        received = [stream.next(event="job"), stream.next(event="credits"), *stream.drain(wait=0.3)]
        assert [event.data["id"] for event in received if event.event == "job"] == [mine["id"]]
        assert all("secret" not in str(event.data) for event in received)
    finally:
        stream.close()


def test_refuses_a_malformed_last_event_id(server, make_user):
    user = make_user()
    response = requests.get(f"{server}/api/events/", headers={**auth(user), "Last-Event-ID": "x"}, timeout=5)
    assert response.status_code == 400


def test_a_closed_stream_gives_its_redis_connection_back(server, make_user):
    def open_streams() -> int:
        clients = redis_client().client_list()
        return sum(client["name"] == stream_client_name() for client in clients)

    user = make_user()
    streams = [EventStreamClient(f"{server}/api/events/", headers=auth(user)) for _ in range(5)]
    for stream in streams:
        stream.next(event="ready")
    assert open_streams() == 5
    for stream in streams:
        stream.close()
    deadline = time.monotonic() + 5
    while open_streams() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_streams() == 0
