"""The chaos thread: kills at random moments and at moments when a video is in a given stage, and two outages."""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

from bench.chaos.fakes import CallSite
from bench.chaos.outages import Disruption, postgres_restart, redis_restart_empty
from bench.chaos.watch import AIMED_STAGES, CALL_STAGES, LockWatch, StageWatch
from bench.chaos.workers import Worker, WorkerPool

AIM_SECONDS = 2.0
SAMPLE_SECONDS = 0.1


class Chaos:
    """SIGKILLs a random worker every few seconds and a worker whenever a video is in a stage that was not hit yet;
    takes Redis and then PostgreSQL down once, at set moments.

    ``calls`` names, for each stage a worker owns while it calls a fake, where that call goes: a kill aimed at such a
    stage takes the worker with that call in flight.
    """

    def __init__(
        self,
        pool: WorkerPool,
        locks: LockWatch,
        rng: random.Random,
        args: argparse.Namespace,
        started: float,
        calls: dict[str, CallSite],
    ) -> None:
        self.pool = pool
        self.locks = locks
        self.stages = StageWatch()
        self.rng = rng
        self.args = args
        self.started = started
        self.calls = calls
        self.disruptions: list[Disruption] = []
        self.aimed: Counter[str] = Counter()
        self.error = ""
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except Exception as error:
            self.error = f"{type(error).__name__}: {error}"
            raise

    def _run(self) -> None:
        outages: list[tuple[float, Callable[[float], Disruption]]] = sorted(
            [
                (self.started + self.args.redis_at, redis_restart_empty),
                (self.started + self.args.postgres_at, postgres_restart),
            ],
            key=lambda outage: outage[0],
        )
        next_kill = self.started + self.rng.uniform(*self.args.kill_every)
        # Dead workers are replaced until the end; the kills and outages stop with the chaos window.
        while not self.stop.wait(SAMPLE_SECONDS):
            held = self.locks.sample()
            stages = self.stages.sample()
            self.disruptions += self.pool.replace_exited()
            now = time.time()
            if outages and now >= outages[0][0]:
                self.disruptions.append(outages.pop(0)[1](self.args.outage_seconds))
                continue
            if now >= self.started + self.args.chaos_seconds:
                continue
            aimed = self._kill_in_stage(stages)
            if aimed is not None:
                self.disruptions.append(aimed)
                continue
            # Aiming at locks, a due kill waits up to AIM_SECONDS for a moment when a worker holds one.
            timed = held or not self.args.aim_at_locks or now >= next_kill + AIM_SECONDS
            victim = self.pool.random_ready(self.rng) if next_kill <= now and timed else None
            if victim is not None:
                self.disruptions.append(self.pool.kill(victim, stages=stages))
                next_kill = now + self.rng.uniform(*self.args.kill_every)

    def _kill_in_stage(self, stages: tuple[str, ...]) -> Disruption | None:
        """Kill a worker for the first stage seen now that has had fewer than ``--stage-kills`` kills aimed at it."""
        for stage in AIMED_STAGES:
            if stage not in stages or self.aimed[stage] >= self.args.stage_kills:
                continue
            victim: Worker | None
            if stage in CALL_STAGES:
                # Only the worker making the stage's call is in it: wait for one with the call in flight.
                site = self.calls[stage]
                callers = self.pool.calling(site.port, site.client_ports())
                victim = callers[0] if callers else None
            else:
                victim = self.pool.random_ready(self.rng)
            if victim is None:
                continue
            self.aimed[stage] += 1
            return self.pool.kill(victim, stage=stage, stages=stages, caller=stage in CALL_STAGES)
        return None
