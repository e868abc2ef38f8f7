"""The retry middleware on its own: what it puts back on the delay queue, and a give-up that runs twice."""

from __future__ import annotations

import json
from typing import Any

import dramatiq
import pytest
from dramatiq.broker import MessageProxy
from dramatiq.common import current_millis

from credits.models import CreditLedgerEntry
from credits.selectors import credit_balance, credit_ledger_total
from generation.images import actors
from generation.images.retries import BackoffRetries
from generation.images.services import image_job_create
from generation.providers import TransientProviderError

pytestmark = pytest.mark.django_db


def backoff_middleware(broker: dramatiq.Broker) -> BackoffRetries:
    return next(m for m in broker.middleware if isinstance(m, BackoffRetries))


def delayed(broker: Any, queue: str) -> dict[str, dict[str, Any]]:
    """The options of the messages waiting on the queue's delay queue, by message id."""
    raw = broker.client.hvals(f"{broker.namespace}:{queue}.DQ.msgs")
    return {message["message_id"]: message["options"] for message in map(json.loads, raw)}


def test_each_retry_is_due_after_the_next_delay_of_the_schedule_then_it_gives_up(broker):
    # Exact whatever the machine's load: when each retry is due, as the middleware queued it.
    recorded: list[float] = []
    gave_up: list[str] = []

    def on_retry(message: MessageProxy, delay: float, exception: BaseException) -> bool:
        recorded.append(delay)
        return True

    @dramatiq.actor(
        actor_name="schedule_probe",
        queue_name="schedule_probe",
        backoff_delays=(0.3, 0.6, 1.2),
        backoff_on_retry=on_retry,
        backoff_on_give_up=lambda message, exception: gave_up.append(message.message_id),
    )
    def probe() -> None: ...

    due: dict[str, tuple[int, int]] = {}
    for attempt in range(4):
        message = MessageProxy(probe.message().copy(options={"retries": attempt}))
        before = current_millis()
        backoff_middleware(broker).after_process_message(broker, message, exception=TransientProviderError("down"))
        due[message.message_id] = (before, current_millis())

    assert recorded == [0.3, 0.6, 1.2]
    waiting = delayed(broker, "schedule_probe")
    *retried, last = due
    assert gave_up == [last]
    assert set(waiting) == set(retried)
    for message_id, delay_ms in zip(retried, (300, 600, 1200), strict=True):
        before, after = due[message_id]
        assert before + delay_ms <= waiting[message_id]["eta"] <= after + delay_ms
    assert [waiting[message_id]["retries"] for message_id in retried] == [1, 2, 3]


def test_exhaustion_handler_running_twice_refunds_once(broker, user):
    job = image_job_create(user_id=user.pk, prompt="twice exhausted", aspect_ratio="1:1", quantity=3, image_urls=[])
    message = MessageProxy(actors.generate_images.message(str(job.id)).copy(options={"retries": 3}))
    middleware = backoff_middleware(broker)
    for _ in range(2):
        middleware.after_process_message(broker, message, exception=TransientProviderError("down", code="x"))
    job.refresh_from_db()
    assert job.status == "failed"
    assert CreditLedgerEntry.objects.filter(job=job, kind="refund").count() == 1
    assert credit_balance(user_id=user.pk) == credit_ledger_total(user_id=user.pk) == 10


def test_middleware_retries_only_the_exceptions_named_and_only_while_the_work_is_the_messages(broker):
    calls: list[str] = []
    still_ours = [True, False]

    def on_retry(*args: object) -> bool:
        calls.append("retry")
        return still_ours.pop(0)

    @dramatiq.actor(
        actor_name="narrow_retries_probe",
        queue_name="probe",
        backoff_delays=(1.0,),
        backoff_retry_on=(TransientProviderError,),
        backoff_on_retry=on_retry,
        backoff_on_give_up=lambda *args: calls.append("gave up"),
    )
    def probe() -> None: ...

    middleware = backoff_middleware(broker)
    middleware.after_process_message(broker, MessageProxy(probe.message()), exception=ValueError("bug"))
    middleware.after_process_message(broker, MessageProxy(probe.message()), exception=TransientProviderError("later"))
    # A message whose job another worker took over meanwhile is not put back.
    middleware.after_process_message(broker, MessageProxy(probe.message()), exception=TransientProviderError("late"))
    assert calls == ["gave up", "retry", "retry"]
    # Only the retryable failure that was still the message's own was put back, on the delay queue.
    assert broker.client.llen(f"{broker.namespace}:probe.DQ") == 1
