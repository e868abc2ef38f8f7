"""Operators' admin for credit accounts and the ledger."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from core.admin import ReadOnlyAdminMixin, ReadOnlyModelAdmin
from credits.models import CreditAccount, CreditLedgerEntry
from credits.services import credit_grant


class LedgerEntryInline(ReadOnlyAdminMixin, admin.TabularInline):
    """An account's ledger, newest first."""

    model = CreditLedgerEntry
    fields = readonly_fields = ("kind", "amount", "balance_after", "job", "note", "created_by", "created_at")
    ordering = ("-id",)
    extra = 0

    def get_queryset(self, request: HttpRequest) -> QuerySet[CreditLedgerEntry]:
        return super().get_queryset(request).select_related("job", "created_by")


class GrantCreditsForm(forms.Form):
    """How many credits to grant to each selected account, and why."""

    amount = forms.IntegerField(label=_("Credits to grant"), min_value=1)
    note = forms.CharField(
        label=_("Note"),
        help_text=_("Shown in the account's ledger."),
        max_length=CreditLedgerEntry._meta.get_field("note").max_length,
        required=False,
    )


@admin.register(CreditAccount)
class CreditAccountAdmin(ReadOnlyModelAdmin):
    """Users' balances, their ledgers, and the grant action."""

    list_display = ("user", "balance", "updated_at")
    list_select_related = ("user",)
    search_fields = ("user__username",)
    inlines = (LedgerEntryInline,)
    actions = ("grant_credits",)

    @admin.action(description=_("Grant credits"), permissions=["operate"])
    def grant_credits(self, request: HttpRequest, queryset: QuerySet[CreditAccount]) -> TemplateResponse | None:
        # The first post comes from the changelist and shows the form; the form posts back with "apply".
        form = GrantCreditsForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "title": _("Grant credits"),
                "opts": self.opts,
                "form": form,
                "accounts": queryset.select_related("user"),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/credits/grant_credits.html", context)
        amount, note = form.cleaned_data["amount"], form.cleaned_data["note"]
        user_ids = list(queryset.values_list("user_id", flat=True))
        for user_id in user_ids:
            # The admin serves signed-in staff only, so the user is never anonymous here.
            credit_grant(user_id=user_id, amount=amount, note=note, created_by=request.user)  # type: ignore[arg-type]
        credits = ngettext("%(amount)d credit", "%(amount)d credits", amount) % {"amount": amount}
        granted = ngettext(
            "Granted %(credits)s to %(count)d account.",
            "Granted %(credits)s to each of %(count)d accounts.",
            len(user_ids),
        )
        self.message_user(request, granted % {"credits": credits, "count": len(user_ids)}, messages.SUCCESS)
        return None


@admin.register(CreditLedgerEntry)
class CreditLedgerEntryAdmin(ReadOnlyModelAdmin):
    """Every movement of credits; the ledger is append-only, so this page only reads."""

    list_display = ("kind", "amount", "balance_after", "account__user", "job", "note", "created_by", "created_at")
    list_filter = ("kind", ("created_at", admin.DateFieldListFilter))
    list_select_related = ("account__user", "job", "created_by")
    search_fields = ("account__user__username", "note")
    uuid_search_field = "job_id"
