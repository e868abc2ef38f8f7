"""Image and video providers behind one interface each, and the factories that pick the ones the settings name."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from generation.providers.base import (
    GeneratedImage,
    ImageProvider,
    ImageRequest,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from generation.providers.gateway import GatewayImageProvider
from generation.providers.local import LocalImageProvider
from generation.providers.local_video import LocalVideoProvider
from generation.providers.openai import OpenAIImageProvider
from generation.providers.veo import VeoVideoProvider
from generation.providers.video import GeneratedVideo, VideoFrame, VideoOperation, VideoProvider, VideoRequest

__all__ = [
    "GeneratedImage",
    "GeneratedVideo",
    "ImageProvider",
    "ImageRequest",
    "PermanentProviderError",
    "ProviderError",
    "TransientProviderError",
    "VideoFrame",
    "VideoOperation",
    "VideoProvider",
    "VideoRequest",
    "get_image_provider",
    "get_video_provider",
]


# Each HTTP provider: its client and the settings holding its base URL, API key and model.
_HTTP_PROVIDERS: dict[str, tuple[type[GatewayImageProvider | OpenAIImageProvider], str, str, str]] = {
    "gateway": (GatewayImageProvider, "AI_GATEWAY_URL", "AI_GATEWAY_API_KEY", "AI_GATEWAY_IMAGE_MODEL"),
    "openai": (OpenAIImageProvider, "OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_IMAGE_MODEL"),
}


def get_image_provider() -> ImageProvider:
    """Build the image provider that ``settings.IMAGE_PROVIDER`` names, from the settings."""
    name = settings.IMAGE_PROVIDER
    if name == "local":
        return LocalImageProvider(
            latency=settings.LOCAL_PROVIDER_LATENCY, failure_rate=settings.LOCAL_PROVIDER_FAILURE_RATE
        )
    if name in _HTTP_PROVIDERS:
        client, url_setting, key_setting, model_setting = _HTTP_PROVIDERS[name]
        return client(
            base_url=getattr(settings, url_setting),
            api_key=_required(key_setting, provider_setting="IMAGE_PROVIDER"),
            model=getattr(settings, model_setting),
            timeout=settings.PROVIDER_TIMEOUT,
        )
    raise ImproperlyConfigured(f"IMAGE_PROVIDER must be local, gateway or openai, not {name!r}.")


def get_video_provider() -> VideoProvider:
    """Build the video provider that ``settings.VIDEO_PROVIDER`` names, from the settings."""
    name = settings.VIDEO_PROVIDER
    if name == "local":
        return LocalVideoProvider(seconds=settings.LOCAL_VIDEO_SECONDS, failure_rate=settings.LOCAL_VIDEO_FAILURE_RATE)
    if name == "veo":
        return VeoVideoProvider(
            base_url=settings.GEMINI_API_BASE,
            api_key=_required("GEMINI_API_KEY", provider_setting="VIDEO_PROVIDER"),
            model=settings.VEO_MODEL,
            timeout=settings.PROVIDER_TIMEOUT,
        )
    raise ImproperlyConfigured(f"VIDEO_PROVIDER must be local or veo, not {name!r}.")


def _required(name: str, *, provider_setting: str) -> str:
    # Failing here names the missing setting; a call without a key would only come back as a vague 401.
    value: str = getattr(settings, name)
    if not value:
        raise ImproperlyConfigured(f"{name} must be set when {provider_setting}={getattr(settings, provider_setting)}.")
    return value
