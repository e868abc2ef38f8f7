"""The URLconf: each app's URLs, named by module path only (the settings package imports no app)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("core.urls")),
    path("api/", include("generation.urls")),
    path("api/", include("credits.urls")),
    path("api/webhooks/", include("generation.webhooks.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("studio.urls")),
]

if settings.SERVE_MEDIA:
    urlpatterns += [path(settings.MEDIA_URL.lstrip("/"), include("generation.media_urls"))]
