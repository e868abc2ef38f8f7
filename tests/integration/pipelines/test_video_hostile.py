"""The video pipeline against hostile frame hosts and a misbehaving Veo, under real in-process Dramatiq workers.

Whatever a frame URL or the provider does, every job ends (stage ``done``, a final status), the ledger is exact, the
provider never runs more generations at once than ``VIDEO_MAX_CONCURRENT`` by its own clock, and other users'
videos are not held up beyond what the slots require.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest

from credits.models import CreditLedgerEntry
from credits.selectors import credit_audit, credit_balance, credit_ledger_total
from generation import services
from generation.models import Job
from generation.providers import TransientProviderError
from generation.providers import frames as frames_module
from generation.selectors import job_credit_audit
from generation.videos.services import video_job_create
from generation.videos.slots import video_slots
from tests.conftest import run_worker
from tests.fake_frames import FakeFrameServer
from tests.fake_http import closed_port_url
from tests.fake_veo import FakeVeoServer, VeoStart
from tests.test_image_pipeline import wait_for
from tests.test_video_providers import A_CAT, veo_client

pytestmark = pytest.mark.django_db(transaction=True)

GRANTED = 100
# Short enough that a frame host that drips is cut off quickly, long enough to read a 10 MB body on a busy machine.
FRAME_TIMEOUT = 1.0
# How soon after its submission a plain video must start when a slot is free: the behaviour under test.
PROMPT_START = 2.0


@pytest.fixture
def worker(broker: dramatiq.Broker, veo_settings: FakeVeoServer) -> Iterator[dramatiq.Worker]:
    running = run_worker(broker, {"videos"})
    yield running
    running.stop()


@pytest.fixture
def hostile_frames(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFrameServer]:
    """A hostile image host on 127.0.0.1, reachable by the frame fetch, whose deadline is ``FRAME_TIMEOUT``."""
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = True
    # fetch_frame reads the module's FRAME_TIMEOUT at each call.
    monkeypatch.setattr(frames_module, "FRAME_TIMEOUT", FRAME_TIMEOUT)
    with FakeFrameServer(drip_seconds=0.2) as server:
        yield server


def submit(user: Any, prompt: str, *, start_frame: str = "") -> Job:
    return video_job_create(user_id=user.pk, prompt=prompt, aspect_ratio="16:9", duration=4, start_frame=start_frame)


def settled(*jobs: Job, timeout: float = 30) -> list[Job]:
    """Wait until every job has a final status and is done with the provider; the jobs as they ended."""
    ids = [job.id for job in jobs]
    final = Job.objects.filter(id__in=ids, stage=Job.Stage.DONE, status__in=Job.FINISHED_STATUSES)
    wait_for(lambda: final.count() == len(ids), timeout=timeout, message="every job final and done")
    return [Job.objects.get(id=job_id) for job_id in ids]


def start_of(veo: FakeVeoServer, prompt: str) -> VeoStart:
    """The one generation the fake started for ``prompt``."""
    [start] = [start for start in veo.starts if start.prompt == prompt]
    return start


def assert_ledger_exact(refunds: dict[Job, int]) -> None:
    """Each job was charged once and refunded exactly as given; every balance is its ledger's sum, less the rest."""
    assert credit_audit() + job_credit_audit() == []
    for job, refund in refunds.items():
        refunded = CreditLedgerEntry.objects.filter(job=job, kind=CreditLedgerEntry.Kind.REFUND)
        assert sum(entry.amount for entry in refunded) == refund, job.prompt
    for user_id in {job.user_id for job in refunds}:
        spent = sum(job.credit_cost - refund for job, refund in refunds.items() if job.user_id == user_id)
        assert credit_balance(user_id=user_id) == credit_ledger_total(user_id=user_id) == GRANTED - spent


def assert_slots_given_back() -> None:
    holders = video_slots().holders
    wait_for(lambda: holders() == set(), timeout=10, message=f"every video slot given back (held: {holders()})")


# --- the fake itself ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "error_code"),
    [("500_after_create", "provider_unavailable"), ("reset_after_create", "provider_connection_lost")],
)
def test_fake_veo_runs_the_generation_of_a_start_it_answered_with_a_failure(veo, behaviour, error_code):
    veo.script("cat", [behaviour])
    with pytest.raises(TransientProviderError) as raised:
        veo_client(veo).start(A_CAT)
    assert raised.value.code == error_code
    [start] = veo.starts
    assert veo.running_at(time.time()) == 1
    assert veo.max_concurrency == 1
    assert veo.ended_at(start.operation_name) == pytest.approx(start.started_at + veo.generation_seconds, abs=0.01)


def test_fake_veo_resets_the_connection_rather_than_closing_it(veo):
    veo.script("cat", ["reset_after_create"])
    body = b'{"instances": [{"prompt": "a cat"}]}'
    request = (
        f"POST /v1beta/models/veo:predictLongRunning HTTP/1.1\r\nHost: fake\r\nx-goog-api-key: {veo.api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    port = int(veo.url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request + body)
        with pytest.raises(ConnectionResetError):
            connection.recv(1024)
    assert len(veo.starts) == 1


def test_fake_veo_ends_a_canceled_generation_a_moment_later(veo):
    veo.generation_seconds = 30
    client = veo_client(veo)
    name = client.start(A_CAT)
    client.cancel(name)
    canceled_at = veo.canceled_at(name)
    assert canceled_at is not None
    assert veo.ended_at(name) == pytest.approx(canceled_at + veo.cancel_delay, abs=0.01)
    assert not client.poll(name).done
    wait_for(lambda: client.poll(name).done, timeout=5, message="the canceled generation ended")
    assert client.poll(name).error_code == "operation_failed"


# --- hostile frame hosts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "error_code", "retries"),
    [
        ("drip_headers", "url_timeout", 1),
        ("long_label_redirect", "url_refused", 0),
        ("endless_slow_body", "url_timeout", 1),
        ("endless_fast_body", "url_too_large", 0),
        ("html", "url_wrong_type", 0),
        ("huge_declared", "url_too_large", 0),
        ("huge_undeclared", "url_too_large", 0),
    ],
)
def test_a_hostile_frame_host_fails_its_own_video_with_a_refund_and_holds_up_nobody_else(
    worker, veo_settings, settings, hostile_frames, make_user, behaviour, error_code, retries
):
    # One retry for a transient failure, so that its path is taken without a long wait.
    settings.IMAGE_RETRY_DELAYS = (0.2,)
    attacker, bystander = make_user(credits=GRANTED), make_user(credits=GRANTED)
    hostile = submit(attacker, "hostile frame", start_frame=hostile_frames.url(behaviour))
    wait_for(lambda: hostile_frames.requests, message="the frame fetch under way")
    submitted = time.time()
    plain = submit(bystander, "plain clip")

    hostile, plain = settled(hostile, plain)

    assert (hostile.status, hostile.error_code, hostile.retries) == ("failed", error_code, retries)
    assert hostile.error_message
    assert not any(start.prompt == "hostile frame" for start in veo_settings.starts)
    assert plain.status == "completed"
    assert start_of(veo_settings, "plain clip").started_at - submitted < PROMPT_START
    veo_settings.assert_never_over(settings.VIDEO_MAX_CONCURRENT)
    assert_ledger_exact({hostile: hostile.credit_cost, plain: 0})
    assert_slots_given_back()


def test_hostile_frame_hosts_holding_every_worker_thread_delay_no_other_video_start(
    worker, veo_settings, settings, hostile_frames, make_user
):
    settings.IMAGE_RETRY_DELAYS = (0.2,)
    attacker, bystander = make_user(credits=GRANTED), make_user(credits=GRANTED)
    hostile = [
        submit(attacker, f"hostile frame {index}", start_frame=hostile_frames.url("drip_headers"))
        for index in range(worker.worker_threads)
    ]
    wait_for(lambda: len(hostile_frames.requests) == len(hostile), message="every worker thread fetching a frame")
    submitted = time.time()
    plain = submit(bystander, "plain clip")

    *hostile, plain = settled(*hostile, plain)

    assert {(job.status, job.error_code) for job in hostile} == {("failed", "url_timeout")}
    assert plain.status == "completed"
    # The dispatcher's tick runs beside the worker threads: the start does not wait for a free thread.
    assert start_of(veo_settings, "plain clip").started_at - submitted < PROMPT_START
    veo_settings.assert_never_over(settings.VIDEO_MAX_CONCURRENT)
    assert_ledger_exact({**{job: job.credit_cost for job in hostile}, plain: 0})
    assert_slots_given_back()


# --- a misbehaving provider ---------------------------------------------------------------------------------


def test_a_video_canceled_during_a_slow_start_is_stopped_at_the_provider_and_keeps_its_slot_until_it_ends(
    worker, veo_settings, settings, make_user
):
    settings.VIDEO_MAX_CONCURRENT = 1
    veo_settings.generation_seconds = 5.0
    veo_settings.script("slow", ["slow_start:2"])
    owner, bystander = make_user(credits=GRANTED), make_user(credits=GRANTED)
    slow = submit(owner, "slow clip")
    wait_for(lambda: veo_settings.start_attempts == 1, message="the start call under way")
    # The cancel lands during the start call: no operation is known yet, so the job waits for one to stop.
    assert services.job_cancel(job_id=slow.id, user_id=owner.pk).stage == "stopping"
    waiting = submit(bystander, "waiting clip")
    wait_for(lambda: veo_settings.starts, message="the slow start's generation created")
    veo_settings.generation_seconds = 0.5

    slow, waiting = settled(slow, waiting)

    created = start_of(veo_settings, "slow clip")
    assert slow.operation_name == created.operation_name
    assert slow.finished_at is not None
    assert slow.finished_at.timestamp() < created.started_at
    # Canceled as soon as the start call named the operation, which then ended a moment later.
    canceled_at = veo_settings.canceled_at(created.operation_name)
    assert canceled_at is not None
    assert canceled_at - created.started_at < 1.0
    assert veo_settings.cancels == [created.operation_name]
    ended = veo_settings.ended_at(created.operation_name)
    assert ended == pytest.approx(canceled_at + veo_settings.cancel_delay, abs=0.01)
    # The slot stayed with the canceled operation until the provider ended it, then went to the next video at once.
    assert ended <= start_of(veo_settings, "waiting clip").started_at < ended + 1.5
    assert (slow.status, slow.error_code) == ("canceled", "canceled")
    assert waiting.status == "completed"
    veo_settings.assert_never_over(1)
    assert_ledger_exact({slow: slow.credit_cost // 2, waiting: 0})
    assert_slots_given_back()


@pytest.mark.parametrize("behaviour", ["500_after_create", "reset_after_create"])
def test_an_ambiguous_start_holds_a_slot_for_the_generation_it_may_have_made(
    worker, veo_settings, settings, make_user, behaviour
):
    veo_settings.generation_seconds = 1.0
    # The hold outlasts the generation the failed start call made; the retry comes after the others are submitted.
    settings.VIDEO_AMBIGUOUS_START_HOLD = 1.5
    settings.IMAGE_RETRY_DELAYS = (1.0,)
    veo_settings.script("wobbly", [behaviour, "ok"])
    owner, bystander = make_user(credits=GRANTED), make_user(credits=GRANTED)
    wobbly = submit(owner, "wobbly clip")
    wait_for(lambda: Job.objects.filter(id=wobbly.id, retries=1).exists(), message="the ambiguous start given up")
    submitted = time.time()
    others = [submit(bystander, f"other clip {index}") for index in range(2)]

    wobbly, *others = settled(wobbly, *others)

    assert (wobbly.status, wobbly.retries) == ("completed", 1)
    assert wobbly.error_code == ""
    first, retried = [start for start in veo_settings.starts if start.prompt == "wobbly clip"]
    assert veo_settings.ended_at(first.operation_name) <= retried.started_at + veo_settings.generation_seconds
    assert [job.status for job in others] == ["completed", "completed"]
    # The free slot went at once to the first of the other user's videos.
    assert start_of(veo_settings, "other clip 0").started_at - submitted < PROMPT_START
    veo_settings.assert_never_over(settings.VIDEO_MAX_CONCURRENT)
    assert len(veo_settings.downloads) == 3
    assert_ledger_exact({wobbly: 0, others[0]: 0, others[1]: 0})
    assert_slots_given_back()


def test_a_canceled_video_whose_cancel_is_ignored_keeps_its_slot_until_it_ends(
    worker, veo_settings, settings, make_user
):
    settings.VIDEO_MAX_CONCURRENT = 1
    veo_settings.honours_cancel = False
    veo_settings.generation_seconds = 2.0
    owner, bystander = make_user(credits=GRANTED), make_user(credits=GRANTED)
    running = submit(owner, "stubborn clip")
    wait_for(lambda: veo_settings.starts, message="the generation started")
    veo_settings.generation_seconds = 0.5
    services.job_cancel(job_id=running.id, user_id=owner.pk)
    waiting = submit(bystander, "waiting clip")
    operation = start_of(veo_settings, "stubborn clip").operation_name
    wait_for(lambda: veo_settings.cancels, message="the cancel sent to the provider")

    running, waiting = settled(running, waiting)

    assert veo_settings.cancels == [operation]
    ended = veo_settings.ended_at(operation)
    assert ended == pytest.approx(start_of(veo_settings, "stubborn clip").started_at + 2.0, abs=0.01)
    # The provider ran the canceled generation to its end: the next video waited for that, not for the cancel.
    assert ended <= start_of(veo_settings, "waiting clip").started_at < ended + 1.5
    assert running.finished_at is not None
    assert running.finished_at.timestamp() < ended
    assert running.status == "canceled"
    assert waiting.status == "completed"
    veo_settings.assert_never_over(1)
    assert_ledger_exact({running: running.credit_cost // 2, waiting: 0})
    assert_slots_given_back()


def test_a_start_whose_connection_was_refused_holds_no_slot(worker, veo_settings, settings, make_user):
    settings.VIDEO_MAX_CONCURRENT = 1
    # Long enough that a held slot shows; nothing can run at a provider that never took the connection.
    settings.VIDEO_AMBIGUOUS_START_HOLD = 6.0
    settings.GEMINI_API_BASE = closed_port_url("/v1beta")
    owner = make_user(credits=GRANTED)
    refused = submit(owner, "refused clip")
    wait_for(lambda: Job.objects.filter(id=refused.id, retries=1).exists(), message="the refused start given up")
    assert Job.objects.get(id=refused.id).error_code == "provider_unreachable"
    settings.GEMINI_API_BASE = veo_settings.url
    back = time.time()

    [refused] = settled(refused, timeout=20)

    assert refused.status == "completed"
    assert start_of(veo_settings, "refused clip").started_at - back < PROMPT_START
    assert_ledger_exact({refused: 0})
