"""Operators' admin for jobs and generations: watch them, and retry or fail jobs through the services."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import TYPE_CHECKING
from uuid import UUID

import redis
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.urls import URLPattern
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext, ngettext_lazy
from django.utils.translation import gettext_lazy as _

from core.admin import ReadOnlyAdminMixin, ReadOnlyModelAdmin
from generation.console.urls import console_urls
from generation.errors import JobAlreadyFinished
from generation.media import generation_url
from generation.models import Generation, Job
from generation.selectors import job_position
from generation.services import job_fail, job_retry_now
from generation.videos.slots import video_slots

if TYPE_CHECKING:
    from django_stubs_ext import StrPromise

_REDISPATCHED = ngettext_lazy("Re-dispatched %(count)d job.", "Re-dispatched %(count)d jobs.", "count")
_FAILED = ngettext_lazy(
    "Failed %(count)d job and refunded what it did not deliver.",
    "Failed %(count)d jobs and refunded what they did not deliver.",
    "count",
)
_SKIPPED = ngettext_lazy(
    "Skipped %(count)d finished job: %(ids)s.", "Skipped %(count)d finished jobs: %(ids)s.", "count"
)


def _short_id(job_id: UUID) -> str:
    return str(job_id)[:8]


def _retry(job_id: UUID) -> bool:
    try:
        job_retry_now(job_id=job_id)
    except JobAlreadyFinished:
        return False
    return True


def _fail(job_id: UUID) -> bool:
    failed = job_fail(job_id=job_id, error_code="failed_by_operator", error_message=gettext("Failed by an operator."))
    return failed is not None


class GeneratedFileDisplayMixin:
    """How a generated file shows on the admin's pages: a preview and a size for people."""

    @admin.display(description=_("preview"))
    def preview(self, generation: Generation) -> SafeString | str:
        url = generation_url(generation)
        if url is None:
            return gettext("expired (file deleted)")
        if generation.mime_type.startswith("image/"):
            return format_html('<img src="{}" alt="" style="max-width: 120px; max-height: 120px">', url)
        return format_html('<a href="{}">{}</a>', url, posixpath.basename(generation.file.name or ""))

    @admin.display(description=_("size"), ordering="size")
    def size_display(self, generation: Generation) -> str:
        return filesizeformat(generation.size)


class GenerationInline(GeneratedFileDisplayMixin, ReadOnlyAdminMixin, admin.TabularInline):
    """The files a job produced, on the job's page."""

    model = Generation
    fields = readonly_fields = ("index", "preview", "mime_type", "size_display", "created_at")
    ordering = ("index",)
    extra = 0


@admin.register(Job)
class JobAdmin(ReadOnlyModelAdmin):
    """Every job of every user, with the operator's retry and fail actions."""

    list_display = (
        "short_id",
        "user",
        "kind",
        "status",
        "stage",
        "progress",
        "queue_state",
        "retries",
        "next_run_at",
        "credit_cost",
        "created_at",
    )
    list_filter = (
        "kind",
        "status",
        "stage",
        ("created_at", admin.DateFieldListFilter),
        ("project_id", admin.EmptyFieldListFilter),
    )
    list_select_related = ("user",)
    search_fields = ("user__username", "prompt", "=project_id")
    uuid_search_field = "id"
    fieldsets = (
        (None, {"fields": ("id", "user", "kind", "status", "stage", "project_id", "prompt", "params")}),
        (_("Results and cost"), {"fields": ("quantity", "result_count", "credit_cost")}),
        (
            _("Scheduling"),
            {
                "fields": (
                    "retries",
                    "next_run_at",
                    "lease_expires_at",
                    "claim_token",
                    "next_poll_at",
                    "created_at",
                    "started_at",
                    "finished_at",
                )
            },
        ),
        (
            _("Errors and provider"),
            {"fields": ("error_code", "error_message", "operation_name", "queue_state", "updated_at")},
        ),
    )
    inlines = (GenerationInline,)
    actions = ("retry_now", "fail_and_refund")

    def get_urls(self) -> list[URLPattern]:
        # Before the admin's own: "console/" would otherwise be taken for a job's id.
        return [*console_urls(self), *super().get_urls()]

    @admin.display(description=_("id"), ordering="id")
    def short_id(self, job: Job) -> str:
        return _short_id(job.id)

    @admin.display(description=_("progress"))
    def progress(self, job: Job) -> str:
        return gettext("%(delivered)d of %(quantity)d") % {"delivered": job.result_count, "quantity": job.quantity}

    @admin.display(description=_("video queue"))
    def queue_state(self, job: Job) -> str:
        """Where a video stands in the queue: its position, or whether its slot at the provider is held."""
        if job.kind != Job.Kind.VIDEO:
            return "—"
        if job.stage == Job.Stage.WAITING:
            return gettext("position %(position)d") % {"position": job_position(job=job)}
        if job.stage not in Job.OPERATION_STAGES:
            return "—"
        try:
            held = str(job.id) in video_slots().holders()
        except redis.RedisError:
            return gettext("slot unknown (Redis unavailable)")
        if held:
            return gettext("slot held")
        return gettext("no live slot: waiting to be resumed")

    @admin.action(description=_("Retry now"), permissions=["operate"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._apply_to_unfinished(request, queryset, _retry, done_message=_REDISPATCHED)

    @admin.action(description=_("Fail and refund"), permissions=["operate"])
    def fail_and_refund(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._apply_to_unfinished(request, queryset, _fail, done_message=_FAILED)

    def _apply_to_unfinished(
        self,
        request: HttpRequest,
        queryset: QuerySet[Job],
        operation: Callable[[UUID], bool],
        *,
        done_message: StrPromise,
    ) -> None:
        # One service call, so one transaction, per job: a job that finished meanwhile is skipped, not an error.
        job_ids = list(queryset.values_list("id", flat=True))
        skipped = [_short_id(job_id) for job_id in job_ids if not operation(job_id)]
        done = len(job_ids) - len(skipped)
        if done:
            self.message_user(request, done_message % {"count": done}, messages.SUCCESS)
        if skipped:
            self.message_user(request, _SKIPPED % {"count": len(skipped), "ids": ", ".join(skipped)}, messages.WARNING)


@admin.register(Generation)
class GenerationAdmin(GeneratedFileDisplayMixin, ReadOnlyModelAdmin):
    """Every generated file, with a preview."""

    list_display = ("preview", "user", "job", "mime_type", "size_display", "created_at", "expired_at")
    list_filter = (
        "mime_type",
        ("created_at", admin.DateFieldListFilter),
        ("expired_at", admin.EmptyFieldListFilter),
    )
    list_select_related = ("user", "job")
    search_fields = ("prompt", "user__username")
    uuid_search_field = "job_id"
    fields = readonly_fields = (
        "job",
        "user",
        "index",
        "preview",
        "file",
        "mime_type",
        "size_display",
        "prompt",
        "created_at",
        "expired_at",
    )
