"""API credentials as a frontend holds them: a token per user, for Django's test client and for a live server."""

from __future__ import annotations

from typing import Any

from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def token_headers(user: Any) -> dict[str, str]:
    """The ``Authorization`` header of the user's API token, made on first use."""
    return {"Authorization": f"Token {Token.objects.get_or_create(user=user)[0].key}"}


def token_client(user: Any) -> APIClient:
    """An API client that authenticates as the user with a token, as a frontend would."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=token_headers(user)["Authorization"])
    return client
