"""Claim tokens: a worker that lost its claim on a job can no longer change it, and free prices charge nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from credits.models import CreditLedgerEntry
from credits.selectors import credit_balance, credit_ledger_total
from generation import services
from generation.images.services import image_job_create
from generation.models import Job
from generation.providers import GeneratedImage
from generation.providers.local import render_png
from generation.selectors import job_position
from generation.videos.services import video_job_create

pytestmark = pytest.mark.django_db


def claimed_twice(user) -> tuple[Job, Job]:
    """An image job claimed by a first worker whose lease then ran out, and claimed again by a second worker."""
    job = image_job_create(user_id=user.pk, prompt="contended", aspect_ratio="1:1", quantity=2, image_urls=[])
    first = services.job_claim(job_id=job.id)
    assert first is not None
    Job.objects.filter(id=job.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    second = services.job_claim(job_id=job.id)
    assert second is not None and second.claim_token != first.claim_token
    return first, second


def test_a_late_worker_cannot_put_back_in_line_or_fail_a_job_another_worker_now_owns(user):
    first, second = claimed_twice(user)
    assert not services.job_retry_schedule(
        job_id=first.id, claim_token=first.claim_token, delay=5, error_code="provider_timeout", error_message="late"
    )
    assert (
        services.job_fail(job_id=first.id, claim_token=first.claim_token, error_code="x", error_message="late") is None
    )
    image = GeneratedImage(content=render_png("late", (8, 8)), mime_type="image/png")
    assert first.claim_token is not None
    assert services.generation_record(job_id=first.id, claim_token=first.claim_token, index=0, result=image) is None
    assert not services.job_complete(job_id=first.id, claim_token=first.claim_token)
    job = Job.objects.get(id=first.id)
    assert (job.status, job.retries, job.result_count, job.claim_token) == ("processing", 0, 0, second.claim_token)
    assert not CreditLedgerEntry.objects.filter(job=job, kind="refund").exists()


def test_retries_are_counted_by_the_database_not_taken_from_the_message(user):
    _, second = claimed_twice(user)
    Job.objects.filter(id=second.id).update(retries=2)
    assert services.job_retry_schedule(
        job_id=second.id, claim_token=second.claim_token, delay=5, error_code="provider_timeout", error_message="down"
    )
    job = Job.objects.get(id=second.id)
    assert (job.status, job.retries, job.claim_token) == ("queued", 3, None)


def test_recovery_leaves_alone_a_job_whose_worker_renewed_its_lease_since_it_was_read(user, settings):
    settings.IMAGE_RETRY_DELAYS = (5.0,)
    job = image_job_create(user_id=user.pk, prompt="renewed", aspect_ratio="1:1", quantity=1, image_urls=[])
    claimed = services.job_claim(job_id=job.id)
    assert claimed is not None
    # Read as abandoned with no retry left, then renewed by its worker before the recovery acts on it.
    Job.objects.filter(id=job.id).update(retries=1, lease_expires_at=timezone.now() + timedelta(minutes=5))
    assert services.job_recover(job_id=job.id) is None
    assert Job.objects.get(id=job.id).status == "processing"
    assert not CreditLedgerEntry.objects.filter(job=job, kind="refund").exists()


@pytest.mark.parametrize("kind", ["image", "video"])
def test_a_free_price_charges_and_refunds_nothing(api, user, settings, kind):
    settings.CREDITS_PER_IMAGE = 0
    settings.VIDEO_PRICES = {settings.VEO_MODEL: {"720p": 0}}
    before = credit_balance(user_id=user.pk)
    response = api.post(f"/api/{kind}s/", {"prompt": "on the house"}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["credit_cost"] == 0
    job_id = response.json()["id"]
    assert api.post(f"/api/jobs/{job_id}/cancel/").status_code == 200
    assert not CreditLedgerEntry.objects.filter(job_id=job_id).exists()
    assert credit_balance(user_id=user.pk) == credit_ledger_total(user_id=user.pk) == before


def test_a_video_with_frames_waits_outside_the_line_until_they_are_stored(make_user):
    user = make_user(credits=100)
    job = video_job_create(
        user_id=user.pk, prompt="framed", aspect_ratio="16:9", duration=4, start_frame="https://example.com/a.png"
    )
    assert (job.status, job.stage) == ("queued", "preparing")
    plain = video_job_create(user_id=user.pk, prompt="plain", aspect_ratio="16:9", duration=4)
    assert plain.stage == "waiting"
    assert job_position(job=job) is None
    assert job_position(job=plain) == 1
