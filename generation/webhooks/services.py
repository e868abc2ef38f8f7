"""Writes of the webhooks app: signing secrets, the deliveries a job's changes produce, and each attempt's outcome."""

from __future__ import annotations

import base64
import logging
import secrets
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from generation.dispatch import message_send_on_commit
from generation.models import Job
from generation.serializers import job_snapshot
from generation.webhooks.delivery import SECRET_PREFIX, AttemptOutcome
from generation.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookGoneUrl, WebhookSecret
from generation.webhooks.selectors import webhook_url_gone

logger = logging.getLogger(__name__)

DELIVER_ACTOR = "deliver_webhook"
# The spec asks for at least 24 random bytes.
SECRET_BYTES = 32
# A message that arrives this much before its attempt is due (clocks of different machines) is still on time.
_EARLY_TOLERANCE = timedelta(seconds=1)
# Seconds past its deadline after which a claimed attempt counts as abandoned (its worker died).
_ATTEMPT_GRACE = 30
# Overdue deliveries sent again in one reconciler pass.
_RESEND_BATCH = 500

Event = WebhookDelivery.Event
Status = WebhookDelivery.Status


def _secret_new() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def webhook_secret_get_or_create(*, user_id: int) -> WebhookSecret:
    """The user's signing secret, made on first use."""
    secret, _created = WebhookSecret.objects.get_or_create(user_id=user_id, defaults={"secret": _secret_new()})
    return secret


@transaction.atomic(durable=True)
def webhook_secret_rotate(*, user_id: int) -> WebhookSecret:
    """Replace the user's signing secret; the one replaced still signs deliveries for ``WEBHOOK_SECRET_OVERLAP``
    seconds (a second rotation within that time ends the first one's overlap)."""
    webhook_secret_get_or_create(user_id=user_id)
    # Locked, so that of two rotations at once each retires the secret the other made, and none is lost unseen.
    secret = WebhookSecret.objects.select_for_update().get(user_id=user_id)
    now = timezone.now()
    secret.previous_secret = secret.secret
    secret.previous_valid_until = now + timedelta(seconds=settings.WEBHOOK_SECRET_OVERLAP)
    secret.secret = _secret_new()
    secret.rotated_at = now
    secret.save()
    logger.info("webhook secret of user %s rotated", user_id)
    return secret


def _events_due(job: Job) -> list[tuple[str, int]]:
    """The events a job in this state has produced, in order, among those its owner asked for."""
    due = []
    if job.status == Job.Status.PROCESSING or job.started_at is not None:
        due.append(Event.START)
    if job.result_count:
        due.append(Event.PROGRESS)
    if job.is_finished:
        due.append(Event.COMPLETED)
    return [(str(event), job.result_count) for event in due if event in job.webhook_events]


def _event_key(event: str, result_count: int) -> tuple[str, int]:
    # Start and completed happen once per job; progress once per result count.
    return (event, result_count if event == Event.PROGRESS else 0)


def _events_new(job: Job) -> list[tuple[str, int]]:
    """The due events of the job that have no delivery yet."""
    deliveries = WebhookDelivery.objects.filter(job_id=job.id)
    made = {_event_key(event, count) for event, count in deliveries.values_list("event", "result_count")}
    return [(event, count) for event, count in _events_due(job) if _event_key(event, count) not in made]


def webhook_deliveries_open(*, job: Job, snapshot: dict[str, Any]) -> list[WebhookDelivery]:
    """Make a delivery for each event a committed change of ``job`` produced (once per event, numbered in the
    order they were made) and send it once that commits."""
    # Most changes produce nothing new: that is answered by one indexed read, without a lock.
    if not job.webhook_url or not _events_new(job) or webhook_url_gone(user_id=job.user_id, url=job.webhook_url):
        return []
    return _deliveries_create(job=job, snapshot=snapshot)


@transaction.atomic(durable=True)
def _deliveries_create(*, job: Job, snapshot: dict[str, Any]) -> list[WebhookDelivery]:
    # The job's row lock orders the processes that publish its changes, and the events are worked out from the job
    # as it is now, not as a late publisher saw it: a sequence never goes back to an older state.
    current = Job.objects.select_for_update(no_key=True).get(id=job.id)
    new = _events_new(current)
    if not new:
        return []
    if current.updated_at != job.updated_at:
        snapshot = job_snapshot(current)
    sequence = WebhookDelivery.objects.filter(job_id=current.id).aggregate(last=Max("sequence"))["last"] or 0
    now = timezone.now()
    deliveries = []
    for event, result_count in new:
        sequence += 1
        payload = {**snapshot, "type": f"job.{event}", "sequence": sequence, "timestamp": now.isoformat()}
        delivery = WebhookDelivery.objects.create(
            job=current,
            event=event,
            result_count=result_count,
            sequence=sequence,
            url=current.webhook_url,
            payload=payload,
            next_attempt_at=now,
        )
        message_send_on_commit(DELIVER_ACTOR, str(delivery.id))
        deliveries.append(delivery)
    logger.info("job %s: webhook events %s queued", current.id, ", ".join(event for event, _count in new))
    return deliveries


def webhook_delivery_claim(*, delivery_id: UUID | str) -> WebhookDelivery | None:
    """Take a pending delivery whose attempt is due for one attempt; None when it is not due or not pending, or
    when its URL has gone (it is stopped then)."""
    now = timezone.now()
    # One conditional UPDATE: of two messages for one delivery only one attempts it. Its lease lets a later message
    # try again should this worker die mid-attempt.
    claimed = WebhookDelivery.objects.filter(
        id=delivery_id, status=Status.PENDING, next_attempt_at__lte=now + _EARLY_TOLERANCE
    ).update(next_attempt_at=now + timedelta(seconds=settings.WEBHOOK_TIMEOUT + _ATTEMPT_GRACE))
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("job").get(id=delivery_id)
    if webhook_url_gone(user_id=delivery.job.user_id, url=delivery.url):
        _deliveries_stop(user_id=delivery.job.user_id, url=delivery.url)
        return None
    return delivery


@transaction.atomic(durable=True)
def webhook_attempt_record(*, delivery_id: UUID | str, outcome: AttemptOutcome) -> WebhookDelivery:
    """Record one attempt and what follows it: delivered; on 410 Gone no more deliveries to that URL for the user;
    another attempt on the ``WEBHOOK_RETRY_DELAYS`` schedule; or, the schedule used up, failed."""
    delivery = WebhookDelivery.objects.select_for_update(of=("self",)).select_related("job").get(id=delivery_id)
    WebhookAttempt.objects.create(
        delivery=delivery,
        status_code=outcome.status_code,
        latency_ms=outcome.latency_ms,
        error=outcome.error,
        attempted_at=outcome.attempted_at,
    )
    delivery.attempt_count += 1
    delivery.last_status_code = outcome.status_code
    # Stopped meanwhile (another delivery's receiver answered 410), the attempt is only recorded.
    if delivery.status == Status.PENDING:
        _delivery_advance(delivery=delivery, outcome=outcome)
    delivery.save()
    return delivery


def _delivery_advance(*, delivery: WebhookDelivery, outcome: AttemptOutcome) -> None:
    delays = settings.WEBHOOK_RETRY_DELAYS
    retry = delivery.attempt_count - 1
    if outcome.delivered:
        _delivery_finish(delivery, Status.DELIVERED)
    elif outcome.status_code == 410:
        user_id = delivery.job.user_id
        WebhookGoneUrl.objects.get_or_create(user_id=user_id, url=delivery.url)
        _delivery_finish(delivery, Status.STOPPED)
        stopped = _deliveries_stop(user_id=user_id, url=delivery.url)
        logger.warning("webhook URL of user %s answered 410 Gone; %d pending deliveries stopped", user_id, stopped)
    elif outcome.refused or retry >= len(delays):
        _delivery_finish(delivery, Status.FAILED)
        logger.warning("webhook delivery %s failed after %d attempts", delivery.id, delivery.attempt_count)
    else:
        delivery.next_attempt_at = timezone.now() + timedelta(seconds=delays[retry])
        message_send_on_commit(DELIVER_ACTOR, str(delivery.id), delay=delays[retry])


def _delivery_finish(delivery: WebhookDelivery, status: str) -> None:
    delivery.status = status
    delivery.next_attempt_at = None
    delivery.finished_at = timezone.now()


def _deliveries_stop(*, user_id: int, url: str) -> int:
    """Stop every pending delivery of the user to ``url``; how many were."""
    return WebhookDelivery.objects.filter(job__user_id=user_id, url=url, status=Status.PENDING).update(
        status=Status.STOPPED, next_attempt_at=None, finished_at=timezone.now()
    )


@transaction.atomic(durable=True)
def webhook_delivery_redeliver(*, delivery_id: UUID | str) -> WebhookDelivery:
    """Queue a new attempt of a delivery at once, whatever became of it (an operator's "Redeliver")."""
    delivery = WebhookDelivery.objects.select_for_update().get(id=delivery_id)
    delivery.status = Status.PENDING
    delivery.next_attempt_at = timezone.now()
    delivery.finished_at = None
    delivery.save(update_fields=["status", "next_attempt_at", "finished_at"])
    message_send_on_commit(DELIVER_ACTOR, str(delivery.id))
    return delivery


def webhook_deliveries_resend() -> int:
    """Send again the pending deliveries whose attempt is overdue by ``RECONCILE_AFTER`` (their message was lost, or
    their worker died mid-attempt); how many."""
    overdue = WebhookDelivery.objects.filter(
        status=Status.PENDING, next_attempt_at__lt=timezone.now() - timedelta(seconds=settings.RECONCILE_AFTER)
    )
    resent = 0
    # A duplicate is harmless: the claim lets one message attempt a delivery at a time.
    for delivery_id in overdue.order_by("next_attempt_at").values_list("id", flat=True)[:_RESEND_BATCH]:
        message_send_on_commit(DELIVER_ACTOR, str(delivery_id))
        resent += 1
    return resent
