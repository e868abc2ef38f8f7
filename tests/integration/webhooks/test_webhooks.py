"""Signed webhooks end to end: a real worker posts a job's events to a local receiver that verifies every signature
with the standardwebhooks package; the secret API, rotation, the create fields, the schema and the admin."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin import helpers
from django.utils import timezone
from standardwebhooks.webhooks import WebhookVerificationError

from credits.selectors import credit_balance
from generation.models import Job
from generation.recovery.reconciler import jobs_reconcile
from generation.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookSecret
from generation.webhooks.services import webhook_deliveries_resend
from testing.clients import token_client
from testing.factories import ImageJobFactory
from testing.fakes.receiver import ReceivedWebhook
from testing.waits import wait_finished, wait_for
from testing.webhooks import ALL_EVENTS, hooks_at, signing_secret, submit, verified


@pytest.mark.django_db(transaction=True)
def test_an_image_job_posts_start_progress_per_image_and_completed_all_signed(webhook_worker, receiver, api):
    secret = signing_secret(api)
    job_id = submit(api, receiver.url_for("/hooks"), quantity=3, webhook_events=ALL_EVENTS)
    hooks = hooks_at(receiver, "/hooks", 5)
    bodies = sorted((verified(hook, secret) for hook in hooks), key=lambda body: body["sequence"])
    assert [body["sequence"] for body in bodies] == [1, 2, 3, 4, 5]
    assert [body["type"] for body in bodies] == ["job.start", *["job.progress"] * 3, "job.completed"]
    assert [body["result_count"] for body in bodies[1:4]] == [1, 2, 3]
    assert bodies[-1]["status"] == "completed"
    assert len(bodies[-1]["result_urls"]) == 3
    assert {body["id"] for body in bodies} == {job_id}
    deliveries = wait_for(
        lambda: (
            len(WebhookDelivery.objects.filter(job_id=job_id, status="delivered")) == 5
            and list(WebhookDelivery.objects.filter(job_id=job_id))
        )
    )
    ids = {hook.headers["webhook-id"] for hook in hooks}
    assert ids == {f"msg_{delivery.id}" for delivery in deliveries}
    assert wait_finished(job_id).status == "completed"
    assert len(receiver.received("/hooks")) == 5


@pytest.mark.django_db(transaction=True)
def test_by_default_only_the_end_of_a_job_is_posted_whatever_its_outcome(webhook_worker, receiver, api):
    secret = signing_secret(api)
    submit(api, receiver.url_for("/done"), quantity=2)
    [hook] = hooks_at(receiver, "/done", 1)
    assert verified(hook, secret)["type"] == "job.completed"


@pytest.mark.django_db(transaction=True)
def test_a_failed_job_posts_completed_with_its_failed_status(webhook_worker, gateway_settings, receiver, api, user):
    gateway_settings.script("refused", ["400"])
    submit(api, receiver.url_for("/failed"), prompt="refused fox")
    [hook] = hooks_at(receiver, "/failed", 1)
    body = verified(hook, signing_secret(api))
    assert (body["type"], body["status"], body["error"]["code"]) == ("job.completed", "failed", "invalid_request")
    assert credit_balance(user_id=user.pk) == 10


@pytest.mark.django_db(transaction=True)
def test_during_a_rotation_both_secrets_sign_and_after_it_only_the_new_one(webhook_worker, receiver, api, user):
    old = signing_secret(api)
    new = api.post("/api/webhooks/secret/rotate/").json()["secret"]
    assert new != old
    assert signing_secret(api) == new
    submit(api, receiver.url_for("/overlap"))
    [hook] = hooks_at(receiver, "/overlap", 1)
    entries = hook.headers["webhook-signature"].split(" ")
    assert len(entries) == 2
    assert verified(hook, old) == verified(hook, new)
    # Each entry is the signature of one secret alone.
    assert verified(ReceivedWebhook(hook.path, {**hook.headers, "webhook-signature": entries[0]}, hook.body, 0), new)
    assert verified(ReceivedWebhook(hook.path, {**hook.headers, "webhook-signature": entries[1]}, hook.body, 0), old)

    WebhookSecret.objects.filter(user=user).update(previous_valid_until=timezone.now() - timedelta(seconds=1))
    submit(api, receiver.url_for("/after"))
    [later] = hooks_at(receiver, "/after", 1)
    assert len(later.headers["webhook-signature"].split(" ")) == 1
    assert verified(later, new)["type"] == "job.completed"
    with pytest.raises(WebhookVerificationError):
        verified(later, old)


@pytest.mark.django_db
def test_the_secret_is_made_on_first_use_and_kept(api):
    secret = signing_secret(api)
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    assert signing_secret(api) == secret


@pytest.mark.django_db
def test_each_user_has_a_secret_of_their_own(api, make_user):
    assert signing_secret(api) != signing_secret(token_client(make_user()))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"), [("get", "/api/webhooks/secret/"), ("post", "/api/webhooks/secret/rotate/")]
)
def test_the_secret_endpoints_require_authentication(client, method, path):
    assert getattr(client, method)(path).status_code == 401


@pytest.mark.django_db
def test_a_create_keeps_its_webhook_and_events_in_one_order(make_user):
    api = token_client(make_user(credits=100))
    body = {"prompt": "a fox", "webhook_url": "https://hooks.example.com/in", "webhook_events": ["completed", "start"]}
    response = api.post("/api/images/", body, format="json")
    assert response.status_code == 202
    job = Job.objects.get(id=response.json()["id"])
    assert (job.webhook_url, job.webhook_events) == ("https://hooks.example.com/in", ["start", "completed"])
    default = api.post("/api/videos/", {"prompt": "a fox", "webhook_url": "https://hooks.example.com/v"}, format="json")
    assert Job.objects.get(id=default.json()["id"]).webhook_events == ["completed"]


@pytest.mark.django_db
def test_an_unknown_webhook_event_is_refused(api, user):
    body = {"prompt": "a fox", "webhook_url": "https://hooks.example.com/in", "webhook_events": ["finished"]}
    response = api.post("/api/images/", body, format="json")
    assert response.status_code == 400
    assert "webhook_events" in response.json()["error"]["fields"]
    assert credit_balance(user_id=user.pk) == 10


@pytest.mark.django_db
def test_production_takes_https_webhooks_only(api, settings, user):
    settings.PRODUCTION = True
    refused = api.post("/api/images/", {"prompt": "a fox", "webhook_url": "http://hooks.example.com/"}, format="json")
    assert refused.status_code == 400
    assert "webhook_url" in refused.json()["error"]["fields"]
    accepted = api.post("/api/images/", {"prompt": "a fox", "webhook_url": "https://hooks.example.com/"}, format="json")
    assert accepted.status_code == 202


@pytest.mark.django_db
def test_an_idempotent_retry_with_a_webhook_returns_the_first_job(api, user):
    body = {"prompt": "a fox", "webhook_url": "https://hooks.example.com/in", "webhook_events": ["start", "completed"]}
    first = api.post("/api/images/", body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    again = api.post("/api/images/", body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert first.json()["id"] == again.json()["id"]
    assert credit_balance(user_id=user.pk) == 9
    other = {**body, "webhook_url": "https://hooks.example.com/elsewhere"}
    assert api.post("/api/images/", other, format="json", HTTP_IDEMPOTENCY_KEY="key-1").status_code == 422


@pytest.mark.django_db
def test_the_schema_shows_the_webhook_endpoints_and_fields(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert {"/api/webhooks/secret/", "/api/webhooks/secret/rotate/"} <= set(schema["paths"])
    for request in ("ImageRequestRequest", "VideoRequestRequest"):
        assert {"webhook_url", "webhook_events"} <= set(schema["components"]["schemas"][request]["properties"])
    assert "secret" in schema["components"]["schemas"]["WebhookSecret"]["properties"]


def delivery_of(job: Job, **fields: Any) -> WebhookDelivery:
    defaults: dict[str, Any] = {
        "event": "completed",
        "result_count": 0,
        "sequence": 1,
        "url": "https://hooks.example.com/in",
        "payload": {"type": "job.completed"},
        "status": "failed",
        "attempt_count": 1,
        "last_status_code": 500,
    }
    return WebhookDelivery.objects.create(job=job, **{**defaults, **fields})


DELIVERIES_URL = "/admin/webhooks/webhookdelivery/"


@pytest.mark.django_db
def test_the_delivery_admin_lists_filters_and_finds_by_job_and_url(admin_client):
    failed = delivery_of(ImageJobFactory.create())
    delivered = delivery_of(ImageJobFactory.create(), status="delivered", url="https://other.example.com/x")
    for query, expected in [
        ({"status__exact": "failed"}, {failed}),
        ({"event__exact": "completed"}, {failed, delivered}),
        ({"q": str(delivered.job_id)}, {delivered}),
        ({"q": "other.example.com"}, {delivered}),
    ]:
        response = admin_client.get(DELIVERIES_URL, query)
        assert response.status_code == 200
        assert set(response.context["cl"].result_list) == expected, query


@pytest.mark.django_db
def test_the_delivery_page_shows_its_attempts(admin_client):
    delivery = delivery_of(ImageJobFactory.create())
    WebhookAttempt.objects.create(
        delivery=delivery,
        status_code=None,
        latency_ms=10000,
        error="No answer within 10 s.",
        attempted_at=timezone.now(),
    )
    response = admin_client.get(f"{DELIVERIES_URL}{delivery.id}/change/")
    assert response.status_code == 200
    assert "No answer within 10 s." in response.content.decode()


@pytest.mark.django_db
def test_redeliver_queues_a_new_attempt_now(admin_client):
    delivery = delivery_of(ImageJobFactory.create())
    data = {"action": "redeliver", helpers.ACTION_CHECKBOX_NAME: [str(delivery.id)], "index": 0}
    response = admin_client.post(DELIVERIES_URL, data, follow=True)
    assert response.status_code == 200
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert delivery.next_attempt_at is not None
    assert delivery.next_attempt_at <= timezone.now()


@pytest.mark.django_db
def test_the_reconciler_resends_a_pending_delivery_whose_message_was_lost(
    broker, settings, django_capture_on_commit_callbacks
):
    settings.RECONCILE_AFTER = 60
    overdue = delivery_of(ImageJobFactory.create(), status="pending", next_attempt_at=timezone.now())
    assert webhook_deliveries_resend() == 0
    WebhookDelivery.objects.filter(id=overdue.id).update(next_attempt_at=timezone.now() - timedelta(seconds=61))
    delivery_of(ImageJobFactory.create(), status="delivered", next_attempt_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        done = jobs_reconcile()
    # Counted as what they are: the reconciler's log names webhook deliveries apart from jobs.
    assert (done.webhooks_resent, done.redispatched) == (1, 0)
    assert broker.client.llen(f"{broker.namespace}:webhooks") == 1
