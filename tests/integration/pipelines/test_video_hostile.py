"""The video pipeline against hostile frame hosts and a misbehaving Veo, under real in-process Dramatiq workers.

Whatever a frame URL or the provider does, every job ends (stage ``done``, a final status), the ledger is exact, the
provider never runs more generations at once than ``VIDEO_MAX_CONCURRENT`` by its own clock, and other users'
videos are not held up beyond what the slots require.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest

from generation import services
from generation.models import Job
from generation.providers import frames as frames_module
from generation.videos.services import video_job_create
from testing.fakes.frames import FakeFrameServer
from testing.fakes.server import closed_port_url
from testing.fakes.veo import FakeVeoServer, VeoStart
from testing.ledger import assert_ledger_exact
from testing.videos import wait_slots_given_back
from testing.waits import settled, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

GRANTED = 100
# Short enough that a frame host that drips is cut off quickly, long enough to read a 10 MB body on a busy machine.
FRAME_TIMEOUT = 1.0
# How soon after its submission a plain video must start when a slot is free: the behaviour under test, bounded
# generously (a dispatch tick is 0.2 s) so that a loaded 2-core machine, where a thread may wait a second or more for
# a core, does not fail it. What a generous bound cannot tell apart, the orderings of events below do.
PROMPT_START = 3.0
# A generation long enough that a cancel sent once its start call answers surely comes before its end.
SLOW_GENERATION = 5.0


@pytest.fixture
def worker(start_worker: Callable[[set[str]], dramatiq.Worker], veo_settings: FakeVeoServer) -> dramatiq.Worker:
    return start_worker({"videos"})


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


def start_of(veo: FakeVeoServer, prompt: str) -> VeoStart:
    """The one generation the fake started for ``prompt``."""
    [start] = [start for start in veo.starts if start.prompt == prompt]
    return start


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
    assert_ledger_exact({hostile: hostile.credit_cost, plain: 0}, granted=GRANTED)
    wait_slots_given_back()


def test_hostile_frame_hosts_holding_every_worker_thread_delay_no_other_video_start(
    worker, veo_settings, settings, hostile_frames, make_user, monkeypatch
):
    # Every worker thread stays held for two seconds (the headers are still dripping then: at 0.2 s a byte, the
    # status line is not whole), then the hostile videos fail without a retry.
    monkeypatch.setattr(frames_module, "FRAME_TIMEOUT", 2.0)
    settings.IMAGE_RETRY_DELAYS = ()
    attacker, bystander = make_user(credits=GRANTED), make_user(credits=GRANTED)
    hostile = [
        submit(attacker, f"hostile frame {index}", start_frame=hostile_frames.url("drip_headers"))
        for index in range(worker.worker_threads)
    ]
    wait_for(lambda: len(hostile_frames.requests) == len(hostile), message="every worker thread fetching a frame")
    plain = submit(bystander, "plain clip")

    *hostile, plain = settled(*hostile, plain)

    assert {(job.status, job.error_code) for job in hostile} == {("failed", "url_timeout")}
    assert plain.status == "completed"
    # The dispatcher's tick runs beside the worker threads: the start does not wait for a free thread, so it
    # comes while every thread is still fetching, before any hostile video has failed.
    first_freed = min(job.finished_at.timestamp() for job in hostile if job.finished_at is not None)
    assert start_of(veo_settings, "plain clip").started_at < first_freed
    veo_settings.assert_never_over(settings.VIDEO_MAX_CONCURRENT)
    assert_ledger_exact({**{job: job.credit_cost for job in hostile}, plain: 0}, granted=GRANTED)
    wait_slots_given_back()


# --- a misbehaving provider ---------------------------------------------------------------------------------


def test_a_video_canceled_during_a_slow_start_is_stopped_at_the_provider_and_keeps_its_slot_until_it_ends(
    worker, veo_settings, settings, make_user
):
    settings.VIDEO_MAX_CONCURRENT = 1
    veo_settings.generation_seconds = SLOW_GENERATION
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
    # Canceled once the start call named the operation, well before it would have ended by itself, and it then
    # ended a moment later.
    canceled_at = veo_settings.canceled_at(created.operation_name)
    assert canceled_at is not None
    assert canceled_at < created.started_at + SLOW_GENERATION
    assert veo_settings.cancels == [created.operation_name]
    ended = veo_settings.ended_at(created.operation_name)
    assert ended == pytest.approx(canceled_at + veo_settings.cancel_delay, abs=0.01)
    # The slot stayed with the canceled operation until the provider ended it, strictly; then went to the next video
    # (at once, bounded generously for a loaded machine).
    assert ended <= start_of(veo_settings, "waiting clip").started_at < ended + PROMPT_START
    assert (slow.status, slow.error_code) == ("canceled", "canceled")
    assert waiting.status == "completed"
    veo_settings.assert_never_over(1)
    assert_ledger_exact({slow: slow.credit_cost // 2, waiting: 0}, granted=GRANTED)
    wait_slots_given_back()


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
    assert_ledger_exact({wobbly: 0, others[0]: 0, others[1]: 0}, granted=GRANTED)
    wait_slots_given_back()


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
    # The provider ran the canceled generation to its end: the next video waited for that (strictly), not for the
    # cancel; then it started (at once, bounded generously for a loaded machine).
    assert ended <= start_of(veo_settings, "waiting clip").started_at < ended + PROMPT_START
    assert running.finished_at is not None
    assert running.finished_at.timestamp() < ended
    assert running.status == "canceled"
    assert waiting.status == "completed"
    veo_settings.assert_never_over(1)
    assert_ledger_exact({running: running.credit_cost // 2, waiting: 0}, granted=GRANTED)
    wait_slots_given_back()


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
    assert_ledger_exact({refused: 0}, granted=GRANTED)
