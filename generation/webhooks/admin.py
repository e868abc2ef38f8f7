"""Operators' admin for webhook deliveries: watch each one's attempts, and redeliver through the services."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext_lazy

from core.admin import ReadOnlyAdminMixin, ReadOnlyModelAdmin
from generation.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookGoneUrl
from generation.webhooks.services import webhook_delivery_redeliver

_REDELIVERED = ngettext_lazy(
    "Queued a new attempt of %(count)d delivery.", "Queued a new attempt of %(count)d deliveries.", "count"
)


class WebhookAttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    """A delivery's attempts, oldest first."""

    model = WebhookAttempt
    fields = readonly_fields = ("attempted_at", "status_code", "latency_ms", "error")
    ordering = ("attempted_at", "id")
    extra = 0


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyModelAdmin):
    """Every webhook delivery, with its attempts and the operator's redeliver action."""

    list_display = ("job", "event", "sequence", "status", "attempt_count", "last_status_code", "created_at")
    list_filter = ("status", "event", ("created_at", admin.DateFieldListFilter))
    list_select_related = ("job",)
    search_fields = ("url",)
    uuid_search_field = "job_id"
    fields = readonly_fields = (
        "id",
        "job",
        "event",
        "sequence",
        "result_count",
        "url",
        "status",
        "attempt_count",
        "last_status_code",
        "next_attempt_at",
        "created_at",
        "finished_at",
        "payload",
    )
    inlines = (WebhookAttemptInline,)
    actions = ("redeliver",)

    @admin.action(description=_("Redeliver"), permissions=["operate"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        # One service call, so one transaction, per delivery.
        delivery_ids = list(queryset.values_list("id", flat=True))
        for delivery_id in delivery_ids:
            webhook_delivery_redeliver(delivery_id=delivery_id)
        self.message_user(request, _REDELIVERED % {"count": len(delivery_ids)}, messages.SUCCESS)


@admin.register(WebhookGoneUrl)
class WebhookGoneUrlAdmin(admin.ModelAdmin):
    """The URLs that answered 410 Gone: deleting one lets the user's later events go there again."""

    list_display = ("url", "user", "gone_at")
    list_select_related = ("user",)
    search_fields = ("url", "user__username")
    fields = readonly_fields = ("user", "url", "gone_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WebhookGoneUrl | None = None) -> bool:
        return False
