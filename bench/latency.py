"""What a load run measured, and the latency percentiles every benchmark reports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunResult:
    """What one run measured: latencies of the answered requests in the measured window, statuses and errors."""

    name: str
    mode: str
    window: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    exceptions: Counter[str] = field(default_factory=Counter)
    # The first body of each error status, so that a report says what went wrong.
    error_samples: dict[int, str] = field(default_factory=dict)
    send_lateness: list[float] = field(default_factory=list)
    # Open loop: (due time from the start of the measured window, latency) of each answered request, in due order,
    # so that slow requests can be lined up with what else happened on the machine at that moment.
    timeline: list[tuple[float, float]] = field(default_factory=list)
    # How long each of the load generator's own garbage collections held it up during the run.
    collector_pauses: list[float] = field(default_factory=list)
    # Every answer, warm-up and late ones included: what the servers did while the run lasted.
    answered_total: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, status: int, latency: float, body: bytes) -> None:
        self.statuses[status] += 1
        self.latencies.append(latency)
        if not 200 <= status < 300:
            self.error_samples.setdefault(status, body.decode(errors="replace"))

    @property
    def errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if not 200 <= status < 300) + sum(
            self.exceptions.values()
        )

    def summary(self) -> dict[str, Any]:
        """Throughput, latency percentiles in milliseconds, errors and the load generator's own CPU use."""
        answered = sum(self.statuses.values())
        data: dict[str, Any] = {
            "name": self.name,
            "mode": self.mode,
            "window_s": round(self.window, 3),
            "answered": answered,
            "answered_total": self.answered_total,
            "requests_per_s": round(answered / self.window, 1) if self.window else None,
            "errors": self.errors,
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            "exceptions": dict(self.exceptions),
            "error_samples": {str(status): body for status, body in self.error_samples.items()},
            "latency_ms": latency_summary(self.latencies),
            "loadgen_cpu_percent": round(100 * self.cpu_seconds / self.wall_seconds, 1) if self.wall_seconds else None,
            **self.extra,
        }
        if self.send_lateness:
            data["send_lateness_ms"] = latency_summary(self.send_lateness)
        data["loadgen_gc_pauses"] = {
            "max_ms": round(1000 * max(self.collector_pauses, default=0.0), 2),
            "over_5_ms": sum(1 for pause in self.collector_pauses if pause > 0.005),
        }
        if self.timeline:
            data["timeline_ms"] = [
                [round(1000 * due, 1), round(1000 * latency, 2)] for due, latency in sorted(self.timeline)
            ]
        return data


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending sequence."""
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p99, max and mean in milliseconds."""
    if not seconds:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(seconds)
    points = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
    summary: dict[str, float | None] = {
        name: round(1000 * percentile(ordered, fraction), 2) for name, fraction in points.items()
    }
    summary["max"] = round(1000 * ordered[-1], 2)
    summary["mean"] = round(1000 * sum(ordered) / len(ordered), 2)
    return summary
