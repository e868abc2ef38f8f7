"""Fetching the still frames a user gives as URLs for the start or end of a video."""

from __future__ import annotations

from generation.providers.safe_fetch import fetch_public
from generation.providers.video import VideoFrame

MAX_FRAME_BYTES = 10 * 1024 * 1024
FRAME_TIMEOUT = 10.0


def fetch_frame(url: str) -> VideoFrame:
    """Download an image from a user-supplied public URL within ``FRAME_TIMEOUT`` s in all, bounded in size and type."""
    content, mime_type = fetch_public(url, max_bytes=MAX_FRAME_BYTES, allowed_types=("image/",), timeout=FRAME_TIMEOUT)
    return VideoFrame(content=content, mime_type=mime_type)
