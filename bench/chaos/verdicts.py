"""The run's figures and its verdicts, times in seconds from the first submission."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.chaos.checks import Analysis
from bench.chaos.client import Api
from bench.chaos.disruptions import Chaos
from bench.chaos.outages import Disruption
from bench.chaos.watch import AIMED_STAGES
from bench.latency import latency_summary
from testing.fakes.veo import FakeVeoServer

# A dispatch round or reconciler pass holds its lock for milliseconds, or a second on a loaded machine; a hold
# this long most likely means its holder died.
LONG_HOLD_SECONDS = 1.5


def _outage_of(moment: float, disruptions: list[Disruption]) -> str:
    """The last outage that began before a moment and ended at most a second before it, else an empty string."""
    outages = [d.kind for d in disruptions if d.kind in ("redis", "postgres") and d.start <= moment <= d.end + 1]
    return outages[-1] if outages else ""


def _job_figures(group: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "statuses": dict(Counter(job["status"] for job in group)),
        "stages": dict(Counter(job["stage"] for job in group if job["stage"])),
        "error_codes": dict(Counter(job["error_code"] for job in group if job["error_code"])),
        "retries": dict(Counter(job["retries"] for job in group)),
        "provider_calls": sum(job["provider_calls"] for job in group),
        "generated": sum(job["generated"] for job in group),
        "stored": sum(job["stored"] for job in group),
        "extra": sum(job["extra"] for job in group),
        "max_extra_per_job": max((job["extra"] for job in group), default=0),
        "jobs_with_extra": sum(job["extra"] > 0 for job in group),
        "max_allowed_extra_per_job": max((job["allowed_extra"] for job in group), default=0),
        "canceled_by_client": sum(job["cancel_status"] == 200 for job in group),
        "ran_though_refunded_in_full": sum(job["ran_though_refunded_in_full"] for job in group),
    }


def _kills(disruptions: list[Disruption]) -> dict[str, Any]:
    """The kills aimed at each stage, and every kill made while some video was in it."""
    kills = [d for d in disruptions if d.kind == "kill"]
    return {
        "aimed": {stage: sum(d.stage == stage for d in kills) for stage in AIMED_STAGES},
        "aimed_at_a_caller": {stage: sum(d.stage == stage and d.caller for d in kills) for stage in AIMED_STAGES},
        "while_in_stage": {stage: sum(stage in d.stages for d in kills) for stage in AIMED_STAGES},
        "random": sum(not d.stage for d in kills),
    }


def summarise(
    api: Api,
    chaos: Chaos,
    analysis: Analysis,
    audit: dict[str, Any],
    moments: dict[str, float | None],
    veo: FakeVeoServer,
    end: dict[str, Any],
) -> dict[str, Any]:
    """The run's figures and verdicts; ``end`` holds the slots left and the ambiguous starts counted by code."""
    from django.conf import settings

    started = chaos.started

    def since(moment: float | None) -> float | None:
        return round(moment - started, 2) if moment is not None else None

    jobs = analysis.jobs
    videos = [job for job in jobs if job["kind"] == "video"]
    server_errors = [
        {**error, "at": since(error["at"]), "outage": _outage_of(error["at"], chaos.disruptions)}
        for error in api.server_errors
    ]
    kills = _kills(chaos.disruptions)
    summary: dict[str, Any] = {
        "disruptions": [
            {
                "kind": d.kind,
                "at": since(d.start),
                "down_s": round(d.end - d.start, 2),
                "worker": d.worker,
                "stage": d.stage,
                "stages": list(d.stages),
                "caller": d.caller,
            }
            for d in chaos.disruptions
        ],
        "kills": kills,
        "stage_samples": dict(chaos.stages.seen),
        "chaos_error": chaos.error,
        "long_lock_holds": [
            {**hold, "from": since(hold["from"]), "to": since(hold["to"])}
            for hold in chaos.locks.long_holds(LONG_HOLD_SECONDS, chaos.disruptions)
        ],
        "slowest_jobs": sorted(jobs, key=lambda job: -job["seconds_to_finish"])[:5],
        "moments": {name: since(moment) for name, moment in moments.items()},
        "api": {
            "requests": sum(api.statuses.values()),
            "statuses": {str(status): count for status, count in sorted(api.statuses.items())},
            "server_errors": server_errors,
            "server_errors_outside_outages": sum(not error["outage"] for error in server_errors),
            "connection_errors": dict(api.connection_errors),
            "unexpected": api.unexpected,
            "create_latency_ms": latency_summary(api.create_latencies),
        },
        "jobs": {kind: _job_figures([job for job in jobs if job["kind"] == kind]) for kind in ("image", "video")},
        "ambiguous_starts": {
            "total": sum(job["ambiguous_starts"] for job in videos),
            "by_code": end["ambiguous_by_code"],
            "videos_started_twice": sum(job["extra"] > 0 for job in videos),
            "second_starts": sum(job["extra"] for job in videos),
        },
        "veo": {
            "start_attempts": veo.start_attempts,
            "starts": len(veo.starts),
            "downloads": len(veo.downloads),
            "cancels": len(veo.cancels),
            "max_concurrency": veo.max_concurrency,
            "concurrency_limit": settings.VIDEO_MAX_CONCURRENT,
        },
        "slots_at_end": end["slots"],
        "audit_credits": audit,
        "problems": dict(analysis.problems),
    }
    summary["verdicts"] = {
        "every_job_accepted_once": not analysis.problems.get("submitted") and not api.unexpected,
        "every_job_finished": not analysis.problems.get("terminal") and moments["all_finished"] is not None,
        "every_video_done": not analysis.problems.get("stage"),
        "no_5xx": not server_errors,
        "within_at_least_once_window": not analysis.problems.get("window"),
        "no_second_start_except_after_an_ambiguous_start": not analysis.problems.get("second_start"),
        "video_concurrency_within_cap": veo.max_concurrency <= settings.VIDEO_MAX_CONCURRENT,
        "no_slot_left_but_ambiguous_holds": not end["slots"]["held_otherwise"],
        "results_match_their_files": not analysis.problems.get("results"),
        "ledger_exact": not analysis.problems.get("ledger"),
        "audit_credits_clean": audit["exit_code"] == 0,
        "chaos_ran": not chaos.error and {"kill", "redis", "postgres"} <= {d.kind for d in chaos.disruptions},
        "a_kill_in_every_stage": all(kills["aimed"][stage] > 0 for stage in AIMED_STAGES),
    }
    summary["jobs_detail"] = jobs
    return summary
