"""The interface every image provider implements, and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class ProviderError(Exception):
    """The provider could not deliver; ``code`` is a stable machine-readable reason."""

    def __init__(self, message: str, *, code: str = "provider_error") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TransientProviderError(ProviderError):
    """A failure worth retrying later: timeout, connection error, rate limit, server error."""

    def __init__(self, message: str, *, code: str = "provider_error", retry_after: float | None = None) -> None:
        super().__init__(message, code=code)
        # Seconds the provider asked us to wait before trying again, when it said.
        self.retry_after = retry_after


class PermanentProviderError(ProviderError):
    """A failure that retrying cannot fix: invalid request, refused content, bad credentials, no funds."""


@dataclass(frozen=True)
class ImageRequest:
    """What to draw: the prompt, the aspect ratio such as ``16:9``, optional reference image URLs and the model
    (blank: the provider's configured one)."""

    prompt: str
    aspect_ratio: str
    reference_urls: tuple[str, ...] = field(default_factory=tuple)
    model: str = ""


_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "video/mp4": "mp4",
    "video/webm": "webm",
}


@dataclass(frozen=True)
class GeneratedFile:
    """A file a provider made: its bytes and MIME type."""

    content: bytes
    mime_type: str

    @property
    def extension(self) -> str:
        return _EXTENSIONS.get(self.mime_type, "bin")


class GeneratedImage(GeneratedFile):
    """One image as the provider returned it."""


class ImageProvider(Protocol):
    """Makes one image per call, so that each can be stored as soon as it arrives."""

    def generate_image(self, request: ImageRequest) -> GeneratedImage: ...
