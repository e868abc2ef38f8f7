"""The ASGI handler: the whole request in one hand-off, on request threads that are lent again only once idle."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.urls import path

from project.handler import RequestThreadsASGIHandler

ran_on: list[int] = []
view_started = threading.Event()
view_release = threading.Event()


def recorded(request: HttpRequest) -> HttpResponse:
    ran_on.append(threading.get_ident())
    return HttpResponse("ok")


def blocked(request: HttpRequest) -> HttpResponse:
    ran_on.append(threading.get_ident())
    view_started.set()
    view_release.wait(10)
    return HttpResponse("late")


urlpatterns = [path("recorded/", recorded), path("blocked/", blocked)]


@pytest.fixture
def handler(settings: Any) -> RequestThreadsASGIHandler:
    settings.ROOT_URLCONF = __name__
    settings.ALLOWED_HOSTS = ["testserver"]
    ran_on.clear()
    view_started.clear()
    view_release.clear()
    return RequestThreadsASGIHandler()


async def _get(handler: RequestThreadsASGIHandler, url: str, *, leave_once_started: bool = False) -> int | None:
    """Send one GET through the handler; with ``leave_once_started`` the client hangs up once the view runs."""
    answered = asyncio.Event()
    statuses: list[int] = []
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        if leave_once_started:
            await asyncio.to_thread(view_started.wait, 5)
        else:
            await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        elif not message.get("more_body"):
            answered.set()

    headers = [(b"host", b"testserver")]
    scope = {"type": "http", "method": "GET", "path": url, "query_string": b"", "headers": headers}
    await handler(scope, receive, send)
    return statuses[0] if statuses else None


async def _idle_threads(handler: RequestThreadsASGIHandler, count: int) -> None:
    async with asyncio.timeout(5):
        while len(handler.idle_threads) != count:
            await asyncio.sleep(0.01)


def test_requests_one_after_another_run_on_one_reused_thread(handler: RequestThreadsASGIHandler) -> None:
    async def requests() -> None:
        for _ in range(3):
            assert await _get(handler, "/recorded/") == 200
            await _idle_threads(handler, 1)

    asyncio.run(requests())
    assert len(ran_on) == 3
    assert len(set(ran_on)) == 1
    assert threading.get_ident() not in ran_on


def test_a_request_left_by_its_client_keeps_its_thread_until_its_view_ends(handler: RequestThreadsASGIHandler) -> None:
    async def requests() -> None:
        # The client leaves while the view runs: the view goes on in its thread, which is not lent meanwhile.
        abandoned = asyncio.create_task(_get(handler, "/blocked/", leave_once_started=True))
        await asyncio.to_thread(view_started.wait, 5)
        async with asyncio.timeout(5):
            assert await _get(handler, "/recorded/") == 200
        await _idle_threads(handler, 1)
        assert not abandoned.done()
        view_release.set()
        assert await abandoned is None
        # Once the abandoned view has ended, its thread is lent again.
        await _idle_threads(handler, 2)

    asyncio.run(requests())
    assert len(set(ran_on)) == 2
