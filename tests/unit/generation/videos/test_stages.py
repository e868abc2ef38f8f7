"""The video stages one transition at a time, against the fake Veo: starts, ambiguous starts, polls and downloads."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
from django.db import connections
from django.utils import timezone

from credits.models import CreditLedgerEntry
from credits.selectors import credit_balance, credit_ledger_total
from generation import services
from generation.models import Job
from generation.providers import TransientProviderError, get_video_provider
from generation.videos import stages
from generation.videos.delivery import video_download
from generation.videos.dispatcher import video_dispatch
from generation.videos.poller import video_poll
from generation.videos.services import video_job_create
from generation.videos.slots import video_slots
from testing.waits import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def submit(user: Any, prompt: str) -> Job:
    return video_job_create(user_id=user.pk, prompt=prompt, aspect_ratio="16:9", duration=4)


def sent(broker: Any, actor_name: str) -> list[list[Any]]:
    """The arguments of the messages waiting in the videos queues for ``actor_name``."""
    found = []
    for queue in ("videos", "videos.DQ"):
        for raw in broker.client.hvals(f"{broker.namespace}:{queue}.msgs"):
            message = json.loads(raw)
            if message["actor_name"] == actor_name:
                found.append(message["args"])
    return found


def poll_now(job: Job) -> None:
    """Run the poll that owns the job's polling now, as its message would."""
    video_poll(str(job.id), message_id=str(Job.objects.get(id=job.id).claim_token))


def dispatch_in_thread() -> None:
    """A dispatch round as a worker thread runs it, giving its database connection back at the end as the
    worker's middleware does: one left open keeps the test database from being dropped at the end of the run."""
    try:
        video_dispatch()
    finally:
        connections.close_all()


def ambiguous_holds() -> set[str]:
    return {holder for holder in video_slots().holders() if ":ambiguous:" in holder}


def test_a_cancel_during_the_start_call_records_the_operation_stops_it_and_keeps_its_slot(
    broker, veo_settings, make_user
):
    user = make_user(credits=100)
    veo_settings.script("slow", ["slow_start:1"])
    job = submit(user, "slow take")
    round_ = threading.Thread(target=dispatch_in_thread)
    round_.start()
    wait_for(lambda: veo_settings.start_attempts == 1, message="the start call in flight")
    services.job_cancel(job_id=job.id, user_id=user.pk)
    round_.join()

    job.refresh_from_db()
    assert (job.status, job.stage) == ("canceled", "stopping")
    assert job.operation_name == veo_settings.starts[0].operation_name
    # The provider may bill for it: half is refunded, as for any video canceled at the provider.
    assert CreditLedgerEntry.objects.get(job=job, kind="refund").amount == job.credit_cost // 2
    assert [job.operation_name] in sent(broker, "cancel_video_operation")
    assert str(job.id) in video_slots().holders()
    # The poll chain then watches it until the provider says it ended, and frees the slot.
    poll_now(job)
    wait_for(lambda: Job.objects.get(id=job.id).stage == "stopping", timeout=1)
    veo_settings.finish_all()
    poll_now(job)
    assert Job.objects.get(id=job.id).stage == "done"
    assert str(job.id) not in video_slots().holders()
    assert credit_balance(user_id=user.pk) == credit_ledger_total(user_id=user.pk)


@pytest.mark.parametrize("behaviour", ["500", "slow_start:6"])
def test_an_ambiguous_start_holds_a_slot_and_goes_back_in_line_with_a_retry(
    broker, veo_settings, settings, make_user, behaviour
):
    settings.PROVIDER_TIMEOUT = 0.5
    settings.VIDEO_MAX_CONCURRENT = 1
    user = make_user(credits=100)
    veo_settings.script("unclear", [behaviour, "ok"])
    job = submit(user, "unclear take")
    video_dispatch()

    job.refresh_from_db()
    assert (job.status, job.stage, job.retries) == ("queued", "waiting", 1)
    assert job.error_code in ("provider_unavailable", "provider_timeout")
    assert len(ambiguous_holds()) == 1
    # The retry is due, but the one slot is held for the generation the provider may have made.
    Job.objects.filter(id=job.id).update(next_run_at=timezone.now())
    video_dispatch()
    assert Job.objects.get(id=job.id).stage == "waiting"
    assert veo_settings.start_attempts == 1
    wait_for(lambda: not ambiguous_holds(), timeout=settings.VIDEO_AMBIGUOUS_START_HOLD + 1, message="hold over")
    video_dispatch()
    assert Job.objects.get(id=job.id).stage == "generating"


def test_a_rate_limited_start_frees_its_slot_at_once(broker, veo_settings, make_user):
    user = make_user(credits=100)
    veo_settings.script("limited", ["429"])
    job = submit(user, "limited take")
    video_dispatch()
    assert Job.objects.get(id=job.id).stage == "waiting"
    assert video_slots().holders() == set()


def test_a_start_call_whose_dispatcher_died_counts_as_ambiguous(broker, veo_settings, make_user):
    user = make_user(credits=100)
    job = submit(user, "orphaned start")
    token = stages.video_start_intent(job_id=job.id)
    assert token is not None
    # Its dispatcher died during the call: no slot lease, no operation name.
    video_dispatch()
    job.refresh_from_db()
    assert (job.stage, job.retries, job.error_code) == ("waiting", 1, "start_ambiguous")
    assert len(ambiguous_holds()) == 1


def test_a_round_that_cannot_build_a_start_request_fails_that_job_and_starts_the_next(broker, veo_settings, make_user):
    user = make_user(credits=100)
    broken = submit(user, "broken frames")
    Job.objects.filter(id=broken.id).update(params={**broken.params, "frames": {"start": {"file": "missing.png"}}})
    healthy = submit(user, "healthy take")
    video_dispatch()
    assert Job.objects.get(id=broken.id).status == "failed"
    assert Job.objects.get(id=healthy.id).stage == "generating"
    assert credit_balance(user_id=user.pk) == credit_ledger_total(user_id=user.pk) == 100 - healthy.credit_cost


def test_only_the_message_that_owns_the_polling_polls(broker, veo_settings, make_user):
    user = make_user(credits=100)
    job = submit(user, "polled take")
    video_dispatch()
    owner = Job.objects.get(id=job.id).claim_token
    assert owner is not None
    assert stages.video_poll_claim(job_id=job.id, poll=uuid.uuid4()) is None
    assert stages.video_poll_claim(job_id=job.id, poll=owner) is not None
    # The chain went quiet and was adopted by a new message: a late message of the old chain is dropped.
    assert stages.video_poll_adopt(job_id=job.id, poll=uuid.uuid4())
    assert stages.video_poll_claim(job_id=job.id, poll=owner) is None
    assert veo_settings.polls(Job.objects.get(id=job.id).operation_name) == 0


def test_a_finished_generation_is_handed_to_its_download_and_frees_its_slot(broker, veo_settings, make_user):
    user = make_user(credits=100)
    job = submit(user, "quick take")
    video_dispatch()
    veo_settings.finish_all()
    poll_now(job)
    assert Job.objects.get(id=job.id).stage == "downloading"
    assert video_slots().holders() == set()
    assert [str(job.id)] in sent(broker, "download_video")
    video_download(str(job.id))
    job.refresh_from_db()
    assert (job.status, job.stage, job.result_count) == ("completed", "done", 1)


def test_a_download_completes_a_job_whose_video_an_earlier_attempt_stored(broker, veo_settings, make_user):
    user = make_user(credits=100)
    job = submit(user, "stored take")
    video_dispatch()
    veo_settings.finish_all()
    poll_now(job)
    # An earlier attempt stored the video, then died before completing the job; its lease ran out.
    earlier = stages.video_download_claim(job_id=job.id, lease_seconds=30)
    assert earlier is not None and earlier.claim_token is not None
    provider = get_video_provider()
    video = provider.download(provider.poll(earlier.operation_name).video_uri)
    services.generation_record(job_id=job.id, claim_token=earlier.claim_token, index=0, result=video)
    Job.objects.filter(id=job.id).update(lease_expires_at=timezone.now())
    video_download(str(job.id))
    job.refresh_from_db()
    assert (job.status, job.stage, job.result_count, job.generations.count()) == ("completed", "done", 1, 1)


def test_a_generation_past_its_time_limit_is_stopped_and_keeps_its_slot_until_it_ends(
    broker, veo_settings, settings, make_user
):
    user = make_user(credits=100)
    veo_settings.honours_cancel = False
    veo_settings.script("endless", ["hang"])
    job = submit(user, "endless take")
    video_dispatch()
    settings.VIDEO_TIMEOUT = 0
    poll_now(job)
    job.refresh_from_db()
    assert (job.status, job.stage, job.error_code) == ("failed", "stopping", "timeout")
    assert str(job.id) in video_slots().holders()
    assert CreditLedgerEntry.objects.get(job=job, kind="refund").amount == job.credit_cost
    # Past the stop grace the provider still says it runs: the slot is given back, with a warning.
    settings.VIDEO_STOP_GRACE = 0
    poll_now(job)
    assert Job.objects.get(id=job.id).stage == "done"
    assert video_slots().holders() == set()


def test_a_stale_claim_token_changes_nothing(broker, veo_settings, make_user):
    user = make_user(credits=100)
    job = submit(user, "contended take")
    token = stages.video_start_intent(job_id=job.id)
    assert token is not None
    stale = uuid.uuid4()
    named = stages.video_started(job_id=job.id, claim_token=stale, operation_name="models/x/operations/1", poll=stale)
    assert named is None
    assert (
        stages.video_start_abandoned(
            job_id=job.id, claim_token=stale, error=TransientProviderError("down", code="provider_unavailable")
        )
        is None
    )
    assert Job.objects.get(id=job.id).stage == "starting"
