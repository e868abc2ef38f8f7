"""The OpenAI Images API (``gpt-image-1``), which has no way to take reference image URLs: they are ignored."""

from __future__ import annotations

from typing import Any

from generation.providers.base import GeneratedImage, ImageRequest, PermanentProviderError
from generation.providers.http import BearerJsonEndpoint, decode_image, malformed_response


class OpenAIImageProvider:
    """Asks ``POST /images/generations`` for one image in the size closest to the requested aspect ratio."""

    def __init__(self, *, base_url: str, api_key: str, model: str, timeout: float) -> None:
        self.endpoint = BearerJsonEndpoint(
            url=f"{base_url.rstrip('/')}/images/generations", api_key=api_key, timeout=timeout
        )
        self.model = model

    def generate_image(self, request: ImageRequest) -> GeneratedImage:
        """Generate one image for ``request``, ignoring its reference URLs."""
        payload = {
            "model": request.model or self.model,
            "prompt": request.prompt,
            "n": 1,
            "size": image_size(request.aspect_ratio),
        }
        body = self.endpoint.post(payload)
        return decode_image(_b64_json(body))


def image_size(aspect_ratio: str) -> str:
    """Return the supported ``size`` with the same orientation as ``aspect_ratio`` such as ``16:9``."""
    try:
        width, height = (float(part) for part in aspect_ratio.split(":"))
    except ValueError as error:
        raise PermanentProviderError(f"Unsupported aspect ratio {aspect_ratio!r}.", code="invalid_request") from error
    if width > height:
        return "1536x1024"
    if width < height:
        return "1024x1536"
    return "1024x1024"


def _b64_json(body: dict[str, Any]) -> str:
    data = body.get("data")
    if not isinstance(data, list):
        raise malformed_response("data is missing")
    encoded = data[0].get("b64_json") if data and isinstance(data[0], dict) else None
    if not encoded:
        raise PermanentProviderError("The provider answered without an image.", code="no_image")
    if not isinstance(encoded, str):
        raise malformed_response("data[0].b64_json is not a string")
    return encoded
