"""The price catalog from the settings: credits per image for each image model, and per second of video for each
video model and resolution; what a create costs."""

from __future__ import annotations

from typing import Any

from django.conf import settings

# The model each image provider uses when the catalog does not list several.
_CONFIGURED_IMAGE_MODEL = {"gateway": "AI_GATEWAY_IMAGE_MODEL", "openai": "OPENAI_IMAGE_MODEL"}
VIDEO_DURATIONS = (4, 6, 8)


def image_prices() -> dict[str, int]:
    """Credits per image for each image model; the first is the default."""
    if settings.IMAGE_PRICES:
        return dict(settings.IMAGE_PRICES)
    setting = _CONFIGURED_IMAGE_MODEL.get(settings.IMAGE_PROVIDER)
    return {getattr(settings, setting) if setting else settings.IMAGE_PROVIDER: settings.CREDITS_PER_IMAGE}


def image_model_default() -> str:
    return next(iter(image_prices()))


def video_prices() -> dict[str, dict[str, int]]:
    """Credits per second of video for each video model and resolution."""
    return {model: dict(resolutions) for model, resolutions in settings.VIDEO_PRICES.items()}


def video_model_default() -> str:
    prices = video_prices()
    return settings.VEO_MODEL if settings.VEO_MODEL in prices else next(iter(prices))


def video_resolution_default(model: str) -> str:
    return next(iter(video_prices()[model]))


def image_cost(*, model: str, quantity: int) -> int:
    """What ``quantity`` images of ``model`` cost; the model must be in the catalog."""
    return image_prices()[model] * quantity


def video_cost(*, model: str, resolution: str, duration: int) -> int:
    """What a video of ``duration`` seconds at ``resolution`` costs; both must be in the catalog."""
    return video_prices()[model][resolution] * duration


def price_catalog() -> dict[str, Any]:
    """The whole catalog as the API shows it."""
    videos = video_prices()
    return {
        "image": {
            "default_model": image_model_default(),
            "models": [{"model": model, "credits_per_image": price} for model, price in image_prices().items()],
        },
        "video": {
            "default_model": video_model_default(),
            "durations": list(VIDEO_DURATIONS),
            "models": [
                {
                    "model": model,
                    "default_resolution": video_resolution_default(model),
                    "resolutions": [
                        {"resolution": resolution, "credits_per_second": price}
                        for resolution, price in resolutions.items()
                    ],
                }
                for model, resolutions in videos.items()
            ],
        },
    }
