from __future__ import annotations

from django.urls import path

from generation.media import media_file

urlpatterns = [path("<path:name>", media_file, name="media-file")]
