"""REST endpoints for jobs and generations: an input serializer, one service or selector call, an output serializer."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.serializers import StrictInputSerializer, caller_id
from generation.api_inputs import (
    JobCreateInputSerializer,
    catalog_choice,
    create_schema,
    public_url_field,
    start_within_field,
)
from generation.images.services import image_job_create
from generation.limits import (
    ASPECT_RATIOS,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_PROMPT_LENGTH,
    MAX_REFERENCE_IMAGES,
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
from generation.selectors import generation_list, job_get, job_list
from generation.serializers import GenerationOutputSerializer, JobOutputSerializer, job_snapshot
from generation.services import job_cancel
from generation.videos.services import video_job_create


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
