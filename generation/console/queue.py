"""The queue now, as the operator console's tables show it: a few bounded queries, never one per row.

Each table lists at most ``ROWS`` jobs and says how many there are in all. Times are seconds relative to ``now``
(negative: in the past), so that the page needs no clock of its own; labels come translated.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db.models import Case, DateTimeField, F, QuerySet, When
from django.db.models.functions import Least
from django.urls import reverse
from django.utils.translation import gettext, ngettext

from generation.estimates import video_line_estimates
from generation.models import Job
from generation.selectors import video_jobs_at_provider
from generation.videos.slots import video_slots

ROWS = 50
# A lease or a start deadline this close is shown beside the ones already past.
SOON = timedelta(seconds=60)

Row = dict[str, Any]


def console_queue(*, now: datetime) -> dict[str, Any]:
    """The four "now" tables: videos at the provider, the video line, image retries, and jobs near a limit."""
    return {
        "generating": _generating(now),
        "waiting": _waiting(now),
        "retrying": _retrying(now),
        "expiring": _expiring(now),
    }


def _seconds(moment: datetime | None, now: datetime) -> float | None:
    """Seconds from ``now`` to ``moment``: negative when it has passed."""
    return round((moment - now).total_seconds(), 1) if moment else None


def _age(moment: datetime | None, now: datetime) -> float | None:
    """Seconds since ``moment``."""
    return round((now - moment).total_seconds(), 1) if moment else None


def _job_row(job: Job, now: datetime, **fields: Any) -> Row:
    return {
        "id": str(job.id),
        "short_id": str(job.id)[:8],
        "url": reverse("admin:generation_job_change", args=[job.pk]),
        "user": job.user.get_username(),
        "kind": str(job.get_kind_display()),
        "age": _age(job.created_at, now),
        **fields,
    }


def _table(jobs: QuerySet[Job], row: Callable[[Job], Row]) -> dict[str, Any]:
    listed = list(jobs.select_related("user")[:ROWS])
    # Counted only when the table is full: a short table is its own count.
    total = len(listed) if len(listed) < ROWS else jobs.count()
    return _listing([row(job) for job in listed], total)


def _listing(rows: list[Row], total: int) -> dict[str, Any]:
    more = ""
    if total > len(rows):
        more = gettext("The first %(shown)d of %(total)d") % {"shown": len(rows), "total": total}
    return {"total": total, "rows": rows, "more": more}


def _slot_state(job: Job, holders: set[str] | None) -> str:
    # The same words as the job list's "video queue" column.
    if holders is None:
        return gettext("slot unknown (Redis unavailable)")
    if str(job.id) in holders:
        return gettext("slot held")
    return gettext("no live slot: waiting to be resumed")


def _generating(now: datetime) -> dict[str, Any]:
    try:
        holders: set[str] | None = video_slots().holders()
    except redis.RedisError:
        holders = None
    table = _table(
        video_jobs_at_provider(),
        lambda job: _job_row(
            job,
            now,
            stage=str(job.get_stage_display()),
            operation=job.operation_name,
            running=_age(job.started_at, now),
            slot=_slot_state(job, holders),
        ),
    )
    cap = settings.VIDEO_MAX_CONCURRENT
    if holders is None:
        summary = gettext("%(cap)d slots; how many are in use is unknown (Redis unavailable)") % {"cap": cap}
    else:
        summary = gettext("%(in_use)d of %(cap)d slots in use") % {"in_use": len(holders), "cap": cap}
        # A slot may be held by no video at the provider: an ambiguous start keeps one for VIDEO_AMBIGUOUS_START_HOLD.
        # Told apart only when every video at the provider is listed.
        others = len(holders - {row["id"] for row in table["rows"]})
        if others and table["total"] == len(table["rows"]):
            summary += " · " + ngettext(
                "%(count)d held for an ambiguous start", "%(count)d held for ambiguous starts", others
            ) % {"count": others}
    return {**table, "in_use": None if holders is None else len(holders), "cap": cap, "summary": summary}


def _waiting(now: datetime) -> dict[str, Any]:
    # The estimates play the whole line forward in its order (created_at, id), which is also how positions are
    # counted (job_position: 1 + the waiting videos created before), so one read gives both for every video.
    line = video_line_estimates()
    positions = {job_id: place for place, job_id in enumerate(line, start=1)}
    shown = Job.objects.filter(id__in=[str(job_id) for job_id in list(line)[:ROWS]]).select_related("user")
    rows = [
        _job_row(
            job,
            now,
            position=positions[job.id],
            retries=job.retries,
            starts=_seconds(line[job.id].start_at, now),
            finishes=_seconds(line[job.id].finish_at, now),
        )
        for job in sorted(shown, key=lambda job: positions[job.id])
    ]
    return _listing(rows, len(line))


def _retrying(now: datetime) -> dict[str, Any]:
    # An image job waiting for a retry is queued with retries counted; next_run_at says when it is due (none after
    # an operator's "retry now", or in the past while it waits for a worker: due at once).
    waiting = Job.objects.filter(kind=Job.Kind.IMAGE, status=Job.Status.QUEUED, retries__gt=0)
    return _table(
        waiting.order_by(F("next_run_at").asc(nulls_first=True), "created_at"),
        lambda job: _job_row(
            job,
            now,
            retries=job.retries,
            error_code=job.error_code,
            error=job.error_message,
            due=max(0.0, _seconds(job.next_run_at, now) or 0),
        ),
    )


def _expiring(now: datetime) -> dict[str, Any]:
    # A start deadline matters until the job starts; a lease while a worker holds the job. LEAST skips NULLs.
    deadline = Case(
        When(status=Job.Status.QUEUED, started_at__isnull=True, then=F("start_deadline_at")),
        output_field=DateTimeField(),
    )
    near = (
        Job.objects.filter(status__in=(Job.Status.QUEUED, Job.Status.PROCESSING))
        .annotate(limit_at=Least("lease_expires_at", deadline))
        .filter(limit_at__lte=now + SOON)
        .order_by("limit_at", "created_at")
    )
    return _table(near, lambda job: _expiring_row(job, now))


def _expiring_row(job: Job, now: datetime) -> Row:
    limit_at: datetime = job.limit_at  # type: ignore[attr-defined]
    is_lease = job.lease_expires_at == limit_at
    return _job_row(
        job,
        now,
        status=str(job.get_status_display()),
        stage=str(job.get_stage_display()) if job.stage else "",
        limit=gettext("lease expires") if is_lease else gettext("start deadline"),
        at=_seconds(limit_at, now),
    )
