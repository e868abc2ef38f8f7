"""The OpenAI-compatible chat-completions image gateway (Lovable AI Gateway; OpenRouter speaks the same shape)."""

from __future__ import annotations

from typing import Any

from generation.providers.base import GeneratedImage, ImageRequest, PermanentProviderError
from generation.providers.http import BearerJsonEndpoint, decode_image, malformed_response

# The model sometimes explains in words why it drew nothing; a little of that makes the error clear.
_TEXT_LIMIT = 200


class GatewayImageProvider:
    """Asks a chat model with image output for one image, passing reference images as ``image_url`` parts."""

    def __init__(self, *, base_url: str, api_key: str, model: str, timeout: float) -> None:
        self.endpoint = BearerJsonEndpoint(
            url=f"{base_url.rstrip('/')}/chat/completions", api_key=api_key, timeout=timeout
        )
        self.model = model

    def generate_image(self, request: ImageRequest) -> GeneratedImage:
        """Generate one image for ``request``."""
        body = self.endpoint.post(self._payload(request))
        return decode_image(_data_url_payload(_image_url(body)))

    def _payload(self, request: ImageRequest) -> dict[str, Any]:
        # Chat models take no size parameter, so the aspect ratio travels as an instruction in the prompt.
        content: list[dict[str, Any]] = [
            {"type": "text", "text": f"{request.prompt}\n\nAspect ratio: {request.aspect_ratio}."}
        ]
        content += [{"type": "image_url", "image_url": {"url": url}} for url in request.reference_urls]
        return {
            "model": request.model or self.model,
            "messages": [{"role": "user", "content": content}],
            "modalities": ["image", "text"],
        }


def _image_url(body: dict[str, Any]) -> str:
    try:
        message = body["choices"][0]["message"]
        images = message.get("images") or []
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        raise malformed_response("choices[0].message is missing") from error
    if not images:
        text = message.get("content")
        said = f": {text[:_TEXT_LIMIT]}" if isinstance(text, str) and text else "."
        raise PermanentProviderError(f"The model answered without an image{said}", code="no_image")
    try:
        url = images[0]["image_url"]["url"]
    except (KeyError, IndexError, TypeError) as error:
        raise malformed_response("images[0].image_url.url is missing") from error
    if not isinstance(url, str):
        raise malformed_response("images[0].image_url.url is not a string")
    return url


def _data_url_payload(url: str) -> str:
    header, separator, payload = url.partition(",")
    if not (separator and header.startswith("data:") and header.endswith(";base64")):
        raise malformed_response("the image is not a base64 data URL")
    return payload
