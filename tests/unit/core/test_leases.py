"""The Redis slot limiter and the single-runner lock that the video queue stands on."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings

from core.connections import redis_client
from core.leases import SingleRunner, SlotLimiter


@pytest.fixture
def key() -> Iterator[str]:
    name = f"{settings.REDIS_KEY_PREFIX}:test:{uuid.uuid4().hex}"
    yield name
    redis_client().delete(name, f"{name}:lock", f"{name}:requested")


def limiter(key: str, *, limit: int = 2, lease: float = 5) -> SlotLimiter:
    return SlotLimiter(client=redis_client(), key=key, limit=limit, lease_seconds=lease)


def test_never_grants_more_slots_than_the_limit(key):
    slots = limiter(key)
    assert slots.acquire("a")
    assert slots.acquire("b")
    assert not slots.acquire("c")
    assert slots.holders() == {"a", "b"}
    slots.release("a")
    assert slots.acquire("c")


def test_acquiring_again_renews_instead_of_taking_a_second_slot(key):
    slots = limiter(key)
    assert slots.acquire("a")
    assert slots.acquire("a")
    assert slots.acquire("b")
    assert slots.holders() == {"a", "b"}


def test_a_lease_that_is_not_renewed_runs_out(key):
    slots = limiter(key, limit=1, lease=0.3)
    assert slots.acquire("crashed")
    assert not slots.acquire("next")
    time.sleep(0.35)
    assert not slots.renew("crashed")
    assert slots.acquire("next")


def test_renewing_keeps_the_slot_past_its_lease_until_the_block_ends(key):
    # Renewed every third of the lease: a lease of 0.6 s leaves a renewal 0.4 s to come, which a loaded machine's
    # scheduler allows; the block lasts well past the lease, so only renewals can have kept the slot.
    slots = limiter(key, limit=1, lease=0.6)
    assert slots.acquire("long")
    with slots.renewing("long"):
        time.sleep(1.5)
        assert not slots.acquire("other")
    time.sleep(0.65)
    assert slots.acquire("other")


def test_hand_over_moves_a_live_slot_without_freeing_it(key):
    slots = limiter(key, limit=1, lease=5)
    assert slots.acquire("attempt")
    assert slots.hand_over("attempt", "ambiguous", lease_seconds=0.3)
    assert slots.holders() == {"ambiguous"}
    assert not slots.acquire("next")
    time.sleep(0.35)
    assert slots.acquire("next")
    assert not slots.hand_over("gone", "other", lease_seconds=1)


def test_concurrent_acquires_never_exceed_the_limit(key):
    slots = limiter(key, limit=2)
    granted: list[str] = []
    barrier = threading.Barrier(20)

    def contend(name: str) -> None:
        barrier.wait()
        if slots.acquire(name):
            granted.append(name)

    threads = [threading.Thread(target=contend, args=(f"h{i}",)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 2


def test_single_runner_never_overlaps(key):
    runner = SingleRunner(client=redis_client(), key=key, lock_seconds=10)
    active = 0
    overlaps = 0
    lock = threading.Lock()

    def routine() -> None:
        nonlocal active, overlaps
        with lock:
            active += 1
            overlaps += active > 1
        time.sleep(0.02)
        with lock:
            active -= 1

    threads = [threading.Thread(target=runner.run, args=(routine,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == 0


def test_single_runner_runs_again_for_a_call_made_while_it_ran(key):
    runner = SingleRunner(client=redis_client(), key=key, lock_seconds=10)
    started = threading.Event()
    # The first run lasts until the second call has been made, however slowly this thread gets to make it.
    called = threading.Event()
    runs = 0

    def routine() -> None:
        nonlocal runs
        runs += 1
        started.set()
        called.wait(timeout=10)

    first = threading.Thread(target=runner.run, args=(routine,))
    first.start()
    started.wait()
    assert runner.run(routine) is False
    called.set()
    first.join()
    assert runs == 2
    assert not redis_client().exists(f"{key}:requested")
