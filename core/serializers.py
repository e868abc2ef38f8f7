"""Serializer building blocks shared by the apps' APIs."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.exceptions import NotAuthenticated
from rest_framework.request import Request


class StrictInputSerializer(serializers.Serializer):
    """An input serializer that refuses unknown fields, so that a typo is an error rather than an ignored option."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: [_("Unknown field.")] for name in unknown})
        return attrs


def caller_id(request: Request) -> int:
    """The authenticated caller's user id; every API view requires authentication before it runs."""
    if request.user.pk is None:
        raise NotAuthenticated()
    return int(request.user.pk)


def absolute_url(request: Any, url: str) -> str:
    """Turn a storage URL such as ``/media/x.png`` into one the client can fetch as it is."""
    return request.build_absolute_uri(url) if request is not None and url.startswith("/") else url
