"""A job's snapshot (the API's and the events' JSON) comes from one serializer that every thread shares."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from generation.estimates import Estimate
from generation.serializers import job_snapshot
from generation.videos.services import video_job_create

pytestmark = pytest.mark.django_db


class HeldPositions(dict[Any, int]):
    """Queue positions whose lookup waits for the test's signal: a snapshot held half-way through."""

    def __init__(self, positions: dict[Any, int], *, reached: threading.Event, release: threading.Event) -> None:
        super().__init__(positions)
        self.reached, self.release = reached, release

    def __contains__(self, key: object) -> bool:
        self.reached.set()
        assert self.release.wait(5)
        return super().__contains__(key)


def test_a_snapshot_keeps_its_own_context_while_another_thread_takes_one(make_user):
    job = video_job_create(user_id=make_user(credits=100).pk, prompt="a wave", aspect_ratio="16:9", duration=4)
    now = timezone.now()
    mine, theirs = Estimate(now, now + timedelta(seconds=60)), Estimate(now, now + timedelta(seconds=600))
    reached, release = threading.Event(), threading.Event()
    held: dict[str, Any] = {}
    positions = HeldPositions({job.id: 7}, reached=reached, release=release)
    thread = threading.Thread(target=lambda: held.update(job_snapshot(job, positions=positions, line={job.id: mine})))
    thread.start()
    assert reached.wait(5)

    other = job_snapshot(job, positions={job.id: 3}, line={job.id: theirs})
    release.set()
    thread.join(5)

    assert (other["position"], other["estimated_finish_at"]) == (3, theirs.finish_at.isoformat())
    assert (held["position"], held["estimated_finish_at"]) == (7, mine.finish_at.isoformat())
