"""Stalls and slowdowns of the whole machine, seen by one sleeper process per CPU.

Each sleeper is pinned to its CPU, takes the real-time scheduling class when allowed (as root), so that no process
of this machine can keep it from running, and asks to wake every 2 ms. A sleeper that wakes late on its own says
little (another real-time task, an interrupt storm), but when every CPU's sleeper is late over the same interval,
the whole virtual machine was not running: its host gave the CPUs to something else (a stall).

At each wake-up the sleeper also times a fixed piece of work (the speed probe), and over each 100 ms it adds up
how late it woke, each delay up to a stall's threshold. At that priority only the kernel can hold it up (a kernel
without preemption finishes another task's system call first, which matters at full load only), so when on every
CPU over the same 100 ms the probe took longer or the delays added up to 10 ms or more, the CPUs themselves ran
slower: the host shared their cores, lowered their clock or took them away for moments too short to count as a
stall (a slowdown). Without real-time priority no slowdown is reported. Run as
``python -m bench.stalls --cpu N --seconds S --output FILE``; ``StallMonitor`` starts one per CPU around a run.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

SLEEP_SECONDS = 0.002
# A wake-up later than this is written down: below it, timer slack and a busy CPU explain it.
LATE_SECONDS = 0.004
# The speed probe's work (about 10 microseconds), and the intervals over which its times are averaged.
PROBE_LOOPS = 200
BUCKET_SECONDS = 0.1
# An interval in which, on every CPU, the probe took this many times its usual time or the wake-ups were this late
# in all is a slowdown.
SLOW_FACTOR = 1.5
SLOW_LOST_SECONDS = 0.01
BASE_DIR = Path(__file__).resolve().parent.parent


def _probe() -> float:
    """Seconds taken by the same small piece of pure computation."""
    started = time.perf_counter()
    total = 0
    for value in range(PROBE_LOOPS):
        total += value * value
    return time.perf_counter() - started


def sleep_and_record(*, cpu: int, seconds: float, output: Path) -> None:
    """Sleep ``SLEEP_SECONDS`` at a time on ``cpu`` for ``seconds``; write each late wake-up as a line of
    ``output`` (``late``, the monotonic start of the sleep, seconds late), and for each ``BUCKET_SECONDS`` the speed
    probe's mean time and how late the wake-ups were in all (``probe``, the interval's monotonic start, seconds,
    seconds)."""
    os.sched_setaffinity(0, {cpu})
    realtime = True
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
    except PermissionError:
        # Not root: the sleeper competes with the stack for its CPU, and its delays are the stack's as much as
        # the machine's. Said so in the output, so that no slowdown is reported from it.
        realtime = False
    end = time.monotonic() + seconds
    bucket, probes, lost = _bucket(time.monotonic()), list[float](), 0.0
    with output.open("w") as lines:
        lines.write(f"realtime {int(realtime)}\n")
        while (before := time.monotonic()) < end:
            time.sleep(SLEEP_SECONDS)
            woke = time.monotonic()
            late = woke - before - SLEEP_SECONDS
            if late > LATE_SECONDS:
                lines.write(f"late {before:.6f} {late:.6f}\n")
                lines.flush()
            if _bucket(woke) != bucket:
                if probes:
                    lines.write(f"probe {bucket:.1f} {sum(probes) / len(probes):.9f} {lost:.6f}\n")
                    lines.flush()
                bucket, probes, lost = _bucket(woke), [], 0.0
            # Delays up to a stall's threshold: longer ones are stalls, counted apart.
            lost += min(late, LATE_SECONDS)
            probes.append(_probe())


def _bucket(moment: float) -> float:
    """The start of the probe interval holding a monotonic time: the same for every sleeper, whichever its CPU."""
    return BUCKET_SECONDS * math.floor(moment / BUCKET_SECONDS)


def _records(path: Path, kind: str) -> list[list[float]]:
    """The numbers of each line of one kind in a sleeper's output."""
    return [
        [float(number) for number in line.split()[1:]]
        for line in path.read_text().splitlines()
        if line.startswith(kind)
    ]


def _late_intervals(path: Path) -> list[tuple[float, float]]:
    """(start, end) of each interval during which a sleeper should have woken and could not."""
    return [(before + SLEEP_SECONDS, before + SLEEP_SECONDS + late) for before, late in _records(path, "late")]


def _slow_buckets(path: Path) -> dict[float, tuple[float, float]]:
    """The probe intervals in which a sleeper's probe ran ``SLOW_FACTOR`` times slower than its median over the whole
    run, or its wake-ups were ``SLOW_LOST_SECONDS`` late in all: (times the usual, seconds late) by the start."""
    buckets = _records(path, "probe")
    if not buckets:
        return {}
    usual = statistics.median(mean for _start, mean, _lost in buckets)
    return {
        start: (mean / usual, lost)
        for start, mean, lost in buckets
        if mean >= SLOW_FACTOR * usual or lost >= SLOW_LOST_SECONDS
    }


def _common(left: list[tuple[float, float]], right: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The intervals covered by both lists."""
    return sorted((max(a0, b0), min(a1, b1)) for a0, a1 in left for b0, b1 in right if min(a1, b1) - max(a0, b0) > 0)


class StallMonitor:
    """One sleeper per CPU while the block runs; ``stalls`` are then the intervals when every CPU stood still, and
    ``slowdowns`` those when every CPU ran slower."""

    def __init__(self, *, seconds: float = 3600) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="genservice-stalls-"))
        self._seconds = seconds
        self._processes: list[subprocess.Popen[bytes]] = []
        # (start, length) of each stall; (start, probe's times the usual, seconds late) of each slowdown, from the
        # least slowed CPU.
        self.stalls: list[tuple[float, float]] = []
        self.slowdowns: list[tuple[float, float, float]] = []
        # Whether every sleeper ran at real-time priority: without it, slowdowns are not told apart and not reported.
        self.realtime = False

    def __enter__(self) -> StallMonitor:
        for cpu in sorted(os.sched_getaffinity(0)):
            command = [sys.executable, "-m", "bench.stalls", "--cpu", str(cpu), "--seconds", str(self._seconds)]
            command += ["--output", str(self._dir / f"cpu{cpu}.txt")]
            self._processes.append(subprocess.Popen(command, cwd=BASE_DIR))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for process in self._processes:
            process.terminate()
            process.wait()
        files = sorted(self._dir.glob("cpu*.txt"))
        if len(files) == len(self._processes):
            common = _late_intervals(files[0])
            for path in files[1:]:
                common = _common(common, _late_intervals(path))
            self.stalls = [(start, end - start) for start, end in common]
            self.realtime = all(_records(path, "realtime") == [[1.0]] for path in files)
            if self.realtime:
                slow = [_slow_buckets(path) for path in files]
                self.slowdowns = sorted(
                    (start, min(each[start][0] for each in slow), min(each[start][1] for each in slow))
                    for start in set.intersection(*(set(each) for each in slow))
                )
        for path in files:
            path.unlink()
        self._dir.rmdir()

    def summary(self, *, since: float, until: float) -> dict[str, object]:
        """The stalls between two monotonic times: how many, the longest and their sum in milliseconds, and each
        one's start (seconds after ``since``) and length, to line them up with the slow requests; then the
        slowdowns' count, and each one's start, the probe's times its usual and the milliseconds the wake-ups lost."""
        inside = [(start - since, length) for start, length in self.stalls if since <= start < until]
        slow = [(start - since, factor, lost) for start, factor, lost in self.slowdowns if since <= start < until]
        return {
            "count": len(inside),
            "max_ms": round(1000 * max((length for _start, length in inside), default=0.0), 1),
            "total_ms": round(1000 * sum(length for _start, length in inside), 1),
            "at_s_and_ms": [[round(start, 3), round(1000 * length, 1)] for start, length in inside],
            "realtime": self.realtime,
            "slowdowns": len(slow),
            "slowdowns_at_s_factor_and_lost_ms": [
                [round(start, 3), round(factor, 2), round(1000 * lost, 1)] for start, factor, lost in slow
            ],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cpu", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    sleep_and_record(cpu=args.cpu, seconds=args.seconds, output=args.output)


if __name__ == "__main__":
    main()
