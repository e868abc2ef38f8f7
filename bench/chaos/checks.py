"""Per-job and per-user checks: status and stage, generations at the provider against the window, results, money."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.client import Submitted
from bench.chaos.fakes import WORKER_HEADER
from bench.chaos.outages import Disruption
from bench.chaos.own_services import BASE_DIR
from bench.chaos.plan import FAILURES, PROJECT_ID, TAG, JobSpec
from bench.chaos.workers import WorkerPool
from bench.stack import CREDITS_PER_USER, BenchEnvironment
from testing.fakes.provider import FakeProviderServer
from testing.fakes.veo import FakeVeoServer


@dataclass
class Analysis:
    """The per-job verdicts and the counts behind the summary."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def _generations(behaviours: tuple[str, ...], calls: int) -> int:
    """How many of ``calls`` scripted answers delivered an image: the n-th call gets the n-th behaviour, the last
    repeating."""
    return sum(behaviours[min(call, len(behaviours) - 1)] not in FAILURES for call in range(calls))


def _expected_refund(job: dict[str, Any], cancel_stage: str) -> int:
    """The refund the policy gives: what was not delivered, except half a video canceled once its start call went out
    (the cancel left it stopping, or it had an operation: it was downloading)."""
    undelivered = (job["quantity"] - job["result_count"]) * (job["credit_cost"] // job["quantity"])
    if job["status"] == "canceled" and job["kind"] == "video" and (cancel_stage == "stopping" or job["operation_name"]):
        return job["credit_cost"] // 2
    return undelivered if job["status"] in ("failed", "canceled") else 0


def _job_rows() -> dict[str, dict[str, Any]]:
    """Every chaos job as stored, with its generations counted and its ledger entries listed."""
    from django.db.models import Count

    from credits.models import CreditLedgerEntry
    from generation.models import Job

    fields = ("id", "user_id", "kind", "status", "stage", "quantity", "result_count", "credit_cost", "retries")
    rows = {
        str(row["id"]): {**row, "charges": [], "refunds": []}
        for row in Job.objects.filter(project_id=PROJECT_ID)
        .annotate(generations_stored=Count("generations"))
        .values(*fields, "error_code", "operation_name", "created_at", "finished_at", "generations_stored")
    }
    for entry in CreditLedgerEntry.objects.filter(job__project_id=PROJECT_ID).values("job_id", "kind", "amount"):
        rows[str(entry["job_id"])][f"{entry['kind']}s"].append(entry["amount"])
    return rows


def _check_job(
    spec: JobSpec,
    job: dict[str, Any],
    entry: Submitted,
    calls: list[tuple[str, float]],
    ambiguous: int,
    dead: set[str],
    disruptions: list[Disruption],
    prices: dict[str, int],
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """One job's figures and what is wrong with it: status, provider generations against its window, money."""
    problems: dict[str, list[str]] = defaultdict(list)
    name = f"{spec.kind} {spec.tag} ({spec.scenario}, job {job['id']})"
    if job["status"] not in ("completed", "failed", "canceled"):
        problems["terminal"].append(f"{name} is still {job['status']}")
    if spec.kind == "video" and job["stage"] != "done":
        problems["stage"].append(f"{name} ended {job['status']} in the stage {job['stage']}")
    finished = job["finished_at"].timestamp() if job["finished_at"] else time.time()
    first_call = min((moment for _, moment in calls), default=finished)
    # Images are stored through PostgreSQL only; a video start is recorded in PostgreSQL but its slot and the
    # dispatcher's lock live in Redis, so for videos both outages open the window.
    outage_kinds = ("postgres",) if spec.kind == "image" else ("postgres", "redis")
    outages = sum(d.kind in outage_kinds and d.overlaps(first_call, finished) for d in disruptions)
    dead_callers = {worker for worker, _ in calls} & dead
    if spec.kind == "image":
        generated = _generations(spec.behaviours, len(calls))
        # Every stored image was generated once; a cancel may land while one more is being drawn.
        needed = job["generations_stored"]
        allowance = len(dead_callers) + outages + int(job["status"] == "canceled" and bool(calls))
    else:
        generated = len(calls)
        needed = min(generated, 1)
        allowance = len(dead_callers) + outages
        if generated - needed > ambiguous:
            problems["second_start"].append(
                f"{name}: {generated} starts at the provider after {ambiguous} ambiguous starts"
            )
    if generated > needed + allowance:
        problems["window"].append(
            f"{name}: {generated} generations at the provider for {needed} needed; the window allows {allowance} "
            f"more ({len(dead_callers)} workers that called died, {outages} outages)"
        )
    if spec.kind == "image" and generated < needed:
        problems["window"].append(f"{name}: {needed} images stored but only {generated} generated")
    if job["result_count"] != job["generations_stored"] or (
        job["status"] == "completed" and job["result_count"] != job["quantity"]
    ):
        problems["results"].append(f"{name}: {job['result_count']} results counted, {job['generations_stored']} stored")
    cost = spec.quantity * prices[spec.kind]
    refund = _expected_refund(job, entry.cancel_stage)
    if job["credit_cost"] != cost or job["charges"] != [-cost]:
        problems["ledger"].append(f"{name}: costs {job['credit_cost']} (expected {cost}), charged {job['charges']}")
    if sum(job["refunds"]) != refund or len(job["refunds"]) > 1:
        problems["ledger"].append(f"{name}: refunded {job['refunds']}, expected {refund} ({job['status']})")
    figures = {
        "kind": spec.kind,
        "tag": spec.tag,
        "id": job["id"],
        "scenario": spec.scenario,
        "frame_route": spec.frame_route,
        "quantity": spec.quantity,
        "status": job["status"],
        "stage": job["stage"],
        "error_code": job["error_code"],
        "retries": job["retries"],
        "provider_calls": len(calls),
        "generated": generated,
        "stored": job["generations_stored"],
        "extra": max(0, generated - needed),
        "allowed_extra": allowance,
        "ambiguous_starts": ambiguous,
        "dead_workers_called": sorted(dead_callers),
        "cancel_status": entry.cancel_status,
        "cancel_stage": entry.cancel_stage,
        # The policy refunds in full a video canceled while back in line after an ambiguous start, which may have
        # run at the provider all the same.
        "ran_though_refunded_in_full": spec.kind == "video"
        and job["status"] == "canceled"
        and generated > 0
        and sum(job["refunds"]) == job["credit_cost"],
        "outages": outages,
        "refund": sum(job["refunds"]),
        "expected_refund": refund,
        "seconds_to_finish": round(finished - job["created_at"].timestamp(), 2),
    }
    return figures, problems


def _calls(images: FakeProviderServer, veo: FakeVeoServer) -> dict[str, list[tuple[str, float]]]:
    """Each job's generations at the fakes by tag: which worker asked, and when."""
    calls: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for request in images.received():
        if (match := TAG.search(request.prompt)) and request.body:
            calls[match[0]].append((request.headers.get(WORKER_HEADER, ""), request.received_at))
    for start in veo.starts:
        if match := TAG.search(start.prompt):
            calls[match[0]].append((start.headers.get(WORKER_HEADER, ""), start.started_at))
    return calls


def analyse(
    specs: list[JobSpec],
    submitted: dict[str, dict[int, Submitted]],
    images: FakeProviderServer,
    veo: FakeVeoServer,
    pool: WorkerPool,
    disruptions: list[Disruption],
    ambiguous: Counter[str],
) -> Analysis:
    """Check every job, and every user's balance against the ledger and against what the jobs should have left."""
    from credits.models import CreditAccount
    from credits.selectors import credit_ledger_total
    from generation.prices import (
        image_cost,
        image_model_default,
        video_cost,
        video_model_default,
        video_resolution_default,
    )

    calls = _calls(images, veo)
    rows = _job_rows()
    # Every video here is 4 s long, at the default model and resolution.
    video_model = video_model_default()
    prices = {
        "image": image_cost(model=image_model_default(), quantity=1),
        "video": video_cost(model=video_model, resolution=video_resolution_default(video_model), duration=4),
    }
    analysis = Analysis()
    left: Counter[int] = Counter()
    for spec in specs:
        entry = submitted[spec.kind].get(spec.index)
        if entry is None:
            analysis.problems["submitted"].append(f"{spec.kind} {spec.tag} was never accepted")
            continue
        job = rows.pop(entry.job_id, None)
        if job is None:
            analysis.problems["submitted"].append(f"{spec.kind} {spec.tag}: job {entry.job_id} is not in the database")
            continue
        figures, problems = _check_job(
            spec, job, entry, calls[spec.tag], ambiguous[entry.job_id], pool.dead(), disruptions, prices
        )
        analysis.jobs.append(figures)
        for check, lines in problems.items():
            analysis.problems[check] += lines
        left[job["user_id"]] += sum(job["refunds"]) - job["credit_cost"]
    analysis.problems["submitted"] += [f"job {job_id} was created but never answered" for job_id in rows]
    for user_id, balance in CreditAccount.objects.values_list("user_id", "balance"):
        ledger = credit_ledger_total(user_id=user_id)
        expected = CREDITS_PER_USER + left[user_id]
        if not balance == ledger == expected:
            analysis.problems["ledger"].append(
                f"user {user_id}: balance {balance}, ledger {ledger}, expected {expected}"
            )
    return analysis


def audit_credits(bench: BenchEnvironment) -> dict[str, Any]:
    """Run ``manage.py audit_credits`` as an operator would."""
    command = [sys.executable, "manage.py", "audit_credits"]
    completed = subprocess.run(command, cwd=BASE_DIR, env=bench.env, capture_output=True, text=True, check=False)
    return {"exit_code": completed.returncode, "output": (completed.stdout + completed.stderr).strip()[-3000:]}
