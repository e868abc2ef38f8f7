"""REST endpoints for the price catalog and for quotes: what a create would cost, with nothing charged."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.serializers import caller_id
from credits.selectors import credit_balance
from generation.apis import ImageCreateApi, VideoCreateApi
from generation.models import Job
from generation.prices import image_cost, price_catalog, video_cost

_CREATES: dict[str, type[Any]] = {"image": ImageCreateApi.InputSerializer, "video": VideoCreateApi.InputSerializer}


class PriceListApi(APIView):
    """The price catalog: credits per image for each image model, per second for each video model and resolution."""

    @extend_schema(responses={200: OpenApiResponse(description="The price catalog")})
    def get(self, request: Request) -> Response:
        return Response(price_catalog())


class QuoteApi(APIView):
    """What a create with this body would cost and whether the caller's balance covers it; nothing is charged."""

    @extend_schema_serializer(component_name="Quote")
    class OutputSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=Job.Kind.choices)
        model = serializers.CharField()
        credit_cost = serializers.IntegerField()
        balance = serializers.IntegerField()
        affordable = serializers.BooleanField()

    @extend_schema(
        request=inline_serializer(
            "QuoteRequest",
            {"kind": serializers.ChoiceField(choices=Job.Kind.choices)},
        ),
        description="`kind` plus the fields of that kind's create (POST /api/images/ or /api/videos/).",
        responses={200: OutputSerializer, 400: OpenApiResponse(description="Invalid fields")},
    )
    def post(self, request: Request) -> Response:
        # A JSON object, or a form: a QueryDict (a dict too), whose values the create serializers read as a form's.
        data = request.data if isinstance(request.data, dict) else {}
        kind = data.get("kind")
        if not isinstance(kind, str) or kind not in _CREATES:
            raise ValidationError({"kind": [f"Choose one of: {', '.join(_CREATES)}."]})
        body = data.copy()
        body.pop("kind")
        fields = _CREATES[kind](data=body)
        fields.is_valid(raise_exception=True)
        create = fields.validated_data
        if kind == "image":
            cost = image_cost(model=create["model"], quantity=create["quantity"])
        else:
            cost = video_cost(model=create["model"], resolution=create["resolution"], duration=create["duration"])
        balance = credit_balance(user_id=caller_id(request))
        quote = {"kind": kind, "model": create["model"], "credit_cost": cost, "balance": balance}
        return Response(self.OutputSerializer({**quote, "affordable": balance >= cost}).data)
