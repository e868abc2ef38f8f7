"""End to end for videos: the real web server and two real rundramatiq workers (two machines) against the fake Veo."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from rest_framework.authtoken.models import Token

from core.connections import redis_client
from credits.models import CreditLedgerEntry
from credits.selectors import credit_balance, credit_ledger_total
from generation.models import Job
from generation.videos.slots import video_dispatcher, video_slots
from tests.conftest import video_queue_forget
from tests.fake_veo import FakeVeoServer
from tests.live import child_env, kill_group, start_worker, stop, wait_until_ready, web_server
from tests.test_e2e import poll_until_finished
from tests.test_image_pipeline import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SLOT_LEASE = 3.0
DISPATCH_TICK = 0.5
# A job leaves the line when the dispatcher claims it, a few milliseconds before the provider call that the
# fake records; a sighting taken this long before a recorded start surely still counted that job.
CLAIM_TO_START = 0.5
# Every video here is 4 s long, at 2 credits a second.
VIDEO_COST = 8
AMBIGUOUS_HOLD = 4.0


@dataclass
class Cluster:
    """The web server and the worker processes of one test, all against the same fake Veo."""

    base: str
    env: dict[str, str]
    log_dir: Path
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_workers(self, *names: str) -> list[subprocess.Popen[bytes]]:
        """Start worker processes (each as on a machine of its own) and wait until all take messages."""
        logs = {name: self.log_dir / f"worker-{name}.log" for name in names}
        for name, log in logs.items():
            self.workers[name] = start_worker(self.env, log)
        for name, log in logs.items():
            wait_until_ready(self.workers[name], log)
        return [self.workers[name] for name in names]


@contextmanager
def cluster(veo: FakeVeoServer, log_dir: Path, **overrides: str) -> Iterator[Cluster]:
    """Serve the API against the fake Veo with short polls, leases and ticks; stop every process at the end."""
    video_queue_forget()
    env = child_env(
        VIDEO_PROVIDER="veo",
        GEMINI_API_BASE=veo.url,
        GEMINI_API_KEY="veo-key",
        VIDEO_FIRST_POLL="0.2",
        VIDEO_POLL_INTERVAL="0.1",
        VIDEO_AMBIGUOUS_START_HOLD=f"{AMBIGUOUS_HOLD:g}",
        VIDEO_STOP_GRACE="2",
        VIDEO_SLOT_LEASE=f"{SLOT_LEASE:g}",
        VIDEO_DISPATCH_TICK=f"{DISPATCH_TICK:g}",
        VIDEO_MAX_QUEUED_PER_USER="20",
        IMAGE_RETRY_DELAYS="0.5,1,2",
        # The dispatcher's lock lasts four provider timeouts; the default two minutes would make it eight.
        PROVIDER_TIMEOUT="5",
        VIDEO_PRICES=json.dumps({"veo-3.0-generate-001": {"720p": VIDEO_COST // 4}}),
        **overrides,
    )
    with web_server(env, log_dir / "web.log") as base:
        running = Cluster(base, env, log_dir)
        try:
            yield running
        finally:
            stop(*running.workers.values())
            # A killed worker leaves its slots and maybe the dispatch lock behind; the next test starts clean.
            stale = list(redis_client().scan_iter(match=f"{settings.REDIS_KEY_PREFIX}:video:*"))
            if stale:
                redis_client().delete(*stale)


def auth(user: Any) -> dict[str, str]:
    return {"Authorization": f"Token {Token.objects.create(user=user).key}"}


def submit(base: str, headers: dict[str, str], prompt: str) -> dict[str, Any]:
    response = requests.post(f"{base}/api/videos/", json={"prompt": prompt, "duration": 4}, headers=headers, timeout=5)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def started_at(veo: FakeVeoServer) -> dict[str, float]:
    """When the fake started each prompt's generation, checking that none was started twice."""
    starts = {start.prompt: start.started_at for start in veo.starts}
    assert len(starts) == len(veo.starts), [start.prompt for start in veo.starts]
    return starts


def assert_credits_right(user: Any, granted: int, delivered: int) -> None:
    """Each of the user's jobs was charged once, and the balance, equal to the ledger, lacks only what was delivered."""
    jobs = Job.objects.filter(user=user).values_list("id", flat=True)
    charged = CreditLedgerEntry.objects.filter(kind="charge", job__in=jobs).values_list("job_id", flat=True)
    assert sorted(charged) == sorted(jobs)
    assert credit_balance(user_id=user.pk) == credit_ledger_total(user_id=user.pk) == granted - VIDEO_COST * delivered


def assert_no_slot_held() -> None:
    # The last poll gives its slot back as the generation ends; an ambiguous start holds one for a while.
    wait_for(
        lambda: video_slots().holders() == set(), timeout=AMBIGUOUS_HOLD + 2, message="every video slot given back"
    )


@dataclass(frozen=True)
class Sighting:
    """What the API said about a job, and the moments (``time.time()``) the request was sent and answered."""

    sent: float
    answered: float
    status: str
    position: int | None


def watch_jobs(
    base: str, headers: dict[str, dict[str, str]], first: dict[str, Sighting], timeout: float = 60
) -> dict[str, list[Sighting]]:
    """GET /api/jobs/{id}/ for each unfinished job in turn, 50 ms apart between rounds, until all have finished."""
    sightings = {job_id: [sighting] for job_id, sighting in first.items()}
    unfinished = list(first)
    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        while unfinished:
            assert time.monotonic() < deadline, f"jobs {unfinished} did not finish"
            for job_id in list(unfinished):
                sent = time.time()
                job = session.get(f"{base}/api/jobs/{job_id}/", headers=headers[job_id], timeout=5).json()
                sightings[job_id].append(Sighting(sent, time.time(), job["status"], job["position"]))
                if job["status"] not in ("queued", "processing"):
                    unfinished.remove(job_id)
            time.sleep(0.05)
    return sightings


def assert_positions_as_promised(prompt: str, seen: list[Sighting], ahead: list[float]) -> None:
    """The job's position only went down, counted the videos before it not yet started, and ended at 1 or 2.

    ``ahead`` holds when the fake started each video submitted before this one.
    """
    statuses = [status for status, _ in itertools.groupby(sighting.status for sighting in seen)]
    assert statuses in (["queued", "processing", "completed"], ["queued", "completed"]), (prompt, statuses)
    assert all(sighting.position is None for sighting in seen if sighting.status != "queued"), prompt
    queued = [sighting for sighting in seen if sighting.status == "queued"]
    positions = [sighting.position for sighting in queued if sighting.position is not None]
    assert len(positions) == len(queued), (prompt, queued)
    assert positions == sorted(positions, reverse=True), (prompt, positions)
    # Polled far more often than a slot frees, a job is last seen waiting first or second in line.
    assert positions[-1] in (1, 2), (prompt, positions)
    for sighting in queued:
        # Exactly the videos before it that had not started count: none that the fake had started before the
        # request was sent, and each that the fake started only well after the answer came.
        assert sighting.position is not None
        assert sighting.position <= 1 + sum(start > sighting.sent for start in ahead), (prompt, sighting)
        assert sighting.position >= 1 + sum(start > sighting.answered + CLAIM_TO_START for start in ahead), (
            prompt,
            sighting,
        )


def test_ten_videos_from_three_users_run_two_at_a_time_in_submit_order(make_user, veo, tmp_path: Path):
    users = [make_user(credits=100) for _ in range(3)]
    headers = [auth(user) for user in users]
    veo.generation_seconds = 1.0
    # Two generations that run until released keep both slots busy while the ten are submitted, so that
    # every answer's position is exact: nothing can start between two submissions.
    veo.script("blocker", ["hang"])
    with cluster(veo, tmp_path) as stack:
        stack.start_workers("a", "b")
        blockers = [submit(stack.base, headers[0], f"blocker {index}")["id"] for index in range(2)]
        wait_for(
            lambda: len(veo.starts) == 2 and all(veo.polls(start.operation_name) for start in veo.starts),
            message="both blockers running with their watchers",
        )
        prompts = [f"clip {index} of user {index % 3}" for index in range(10)]
        first: dict[str, Sighting] = {}
        owners: dict[str, dict[str, str]] = {}
        for index, prompt in enumerate(prompts):
            sent = time.time()
            answer = submit(stack.base, headers[index % 3], prompt)
            first[answer["id"]] = Sighting(sent, time.time(), answer["status"], answer["position"])
            owners[answer["id"]] = headers[index % 3]
        veo.finish_all()
        sightings = watch_jobs(stack.base, owners, first)
        blocked = [poll_until_finished(stack.base, headers[0], job_id) for job_id in blockers]

    ids = list(first)
    assert [(sighting.status, sighting.position) for sighting in first.values()] == [
        ("queued", place) for place in range(1, 11)
    ]
    assert [start.prompt for start in veo.starts] == ["blocker 0", "blocker 1", *prompts]
    assert veo.max_concurrency == 2
    starts = started_at(veo)
    for index, job_id in enumerate(ids):
        assert_positions_as_promised(prompts[index], sightings[job_id], [starts[prompt] for prompt in prompts[:index]])

    jobs = Job.objects.filter(id__in=[*ids, *blockers])
    assert {job.status for job in jobs} == {"completed"}
    assert {job.retries for job in jobs} == {0}
    assert [job["status"] for job in blocked] == ["completed"] * 2
    for job in jobs:
        generation = job.generations.get()
        assert generation.mime_type.startswith("video/")
        assert (Path(settings.MEDIA_ROOT) / str(generation.file.name)).is_file()
    assert len(veo.downloads) == 12
    # The first user asked for the two blockers and clips 0, 3, 6 and 9.
    for user, delivered in zip(users, (6, 3, 3), strict=True):
        assert_credits_right(user, granted=100, delivered=delivered)
    assert not CreditLedgerEntry.objects.filter(kind="refund").exists()
    assert_no_slot_held()


def test_generations_of_a_killed_worker_are_resumed_without_a_second_start(make_user, veo, tmp_path: Path):
    user = make_user(credits=100)
    headers = auth(user)
    orphan_seconds = veo.generation_seconds = 8.0
    with cluster(veo, tmp_path) as stack:
        [doomed] = stack.start_workers("a")
        orphans = [submit(stack.base, headers, f"orphan {index}")["id"] for index in range(2)]
        wait_for(
            lambda: len(veo.starts) == 2 and all(veo.polls(start.operation_name) for start in veo.starts),
            message="both generations running with worker A's watchers",
        )
        operations = [start.operation_name for start in veo.starts]
        veo.generation_seconds = 1.0
        stack.start_workers("b")
        # A kill in the middle of a dispatch round is another case: the round's lock outlives the worker.
        lock = video_dispatcher().lock_key
        wait_for(lambda: not redis_client().exists(lock), message="no dispatch round running")
        killed = time.time()
        kill_group(doomed)
        assert doomed.returncode == -signal.SIGKILL
        third = submit(stack.base, headers, "after the crash")["id"]
        # A poll worker A had in flight may still land just after the kill.
        time.sleep(0.3)
        polled_at_kill = {operation: veo.polls(operation) for operation in operations}
        resumed: dict[str, float] = {}

        def both_resumed() -> bool:
            for operation in operations:
                if operation not in resumed and veo.polls(operation) > polled_at_kill[operation]:
                    resumed[operation] = time.time()
            return len(resumed) == 2

        wait_for(both_resumed, timeout=SLOT_LEASE + 10, message="worker B polling the orphaned generations")
        finished = [poll_until_finished(stack.base, headers, job_id) for job_id in [*orphans, third]]

    assert [job["status"] for job in finished] == ["completed"] * 3
    # A poll chain lives in its messages: worker B takes the next poll at once when its message was still in
    # Redis, and when worker A held it, the dispatcher adopts the generation once its slot lease runs out.
    for operation, moment in resumed.items():
        assert moment - killed <= SLOT_LEASE + DISPATCH_TICK + 2.5, operation
    assert veo.start_attempts == 3
    starts = started_at(veo)
    assert list(starts) == ["orphan 0", "orphan 1", "after the crash"]
    assert sorted(veo.downloads) == sorted([*operations, veo.starts[2].operation_name])
    # The orphans keep their slots through the crash: the third starts only once one of them has ended.
    first_done = min(starts[f"orphan {index}"] + orphan_seconds for index in range(2))
    assert starts["after the crash"] >= first_done
    assert veo.max_concurrency == 2
    assert_credits_right(user, granted=100, delivered=3)
    assert not CreditLedgerEntry.objects.filter(kind="refund").exists()
    assert_no_slot_held()


def test_a_worker_killed_in_the_middle_of_a_dispatch_round_does_not_stall_the_queue(make_user, veo, tmp_path: Path):
    user = make_user(credits=100)
    headers = auth(user)
    veo.generation_seconds = 1.0
    # The provider takes its time to answer the start, and starts the generation all the same, as Google does.
    veo.script("slow", ["slow_start:2", "ok"])
    with cluster(veo, tmp_path) as stack:
        [doomed] = stack.start_workers("a")
        job_id = submit(stack.base, headers, "slow clip")["id"]
        wait_for(lambda: veo.start_attempts == 1, message="worker A's dispatch round calling the provider")
        killed = time.time()
        kill_group(doomed)
        stack.start_workers("b")
        ready = time.time()
        # The start whose answer worker A never read is ambiguous: its slot is held for the generation it may have
        # made, and the video goes back in line for a retry, which starts on the other slot.
        wait_for(
            lambda: len(veo.starts) == 2,
            timeout=SLOT_LEASE + DISPATCH_TICK + 2.5,
            message="the video starting again within a lease of the kill",
        )
        held = video_slots().holders()
        finished = poll_until_finished(stack.base, headers, job_id)

    assert veo.starts[1].started_at - max(killed, ready) <= SLOT_LEASE + DISPATCH_TICK + 2.5
    assert any(":ambiguous:" in holder for holder in held)
    assert finished["status"] == "completed"
    assert finished["retries"] == 1
    assert veo.max_concurrency <= 2
    assert_credits_right(user, granted=100, delivered=1)
    assert_no_slot_held()


def test_rate_limit_safety_filter_and_time_limit_through_the_workers(make_user, veo, tmp_path: Path):
    user = make_user(credits=100)
    headers = auth(user)
    veo.generation_seconds = 0.5
    veo.script("limited", ["429", "ok"])
    veo.script("filtered", ["filtered"])
    veo.script("endless", ["hang"])
    with cluster(veo, tmp_path, VIDEO_TIMEOUT="2") as stack:
        stack.start_workers("a", "b")
        submitted = {
            name: submit(stack.base, headers, f"{name} clip")["id"] for name in ("limited", "filtered", "endless")
        }
        finished = {name: poll_until_finished(stack.base, headers, job_id) for name, job_id in submitted.items()}

    assert finished["limited"]["status"] == "completed"
    assert finished["limited"]["retries"] == 1
    assert finished["limited"]["error"] is None
    assert finished["filtered"]["status"] == "failed"
    assert finished["filtered"]["error"]["code"] == "safety_filtered"
    assert finished["endless"]["status"] == "failed"
    assert finished["endless"]["error"]["code"] == "timeout"
    # The 429 was answered at the start: one generation per prompt, one refused start more.
    assert veo.start_attempts == 4
    starts = started_at(veo)
    assert set(starts) == {"limited clip", "filtered clip", "endless clip"}
    endless = Job.objects.get(id=submitted["endless"])
    assert endless.finished_at is not None
    assert 2 <= endless.finished_at.timestamp() - starts["endless clip"] <= 2 + 1.5
    refunds = CreditLedgerEntry.objects.filter(kind="refund")
    assert {str(entry.job_id): entry.amount for entry in refunds} == {
        submitted["filtered"]: VIDEO_COST,
        submitted["endless"]: VIDEO_COST,
    }
    assert_credits_right(user, granted=100, delivered=1)
    assert_no_slot_held()
