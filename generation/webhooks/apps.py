from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class WebhooksConfig(AppConfig):
    name = "generation.webhooks"
    label = "webhooks"
    verbose_name = _("Webhooks")

    def ready(self) -> None:
        # The actor registers with the broker, so that every process (web ones too) can send to it by name.
        from generation.signals import job_published
        from generation.webhooks import actors  # noqa: F401
        from generation.webhooks.receivers import job_published_to_webhooks

        job_published.connect(job_published_to_webhooks, dispatch_uid="webhooks.job_published")
