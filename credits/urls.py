from __future__ import annotations

from django.urls import path

from credits import apis

urlpatterns = [path("credits/", apis.CreditsApi.as_view(), name="credits")]
