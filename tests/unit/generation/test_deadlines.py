"""Start deadlines: a job that has not started within start_within_seconds is canceled with a full refund."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from credits.models import CreditLedgerEntry
from credits.selectors import credit_balance, credit_ledger_total
from generation import services
from generation.models import Job
from generation.videos.dispatcher import video_dispatch
from testing.clients import token_client

pytestmark = pytest.mark.django_db


def past_deadline(job_id: str) -> None:
    Job.objects.filter(id=job_id).update(start_deadline_at=timezone.now() - timedelta(seconds=1))


def test_a_create_records_its_start_deadline(api):
    before = timezone.now()
    response = api.post("/api/images/", {"prompt": "soon", "start_within_seconds": 30}, format="json")
    assert response.status_code == 202
    deadline = Job.objects.get(id=response.json()["id"]).start_deadline_at
    assert deadline is not None and before + timedelta(seconds=30) <= deadline <= timezone.now() + timedelta(seconds=30)
    assert response.json()["start_deadline_at"] is not None


@pytest.mark.parametrize("value", [0, -5, "soon", 8 * 24 * 3600])
def test_an_invalid_start_deadline_is_refused_naming_the_field_and_charges_nothing(api, user, value):
    response = api.post("/api/videos/", {"prompt": "never", "start_within_seconds": value}, format="json")
    assert response.status_code == 400
    assert "start_within_seconds" in response.json()["error"]["fields"]
    assert credit_balance(user_id=user.pk) == 10


def test_a_queued_job_past_its_deadline_is_canceled_with_a_full_refund(api, user):
    body = {"prompt": "late", "quantity": 3, "start_within_seconds": 5}
    job_id = api.post("/api/images/", body, format="json").json()["id"]
    assert services.job_deadlines_enforce() == 0
    past_deadline(job_id)
    # A worker that gets the job's message after the deadline does not start it.
    assert services.job_claim(job_id=job_id) is None
    assert services.job_deadlines_enforce() == 1
    job = Job.objects.get(id=job_id)
    assert (job.status, job.error_code) == ("canceled", "deadline_exceeded")
    assert CreditLedgerEntry.objects.get(job=job, kind="refund").amount == 3
    assert credit_balance(user_id=user.pk) == credit_ledger_total(user_id=user.pk) == 10
    assert services.job_deadlines_enforce() == 0


def test_a_job_that_started_before_its_deadline_is_left_to_finish(api, user):
    job_id = api.post("/api/images/", {"prompt": "in time", "start_within_seconds": 5}, format="json").json()["id"]
    assert services.job_claim(job_id=job_id) is not None
    past_deadline(job_id)
    assert services.job_deadlines_enforce() == 0
    assert Job.objects.get(id=job_id).status == "processing"


def test_a_waiting_video_past_its_deadline_is_not_started(broker, veo_settings, make_user):
    api = token_client(make_user(credits=100))
    job_id = api.post("/api/videos/", {"prompt": "missed", "start_within_seconds": 5}, format="json").json()["id"]
    past_deadline(job_id)
    video_dispatch()
    assert veo_settings.start_attempts == 0
    assert services.job_deadlines_enforce() == 1
    job = Job.objects.get(id=job_id)
    assert (job.status, job.stage, job.error_code) == ("canceled", "done", "deadline_exceeded")


def test_a_retried_request_with_a_deadline_finds_the_first_job(api, user):
    body = {"prompt": "once", "start_within_seconds": 60}
    first = api.post("/api/images/", body, format="json", HTTP_IDEMPOTENCY_KEY="deadline-key")
    second = api.post("/api/images/", body, format="json", HTTP_IDEMPOTENCY_KEY="deadline-key")
    assert first.json()["id"] == second.json()["id"]
    assert credit_balance(user_id=user.pk) == 9
