"""Delivering webhooks: retries on a schedule, 410 Gone, a receiver that hangs, redirects and private addresses."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from credits.selectors import credit_balance
from generation.models import Job
from generation.webhooks.delivery import AttemptOutcome, webhook_post
from generation.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookGoneUrl
from generation.webhooks.services import webhook_attempt_record
from testing.factories import ImageJobFactory
from testing.waits import wait_finished, wait_for
from testing.webhooks import ALL_EVENTS, hooks_at, signing_secret, submit, verified


def ended_deliveries(job_id: str, count: int) -> list[WebhookDelivery]:
    """The job's deliveries once ``count`` of them have ended, oldest first."""

    def ended() -> list[WebhookDelivery] | None:
        deliveries = list(WebhookDelivery.objects.filter(job_id=job_id).exclude(status="pending").order_by("sequence"))
        return deliveries if len(deliveries) >= count else None

    return wait_for(ended, message=f"{count} ended deliveries")


def attempts_of(delivery: WebhookDelivery) -> list[WebhookAttempt]:
    return list(delivery.attempts.order_by("attempted_at", "id"))


@pytest.mark.django_db(transaction=True)
def test_retries_after_a_500_on_schedule_with_the_same_id_then_delivers(webhook_worker, receiver, api):
    receiver.script("/flaky", ["500", "500", "ok"])
    secret = signing_secret(api)
    job_id = submit(api, receiver.url_for("/flaky"))
    hooks = hooks_at(receiver, "/flaky", 3)
    assert len({hook.headers["webhook-id"] for hook in hooks}) == 1
    assert len({verified(hook, secret)["sequence"] for hook in hooks}) == 1
    gaps = [later.received_at - earlier.received_at for earlier, later in itertools.pairwise(hooks)]
    # Delays of 0.2 and 0.4 s. The schedule is the behaviour, so it stays checked: never early, strictly; never
    # stalled, with room for a loaded 2-core machine, where the worker's threads may wait a second or more for a core.
    for gap, delay in zip(gaps, (0.2, 0.4), strict=True):
        assert delay <= gap < delay + 2.0, gaps
    [delivery] = ended_deliveries(job_id, 1)
    assert (delivery.status, delivery.attempt_count, delivery.last_status_code) == ("delivered", 3, 200)
    assert [attempt.status_code for attempt in attempts_of(delivery)] == [500, 500, 200]
    assert [attempt.error for attempt in attempts_of(delivery)] == ["HTTP 500", "HTTP 500", ""]


@pytest.mark.django_db(transaction=True)
def test_fails_once_the_retry_schedule_is_used_up(webhook_worker, receiver, api):
    receiver.script("/down", ["500"])
    job_id = submit(api, receiver.url_for("/down"))
    [delivery] = ended_deliveries(job_id, 1)
    assert (delivery.status, delivery.attempt_count, delivery.next_attempt_at) == ("failed", 3, None)
    assert len(receiver.received("/down")) == 3


@pytest.mark.django_db(transaction=True)
def test_a_410_stops_every_delivery_to_that_url_for_that_user(webhook_worker, receiver, api, user):
    receiver.script("/gone", ["410"])
    first = submit(api, receiver.url_for("/gone"), quantity=2, webhook_events=ALL_EVENTS)
    assert wait_finished(first).status == "completed"
    deliveries = ended_deliveries(first, 1)
    assert WebhookGoneUrl.objects.filter(user=user, url=receiver.url_for("/gone")).exists()
    wait_for(lambda: not WebhookDelivery.objects.filter(job_id=first, status="pending").exists())
    assert {delivery.status for delivery in WebhookDelivery.objects.filter(job_id=first)} == {"stopped"}
    received = len(receiver.received("/gone"))
    assert received <= len(deliveries) + 3

    later = submit(api, receiver.url_for("/gone"), webhook_events=ALL_EVENTS)
    assert wait_finished(later).status == "completed"
    submit(api, receiver.url_for("/still-here"))
    hooks_at(receiver, "/still-here", 1)
    assert not WebhookDelivery.objects.filter(job_id=later).exists()
    assert len(receiver.received("/gone")) == received


@pytest.mark.django_db
def test_a_410_stops_the_pending_deliveries_to_that_url():
    job = ImageJobFactory.create(webhook_url="https://hooks.example.com/in", webhook_events=ALL_EVENTS)
    common: dict[str, Any] = {"job": job, "url": job.webhook_url, "payload": {}, "next_attempt_at": timezone.now()}
    answered = WebhookDelivery.objects.create(event="start", result_count=0, sequence=1, **common)
    waiting = WebhookDelivery.objects.create(event="completed", result_count=1, sequence=2, **common)
    other_url = WebhookDelivery.objects.create(
        **{**common, "url": "https://hooks.example.com/other"}, event="progress", result_count=1, sequence=3
    )
    webhook_attempt_record(
        delivery_id=answered.id, outcome=AttemptOutcome(attempted_at=timezone.now(), latency_ms=5, status_code=410)
    )
    statuses = {d.id: d.status for d in WebhookDelivery.objects.all()}
    assert statuses == {answered.id: "stopped", waiting.id: "stopped", other_url.id: "pending"}


@pytest.mark.django_db(transaction=True)
def test_a_hanging_receiver_is_cut_at_the_deadline_and_the_job_is_not_held_up(webhook_worker, receiver, api, settings):
    settings.WEBHOOK_TIMEOUT = 2
    settings.WEBHOOK_RETRY_DELAYS = (60,)
    receiver.script("/hang", ["hang:30"])
    job_id = submit(api, receiver.url_for("/hang"), quantity=2, webhook_events=ALL_EVENTS)
    job = wait_finished(job_id)
    assert job.status == "completed"
    attempt = wait_for(lambda: WebhookAttempt.objects.filter(delivery__job_id=job_id).order_by("attempted_at").first())
    assert attempt.status_code is None
    assert attempt.error == "No answer within 2 s."
    # Cut at the 2 s deadline: never before it; after it by far less than the receiver's 30 s, however loaded the
    # machine.
    assert 2000 <= attempt.latency_ms < 2000 + 5000
    # The job ended while its first event's receiver was still hanging.
    assert job.finished_at is not None
    assert job.finished_at < attempt.attempted_at + timedelta(milliseconds=attempt.latency_ms)
    delivery = WebhookDelivery.objects.get(id=attempt.delivery_id)
    assert delivery.status == "pending"
    assert delivery.next_attempt_at is not None
    assert delivery.next_attempt_at > timezone.now() + timedelta(seconds=50)


@pytest.mark.django_db(transaction=True)
def test_redirects_are_not_followed(webhook_worker, receiver, api, settings):
    settings.WEBHOOK_RETRY_DELAYS = (0.2,)
    receiver.script("/moved", ["redirect"])
    job_id = submit(api, receiver.url_for("/moved"))
    [delivery] = ended_deliveries(job_id, 1)
    assert (delivery.status, delivery.attempt_count, delivery.last_status_code) == ("failed", 2, 302)
    assert all("not followed" in attempt.error for attempt in attempts_of(delivery))
    assert receiver.received("/redirected") == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8000/hook",
        "http://[::1]/hook",
    ],
)
def test_a_private_webhook_url_is_refused_and_nothing_is_charged(api, user, settings, url):
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = False
    response = api.post("/api/images/", {"prompt": "a fox", "webhook_url": url}, format="json")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["webhook_url"]
    assert credit_balance(user_id=user.pk) == 10
    assert not Job.objects.exists()


def test_a_delivery_to_a_private_address_is_refused_before_anything_is_sent(receiver, settings):
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = False
    outcome = webhook_post(
        url=receiver.url_for("/private"), message_id="msg_x", body=b"{}", secrets=["whsec_c2VjcmV0"], timeout=2
    )
    assert outcome.refused
    assert outcome.status_code is None
    assert "not on a public address" in outcome.error
    assert receiver.received() == []
