"""Operations: the health and readiness probes, the Prometheus metrics and the credit audit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.utils import timezone

from core.connections import redis_client
from credits.services import credit_refund
from generation.models import Job
from generation.services import job_fail
from generation.videos.services import video_job_create
from testing.factories import charged_image_job
from testing.live import free_port
from testing.metrics import scrape


def test_healthz_answers_without_credentials_or_database(client):
    # No django_db mark: any database access here would fail the test.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_ready_when_database_and_redis_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok", "redis": "ok"}


@pytest.mark.django_db
def test_readyz_is_unavailable_when_redis_does_not_answer(client, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not_ready", "database": "ok", "redis": "unavailable"}


@pytest.mark.django_db
def test_readyz_is_unavailable_when_the_database_does_not_answer(client, monkeypatch):
    # The probe opens a connection of its own from these settings; the test's open connection is left alone.
    database = connections.settings["default"]
    monkeypatch.setitem(database, "HOST", "127.0.0.1")
    monkeypatch.setitem(database, "PORT", str(free_port()))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not_ready", "database": "unavailable", "redis": "ok"}


@pytest.mark.django_db
def test_metrics_refuse_anonymous_and_non_staff_callers(client, make_user, settings):
    settings.METRICS_TOKEN = "scrape-token"
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong-token").status_code == 403
    client.force_login(make_user())
    assert client.get("/metrics").status_code == 403


@pytest.mark.django_db
def test_metrics_refuse_a_bearer_token_when_none_is_configured(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403


@pytest.mark.django_db
def test_metrics_are_served_to_staff_and_to_the_token_holder(client, make_user, settings):
    settings.METRICS_TOKEN = "scrape-token"
    assert ("genservice_metrics_source_up", (("source", "redis"),)) in scrape(
        client, HTTP_AUTHORIZATION="Bearer scrape-token"
    )
    client.force_login(make_user(is_staff=True))
    assert ("genservice_metrics_source_up", (("source", "database"),)) in scrape(client)


@pytest.mark.django_db
def test_metrics_report_jobs_timings_retries_refunds_and_queue_depth(
    admin_client, make_user, broker, django_capture_on_commit_callbacks
):
    broker.flush_all()
    user = make_user(credits=20)
    with django_capture_on_commit_callbacks(execute=True):
        queued = charged_image_job(user, quantity=2)
    failed = charged_image_job(user, quantity=3)
    Job.objects.filter(id=failed.id).update(retries=3)
    job_fail(job_id=failed.id, error_code="provider_unavailable", error_message="down")
    now = timezone.now()
    for seconds in (10, 20):
        job = charged_image_job(user)
        Job.objects.filter(id=job.id).update(
            status=Job.Status.COMPLETED,
            created_at=now - timedelta(seconds=seconds + 4),
            started_at=now - timedelta(seconds=seconds),
            finished_at=now,
        )
    Job.objects.filter(id=queued.id).update(retries=1)
    video_job_create(user_id=user.pk, prompt="waiting clip", aspect_ratio="16:9", duration=4)

    samples = scrape(admin_client)

    assert samples["genservice_jobs", (("kind", "image"), ("status", "queued"))] == 1
    assert samples["genservice_jobs", (("kind", "image"), ("status", "failed"))] == 1
    assert samples["genservice_jobs", (("kind", "image"), ("status", "completed"))] == 2
    assert samples["genservice_jobs", (("kind", "video"), ("status", "queued"))] == 1
    assert samples["genservice_video_stage", (("stage", "waiting"),)] == 1
    assert samples["genservice_video_stage", (("stage", "generating"),)] == 0
    assert samples["genservice_job_retries_total", (("kind", "image"),)] == 4
    assert samples["genservice_refunds_total", (("kind", "image"),)] == 1
    assert samples["genservice_refunded_credits_total", (("kind", "image"),)] == 3
    assert samples["genservice_jobs_completed_last_hour", (("kind", "image"),)] == 2
    assert samples["genservice_jobs_completed_last_hour", (("kind", "video"),)] == 0
    assert samples["genservice_job_duration_mean_seconds", (("kind", "image"),)] == pytest.approx(15)
    assert samples["genservice_job_duration_seconds", (("kind", "image"), ("quantile", "0.5"))] == pytest.approx(15)
    assert samples["genservice_job_duration_seconds", (("kind", "image"), ("quantile", "0.95"))] == pytest.approx(19.5)
    assert samples["genservice_job_wait_mean_seconds", (("kind", "image"),)] == pytest.approx(4)
    assert samples["genservice_queue_depth", (("queue", "images"),)] == 1
    assert samples["genservice_queue_depth", (("queue", "images.DQ"),)] == 0
    assert samples["genservice_queue_messages", (("queue", "images"),)] == 1
    assert samples["genservice_queue_depth", (("queue", "videos"),)] == 0
    assert samples["genservice_queue_dead_letters", (("queue", "images"),)] == 0
    assert samples["genservice_video_slots_in_use", ()] == 0
    assert not [name for name, _labels in samples if name == "genservice_event_streams_open"]
    assert samples["genservice_event_streams_dropped_total", ()] == 0
    assert samples["genservice_metrics_source_up", (("source", "database"),)] == 1
    assert samples["genservice_metrics_source_up", (("source", "redis"),)] == 1


@pytest.mark.django_db
def test_metrics_still_report_the_database_when_redis_is_down(admin_client, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    redis_client.cache_clear()
    try:
        samples = scrape(admin_client)
    finally:
        redis_client.cache_clear()
    assert samples["genservice_metrics_source_up", (("source", "redis"),)] == 0
    assert samples["genservice_metrics_source_up", (("source", "database"),)] == 1
    assert ("genservice_jobs", (("kind", "image"), ("status", "queued"))) in samples


@pytest.mark.django_db
def test_audit_passes_a_consistent_ledger(make_user, capsys):
    user = make_user(credits=10)
    job = charged_image_job(user, quantity=2)
    job_fail(job_id=job.id, error_code="content_refused", error_message="refused")
    call_command("audit_credits")
    assert capsys.readouterr().out.startswith("OK")


@pytest.mark.django_db
def test_audit_quiet_prints_nothing_when_all_is_well(make_user, capsys):
    make_user(credits=10)
    call_command("audit_credits", "--quiet")
    assert capsys.readouterr().out == ""


@pytest.mark.django_db
def test_audit_names_the_user_and_the_difference_of_a_tampered_balance(make_user, capsys):
    honest = make_user(credits=10, username="honest")
    tampered = make_user(credits=10, username="tampered")
    charged_image_job(honest)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE credits_creditaccount SET balance = balance + 5 WHERE user_id = %s", [tampered.pk])
    with pytest.raises(CommandError, match=r"found 1 problem"):
        call_command("audit_credits", "--quiet")
    assert capsys.readouterr().out.splitlines() == ["tampered: balance 15 but the ledger sums to 10 (difference +5)"]


@pytest.mark.django_db
def test_audit_finds_a_balance_after_that_is_not_the_running_sum(make_user, capsys):
    user = make_user(credits=10, username="drifted")
    account = user.credit_account
    entry = account.entries.create(kind="adjustment", amount=3, balance_after=30, note="miscomputed")
    account.balance = 13
    account.save()
    with pytest.raises(CommandError):
        call_command("audit_credits")
    assert capsys.readouterr().out.splitlines() == [
        f"drifted: ledger entry {entry.id} (adjustment) records a balance of 30 but the entries up to it sum to 13 "
        "(difference +17)"
    ]


@pytest.mark.django_db
def test_audit_finds_wrong_charges_and_refunds_of_unfinished_jobs(make_user, capsys):
    user = make_user(credits=10, username="buyer")
    overcharged = charged_image_job(user, quantity=2)
    Job.objects.filter(id=overcharged.id).update(credit_cost=1)
    refunded_early = charged_image_job(user, quantity=2)
    credit_refund(user_id=refunded_early.user_id, job_id=refunded_early.id, amount=2)
    with pytest.raises(CommandError, match=r"found 2 problem"):
        call_command("audit_credits")
    assert capsys.readouterr().out.splitlines() == [
        f"buyer: job {overcharged.id} costs 1 but was charged 2",
        f"buyer: job {refunded_early.id} was refunded 2 while still queued",
    ]
