from __future__ import annotations

from django.urls import path

from generation.webhooks import apis

urlpatterns = [
    path("secret/", apis.WebhookSecretApi.as_view(), name="webhook-secret"),
    path("secret/rotate/", apis.WebhookSecretRotateApi.as_view(), name="webhook-secret-rotate"),
]
