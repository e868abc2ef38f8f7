"""What the chaos thread samples: the cluster-wide locks in Redis, and the stages of the videos in the database."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import redis

from bench.chaos.outages import Disruption
from bench.chaos.plan import PROJECT_ID

# The stages a kill is aimed at, each as soon as a video is seen in it, in the order a video goes through them.
AIMED_STAGES = ("preparing", "starting", "generating", "stopping", "downloading")
# A worker owns these stages while it makes a call to a fake (the frame server or Veo): a kill aimed at one waits
# for a worker with that call in flight. The poll chain of generating and stopping has no owner between its polls.
CALL_STAGES = ("preparing", "starting", "downloading")


class LockWatch:
    """Samples the cluster-wide locks (video dispatcher, reconciler) and remembers how long each holder kept one.

    A round holds its lock for milliseconds; a holder that keeps it for seconds died with it.
    """

    def __init__(self, redis_url: str) -> None:
        from django.conf import settings

        from generation.videos.slots import video_dispatcher

        self.client = redis.Redis.from_url(redis_url, socket_timeout=1)
        # The reconciler's key as generation/recovery/reconciler.py builds it; it has no accessor of its own.
        self.keys = {
            "video dispatcher": video_dispatcher().lock_key,
            "reconciler": f"{settings.REDIS_KEY_PREFIX}:reconciler:lock",
        }
        self.holders: dict[tuple[str, bytes | str], list[float]] = {}

    def sample(self) -> bool:
        """Note who holds each lock now; whether any is held."""
        now = time.time()
        held = False
        for name, key in self.keys.items():
            try:
                token = self.client.get(key)
            except redis.RedisError:
                continue
            if token is not None:
                held = True
                self.holders.setdefault((name, token), [now, now])[1] = now
        return held

    def long_holds(self, seconds: float, disruptions: list[Disruption]) -> list[dict[str, Any]]:
        """Every hold longer than ``seconds``, with the holder: the first worker to die while it lasted."""
        holds = []
        for (name, _), (first, last) in self.holders.items():
            if last - first > seconds:
                deaths = [d.worker for d in disruptions if d.kind in ("kill", "exit") and first <= d.start <= last]
                hold = {"lock": name, "from": first, "to": last, "seconds": round(last - first, 1)}
                holds.append({**hold, "holder": deaths[0] if deaths else ""})
        return holds


class StageWatch:
    """Reads which stages the run's videos are in; how many samples saw each stage."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    def sample(self) -> tuple[str, ...]:
        """The stages some video of the run is in now; none while the database cannot be read."""
        from django.db import DatabaseError, connections

        from generation.models import Job

        try:
            videos = Job.objects.filter(project_id=PROJECT_ID, kind=Job.Kind.VIDEO, stage__in=AIMED_STAGES)
            present = set(videos.values_list("stage", flat=True))
        except DatabaseError:
            # PostgreSQL may be restarting: drop the broken connection, the next query opens a new one.
            connections.close_all()
            return ()
        stages = tuple(stage for stage in AIMED_STAGES if stage in present)
        self.seen.update(stages)
        return stages
