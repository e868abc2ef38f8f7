"""Appending events: each lands in its user's history and is announced on the channel with the id it got there."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.connections import redis_client
from core.events import publish
from core.events.publish import Event, channel, events_append, stream_key

USERS = (910_001, 910_002)


@pytest.fixture
def announcements() -> Any:
    subscription = redis_client().pubsub(ignore_subscribe_messages=True)
    subscription.subscribe(channel())
    subscription.get_message(timeout=1)  # the subscribe confirmation
    yield subscription
    subscription.close()
    redis_client().delete(*(stream_key(user) for user in USERS))


def test_many_events_are_appended_and_announced_in_order_a_batch_per_round_trip(announcements, monkeypatch):
    monkeypatch.setattr(publish, "APPEND_BATCH", 2)
    sent = [Event(USERS[index % 2], "note", {"n": index}) for index in range(5)]
    events_append(sent)
    heard: list[str] = []
    while len(heard) < 5 and (message := announcements.get_message(timeout=5)) is not None:
        heard.append(message["data"].decode())
    assert len(heard) == 5
    for event, announcement in zip(sent, heard, strict=True):
        user_id, event_id, name, data = announcement.split(" ", 3)
        assert (int(user_id), name, json.loads(data)) == (event.user_id, "note", event.data)
        # The announced id is the one the user's history gave the event, which Last-Event-ID replays from.
        stored: Any = redis_client().xrange(stream_key(event.user_id), min=event_id, max=event_id)
        assert [json.loads(fields[b"data"]) for _id, fields in stored] == [event.data]
    for user in USERS:
        entries: Any = redis_client().xrange(stream_key(user))
        history = [json.loads(fields[b"data"])["n"] for _id, fields in entries]
        assert history == [event.data["n"] for event in sent if event.user_id == user]
