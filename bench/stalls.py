"""Stalls of the whole machine: moments when no CPU ran anything, seen by one sleeper process per CPU.

Each sleeper is pinned to its CPU, takes the real-time scheduling class when allowed (as root), so that no process
of this machine can keep it from running, and asks to wake every 2 ms. A sleeper that wakes late on its own says
little (another real-time task, an interrupt storm), but when every CPU's sleeper is late over the same interval,
the whole virtual machine was not running: its host gave the CPUs to something else. Run as
``python -m bench.stalls --cpu N --seconds S --output FILE``; ``StallMonitor`` starts one per CPU around a run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

SLEEP_SECONDS = 0.002
# A wake-up later than this is written down: below it, timer slack and a busy CPU explain it.
LATE_SECONDS = 0.004
BASE_DIR = Path(__file__).resolve().parent.parent


def sleep_and_record(*, cpu: int, seconds: float, output: Path) -> None:
    """Sleep ``SLEEP_SECONDS`` at a time on ``cpu`` for ``seconds``; write each late wake-up (monotonic start of
    the sleep, seconds late) as a line of ``output``."""
    os.sched_setaffinity(0, {cpu})
    with contextlib.suppress(PermissionError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
    end = time.monotonic() + seconds
    with output.open("w") as lines:
        while (before := time.monotonic()) < end:
            time.sleep(SLEEP_SECONDS)
            late = time.monotonic() - before - SLEEP_SECONDS
            if late > LATE_SECONDS:
                lines.write(f"{before:.6f} {late:.6f}\n")
                lines.flush()


def _late_intervals(path: Path) -> list[tuple[float, float]]:
    """(start, end) of each interval during which a sleeper should have woken and could not."""
    intervals = []
    for line in path.read_text().splitlines():
        before, late = map(float, line.split())
        intervals.append((before + SLEEP_SECONDS, before + SLEEP_SECONDS + late))
    return intervals


def _common(left: list[tuple[float, float]], right: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The intervals covered by both lists."""
    return sorted((max(a0, b0), min(a1, b1)) for a0, a1 in left for b0, b1 in right if min(a1, b1) - max(a0, b0) > 0)


class StallMonitor:
    """One sleeper per CPU while the block runs; ``stalls`` are then the intervals when every CPU stood still."""

    def __init__(self, *, seconds: float = 3600) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="genservice-stalls-"))
        self._seconds = seconds
        self._processes: list[subprocess.Popen[bytes]] = []
        self.stalls: list[tuple[float, float]] = []

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
        for path in files:
            path.unlink()
        self._dir.rmdir()

    def summary(self, *, since: float, until: float) -> dict[str, object]:
        """The stalls between two monotonic times: how many, the longest and their sum in milliseconds, and each
        one's start (seconds after ``since``) and length, to line them up with the slow requests."""
        inside = [(start - since, length) for start, length in self.stalls if since <= start < until]
        return {
            "count": len(inside),
            "max_ms": round(1000 * max((length for _start, length in inside), default=0.0), 1),
            "total_ms": round(1000 * sum(length for _start, length in inside), 1),
            "at_s_and_ms": [[round(start, 3), round(1000 * length, 1)] for start, length in inside],
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
