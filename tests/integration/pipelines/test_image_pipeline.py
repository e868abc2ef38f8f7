"""The image actor and the retry middleware, run by a real Dramatiq worker against the fake gateway."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
from django.core.files.storage import default_storage
from dramatiq.broker import MessageProxy

from credits.models import CreditLedgerEntry
from credits.selectors import credit_balance, credit_ledger_total
from generation.images import actors
from generation.images.retries import BackoffRetries
from generation.images.services import image_job_create
from generation.models import Job
from generation.providers import TransientProviderError
from tests.conftest import run_worker

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(predicate: Callable[[], Any], timeout: float = 15, message: str = "condition") -> Any:
    """Poll until the predicate is truthy, failing the test after the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {message}")


def wait_finished(job_id: Any, timeout: float = 15) -> Job:
    return wait_for(lambda: Job.objects.filter(id=job_id).exclude(status__in=["queued", "processing"]).first(), timeout)


@pytest.fixture
def worker(broker: dramatiq.Broker, gateway_settings: Any) -> Iterator[dramatiq.Worker]:
    """A real worker consuming the images queue from Redis in this process."""
    running = run_worker(broker, {"images"})
    yield running
    running.stop()


def submit(user: Any, prompt: str, quantity: int = 1) -> Job:
    job = image_job_create(user_id=user.pk, prompt=prompt, aspect_ratio="1:1", quantity=quantity, image_urls=[])
    return job


def test_completes_a_job_storing_every_image(worker, gateway_settings, user):
    job = submit(user, "three foxes", quantity=3)
    job = wait_finished(job.id)
    assert job.status == "completed"
    assert job.result_count == 3
    generations = list(job.generations.order_by("index"))
    assert [generation.index for generation in generations] == [0, 1, 2]
    for generation in generations:
        assert default_storage.exists(str(generation.file.name))
        assert generation.size == default_storage.size(str(generation.file.name)) > 0
        assert generation.mime_type == "image/png"
    assert credit_balance(user_id=user.pk) == 7


def test_retries_transient_failures_after_the_configured_delays(worker, gateway_settings, user):
    gateway_settings.script("flaky", ["500", "429", "500", "ok"])
    job = wait_finished(submit(user, "flaky fox").id)
    assert job.status == "completed"
    assert job.retries == 3
    times = [request.received_at for request in gateway_settings.received(prompt_contains="flaky")]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # Delays of 0.3, 0.6 and 1.2 s; the worker polls its delay queue every 20 ms.
    for gap, delay in zip(gaps, (0.3, 0.6, 1.2), strict=True):
        assert delay <= gap < delay + 0.25, gaps


def test_a_waiting_job_shows_its_retries_and_next_run(worker, gateway_settings, settings, user):
    settings.IMAGE_RETRY_DELAYS = (2.0,)
    gateway_settings.script("patient", ["500", "ok"])
    job = submit(user, "patient fox")
    waiting = wait_for(lambda: Job.objects.filter(id=job.id, status="queued", retries=1).first())
    assert waiting.next_run_at is not None
    assert 1.0 < (waiting.next_run_at - waiting.updated_at).total_seconds() <= 2.0
    assert waiting.error_code == "provider_unavailable"
    assert wait_finished(job.id).status == "completed"


def test_fails_and_refunds_after_the_third_retry(worker, gateway_settings, user):
    gateway_settings.script("doomed", ["500"])
    job = wait_finished(submit(user, "doomed fox", quantity=2).id)
    assert job.status == "failed"
    assert job.error_code == "provider_unavailable"
    assert len(gateway_settings.received(prompt_contains="doomed")) == 4
    assert credit_balance(user_id=user.pk) == credit_ledger_total(user_id=user.pk) == 10
    refund = CreditLedgerEntry.objects.get(job=job, kind="refund")
    assert refund.amount == 2


def test_permanent_error_fails_at_once_with_a_refund(worker, gateway_settings, user):
    gateway_settings.script("refused", ["400"])
    job = wait_finished(submit(user, "refused fox").id)
    assert job.status == "failed"
    assert job.error_code == "invalid_request"
    assert job.retries == 0
    assert len(gateway_settings.received(prompt_contains="refused")) == 1
    assert credit_balance(user_id=user.pk) == 10


def test_partial_progress_is_kept_across_retries(worker, gateway_settings, user):
    gateway_settings.script("partial", ["ok", "500", "ok", "ok"])
    job = wait_finished(submit(user, "partial fox", quantity=3).id)
    assert job.status == "completed"
    assert job.retries == 1
    assert job.result_count == 3
    # Four calls for three images: the image delivered before the failure was not generated again.
    assert len(gateway_settings.received(prompt_contains="partial")) == 4


def test_refunds_only_undelivered_images_after_the_third_retry(worker, gateway_settings, user):
    gateway_settings.script("half", ["ok", "500"])
    job = wait_finished(submit(user, "half fox", quantity=2).id)
    assert job.status == "failed"
    assert job.result_count == 1
    assert CreditLedgerEntry.objects.get(job=job, kind="refund").amount == 1
    assert credit_balance(user_id=user.pk) == credit_ledger_total(user_id=user.pk) == 9


def test_a_duplicate_message_does_not_run_the_job_twice(worker, broker, gateway_settings, user):
    gateway_settings.script("twice", ["slow:0.3"])
    job = submit(user, "twice fox", quantity=2)
    actors.generate_images.send(str(job.id))
    actors.generate_images.send(str(job.id))
    assert wait_finished(job.id).status == "completed"
    worker.join()
    assert len(gateway_settings.received(prompt_contains="twice")) == 2
    assert job.generations.count() == 2


def test_exhaustion_handler_running_twice_refunds_once(broker, user):
    job = submit(user, "twice exhausted", quantity=3)
    message = MessageProxy(actors.generate_images.message(str(job.id)).copy(options={"retries": 3}))
    middleware = next(m for m in broker.middleware if isinstance(m, BackoffRetries))
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

    middleware = next(m for m in broker.middleware if isinstance(m, BackoffRetries))
    middleware.after_process_message(broker, MessageProxy(probe.message()), exception=ValueError("bug"))
    middleware.after_process_message(broker, MessageProxy(probe.message()), exception=TransientProviderError("later"))
    # A message whose job another worker took over meanwhile is not put back.
    middleware.after_process_message(broker, MessageProxy(probe.message()), exception=TransientProviderError("late"))
    assert calls == ["gave up", "retry", "retry"]
    # Only the retryable failure that was still the message's own was put back, on the delay queue.
    assert broker.client.llen(f"{broker.namespace}:probe.DQ") == 1
