"""Every write to jobs and generations goes through these functions (videos' own: generation/videos/)."""

from __future__ import annotations

from generation.images.services import image_job_create
from generation.services.jobs import (
    generation_record,
    job_cancel,
    job_claim,
    job_complete,
    job_deadlines_enforce,
    job_fail,
    job_missing_indexes,
    job_recover,
    job_retry_now,
    job_retry_schedule,
)

__all__ = [
    "generation_record",
    "image_job_create",
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
