"""What the console page shows, in order: each table's columns and each chart's heading.

A column names a key of the rows ``queue`` builds and how the page's script formats it: ``link`` (the job's short
id, to its admin page), ``code``, ``number``, ``duration`` (seconds since) or ``relative`` (seconds from now).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _


@dataclass(frozen=True)
class Column:
    key: str
    label: Promise
    format: str = ""
    # The key of a longer text shown when the pointer rests on the cell.
    title: str = ""


@dataclass(frozen=True)
class Table:
    key: str
    heading: Promise
    empty: Promise
    columns: tuple[Column, ...]
    # What the heading shows beside its text: the table's count, or a sentence of its own.
    badge: str = "total"


@dataclass(frozen=True)
class Chart:
    key: str
    heading: Promise
    wide: bool = False


JOB = Column("short_id", _("Job"), "link")
USER = Column("user", _("User"))
RETRIES = Column("retries", _("Retries"), "number")
STAGE = Column("stage", _("Stage"))

TABLES = (
    Table(
        "generating",
        _("Videos generating"),
        _("No video is at the provider."),
        (
            JOB,
            USER,
            STAGE,
            Column("operation", _("Operation"), "code"),
            Column("running", _("Running for"), "duration"),
            Column("slot", _("Slot")),
        ),
        badge="summary",
    ),
    Table(
        "waiting",
        _("Videos waiting"),
        _("No video is waiting for a slot."),
        (
            Column("position", _("Position"), "number"),
            JOB,
            USER,
            Column("age", _("Waiting for"), "duration"),
            RETRIES,
            Column("starts", _("Estimated start"), "relative"),
            Column("finishes", _("Estimated finish"), "relative"),
        ),
    ),
    Table(
        "retrying",
        _("Images waiting for a retry"),
        _("No image job is waiting for a retry."),
        (
            JOB,
            USER,
            RETRIES,
            Column("error_code", _("Last error"), "code", title="error"),
            Column("due", _("Next try"), "relative"),
        ),
    ),
    Table(
        "expiring",
        _("Near a lease or start deadline"),
        _("No lease or start deadline ends within a minute."),
        (
            JOB,
            Column("kind", _("Kind")),
            Column("status", _("Status")),
            STAGE,
            Column("limit", _("Limit")),
            Column("at", _("Ends"), "relative"),
        ),
    ),
)

CHARTS = (
    Chart("jobs_per_minute", _("Jobs created per minute, by status"), wide=True),
    Chart("queue_wait", _("Queue wait per hour, from creation to start")),
    Chart("generation_time", _("Generation time per hour, from start to completion")),
    Chart("errors", _("Errors per hour: failed jobs by error code, and retries")),
    Chart("credits", _("Credits per hour: charged and refunded")),
)
