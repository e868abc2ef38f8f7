"""The last 24 hours, as the operator console's charts: one grouped SQL query per chart over a ``created_at`` range.

A job counts in the bucket of its creation (``created_at``, indexed), a ledger entry in the bucket of its own.
Buckets are whole minutes or hours of Unix time, so neither the database's time zone nor the browser's matters;
every series of a chart is aligned on the same bucket starts (Unix seconds), the shape uPlot draws.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.utils.translation import gettext

from credits.models import CreditLedgerEntry
from generation.models import Job

WINDOW = timedelta(hours=24)
MINUTE = 60
HOUR = 3600
QUANTILES = (0.5, 0.95)
# The error codes drawn one by one, the most frequent first; the others are drawn as one series.
ERROR_CODES_DRAWN = 6

_JOBS = Job._meta.db_table
_LEDGER = CreditLedgerEntry._meta.db_table


def _bucket(column: str) -> str:
    return f"(floor(extract(epoch FROM {column}) / %(step)s) * %(step)s)::bigint"


_JOBS_BY_STATUS_SQL = f"""
SELECT {_bucket("created_at")}, status, count(*)
FROM {_JOBS}
WHERE created_at >= %(since)s
GROUP BY 1, 2
"""

# The wait counts every job that started (a video's started_at is its latest start call); the generation time
# only the completed ones, as the estimates do.
_TIMINGS_SQL = f"""
SELECT {_bucket("created_at")},
       kind,
       percentile_cont(%(quantiles)s::float8[])
           WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at)::float8),
       percentile_cont(%(quantiles)s::float8[])
           WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)::float8)
           FILTER (WHERE status = %(completed)s AND finished_at IS NOT NULL)
FROM {_JOBS}
WHERE created_at >= %(since)s AND started_at IS NOT NULL
GROUP BY 1, 2
"""

# A failed job keeps its error code; a retry leaves only its count on the job (a completed job clears the code of
# the error it was retried for), so retries are one series whatever their cause.
_ERRORS_SQL = f"""
SELECT {_bucket("created_at")},
       CASE WHEN status = %(failed)s THEN error_code END,
       count(*) FILTER (WHERE status = %(failed)s),
       sum(retries)::bigint
FROM {_JOBS}
WHERE created_at >= %(since)s AND (status = %(failed)s OR retries > 0)
GROUP BY 1, 2
"""

_CREDITS_SQL = f"""
SELECT {_bucket("created_at")},
       coalesce(-sum(amount) FILTER (WHERE kind = %(charge)s), 0)::bigint,
       coalesce(sum(amount) FILTER (WHERE kind = %(refund)s), 0)::bigint
FROM {_LEDGER}
WHERE created_at >= %(since)s AND kind IN (%(charge)s, %(refund)s)
GROUP BY 1
"""

Values = dict[int, float]


@dataclass(frozen=True)
class Grid:
    """The bucket starts, in Unix seconds, of a window that ends with the bucket holding ``now``."""

    step: int
    first: int
    last: int

    @classmethod
    def ending(cls, now: datetime, *, step: int) -> Grid:
        return cls(step, int((now - WINDOW).timestamp()) // step * step, int(now.timestamp()) // step * step)

    @property
    def since(self) -> datetime:
        return datetime.fromtimestamp(self.first, tz=UTC)

    def starts(self) -> list[int]:
        return list(range(self.first, self.last + 1, self.step))

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with connection.cursor() as cursor:
            cursor.execute(sql, {"step": self.step, "since": self.since, **params})
            return cursor.fetchall()

    def chart(self, series: list[tuple[str, str, Values]], *, unit: str, total: bool) -> dict[str, Any]:
        """A chart's JSON: ``total`` for counts (empty buckets are 0, the legend sums), else for measures (empty
        buckets are gaps, the legend shows the latest)."""
        empty = 0 if total else None
        return {
            "x": self.starts(),
            "step": self.step,
            "unit": unit,
            "x_label": gettext("Time"),
            "summary": "total" if total else "latest",
            "summary_label": gettext("Total, 24 h") if total else gettext("Latest"),
            "series": [
                {"key": key, "label": label, "values": [values.get(start, empty) for start in self.starts()]}
                for key, label, values in series
            ],
        }


def console_charts(*, now: datetime) -> dict[str, Any]:
    """Every chart of the console, each from one query over the last 24 hours."""
    wait, generation = _timing_charts(now)
    return {
        "jobs_per_minute": _jobs_per_minute(now),
        "queue_wait": wait,
        "generation_time": generation,
        "errors": _errors(now),
        "credits": _credits(now),
    }


def _jobs_per_minute(now: datetime) -> dict[str, Any]:
    grid = Grid.ending(now, step=MINUTE)
    counts: defaultdict[str, Values] = defaultdict(dict)
    for start, status, count in grid.rows(_JOBS_BY_STATUS_SQL):
        counts[status][start] = count
    series = [(status.value, str(status.label), counts[status.value]) for status in Job.Status]
    return grid.chart(series, unit=gettext("jobs"), total=True)


def _timing_charts(now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The queue wait and the generation time charts, both from one query."""
    grid = Grid.ending(now, step=HOUR)
    # (measure, kind, quantile) -> seconds by bucket; the measures in the query's order: wait, then generation time
    measured: defaultdict[tuple[int, str, float], Values] = defaultdict(dict)
    for start, kind, *measures in grid.rows(_TIMINGS_SQL, quantiles=list(QUANTILES), completed=Job.Status.COMPLETED):
        for measure, quantiles in enumerate(measures):
            for quantile, seconds in zip(QUANTILES, quantiles or (), strict=False):
                measured[measure, kind, quantile][start] = round(seconds, 2)
    labels = {0.5: gettext("%(kind)s, median"), 0.95: gettext("%(kind)s, 95th percentile")}

    def chart(measure: int) -> dict[str, Any]:
        series = []
        for kind in Job.Kind:
            for quantile in QUANTILES:
                label = labels[quantile] % {"kind": kind.label}
                series.append((f"{kind.value}_p{quantile * 100:g}", label, measured[measure, kind, quantile]))
        return grid.chart(series, unit=gettext("seconds"), total=False)

    return chart(0), chart(1)


def _errors(now: datetime) -> dict[str, Any]:
    grid = Grid.ending(now, step=HOUR)
    failed: defaultdict[str, Values] = defaultdict(dict)
    retries: Values = {}
    for start, code, count, retried in grid.rows(_ERRORS_SQL, failed=Job.Status.FAILED):
        if code is not None:
            failed[code or "unknown"][start] = count
        retries[start] = retries.get(start, 0) + retried
    # The most frequent first, ties by name: the same codes keep the same places (and colours) from one refresh on.
    drawn = sorted(failed, key=lambda code: (-sum(failed[code].values()), code))[:ERROR_CODES_DRAWN]
    others: Values = {}
    for code in set(failed) - set(drawn):
        for start, count in failed[code].items():
            others[start] = others.get(start, 0) + count
    series = [(f"failed:{code}", code, failed[code]) for code in drawn]
    if others:
        series.append(("failed:other", gettext("Other codes"), others))
    series.append(("retries", gettext("Retries"), retries))
    return grid.chart(series, unit=gettext("count"), total=True)


def _credits(now: datetime) -> dict[str, Any]:
    grid = Grid.ending(now, step=HOUR)
    charged: Values = {}
    refunded: Values = {}
    for start, charge, refund in grid.rows(
        _CREDITS_SQL, charge=CreditLedgerEntry.Kind.CHARGE, refund=CreditLedgerEntry.Kind.REFUND
    ):
        charged[start], refunded[start] = charge, refund
    series = [("charged", gettext("Charged"), charged), ("refunded", gettext("Refunded"), refunded)]
    return grid.chart(series, unit=gettext("credits"), total=True)
