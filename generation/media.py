"""Links to generated files, built when read and expiring, and the retention that deletes old files.

Files on the local file system are served by Django through signed links that expire after ``MEDIA_URL_TTL``
seconds, so that a leaked link stops working; on S3, django-storages signs its own links for the same time
(``AWS_QUERYSTRING_EXPIRE``). A link's expiry is rounded up to a tenth of the TTL, so that the same file read
twice in a row gets the same link and a page does not show it twice.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.core import signing
from django.core.files.storage import FileSystemStorage, default_storage
from django.db.models import QuerySet
from django.http import FileResponse, HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext as _
from django.views.decorators.http import require_safe

from generation.models import Generation

logger = logging.getLogger(__name__)

# Generations whose files are deleted in one pass, so that a pass stays short however large the backlog.
RETENTION_BATCH = 500
_signer = signing.Signer(salt="generation.media")


def media_url(name: str) -> str:
    """A link to a stored file that works for ``MEDIA_URL_TTL`` seconds from now (or a little more)."""
    if not _served_here():
        return default_storage.url(name)
    ttl = settings.MEDIA_URL_TTL
    step = max(1, ttl // 10)
    expires = math.ceil((time.time() + ttl) / step) * step
    query = urlencode({"expires": expires, "signature": _signature(name, expires)})
    return f"{reverse('media-file', args=[name])}?{query}"


def generation_url(generation: Generation) -> str | None:
    """A fresh link to a generation's file; None once retention deleted it."""
    if generation.expired_at is not None or not generation.file.name:
        return None
    return media_url(generation.file.name)


def _served_here() -> bool:
    return settings.SERVE_MEDIA and isinstance(default_storage, FileSystemStorage)


def _signature(name: str, expires: int) -> str:
    return _signer.signature(f"{name}\n{expires}")


@require_safe
def media_file(request: HttpRequest, name: str) -> HttpResponseBase:
    """Serve a stored file to whoever holds a valid, unexpired link to it."""
    try:
        expires = int(request.GET.get("expires", ""))
    except ValueError:
        expires = 0
    if not constant_time_compare(request.GET.get("signature", ""), _signature(name, expires)):
        return _refused(403, "invalid_link", _("This link is not valid."))
    if expires < time.time():
        return _refused(410, "link_expired", _("This link has expired; ask the API for a fresh one."))
    if not default_storage.exists(name):
        return _refused(404, "not_found", _("This file no longer exists."))
    return FileResponse(default_storage.open(name, "rb"))


def _refused(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def generations_expire() -> int:
    """Delete the files of generations older than ``MEDIA_RETENTION_DAYS`` and mark them expired; how many."""
    days = settings.MEDIA_RETENTION_DAYS
    if days is None:
        return 0
    old: QuerySet[Generation] = Generation.objects.filter(
        expired_at__isnull=True, created_at__lt=timezone.now() - timedelta(days=days)
    )
    expired = 0
    for generation in old.order_by("created_at")[:RETENTION_BATCH]:
        # Deleted first: a file left behind by a crash here is deleted again at the next pass.
        default_storage.delete(str(generation.file.name))
        expired += Generation.objects.filter(id=generation.id, expired_at__isnull=True).update(
            expired_at=timezone.now()
        )
    if expired:
        logger.info("retention: deleted the files of %d generation(s) older than %d days", expired, days)
    return expired
