"""The caller's webhook signing secret: read it (made on first use) or rotate it."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.serializers import caller_id
from generation.webhooks.services import webhook_secret_get_or_create, webhook_secret_rotate


@extend_schema_serializer(component_name="WebhookSecret")
class WebhookSecretOutputSerializer(serializers.Serializer):
    secret = serializers.CharField(
        help_text="whsec_ and the base64 of the signing key; webhook-signature holds v1,<base64 HMAC-SHA256 of "
        '"{webhook-id}.{webhook-timestamp}.{body}"> keyed with the decoded key.'
    )


class WebhookSecretApi(APIView):
    """The caller's webhook signing secret, made on first use."""

    @extend_schema(responses={200: WebhookSecretOutputSerializer})
    def get(self, request: Request) -> Response:
        secret = webhook_secret_get_or_create(user_id=caller_id(request))
        return Response(WebhookSecretOutputSerializer({"secret": secret.secret}).data)


class WebhookSecretRotateApi(APIView):
    """Replace the caller's signing secret; deliveries carry signatures from both for the overlap that follows."""

    @extend_schema(request=None, responses={200: WebhookSecretOutputSerializer})
    def post(self, request: Request) -> Response:
        secret = webhook_secret_rotate(user_id=caller_id(request))
        return Response(WebhookSecretOutputSerializer({"secret": secret.secret}).data)
