"""The run as plain text: the disruptions, the jobs, the video pipeline's figures and the verdicts."""

from __future__ import annotations

from typing import Any

from bench.chaos.workers import WORKERS


def _disruption_lines(summary: dict[str, Any]) -> list[str]:
    disruptions = summary["disruptions"]
    kills = [d["at"] for d in disruptions if d["kind"] == "kill"]
    outages = "; ".join(
        f"{d['kind']} down at t={d['at']} s for {d['down_s']} s"
        for d in disruptions
        if d["kind"] in ("redis", "postgres")
    )
    figures = summary["kills"]
    aimed = " ".join(
        f"{stage} {count} (t={', '.join(str(d['at']) for d in disruptions if d['stage'] == stage)})"
        for stage, count in figures["aimed"].items()
    )
    return [
        f"Disruptions: {len(kills)} SIGKILLs between t={min(kills, default=0)} and {max(kills, default=0)} s; "
        f"{sum(d['kind'] == 'exit' for d in disruptions)} workers dead by themselves; {outages}",
        f"Kills aimed at a stage: {aimed}; {figures['random']} random",
        f"Kills while some video was in the stage (aimed or not): {figures['while_in_stage']}",
    ]


def render(results: dict[str, Any]) -> str:
    """The run as plain text."""
    machine, args, summary, api = results["machine"], results["settings"], results["summary"], results["summary"]["api"]
    error_codes = {kind: figures["error_codes"] for kind, figures in summary["jobs"].items()}
    lines = [
        f"Machine: {machine['cpu_model']}, {machine['cpus']} CPUs; load average at start "
        f"{' '.join(map(str, machine['load_average_at_start']))}",
        f"{args['images']} image and {args['videos']} video jobs from {args['users']} users over "
        f"{args['submit_seconds']:g} s; {WORKERS} workers x {args['threads']} threads; seed {args['seed']}",
        *_disruption_lines(summary),
        f"Moments (s): {summary['moments']}",
        f"API: {api['requests']} answers {api['statuses']}; 5xx {len(api['server_errors'])} "
        f"({api['server_errors_outside_outages']} outside an outage); connection errors {api['connection_errors']}; "
        f"202 latency ms p50 {api['create_latency_ms']['p50']} p99 {api['create_latency_ms']['p99']}",
        "",
        f"  {'kind':<6} {'statuses':<46} {'calls':>6} {'gen':>5} {'stored':>6} {'extra':>5} {'max':>4} {'allowed':>7}",
    ]
    for kind, figures in summary["jobs"].items():
        statuses = " ".join(f"{name} {count}" for name, count in sorted(figures["statuses"].items()))
        lines.append(
            f"  {kind:<6} {statuses:<46} {figures['provider_calls']:>6} {figures['generated']:>5} "
            f"{figures['stored']:>6} {figures['extra']:>5} {figures['max_extra_per_job']:>4} "
            f"{figures['max_allowed_extra_per_job']:>7}"
        )
    lines += [
        "  (calls: requests at the fake image server, successful starts at the fake Veo; extra: generations beyond"
        " the stored results; max: the most extra of one job; allowed: the largest window one job had)",
        f"  error codes: {error_codes}",
        f"  video stages at the end: {summary['jobs']['video']['stages']}",
        f"  ambiguous starts: {summary['ambiguous_starts']}",
        f"  Veo: {summary['veo']}",
        f"  slots left at the end: {summary['slots_at_end']['live']}",
        f"  slowest jobs (s): {[(job['tag'], job['seconds_to_finish']) for job in summary['slowest_jobs']]}",
        *(
            f"  {hold['lock']} lock held {hold['seconds']} s (t={hold['from']}..{hold['to']}), "
            f"its holder {hold['holder'] or 'still alive'}"
            for hold in summary["long_lock_holds"]
        ),
        f"  audit_credits: exit {summary['audit_credits']['exit_code']}: {summary['audit_credits']['output'][-200:]}",
        "",
        "Verdicts: " + ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in summary["verdicts"].items()),
    ]
    for check, problems in summary["problems"].items():
        lines += [f"  {check}: {problem}" for problem in problems[:20]]
    lines += [
        f"  5xx at t={error['at']} s ({error['outage'] or 'no outage'}): {error['method']} {error['path']} -> "
        f"{error['status']}"
        for error in api["server_errors"][:10]
    ]
    return "\n".join(lines)
