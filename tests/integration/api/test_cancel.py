"""Canceling jobs: refunds per the policy, 409 once finished, 404 for others, and workers that stop."""

from __future__ import annotations

from typing import Any

import pytest

from credits.models import CreditLedgerEntry
from credits.selectors import credit_balance, credit_ledger_total
from generation import services
from generation.images.services import image_job_create
from generation.models import Job
from generation.videos.dispatcher import video_dispatch
from generation.videos.services import video_job_create
from testing.clients import token_client
from testing.waits import wait_finished, wait_for
from testing.workers import run_worker


def image_job(api, quantity: int = 3) -> str:
    response = api.post("/api/images/", {"prompt": "to cancel", "quantity": quantity}, format="json")
    assert response.status_code == 202
    return str(response.json()["id"])


@pytest.mark.django_db
def test_canceling_a_queued_job_refunds_it_in_full(api, user):
    job_id = image_job(api)
    response = api.post(f"/api/jobs/{job_id}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert credit_balance(user_id=user.pk) == credit_ledger_total(user_id=user.pk) == 10
    assert CreditLedgerEntry.objects.get(job_id=job_id, kind="refund").amount == 3


@pytest.mark.django_db
def test_canceling_a_finished_job_is_a_conflict(api, user):
    job_id = image_job(api)
    api.post(f"/api/jobs/{job_id}/cancel/")
    second = api.post(f"/api/jobs/{job_id}/cancel/")
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "job_finished"
    assert CreditLedgerEntry.objects.filter(job_id=job_id, kind="refund").count() == 1


@pytest.mark.django_db
def test_nobody_cancels_another_users_job(api, make_user):
    job_id = image_job(api)
    intruder = token_client(make_user())
    assert intruder.post(f"/api/jobs/{job_id}/cancel/").status_code == 404
    assert Job.objects.get(id=job_id).status == "queued"


@pytest.mark.django_db(transaction=True)
def test_a_processing_image_job_stops_after_the_current_image(broker, gateway_settings, user):
    gateway_settings.script("slow", ["slow:0.4"])
    job = image_job_create(user_id=user.pk, prompt="slow fox", aspect_ratio="1:1", quantity=4, image_urls=[])
    worker = run_worker(broker, {"images"})
    try:
        wait_for(lambda: Job.objects.filter(id=job.id, result_count__gte=1).exists(), message="first image")
        services.job_cancel(job_id=job.id, user_id=user.pk)
        worker.join()
    finally:
        worker.stop()
    job.refresh_from_db()
    assert job.status == "canceled"
    # At most the image being drawn when the cancel came is requested after it; none after that.
    assert len(gateway_settings.received(prompt_contains="slow")) <= job.result_count + 1
    refund = CreditLedgerEntry.objects.get(job=job, kind="refund").amount
    assert refund == 4 - job.result_count
    assert credit_balance(user_id=user.pk) == credit_ledger_total(user_id=user.pk)


def cancel_a_generating_video(broker: Any, veo: Any, settings: Any, owner: Any, *, seconds: float) -> Job:
    """With one slot, cancel a video of ``seconds`` once it runs at the provider and wait until the video queued
    behind it has completed; return the canceled job."""
    settings.VIDEO_MAX_CONCURRENT = 1
    veo.generation_seconds = seconds
    running = video_job_create(user_id=owner.pk, prompt="long take", aspect_ratio="16:9", duration=8)
    waiting = video_job_create(user_id=owner.pk, prompt="next take", aspect_ratio="16:9", duration=8)
    worker = run_worker(broker, {"videos"})
    try:
        video_dispatch()
        wait_for(lambda: Job.objects.exclude(operation_name="").filter(id=running.id).exists(), message="start")
        veo.generation_seconds = 0.3
        services.job_cancel(job_id=running.id, user_id=owner.pk)
        assert wait_finished(waiting.id, timeout=20).status == "completed"
    finally:
        worker.stop()
    running.refresh_from_db()
    assert running.status == "canceled"
    return running


@pytest.mark.django_db(transaction=True)
def test_a_generating_video_is_canceled_at_the_provider_and_frees_its_slot(broker, veo_settings, settings, make_user):
    owner = make_user(credits=100)
    running = cancel_a_generating_video(broker, veo_settings, settings, owner, seconds=30)
    # Asked by the cancel itself and by the watcher that stops following the generation.
    assert set(veo_settings.cancels) == {running.operation_name}
    # The documented policy: half back for a video already generating.
    assert CreditLedgerEntry.objects.get(job=running, kind="refund").amount == running.credit_cost // 2
    assert credit_balance(user_id=owner.pk) == credit_ledger_total(user_id=owner.pk)


@pytest.mark.django_db(transaction=True)
def test_a_canceled_video_keeps_its_slot_until_the_provider_has_stopped_it(broker, veo_settings, settings, make_user):
    veo_settings.honours_cancel = False
    cancel_a_generating_video(broker, veo_settings, settings, make_user(credits=100), seconds=1.5)
    # The provider ran the canceled generation to its end: the next one had to wait for it, not for the cancel.
    first, second = veo_settings.starts
    assert second.started_at >= first.started_at + 1.5
    assert veo_settings.max_concurrency == 1
