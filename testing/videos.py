"""The video queue's state in Redis between tests: the slots, the dispatcher's lock and its pending request."""

from __future__ import annotations

from core.connections import redis_client
from generation.videos.slots import video_dispatcher, video_slots
from testing.waits import wait_for


def video_queue_forget() -> None:
    """Drop the video slots and the dispatcher's lock, which live in Redis under the run's prefix: a test's holds
    (an ambiguous start's, or a worker's stopped mid-generation) must not reach the next test."""
    dispatcher = video_dispatcher()
    redis_client().delete(video_slots().key, dispatcher.lock_key, dispatcher.request_key)


def wait_slots_given_back(timeout: float = 10) -> None:
    """Wait until no video slot is held: the last poll gives its slot back as the generation ends, and an
    ambiguous start holds one for a while."""
    holders = video_slots().holders
    wait_for(lambda: holders() == set(), timeout=timeout, message=f"every video slot given back (held: {holders()})")
