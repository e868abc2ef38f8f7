"""Where the CPU went during a run: per process tree (web, worker, PostgreSQL, Redis, load generator), from /proc."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
# A machine keeping fewer cores than this busy, with the stack under test idle, counts as quiet.
QUIET_CORES = 0.15


@dataclass(frozen=True)
class ProcessTimes:
    parent: int
    name: str
    own: int
    # utime + stime + cutime + cstime: a process's own CPU plus that of the children it has reaped, so that
    # short-lived children (a PostgreSQL backend per connection) are still counted once they exit.
    total: int


def _processes() -> dict[int, ProcessTimes]:
    processes = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        # The fields after the name start at field 3 (state); utime, stime, cutime and cstime are fields 14 to 17.
        fields = raw[raw.rindex(")") + 2 :].split()
        own, children = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
        processes[int(entry.name)] = ProcessTimes(int(fields[1]), name, own, own + children)
    return processes


def _machine_ticks() -> tuple[int, int]:
    """Busy and total ticks of all CPUs together."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)


def _cpu_pressure_us() -> int | None:
    """Microseconds during which some runnable task waited for a CPU, since boot (Linux pressure stall info)."""
    try:
        some = Path("/proc/pressure/cpu").read_text().split("\n", 1)[0]
    except OSError:
        return None
    return int(some.rsplit("total=", 1)[1])


def _tree(root: int, processes: dict[int, ProcessTimes]) -> set[int]:
    found = {root} if root in processes else set()
    while more := {pid for pid, process in processes.items() if process.parent in found} - found:
        found |= more
    return found


def process_tree(root: int) -> set[int]:
    """The process and all its descendants that are alive now."""
    return _tree(root, _processes())


@dataclass
class CpuMeter:
    """Measures the CPU used by process trees, single processes and everything else on the machine."""

    trees: dict[str, int]
    single: dict[str, int]
    seconds: float = 0.0
    used: dict[str, float] = field(default_factory=dict)
    # The share of the run during which some runnable task waited for a CPU (None where Linux does not say).
    pressure: float | None = None
    # The 1-minute load average when the run started and when it ended.
    load: tuple[float, float] = (0.0, 0.0)

    def _ticks(self, processes: dict[int, ProcessTimes]) -> dict[str, int]:
        groups = {name: _tree(pid, processes) for name, pid in self.trees.items()}
        ticks = {name: sum(processes[pid].total for pid in pids) for name, pids in groups.items()}
        # A single process counts its own time only: the load generator is also the parent of the servers.
        ticks |= {name: processes[pid].own if pid in processes else 0 for name, pid in self.single.items()}
        return ticks

    @contextmanager
    def measure(self) -> Iterator[CpuMeter]:
        """Record the CPU seconds each group used while the block ran."""
        load_before, pressure_before = os.getloadavg()[0], _cpu_pressure_us()
        started, before, (busy_before, total_before) = time.monotonic(), self._ticks(_processes()), _machine_ticks()
        yield self
        after, (busy_after, total_after) = self._ticks(_processes()), _machine_ticks()
        self.seconds = time.monotonic() - started
        pressure_after = _cpu_pressure_us()
        if pressure_before is not None and pressure_after is not None and self.seconds:
            self.pressure = (pressure_after - pressure_before) / 1e6 / self.seconds
        self.load = (load_before, os.getloadavg()[0])
        self.used = {name: (after[name] - before.get(name, 0)) / TICKS_PER_SECOND for name in after}
        cpus = os.cpu_count() or 1
        self.used["machine"] = cpus * self.seconds * (busy_after - busy_before) / max(1, total_after - total_before)
        self.used["other"] = self.used["machine"] - sum(v for k, v in self.used.items() if k != "machine")

    def cores(self) -> dict[str, float]:
        """Average cores busy per group (1.0 is one core for the whole run)."""
        return {name: round(used / self.seconds, 2) for name, used in self.used.items()} if self.seconds else {}

    def per_item(self, count: int) -> dict[str, float]:
        """CPU milliseconds per request (or job) for each group, when ``count`` of them were done in the run."""
        return {name: round(1000 * used / count, 2) for name, used in self.used.items()} if count else {}


def busy_cores(seconds: float = 1.0) -> float:
    """How many cores the whole machine kept busy over the next ``seconds``."""
    busy_before, total_before = _machine_ticks()
    time.sleep(seconds)
    busy_after, total_after = _machine_ticks()
    return (os.cpu_count() or 1) * (busy_after - busy_before) / max(1, total_after - total_before)


def wait_until_quiet(*, timeout: float) -> float:
    """Wait up to ``timeout`` seconds for other work to leave the CPUs mostly idle; return the last reading."""
    deadline = time.monotonic() + timeout
    while (busy := busy_cores()) > QUIET_CORES and time.monotonic() < deadline:
        pass
    return round(busy, 2)


def cpu_meter(*, trees: dict[str, int], single: dict[str, int]) -> CpuMeter:
    """A meter for process trees (a server and its children) and single processes, by pid."""
    return CpuMeter(trees=trees, single=single)
