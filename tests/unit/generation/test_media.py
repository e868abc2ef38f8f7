"""Links to generated files: built when read, signed, expiring; retention deletes old files and says so."""

from __future__ import annotations

import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from generation.media import _signature, generations_expire, media_url
from generation.models import Generation
from testing.factories import ImageJobFactory

pytestmark = pytest.mark.django_db


def delivered(user, content: bytes = b"\x89PNG fake") -> Generation:
    job = ImageJobFactory.create(user=user, quantity=1, result_count=1, status="completed")
    name = default_storage.save(f"generations/{user.pk}/{job.id}/0.png", ContentFile(content))
    return Generation.objects.create(
        job=job, user=user, index=0, file=name, mime_type="image/png", size=len(content), prompt=job.prompt
    )


def test_a_result_link_is_signed_expires_after_the_ttl_and_serves_the_file(api, user, settings):
    settings.MEDIA_URL_TTL = 600
    generation = delivered(user)
    before = time.time()
    url = api.get(f"/api/jobs/{generation.job_id}/").json()["result_urls"][0]
    after = time.time()
    query = parse_qs(urlsplit(url).query)
    # The TTL from the moment the link was made, rounded up by at most a tenth of it (so links can be cached).
    assert before + 600 <= int(query["expires"][0]) <= after + 600 + 60
    response = api.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"\x89PNG fake"
    [listed] = api.get("/api/generations/").json()["results"]
    assert listed["url"].startswith("http://testserver/media/")


def test_a_tampered_or_expired_link_is_refused(client, user):
    generation = delivered(user)
    name = str(generation.file.name)
    assert client.get(f"/media/{name}").status_code == 403
    forged = media_url(name).replace(name, f"generations/{user.pk}/other.png")
    assert client.get(forged).status_code == 403
    past = int(time.time()) - 1
    expired = client.get(f"/media/{name}", {"expires": past, "signature": _signature(name, past)})
    assert expired.status_code == 410
    assert expired.json()["error"]["code"] == "link_expired"


def test_retention_deletes_old_files_and_marks_their_generations_expired(api, user, settings, admin_client):
    settings.MEDIA_RETENTION_DAYS = 30
    old, recent = delivered(user), delivered(user)
    Generation.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(days=31))
    assert generations_expire() == 1
    assert generations_expire() == 0
    old.refresh_from_db()
    assert old.expired_at is not None
    assert not default_storage.exists(str(old.file.name))
    assert default_storage.exists(str(recent.file.name))
    listed = {g["id"]: g for g in api.get("/api/generations/").json()["results"]}
    assert listed[old.id]["url"] is None and listed[old.id]["expired_at"] is not None
    assert listed[recent.id]["url"] is not None
    assert api.get(f"/api/jobs/{old.job_id}/").json()["result_urls"] == []
    assert "expired (file deleted)" in admin_client.get("/admin/generation/generation/").content.decode()


def test_retention_is_off_by_default(user, settings):
    assert settings.MEDIA_RETENTION_DAYS is None
    generation = delivered(user)
    Generation.objects.filter(id=generation.id).update(created_at=timezone.now() - timedelta(days=3650))
    assert generations_expire() == 0
