from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class StudioConfig(AppConfig):
    """The studio page: a browser frontend for the generation API."""

    name = "studio"
    verbose_name = _("Studio")
