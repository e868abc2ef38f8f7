"""The worker processes of a chaos run: started, killed and replaced, and which one is calling a fake right now."""

from __future__ import annotations

import os
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.chaos.fakes import worker_url
from bench.chaos.outages import Disruption
from bench.cpu import process_tree
from bench.stack import BenchEnvironment
from testing.live import WORKER_READY, kill_group, start_worker, stop, wait_until_ready

WORKERS = 2
_ESTABLISHED = "01"


@dataclass
class Worker:
    """One worker incarnation: a ``rundramatiq`` process group of its own and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    died_at: float | None = None

    @property
    def ready(self) -> bool:
        return WORKER_READY in self.log.read_text()


class WorkerPool:
    """Keeps WORKERS worker processes running; each reaches the fakes under a path of its own (bench/chaos/fakes.py)."""

    def __init__(self, bench: BenchEnvironment, threads: int) -> None:
        self.bench = bench
        self.threads = threads
        self.started: list[Worker] = []
        self.running: list[Worker] = []

    def start(self) -> Worker:
        name = f"w{len(self.started) + 1:02d}"
        urls = {setting: worker_url(self.bench.env[setting], name) for setting in ("AI_GATEWAY_URL", "GEMINI_API_BASE")}
        env = {**self.bench.env, **urls}
        log = self.bench.log_dir / f"worker-{name}.log"
        worker = Worker(name, start_worker(env, log, threads=self.threads), log)
        self.started.append(worker)
        self.running.append(worker)
        return worker

    def start_all(self) -> None:
        for worker in [self.start() for _ in range(WORKERS)]:
            wait_until_ready(worker.process, worker.log, timeout=120)

    def kill(
        self, victim: Worker, *, stage: str = "", stages: tuple[str, ...] = (), caller: bool = False
    ) -> Disruption:
        """SIGKILL the victim's process group and start its replacement; the kill notes the stages it was made in."""
        died_at = victim.died_at = time.time()
        kill_group(victim.process)
        self.running.remove(victim)
        self.start()
        return Disruption("kill", died_at, died_at, victim.name, stage=stage, stages=stages, caller=caller)

    def random_ready(self, rng: random.Random) -> Worker | None:
        """A random worker that takes messages, or None while none does."""
        ready = [worker for worker in self.running if worker.ready]
        return rng.choice(ready) if ready else None

    def calling(self, port: int, client_ports: set[int] | None) -> list[Worker]:
        """The running workers with a connection open to 127.0.0.1:``port`` now (from one of ``client_ports``, unless
        None): a call to that fake is in flight."""
        sockets = _sockets_connected_to(port, client_ports)
        if not sockets:
            return []
        return [
            worker
            for worker in self.running
            if any(sockets & _sockets_of(pid) for pid in process_tree(worker.process.pid))
        ]

    def replace_exited(self) -> list[Disruption]:
        """Start a replacement for every worker that exited by itself, which the run counts as a crash."""
        exits = []
        for worker in [worker for worker in self.running if worker.process.poll() is not None]:
            worker.died_at = time.time()
            self.running.remove(worker)
            self.start()
            exits.append(Disruption("exit", worker.died_at, worker.died_at, worker.name))
        return exits

    def dead(self) -> set[str]:
        return {worker.name for worker in self.started if worker.died_at is not None}

    def stop(self) -> None:
        stop(*(worker.process for worker in self.running))


def _sockets_of(pid: int) -> set[str]:
    try:
        return {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    except OSError:
        # The process ended meanwhile, or closed a file while it was being read.
        return set()


def _sockets_connected_to(port: int, client_ports: set[int] | None) -> set[str]:
    """The ``socket:[inode]`` links of the established TCP connections whose far end is ``port`` on this machine, and
    whose near end one of ``client_ports`` unless None."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            near, far = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
            wanted = client_ports is None or near in client_ports
            if far == port and wanted and fields[3] == _ESTABLISHED:
                sockets.add(f"socket:[{fields[9]}]")
    return sockets
