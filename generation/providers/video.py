"""The interface every video provider implements: start a long-running generation, poll it, download the result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from generation.providers.base import GeneratedFile


@dataclass(frozen=True)
class VideoFrame:
    """A still image that the video must start or end on."""

    content: bytes
    mime_type: str


@dataclass(frozen=True)
class VideoRequest:
    """What to film: prompt, ``16:9`` or ``9:16``, 4, 6 or 8 seconds, optional first and last frames."""

    prompt: str
    aspect_ratio: str
    duration_seconds: int
    negative_prompt: str = ""
    start_frame: VideoFrame | None = None
    end_frame: VideoFrame | None = None
    # Blank: the provider's configured model and its default resolution.
    model: str = ""
    resolution: str = ""


@dataclass(frozen=True)
class VideoOperation:
    """Where a generation stands: not done, done with a video to download, or done with an error."""

    done: bool
    video_uri: str = ""
    error_code: str = ""
    error_message: str = ""


class GeneratedVideo(GeneratedFile):
    """The video file as downloaded."""


class VideoProvider(Protocol):
    """Starts generations that run for seconds to minutes at the provider, then hands over the file."""

    def start(self, request: VideoRequest) -> str:
        """Start a generation and return the provider's operation name."""
        ...

    def poll(self, operation_name: str) -> VideoOperation:
        """Ask the provider where the operation stands."""
        ...

    def cancel(self, operation_name: str) -> None:
        """Ask the provider to stop the generation, where it allows it."""
        ...

    def download(self, video_uri: str) -> GeneratedVideo:
        """Fetch the finished video."""
        ...
