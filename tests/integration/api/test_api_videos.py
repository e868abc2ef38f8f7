"""The video API: validation, charging, the per-user cap and queue positions."""

from __future__ import annotations

import pytest

from credits.selectors import credit_balance
from generation.models import Job
from testing.clients import token_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def rich_user(make_user):
    return make_user(credits=200)


@pytest.fixture
def rich_api(rich_user):
    return token_client(rich_user)


def test_accepts_a_video_charges_per_second_and_answers_with_its_position(rich_api, rich_user, settings):
    settings.VIDEO_PRICES = {"veo-3.0-generate-001": {"720p": 2, "1080p": 4}}
    settings.VEO_MODEL = "veo-3.0-generate-001"
    response = rich_api.post(
        "/api/videos/",
        {"prompt": "waves", "aspect_ratio": "9:16", "duration": 6, "negative_prompt": "people"},
        format="json",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["kind"] == "video"
    assert body["status"] == "queued"
    assert body["position"] == 1
    # 6 s at 2 credits a second, in the default model's first resolution.
    assert body["credit_cost"] == 12
    assert (body["params"]["duration"], body["params"]["model"], body["params"]["resolution"]) == (
        6,
        "veo-3.0-generate-001",
        "720p",
    )
    assert credit_balance(user_id=rich_user.pk) == 188


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"aspect_ratio": "16:9"}, "prompt", "required"),
        ({"prompt": "a", "aspect_ratio": "1:1"}, "aspect_ratio", "not a valid choice"),
        ({"prompt": "a", "duration": 5}, "duration", "not a valid choice"),
        ({"prompt": "a", "start_frame": "file:///etc/passwd"}, "start_frame", "http or https"),
        ({"prompt": "a", "end_frame": "nope"}, "end_frame", "http or https URL"),
        ({"prompt": "a", "fps": 60}, "fps", "Unknown field"),
        ({"prompt": "a", "model": "veo-9"}, "model", "Unknown model"),
        ({"prompt": "a", "resolution": "4k"}, "resolution", "Unknown resolution"),
        ({"prompt": "a", "aspect_ratio": "9:16", "resolution": "1080p"}, "resolution", "only made in 16:9"),
    ],
)
def test_refuses_invalid_video_requests_and_charges_nothing(rich_api, rich_user, body, field, reason):
    response = rich_api.post("/api/videos/", body, format="json")
    assert response.status_code == 400, response.content
    assert reason in str(response.json()["error"]["fields"][field])
    assert credit_balance(user_id=rich_user.pk) == 200


def test_positions_count_the_queued_videos_created_before(rich_api, make_user):
    other = token_client(make_user(credits=50))
    first = rich_api.post("/api/videos/", {"prompt": "one"}, format="json").json()
    second = other.post("/api/videos/", {"prompt": "two"}, format="json").json()
    third = rich_api.post("/api/videos/", {"prompt": "three"}, format="json").json()
    assert [first["position"], second["position"], third["position"]] == [1, 2, 3]
    Job.objects.filter(id=first["id"]).update(status=Job.Status.PROCESSING, stage=Job.Stage.STARTING)
    assert rich_api.get(f"/api/jobs/{third['id']}/").json()["position"] == 2
    assert other.get(f"/api/jobs/{second['id']}/").json()["position"] == 1
    assert rich_api.get(f"/api/jobs/{first['id']}/").json()["position"] is None


def test_caps_the_videos_one_user_may_have_waiting(rich_api, rich_user, settings):
    settings.VIDEO_MAX_QUEUED_PER_USER = 2
    for _ in range(2):
        assert rich_api.post("/api/videos/", {"prompt": "queued"}, format="json").status_code == 202
    refused = rich_api.post("/api/videos/", {"prompt": "one too many"}, format="json")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_queued_videos"
    assert "2 videos waiting" in refused.json()["error"]["message"]
    assert credit_balance(user_id=rich_user.pk) == 200 - 2 * 24


def test_answers_402_for_a_video_without_enough_credits(make_user):
    poor = make_user(credits=3)
    response = token_client(poor).post("/api/videos/", {"prompt": "too dear"}, format="json")
    assert response.status_code == 402
    assert not Job.objects.exists()
