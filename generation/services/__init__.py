"""Every write to jobs and generations goes through these functions (images' and videos' own: their folders)."""

from __future__ import annotations

from generation.services.endings import job_cancel, job_deadlines_enforce, job_fail
from generation.services.jobs import (
    generation_record,
    job_claim,
    job_complete,
    job_missing_indexes,
    job_recover,
    job_retry_now,
    job_retry_schedule,
)

__all__ = [
    "generation_record",
    "job_cancel",
    "job_claim",
    "job_complete",
    "job_deadlines_enforce",
    "job_fail",
    "job_missing_indexes",
    "job_recover",
    "job_retry_now",
    "job_retry_schedule",
]
