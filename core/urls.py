"""The service's own endpoints: the event stream, health and metrics."""

from __future__ import annotations

from django.urls import path

from core.events.views import event_stream
from core.health import healthz, readyz
from core.metrics import metrics

urlpatterns = [
    path("api/events/", event_stream, name="events"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
]
