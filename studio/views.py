"""The studio page, where a signed-in user asks for images and videos and watches them arrive."""

from __future__ import annotations

from typing import Any, cast

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext_lazy as _

from credits.selectors import credit_balance
from generation.limits import (
    ASPECT_RATIOS,
    MAX_IMAGES_PER_JOB,
    MAX_PROMPT_LENGTH,
    MAX_REFERENCE_IMAGES,
    VIDEO_ASPECT_RATIOS,
    VIDEO_DURATIONS,
)
from generation.prices import image_prices, price_catalog, video_model_default, video_prices

# The shape each aspect ratio gives, named in its label.
SHAPES = {
    "1:1": _("square"),
    "16:9": _("landscape"),
    "9:16": _("portrait"),
    "4:3": _("landscape"),
    "3:4": _("portrait"),
}


def aspect_ratio_choices(ratios: list[str]) -> list[tuple[str, str]]:
    """Pair each aspect ratio with a label that names its shape, such as "16:9 (landscape)"."""
    return [(ratio, f"{ratio} ({SHAPES[ratio]})" if ratio in SHAPES else ratio) for ratio in ratios]


def _url_if_served(name: str) -> str | None:
    # The webhook endpoints may be switched off in a deployment: the page then says the panel is unavailable.
    try:
        return reverse(name)
    except NoReverseMatch:
        return None


def client_config() -> dict[str, Any]:
    """What the page's script needs to know: where the API lives and what things cost."""
    return {
        "urls": {
            "images": reverse("image-create"),
            "videos": reverse("video-create"),
            "jobs": reverse("job-list"),
            "events": reverse("events"),
            "credits": reverse("credits"),
            "generations": reverse("generation-list"),
            "login": reverse("login"),
            "webhookSecret": _url_if_served("webhook-secret"),
            "webhookSecretRotate": _url_if_served("webhook-secret-rotate"),
        },
        "prices": price_catalog(),
    }


@login_required
def studio_page(request: HttpRequest) -> HttpResponse:
    """The studio: forms for images and videos, the caller's jobs with live status and a gallery of results."""
    videos = video_prices()
    video_model = video_model_default()
    context = {
        # login_required has let a signed-in user through, and a signed-in user has a primary key.
        "balance": credit_balance(user_id=cast(int, request.user.pk)),
        "image_aspect_ratios": aspect_ratio_choices(ASPECT_RATIOS),
        "video_aspect_ratios": aspect_ratio_choices(VIDEO_ASPECT_RATIOS),
        "video_durations": VIDEO_DURATIONS,
        "max_images": MAX_IMAGES_PER_JOB,
        "max_reference_images": MAX_REFERENCE_IMAGES,
        "max_prompt_length": MAX_PROMPT_LENGTH,
        "image_models": list(image_prices()),
        "video_models": list(videos),
        "video_model": video_model,
        # The default model's resolutions, its default first; the script offers another model's when it is chosen.
        "video_resolutions": list(videos[video_model]),
        "config": client_config(),
    }
    return render(request, "studio/index.html", context)
