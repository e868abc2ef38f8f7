"""Estimates of when queued jobs start and finish, from measured recent durations and the work ahead."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from core.connections import redis_client
from core.events.publish import stream_key
from generation import estimates, events, services
from generation.estimates import job_estimate, recent_duration, video_line_estimates
from generation.images.services import image_job_create
from generation.models import Job
from generation.videos.services import video_job_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_medians():
    estimates._cache.clear()
    yield
    estimates._cache.clear()


def video(user, prompt: str) -> Job:
    return video_job_create(user_id=user.pk, prompt=prompt, aspect_ratio="16:9", duration=4)


def finished_videos(user, seconds: float, count: int = 3) -> None:
    now = timezone.now()
    for index in range(count):
        job = video(user, f"done {index}")
        Job.objects.filter(id=job.id).update(
            status="completed", stage="done", started_at=now - timedelta(seconds=seconds), finished_at=now
        )


def running_video(user, prompt: str, started_seconds_ago: float) -> Job:
    job = video(user, prompt)
    Job.objects.filter(id=job.id).update(
        status="processing", stage="generating", started_at=timezone.now() - timedelta(seconds=started_seconds_ago)
    )
    return job


def assert_after(moment, seconds: float, *, between: tuple[datetime, datetime]) -> None:
    """``moment`` is ``seconds`` after some instant between the two, when the test set it up: exact however long
    the setup took."""
    before, after = between
    assert before + timedelta(seconds=seconds) <= moment <= after + timedelta(seconds=seconds)


def test_a_kind_without_history_is_estimated_from_a_default(make_user):
    user = make_user(credits=100)
    job = image_job_create(user_id=user.pk, prompt="first", aspect_ratio="1:1", quantity=1, image_urls=[])
    before = timezone.now()
    estimate = job_estimate(job=job)
    assert estimate is not None
    assert_after(estimate.start_at, 0, between=(before, timezone.now()))
    assert (estimate.finish_at - estimate.start_at).total_seconds() == estimates.DEFAULT_SECONDS[Job.Kind.IMAGE]


def test_the_median_of_recent_durations_is_used(make_user):
    user = make_user(credits=200)
    for seconds in (20, 30, 90):
        finished_videos(user, seconds, count=1)
    assert recent_duration(kind="video") == pytest.approx(30, abs=0.1)


def test_waiting_videos_take_the_slots_in_the_order_they_free(make_user, settings):
    settings.VIDEO_MAX_CONCURRENT = 2
    user = make_user(credits=200)
    finished_videos(user, 30)
    # Two running videos free their slots in about 20 s and 10 s.
    before = timezone.now()
    running_video(user, "running a", started_seconds_ago=10)
    running_video(user, "running b", started_seconds_ago=20)
    first, second, third = (video(user, name) for name in ("first", "second", "third"))
    line = video_line_estimates()
    setup = (before, timezone.now())
    for job, seconds in zip((first, second, third), (10, 20, 40), strict=True):
        assert_after(line[job.id].start_at, seconds, between=setup)
    assert (line[third.id].finish_at - line[third.id].start_at).total_seconds() == pytest.approx(30)


def test_the_job_json_carries_estimates_while_queued_only(api, user):
    response = api.post("/api/images/", {"prompt": "soon"}, format="json").json()
    assert response["estimated_start_at"] is not None
    assert response["estimated_finish_at"] > response["estimated_start_at"]
    services.job_claim(job_id=response["id"])
    detail = api.get(f"/api/jobs/{response['id']}/").json()
    assert detail["estimated_start_at"] is None and detail["estimated_finish_at"] is None


def test_the_events_of_a_moving_line_carry_new_estimates(make_user, django_capture_on_commit_callbacks):
    user = make_user(credits=200)
    finished_videos(user, 30)
    waiting = video(user, "moving line")
    with django_capture_on_commit_callbacks(execute=True):
        events.video_positions_changed()
    entries: Any = redis_client().xrevrange(stream_key(user.pk), count=1)
    data = json.loads(entries[0][1][b"data"])
    assert data["id"] == str(waiting.id)
    assert data["position"] == 1
    assert data["estimated_start_at"] is not None
