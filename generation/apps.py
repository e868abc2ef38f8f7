from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = _("Generation")

    def ready(self) -> None:
        # Registers every actor with the broker, so that any process can send to them by name.
        from core.metrics import metrics_source_register
        from generation.images import actors  # noqa: F401
        from generation.metrics import database_metrics, redis_metrics
        from generation.videos import actors as video_actors  # noqa: F401

        metrics_source_register("database", database_metrics)
        metrics_source_register("redis", redis_metrics)
