"""The operator console's page and the JSON it refreshes itself from, both for staff who may view jobs."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from generation.console.history import console_charts
from generation.console.layout import CHARTS, TABLES
from generation.console.queue import console_queue
from generation.models import Job

REFRESH_SECONDS = 15


def console_snapshot() -> dict[str, Any]:
    """Everything the console shows, as of now: the queue's tables and the last 24 hours' charts."""
    now = timezone.now()
    return {"generated_at": now.isoformat(), "now": console_queue(now=now), "charts": console_charts(now=now)}


@require_safe
def console_page(request: HttpRequest, *, model_admin: admin.ModelAdmin[Job]) -> TemplateResponse:
    """The console page, drawn at once from a snapshot embedded in it; its script then refreshes it."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    context = {
        **model_admin.admin_site.each_context(request),
        "title": gettext("Operator console"),
        "tables": TABLES,
        "charts": CHARTS,
        "snapshot": console_snapshot(),
        "config": {"dataUrl": reverse("admin:generation_job_console_data"), "refreshSeconds": REFRESH_SECONDS},
    }
    return TemplateResponse(request, "admin/console/console.html", context)


@never_cache
@require_safe
def console_data(request: HttpRequest, *, model_admin: admin.ModelAdmin[Job]) -> JsonResponse:
    """The console's snapshot as JSON; a 403 (not a sign-in page) for anyone else, since a script asks for it."""
    if not (model_admin.admin_site.has_permission(request) and model_admin.has_view_permission(request)):
        message = gettext("The operator console is for staff who may view jobs.")
        return JsonResponse({"error": {"code": "permission_denied", "message": message}}, status=403)
    return JsonResponse(console_snapshot())
