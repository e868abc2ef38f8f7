"""Every write to jobs and generations goes through these functions."""

from __future__ import annotations

from generation.services.images import image_job_create
from generation.services.jobs import (
    generation_record,
    job_cancel,
    job_claim,
    job_complete,
    job_dispatch,
    job_fail,
    job_missing_indexes,
    job_recover,
    job_retry_now,
    job_retry_schedule,
    video_positions_changed,
)
from generation.services.videos import (
    video_job_claim,
    video_job_create,
    video_job_delivering,
    video_job_requeue,
    video_job_started,
    video_start_failed,
)

__all__ = [
    "generation_record",
    "image_job_create",
    "job_cancel",
    "job_claim",
    "job_complete",
    "job_dispatch",
    "job_fail",
    "job_missing_indexes",
    "job_recover",
    "job_retry_now",
    "job_retry_schedule",
    "video_job_claim",
    "video_job_create",
    "video_job_delivering",
    "video_job_requeue",
    "video_job_started",
    "video_positions_changed",
    "video_start_failed",
]
