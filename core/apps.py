from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Shared services every app builds on: Redis, errors, throttling, health, metrics and the event streams."""

    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from core.events.metrics import stream_metrics
        from core.metrics import metrics_source_register

        metrics_source_register("redis", stream_metrics)
