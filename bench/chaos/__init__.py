"""Chaos run: image and video jobs through the API while workers are SIGKILLed and Redis and PostgreSQL restart.

Run from the repository root: ``python -m bench.chaos [options]``. It starts a PostgreSQL and a Redis of its own
under a temporary folder (never the shared ones under var/), the real uvicorn server, two real ``rundramatiq``
worker processes and the fake providers of testing/ in this process. It submits the jobs over HTTP with
idempotency keys and client retries, cancels some, and meanwhile SIGKILLs a random worker's process group every
few seconds (a replacement starts at once), SIGKILLs a worker whenever a video is seen in a stage not hit yet
(preparing, starting, generating, stopping, downloading), restarts Redis empty once and PostgreSQL once. When
every job has finished it checks that each one completed, failed or was canceled and every video reached the stage
``done``; that no image or video was generated at the provider more often than the at-least-once window of
docs/chaos.md allows; that the fake Veo never ran more generations at once than ``VIDEO_MAX_CONCURRENT``; that no
video slot is left but ambiguous holds that run out; that the ledger is exact; and that ``manage.py
audit_credits`` is clean. The figures go to bench/results/chaos-*.json, the servers' logs beside it.

Modules: ``plan`` (the jobs), ``own_services`` (the run's own PostgreSQL and Redis), ``workers``, ``fakes``,
``outages``, ``watch`` (what the chaos thread samples), ``disruptions`` (the chaos thread), ``client`` (the API
client and the submissions), ``checks`` (per job and per user), ``end_state`` (stages, slots, logs), ``verdicts``,
``render`` and ``runner``.
"""

from __future__ import annotations

from bench.chaos.own_services import code_measured, on_own_services, run_on_own_services

__all__ = ["code_measured", "on_own_services", "run_on_own_services"]
