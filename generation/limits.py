"""What a create request may ask for: the API validates against these, and the studio offers them."""

from __future__ import annotations

from generation.models import MAX_IMAGES_PER_JOB
from generation.prices import VIDEO_DURATIONS

__all__ = [
    "ASPECT_RATIOS",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_IMAGES_PER_JOB",
    "MAX_PROMPT_LENGTH",
    "MAX_REFERENCE_IMAGES",
    "MAX_START_WITHIN_SECONDS",
    "VIDEO_ASPECT_RATIOS",
    "VIDEO_DURATIONS",
]

ASPECT_RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4"]
VIDEO_ASPECT_RATIOS = ["16:9", "9:16"]
MAX_PROMPT_LENGTH = 2000
MAX_REFERENCE_IMAGES = 4
MAX_IDEMPOTENCY_KEY_LENGTH = 200
MAX_START_WITHIN_SECONDS = 7 * 24 * 3600
