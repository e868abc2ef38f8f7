"""REST endpoints for jobs and generations: an input serializer, one service or selector call, an output serializer."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.validators import URLValidator
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.serializers import StrictInputSerializer, caller_id
from generation.images.services import image_job_create
from generation.limits import (
    ASPECT_RATIOS,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_PROMPT_LENGTH,
    MAX_REFERENCE_IMAGES,
    MAX_START_WITHIN_SECONDS,
    VIDEO_ASPECT_RATIOS,
)
from generation.models import MAX_IMAGES_PER_JOB, Generation, Job
from generation.prices import (
    VIDEO_DURATIONS,
    image_model_default,
    image_prices,
    video_model_default,
    video_prices,
    video_resolution_default,
)
from generation.providers.safe_fetch import is_public_address
from generation.selectors import generation_list, job_get, job_list
from generation.serializers import GenerationOutputSerializer, JobOutputSerializer, job_snapshot
from generation.services import job_cancel
from generation.videos.services import video_job_create
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


class JobCreateApi(APIView):
    """Validate, charge and queue a job through a service; answer 202 with the job at once."""

    throttle_scope = "create"

    def create(self, request: Request, serializer_class: type[StrictInputSerializer], service: Any) -> Response:
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key", "")
        if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise ValidationError({"Idempotency-Key": [_("At most 200 characters.")]})
        job = service(user_id=caller_id(request), idempotency_key=key, **serializer.validated_data)
        return Response(job_snapshot(job, request=request), status=status.HTTP_202_ACCEPTED)


class ImageCreateApi(JobCreateApi):
    """Charge and queue an image job; the answer comes at once, the images follow."""

    @extend_schema_serializer(component_name="ImageRequest")
    class InputSerializer(JobCreateInputSerializer):
        prompt = serializers.CharField(max_length=MAX_PROMPT_LENGTH)
        aspect_ratio = serializers.ChoiceField(choices=ASPECT_RATIOS, default="1:1")
        quantity = serializers.IntegerField(min_value=1, max_value=MAX_IMAGES_PER_JOB, default=1)
        image_urls = serializers.ListField(
            child=public_url_field(),
            max_length=MAX_REFERENCE_IMAGES,
            default=list,
            help_text=f"Up to {MAX_REFERENCE_IMAGES} reference images: http or https URLs on public hosts.",
        )
        project_id = serializers.CharField(max_length=100, allow_blank=True, default="")
        start_within_seconds = start_within_field()
        model = serializers.CharField(
            max_length=200, required=False, help_text="An image model of the price catalog (GET /api/prices/)."
        )

        def validate_model(self, value: str) -> str:
            return catalog_choice(value, image_prices(), str(_("model")))

        def validate(self, data: dict[str, Any]) -> dict[str, Any]:
            data = super().validate(data)
            return {**data, "model": data.get("model") or image_model_default()}

    @create_schema(InputSerializer)
    def post(self, request: Request) -> Response:
        return self.create(request, self.InputSerializer, image_job_create)


class VideoCreateApi(JobCreateApi):
    """Charge and queue a video; the answer comes at once with the job's place in the line."""

    @extend_schema_serializer(component_name="VideoRequest")
    class InputSerializer(JobCreateInputSerializer):
        prompt = serializers.CharField(max_length=MAX_PROMPT_LENGTH)
        aspect_ratio = serializers.ChoiceField(choices=VIDEO_ASPECT_RATIOS, default="16:9")
        duration = serializers.ChoiceField(choices=VIDEO_DURATIONS, default=8)
        start_frame = public_url_field(
            required=False,
            allow_blank=True,
            default="",
            help_text="First frame: an http or https URL on a public host.",
        )
        end_frame = public_url_field(
            required=False, allow_blank=True, default="", help_text="Last frame: an http or https URL on a public host."
        )
        negative_prompt = serializers.CharField(max_length=MAX_PROMPT_LENGTH, allow_blank=True, default="")
        project_id = serializers.CharField(max_length=100, allow_blank=True, default="")
        start_within_seconds = start_within_field()
        model = serializers.CharField(
            max_length=200, required=False, help_text="A video model of the price catalog (GET /api/prices/)."
        )
        resolution = serializers.CharField(
            max_length=20, required=False, help_text="A resolution the model offers in the price catalog."
        )

        def validate_model(self, value: str) -> str:
            return catalog_choice(value, video_prices(), str(_("model")))

        def validate(self, data: dict[str, Any]) -> dict[str, Any]:
            data = super().validate(data)
            model = data.get("model") or video_model_default()
            resolution = data.get("resolution") or video_resolution_default(model)
            try:
                catalog_choice(resolution, video_prices()[model], str(_("resolution")))
            except serializers.ValidationError as error:
                raise serializers.ValidationError({"resolution": error.detail}) from error
            if resolution == "1080p" and data["aspect_ratio"] != "16:9":
                raise serializers.ValidationError({"resolution": [_("1080p is only made in 16:9.")]})
            return {**data, "model": model, "resolution": resolution}

    @create_schema(InputSerializer, {429: OpenApiResponse(description="Too many requests, or too many videos waiting")})
    def post(self, request: Request) -> Response:
        return self.create(request, self.InputSerializer, video_job_create)


class JobCancelApi(APIView):
    """Cancel one of the caller's unfinished jobs, with a refund per the cancel policy."""

    @extend_schema(
        request=None,
        responses={
            200: JobOutputSerializer,
            404: OpenApiResponse(description="Not the caller's job"),
            409: OpenApiResponse(description="The job has already finished"),
        },
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = job_cancel(job_id=job_id, user_id=caller_id(request))
        return Response(job_snapshot(job, request=request))


class ListFilterSerializer(StrictInputSerializer):
    """The query parameters every list accepts; anything else is refused with a 400 that names it."""

    project_id = serializers.CharField(max_length=100, required=False, help_text="Only this project's items.")
    limit = serializers.IntegerField(min_value=1, required=False)
    offset = serializers.IntegerField(min_value=0, required=False)

    @classmethod
    def from_request(cls, request: Request) -> dict[str, Any]:
        filters = cls(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return dict(filters.validated_data)


class JobListApi(generics.ListAPIView):
    """The caller's jobs, newest first."""

    serializer_class = JobOutputSerializer

    class FilterSerializer(ListFilterSerializer):
        status = serializers.ChoiceField(choices=Job.Status.choices, required=False)
        kind = serializers.ChoiceField(choices=Job.Kind.choices, required=False)

    @extend_schema(parameters=[FilterSerializer])
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Job]:
        return job_list(user_id=caller_id(self.request), filters=self.FilterSerializer.from_request(self.request))


class JobDetailApi(APIView):
    """One of the caller's jobs; poll it when the event stream is not available."""

    @extend_schema(responses={200: JobOutputSerializer, 404: OpenApiResponse(description="Not the caller's job")})
    def get(self, request: Request, job_id: str) -> Response:
        job = job_get(user_id=caller_id(request), job_id=job_id)
        return Response(job_snapshot(job, request=request))


class GenerationListApi(generics.ListAPIView):
    """The caller's generated files, newest first."""

    serializer_class = GenerationOutputSerializer

    @extend_schema(parameters=[ListFilterSerializer])
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Generation]:
        filters = ListFilterSerializer.from_request(self.request)
        return generation_list(user_id=caller_id(self.request), project_id=filters.get("project_id", ""))
