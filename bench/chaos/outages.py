"""What a chaos run does to the stack: a worker killed or dead by itself, or Redis or PostgreSQL down for a while."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass

from project import embedded


@dataclass(frozen=True)
class Disruption:
    """One thing done to the stack: a worker killed or dead by itself, or Redis or PostgreSQL down for a while.

    A kill notes the video stages seen at its moment, the stage it was aimed at (empty for a random kill) and
    whether its victim had that stage's call to a fake in flight.
    """

    kind: str
    start: float
    end: float
    worker: str = ""
    stage: str = ""
    stages: tuple[str, ...] = ()
    caller: bool = False

    def overlaps(self, start: float, end: float) -> bool:
        return self.start <= end and start <= self.end


def redis_restart_empty(down: float) -> Disruption:
    """Stop this run's Redis, delete its data and start it again, empty, on the same socket."""
    began = time.time()
    embedded.stop_redis()
    for path in (embedded.VAR_DIR / "redis").iterdir():
        if path.name.startswith(("appendonly", "dump")):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    time.sleep(down)
    embedded.redis_url()
    return Disruption("redis", began, time.time())


def postgres_restart(down: float) -> Disruption:
    """Stop this run's PostgreSQL and start it again on the same socket."""
    began = time.time()
    embedded.stop_postgres()
    time.sleep(down)
    # Imported once embedded.stop_postgres() has, which silences pgserver's warning at import.
    import pgserver

    pgdata = embedded.VAR_DIR / "postgres"
    # A stopped server restarts with the options of its last start (postmaster.opts), its socket folder included;
    # pgserver runs it as a user of its own when this process is root.
    user = "pgserver" if os.geteuid() == 0 else None
    # pgserver generates its command functions at import, out of sight of type checkers.
    pgserver.pg_ctl(["-w", "-l", str(pgdata / "log"), "restart"], pgdata=pgdata, user=user)  # type: ignore[attr-defined]
    return Disruption("postgres", began, time.time())
