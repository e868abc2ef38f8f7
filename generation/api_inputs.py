"""The inputs the create endpoints share: public URL fields, the start deadline, catalog choices, webhook fields and
the OpenAPI description of a create."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.validators import URLValidator
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers

from core.serializers import StrictInputSerializer
from generation.limits import MAX_START_WITHIN_SECONDS
from generation.providers.safe_fetch import is_public_address
from generation.serializers import JobOutputSerializer
from generation.webhooks.models import WebhookDelivery

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Send the same key again with the same body to get the first job back without a second charge.",
)


def refuse_local_hosts(url: str) -> None:
    """Refuse URLs that name this machine or a private network outright; names are checked again when fetched."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        raise serializers.ValidationError(_("Local and private addresses are not allowed."))
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if not is_public_address(address) and not settings.FETCH_ALLOW_PRIVATE_ADDRESSES:
        raise serializers.ValidationError(_("Local and private addresses are not allowed."))


def public_url_field(**options: Any) -> serializers.CharField:
    """A URL field that accepts http and https only, to public hosts: nothing else is ever fetched."""
    # A CharField with one URL validator: DRF's URLField would add a second one and a second message.
    return serializers.CharField(
        max_length=2000,
        validators=[
            URLValidator(schemes=["http", "https"], message=_("Enter an http or https URL.")),
            refuse_local_hosts,
        ],
        **options,
    )


def create_schema(
    input_serializer: type[StrictInputSerializer], responses: dict[int, OpenApiResponse] | None = None
) -> Any:
    """The OpenAPI description of an endpoint that charges and queues a job."""
    return extend_schema(
        request=input_serializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={
            202: JobOutputSerializer,
            400: OpenApiResponse(description="Invalid fields"),
            402: OpenApiResponse(description="Not enough credits"),
            422: OpenApiResponse(description="Idempotency-Key reused with a different body"),
            429: OpenApiResponse(description="Too many requests"),
            **(responses or {}),
        },
    )


def start_within_field() -> serializers.IntegerField:
    """How long the job may wait to start before it is canceled with a full refund."""
    return serializers.IntegerField(
        min_value=1,
        max_value=MAX_START_WITHIN_SECONDS,
        required=False,
        help_text="Seconds the job may wait to start; not started by then, it is canceled with a full refund "
        "and the error code deadline_exceeded.",
    )


def catalog_choice(value: str, choices: Iterable[str], what: str) -> str:
    """``value`` when the price catalog lists it, else a 400 that lists what it does."""
    if value not in choices:
        raise serializers.ValidationError(
            _("Unknown %(what)s %(value)r; choose one of: %(choices)s.")
            % {"what": what, "value": value, "choices": ", ".join(choices)}
        )
    return value


class JobCreateInputSerializer(StrictInputSerializer):
    """The fields every create accepts besides its kind's own: where to post the job's webhook events, and which."""

    webhook_url = public_url_field(
        required=False,
        allow_blank=True,
        default="",
        help_text="An http or https URL on a public host (https only in production) that receives the job's events, "
        "signed per Standard Webhooks with the secret of GET /api/webhooks/secret/.",
    )
    webhook_events = serializers.ListField(
        child=serializers.ChoiceField(choices=WebhookDelivery.Event.values),
        min_length=1,
        default=lambda: [WebhookDelivery.Event.COMPLETED.value],
        help_text="Which events to post: start (the job began), progress (a result was stored), completed (the job "
        "ended: completed, failed or canceled). Default: completed.",
    )

    def validate_webhook_url(self, value: str) -> str:
        if value and settings.PRODUCTION and urlsplit(value).scheme.lower() != "https":
            raise serializers.ValidationError(_("Webhook URLs must use https."))
        return value

    def validate_webhook_events(self, value: list[str]) -> list[str]:
        # One order and no repeats: the same choice always makes the same request fingerprint.
        return [event for event in WebhookDelivery.Event.values if event in value]
