"""The jobs' metrics, read from the database and Redis at each scrape (registered with ``core.metrics``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, cast

import dramatiq
from django.conf import settings
from django.db import connection
from django.db.models import Count, Min, Q, Sum
from django.utils import timezone
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name, xq_name
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from credits.models import CreditLedgerEntry
from generation.images import actors  # noqa: F401  (importing the actors declares their queues on the broker)
from generation.models import Job
from generation.videos.slots import video_slots

logger = logging.getLogger(__name__)

# Timings are computed at scrape time over the jobs completed in the last hour.
TIMING_WINDOW = timedelta(hours=1)
# Only jobs created this recently are read, so that a scrape walks an index range instead of every job
# ever completed; a job that took longer than this to complete is left out of the timings.
TIMING_LOOKBACK = timedelta(days=1)
QUANTILES = (0.5, 0.95)

_TIMING_SQL = f"""
SELECT kind,
       count(*),
       avg(duration),
       percentile_cont(%(quantiles)s::float8[]) WITHIN GROUP (ORDER BY duration),
       avg(wait),
       percentile_cont(%(quantiles)s::float8[]) WITHIN GROUP (ORDER BY wait)
FROM (
    SELECT kind,
           extract(epoch FROM finished_at - started_at)::float8 AS duration,
           extract(epoch FROM started_at - created_at)::float8 AS wait
    FROM {Job._meta.db_table}
    WHERE status = %(status)s
      AND started_at IS NOT NULL
      AND finished_at >= now() - %(window)s
      AND created_at >= now() - %(lookback)s
) AS recent
GROUP BY kind
"""


def _job_metrics() -> Iterator[Metric]:
    jobs = GaugeMetricFamily("genservice_jobs", "Jobs by kind and status.", labels=["kind", "status"])
    retries = CounterMetricFamily(
        "genservice_job_retries", "Retries scheduled, summed over every job (Job.retries).", labels=["kind"]
    )
    # Every kind and status appears, at zero too, so that a series does not vanish when its last job moves on.
    counts = {(kind, status): 0 for kind in Job.Kind.values for status in Job.Status.values}
    retry_totals = dict.fromkeys(Job.Kind.values, 0)
    for row in Job.objects.values("kind", "status").annotate(jobs=Count("id"), retries=Sum("retries")):
        counts[row["kind"], row["status"]] = row["jobs"]
        retry_totals[row["kind"]] += row["retries"]
    for (kind, status), count in counts.items():
        jobs.add_metric([kind, status], count)
    for kind, total in retry_totals.items():
        retries.add_metric([kind], total)
    stages = GaugeMetricFamily(
        "genservice_video_stage", "Videos in each stage of their pipeline, finished ones left out.", labels=["stage"]
    )
    stage_counts = {stage: 0 for stage in Job.Stage.values if stage != Job.Stage.DONE}
    for stage, count in Job.objects.filter(stage__in=stage_counts).values_list("stage").annotate(Count("id")):
        stage_counts[stage] = count
    for stage, total in stage_counts.items():
        stages.add_metric([stage], total)
    yield jobs
    yield retries
    yield stages


def _timing_gauges(name: str, what: str) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    """The quantiles and the mean of one timing, by kind, over the jobs completed in the last hour."""
    over = "over the jobs completed in the last hour."
    quantiles = GaugeMetricFamily(
        f"genservice_job_{name}_seconds", f"Quantiles of the {what}, {over}", labels=["kind", "quantile"]
    )
    mean = GaugeMetricFamily(f"genservice_job_{name}_mean_seconds", f"Mean {what}, {over}", labels=["kind"])
    return quantiles, mean


def _timing_metrics() -> Iterator[Metric]:
    # A histogram would need every worker to record into shared state; the jobs table already holds each
    # duration, so the window's mean and quantiles are computed there and exposed as gauges.
    completed = GaugeMetricFamily(
        "genservice_jobs_completed_last_hour",
        "Jobs completed in the last hour: the sample behind the timings.",
        labels=["kind"],
    )
    timings = (
        _timing_gauges("duration", "time from start to completion"),
        _timing_gauges("wait", "time from request to start"),
    )
    params: dict[str, Any] = {
        "quantiles": list(QUANTILES),
        "status": Job.Status.COMPLETED,
        "window": TIMING_WINDOW,
        "lookback": TIMING_LOOKBACK,
    }
    with connection.cursor() as cursor:
        cursor.execute(_TIMING_SQL, params)
        rows = {row[0]: row[1:] for row in cursor.fetchall()}
    for kind in Job.Kind.values:
        completed.add_metric([kind], rows[kind][0] if kind in rows else 0)
    for kind, (_count, *values) in rows.items():
        # Each timing's mean, then its quantiles, in the order of _TIMING_SQL's columns.
        for (quantiles, mean), (average, seconds_at) in zip(timings, (values[0:2], values[2:4]), strict=True):
            mean.add_metric([kind], average)
            for quantile, seconds in zip(QUANTILES, seconds_at, strict=True):
                quantiles.add_metric([kind, f"{quantile:g}"], seconds)
    yield completed
    for gauges in timings:
        yield from gauges


def _refund_metrics() -> Iterator[Metric]:
    refunds = CounterMetricFamily("genservice_refunds", "Refunds in the credit ledger, by job kind.", labels=["kind"])
    credits = CounterMetricFamily(
        "genservice_refunded_credits", "Credits given back by refunds, by job kind.", labels=["kind"]
    )
    totals = dict.fromkeys(Job.Kind.values, (0, 0))
    rows = (
        CreditLedgerEntry.objects.filter(kind=CreditLedgerEntry.Kind.REFUND)
        .values("job__kind")
        .annotate(refunds=Count("id"), credits=Sum("amount"))
    )
    for row in rows:
        totals[row["job__kind"]] = (row["refunds"], row["credits"])
    for kind, (count, amount) in totals.items():
        refunds.add_metric([kind], count)
        credits.add_metric([kind], amount)
    yield refunds
    yield credits


def _stuck_after() -> timedelta:
    # Twice the longest recovery path: the reconciler re-sends or recovers a job within RECONCILE_AFTER plus one
    # pass; the dispatcher adopts a start call or a poll chain one slot lease after the call's deadline.
    recovery = max(
        settings.RECONCILE_AFTER + settings.RECONCILE_INTERVAL, settings.PROVIDER_TIMEOUT + settings.VIDEO_SLOT_LEASE
    )
    return timedelta(seconds=2 * recovery)


def _stuck_jobs(overdue: datetime) -> Q:
    """Unfinished jobs that their owner or the recovery should have moved on before ``overdue``."""
    unclaimed = Q(lease_expires_at__isnull=True) & (Q(next_run_at__isnull=True) | Q(next_run_at__lt=overdue))
    leased_stages = (Job.Stage.PREPARING, Job.Stage.DOWNLOADING)
    messaged = Q(kind=Job.Kind.IMAGE, status=Job.Status.QUEUED) | Q(stage__in=leased_stages)
    return (Q(status__in=(Job.Status.QUEUED, Job.Status.PROCESSING)) | Q(stage=Job.Stage.STOPPING)) & (
        Q(lease_expires_at__lt=overdue)  # claimed by a worker that went quiet
        | (messaged & unclaimed & Q(updated_at__lt=overdue))  # due, and its message never came
        | Q(stage__in=Job.OPERATION_STAGES, operation_name="", updated_at__lt=overdue)  # a start call nobody ended
        | Q(stage__in=(Job.Stage.GENERATING, Job.Stage.STOPPING), next_poll_at__lt=overdue)  # nobody polls it
    )


def _recovery_metrics() -> Iterator[Metric]:
    now = timezone.now()
    stuck = GaugeMetricFamily(
        "genservice_jobs_stuck",
        "Unfinished jobs that recovery should have set going again by now: overdue by twice the longest recovery "
        "path (a lease run out, a message that never came, a start call or a poll chain nobody ended).",
        labels=["kind"],
    )
    counts = dict.fromkeys(Job.Kind.values, 0)
    for kind, count in Job.objects.filter(_stuck_jobs(now - _stuck_after())).values_list("kind").annotate(Count("id")):
        counts[kind] = count
    for kind, count in counts.items():
        stuck.add_metric([kind], count)
    yield stuck
    # A slot is held from the start call until the provider says the operation ended: the oldest such video
    # shows a slot held past the provider's longest generation. (An ambiguous start's hold has a lease of its own.)
    oldest = Job.objects.filter(stage__in=Job.OPERATION_STAGES).aggregate(started=Min("started_at"))["started"]
    yield GaugeMetricFamily(
        "genservice_video_slot_oldest_seconds",
        "Seconds since the oldest video the provider may be running (starting, generating or stopping) started; "
        "0 when there is none.",
        value=(now - oldest).total_seconds() if oldest else 0,
    )


def database_metrics() -> Iterator[Metric]:
    yield from _job_metrics()
    yield from _timing_metrics()
    yield from _refund_metrics()
    yield from _recovery_metrics()


def _queue_metrics() -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "genservice_queue_depth",
        "Messages waiting in a Dramatiq queue for a worker to fetch them; NAME.DQ holds delayed messages (retries).",
        labels=["queue"],
    )
    unacked = GaugeMetricFamily(
        "genservice_queue_messages",
        "Messages of a Dramatiq queue not acknowledged yet: waiting, running, or fetched and held by a worker "
        "until due (delayed messages leave NAME.DQ at once but stay counted here).",
        labels=["queue"],
    )
    dead = GaugeMetricFamily(
        "genservice_queue_dead_letters", "Messages of a Dramatiq queue that failed for good.", labels=["queue"]
    )
    # The project's broker is always the Redis broker; its key layout is documented in its dispatch.lua.
    broker = cast(RedisBroker, dramatiq.get_broker())
    readings: list[tuple[GaugeMetricFamily, str]] = []
    with broker.client.pipeline(transaction=False) as pipe:
        for queue in sorted(broker.get_declared_queues()):
            for name in (queue, dq_name(queue)):
                pipe.llen(f"{broker.namespace}:{name}")
                readings.append((depth, name))
                pipe.hlen(f"{broker.namespace}:{name}.msgs")
                readings.append((unacked, name))
            pipe.zcard(f"{broker.namespace}:{xq_name(queue)}")
            readings.append((dead, queue))
        for (family, label), value in zip(readings, pipe.execute(), strict=True):
            family.add_metric([label], value)
    yield from (depth, unacked, dead)


def redis_metrics() -> Iterator[Metric]:
    yield from _queue_metrics()
    yield GaugeMetricFamily(
        "genservice_video_slots_in_use",
        "Video generations holding a provider slot (live leases).",
        value=len(video_slots().holders()),
    )
    yield GaugeMetricFamily(
        "genservice_video_slots_limit",
        "Video generations allowed at the provider at once.",
        value=settings.VIDEO_MAX_CONCURRENT,
    )
