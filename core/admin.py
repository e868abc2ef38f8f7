"""The admin's shared building blocks, and its titles."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

admin.site.site_header = admin.site.site_title = _("Generation service administration")
admin.site.index_title = _("Jobs and credits")


class ReadOnlyAdminMixin:
    """Admin pages that show rows but never add, change or delete them."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        # Saving a form rewrites the whole row from what the page loaded, which would undo a worker's or a
        # service's concurrent update; every write goes through the services instead.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class ReadOnlyModelAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """A read-only model admin whose actions act through the services and whose search also matches a UUID."""

    # The field an exact UUID typed in the search box is matched against; empty for none.
    uuid_search_field = ""

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if not self.uuid_search_field:
            return found, may_have_duplicates
        try:
            value = uuid.UUID(search_term.strip())
        except ValueError:
            return found, may_have_duplicates
        return found | queryset.filter(**{self.uuid_search_field: value}), may_have_duplicates

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Whether the user may run this page's actions: the pages are read-only, so the model's change permission."""
        codename = get_permission_codename("change", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")
