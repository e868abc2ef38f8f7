"""The reconciler: lost messages are re-sent, and dead workers' jobs retried or failed with a refund."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from credits.models import CreditLedgerEntry
from credits.selectors import credit_balance, credit_ledger_total
from generation.images.services import image_job_create
from generation.models import Job
from generation.recovery.reconciler import jobs_reconcile


def queue_length(broker, queue: str) -> int:
    return int(broker.client.llen(f"{broker.namespace}:{queue}"))


def image_job(user) -> Job:
    return image_job_create(user_id=user.pk, prompt="recover me", aspect_ratio="1:1", quantity=2, image_urls=[])


@pytest.mark.django_db
def test_resends_a_queued_job_whose_message_was_lost_once_per_period(broker, user, settings):
    settings.RECONCILE_AFTER = 60
    job = image_job(user)  # in this transaction on_commit never fires: the message is "lost"
    assert jobs_reconcile().redispatched == 0
    Job.objects.filter(id=job.id).update(updated_at=timezone.now() - timedelta(seconds=61))
    assert jobs_reconcile().redispatched == 1
    assert jobs_reconcile().redispatched == 0


@pytest.mark.django_db
def test_a_job_whose_worker_died_is_retried_after_the_backoff(
    broker, user, settings, django_capture_on_commit_callbacks
):
    settings.IMAGE_RETRY_DELAYS = (5.0, 10.0)
    job = image_job(user)
    Job.objects.filter(id=job.id).update(status="processing", lease_expires_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs_reconcile().recovered == 1
    job.refresh_from_db()
    assert job.status == "queued"
    assert job.retries == 1
    assert job.error_code == "worker_lost"
    assert job.next_run_at is not None and job.next_run_at > timezone.now() + timedelta(seconds=4)
    assert queue_length(broker, "images.DQ") == 1


@pytest.mark.django_db
def test_a_job_whose_worker_died_after_its_last_retry_fails_with_a_refund(broker, user, settings):
    settings.IMAGE_RETRY_DELAYS = (5.0,)
    job = image_job(user)
    Job.objects.filter(id=job.id).update(
        status="processing", retries=1, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert jobs_reconcile().failed == 1
    job.refresh_from_db()
    assert job.status == "failed"
    assert CreditLedgerEntry.objects.get(job=job, kind="refund").amount == 2
    assert credit_balance(user_id=user.pk) == credit_ledger_total(user_id=user.pk) == 10


@pytest.mark.django_db
def test_a_worker_that_renewed_its_lease_keeps_its_job(broker, user):
    job = image_job(user)
    Job.objects.filter(id=job.id).update(status="processing", lease_expires_at=timezone.now() + timedelta(minutes=5))
    done = jobs_reconcile()
    assert (done.recovered, done.failed) == (0, 0)
    assert Job.objects.get(id=job.id).status == "processing"
