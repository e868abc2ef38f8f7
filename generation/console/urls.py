"""The console's URLs, added to the job admin's own: the page behind the admin's sign-in, its JSON beside it."""

from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern, path

from generation.console import views
from generation.models import Job


def console_urls(model_admin: admin.ModelAdmin[Job]) -> list[URLPattern]:
    """``admin:generation_job_console`` (the page) and ``admin:generation_job_console_data`` (its JSON)."""
    given = {"model_admin": model_admin}
    return [
        path("console/", model_admin.admin_site.admin_view(views.console_page), given, name="generation_job_console"),
        path("console/data/", views.console_data, given, name="generation_job_console_data"),
    ]
