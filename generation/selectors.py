"""Reads of jobs and generations."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from credits.models import CreditLedgerEntry
from generation.errors import JobNotFound
from generation.models import Generation, Job


def job_list(*, user_id: int, filters: dict[str, Any] | None = None) -> QuerySet[Job]:
    """The user's jobs, newest first, optionally narrowed by project_id, status and kind."""
    # The files are read with the jobs: their links are built for each listed job.
    jobs = Job.objects.filter(user_id=user_id).prefetch_related("generations")
    for field in ("project_id", "status", "kind"):
        value = (filters or {}).get(field)
        if value:
            jobs = jobs.filter(**{field: value})
    return jobs.order_by("-created_at")


def job_get(*, user_id: int, job_id: UUID | str) -> Job:
    """The user's job with that id, or JobNotFound: another user's job does not exist for the caller."""
    job = Job.objects.filter(user_id=user_id, id=job_id).first()
    if job is None:
        raise JobNotFound()
    return job


def generation_list(*, user_id: int, project_id: str = "") -> QuerySet[Generation]:
    """The user's generated files, newest first."""
    generations = Generation.objects.filter(user_id=user_id).select_related("job")
    if project_id:
        generations = generations.filter(job__project_id=project_id)
    return generations.order_by("-created_at", "index")


def job_position(*, job: Job) -> int | None:
    """A waiting video's place in the line (1 = next to start), counting the waiting videos created before it; a
    video still preparing its frames is not in the line yet."""
    if job.stage != Job.Stage.WAITING:
        return None
    ahead = Job.objects.filter(stage=Job.Stage.WAITING, created_at__lt=job.created_at).count()
    return ahead + 1


def video_job_next_due() -> Job | None:
    """The video that should start next: the oldest waiting video that is not waiting for a retry."""
    now = timezone.now()
    return (
        Job.objects.filter(stage=Job.Stage.WAITING)
        .filter(Q(next_run_at__isnull=True) | Q(next_run_at__lte=now))
        .filter(Q(start_deadline_at__isnull=True) | Q(start_deadline_at__gt=now))
        .order_by("created_at", "id")
        .first()
    )


def video_jobs_at_provider() -> QuerySet[Job]:
    """The videos whose operation the provider may be running (each holds a slot), oldest first."""
    return Job.objects.filter(stage__in=Job.OPERATION_STAGES).order_by("started_at", "id")


def job_credit_audit() -> list[str]:
    """Every job whose ledger entries disagree with it, one line each: charged other than its cost, refunded more
    than its cost, or refunded while unfinished."""
    problems: list[str] = []
    charges = Q(ledger_entries__kind=CreditLedgerEntry.Kind.CHARGE)
    refunds = Q(ledger_entries__kind=CreditLedgerEntry.Kind.REFUND)
    jobs = (
        Job.objects.annotate(
            charged=Coalesce(Sum("ledger_entries__amount", filter=charges), 0),
            refunded=Coalesce(Sum("ledger_entries__amount", filter=refunds), 0),
        )
        .values("id", "user__username", "status", "credit_cost", "charged", "refunded")
        .order_by("created_at", "id")
    )
    for job in jobs.iterator(chunk_size=2000):
        who = f"{job['user__username']}: job {job['id']}"
        if job["charged"] != -job["credit_cost"]:
            problems.append(f"{who} costs {job['credit_cost']} but was charged {-job['charged']}")
        if job["refunded"] > job["credit_cost"]:
            problems.append(f"{who} was refunded {job['refunded']}, more than its cost of {job['credit_cost']}")
        if job["refunded"] and job["status"] not in Job.FINISHED_STATUSES:
            problems.append(f"{who} was refunded {job['refunded']} while still {job['status']}")
    return problems
