"""The jobs' events: what a job's owner (and the webhooks) are told when a job changes, once the change commits.

The payload is the job as the API shows it (``job_snapshot``); ``core.events`` carries it to the owner's streams,
and ``job_published`` to the webhooks.
"""

from __future__ import annotations

from uuid import UUID

from django.db import transaction

from core.events.publish import Event, event_append, events_append
from generation.estimates import video_line_estimates
from generation.models import Job
from generation.serializers import job_snapshot
from generation.signals import job_published


def job_changed(*, job_id: UUID | str, job: Job | None = None) -> None:
    """Tell the job's owner about its new state once the change commits: from ``job`` when the caller holds the
    job exactly as it commits, read back otherwise."""

    def publish() -> None:
        current = job if job is not None else Job.objects.filter(id=job_id).first()
        if current is not None:
            snapshot = job_snapshot(current)
            event_append(user_id=current.user_id, event="job", data=snapshot)
            job_published.send(sender=Job, job=current, snapshot=snapshot)

    transaction.on_commit(publish, robust=True)


def video_positions_changed() -> None:
    """Tell every waiting video's owner its new place in the line once the change commits."""

    def publish() -> None:
        queued = list(Job.objects.filter(stage=Job.Stage.WAITING).order_by("created_at", "id"))
        positions: dict[object, int] = {job.id: place for place, job in enumerate(queued, start=1)}
        line = video_line_estimates()
        events_append(Event(job.user_id, "job", job_snapshot(job, positions=positions, line=line)) for job in queued)

    transaction.on_commit(publish, robust=True)
