"""The operator console: who may see it, what its tables list now, and the numbers its 24-hour charts draw."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from generation import estimates
from generation.console import queue
from generation.images.services import image_job_create
from generation.models import Job
from generation.selectors import job_position
from generation.services import job_fail
from generation.videos.services import video_job_create
from generation.videos.slots import video_slots
from testing.factories import ImageJobFactory, UserFactory
from testing.videos import video_queue_forget

pytestmark = pytest.mark.django_db

PAGE_URL = "/admin/generation/job/console/"
DATA_URL = "/admin/generation/job/console/data/"


@pytest.fixture(autouse=True)
def _fresh_medians_and_slots():
    estimates._cache.clear()
    video_queue_forget()
    yield
    estimates._cache.clear()
    video_queue_forget()


def snapshot(client) -> dict[str, Any]:
    response = client.get(DATA_URL)
    assert response.status_code == 200
    return response.json()


def hour_start(hours_ago: int) -> datetime:
    """The start of the hour ``hours_ago`` hours before the current one (0: the current one)."""
    return datetime.fromtimestamp((int(timezone.now().timestamp()) // 3600 - hours_ago) * 3600, tz=UTC)


def job_at(created: datetime, *, wait: float | None = None, took: float | None = None, **fields: Any) -> Job:
    """A job created at ``created``, started ``wait`` seconds later and finished ``took`` seconds after its start."""
    job = ImageJobFactory.create(**fields)
    started = created + timedelta(seconds=wait) if wait is not None else None
    finished = started + timedelta(seconds=took) if started and took is not None else None
    Job.objects.filter(id=job.id).update(created_at=created, started_at=started, finished_at=finished)
    return job


def at(chart: dict[str, Any], key: str, moment: datetime) -> Any:
    """The value a chart's series draws in the bucket starting at ``moment``."""
    values = next(series["values"] for series in chart["series"] if series["key"] == key)
    return values[chart["x"].index(int(moment.timestamp()))]


def drawn_total(chart: dict[str, Any]) -> float:
    return sum(value or 0 for series in chart["series"] for value in series["values"])


# --- Who may see it ------------------------------------------------------------------------------------


def test_anonymous_visitors_and_users_without_staff_status_are_refused(client, make_user):
    response = client.get(PAGE_URL)
    assert response.status_code == 302
    assert response["Location"].startswith(f"/admin/login/?next={PAGE_URL}")
    assert client.get(DATA_URL).status_code == 403

    client.force_login(make_user())
    assert client.get(PAGE_URL)["Location"].startswith("/admin/login/")
    refused = client.get(DATA_URL)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"


def test_staff_need_the_permission_to_view_jobs(client):
    staff = UserFactory.create(is_staff=True)
    client.force_login(staff)
    assert client.get(PAGE_URL).status_code == 403
    assert client.get(DATA_URL).status_code == 403

    staff.user_permissions.add(Permission.objects.get(codename="view_job"))
    assert client.get(PAGE_URL).status_code == 200
    assert client.get(DATA_URL).status_code == 200
    assert 'href="/admin/generation/job/console/"' in client.get("/admin/").content.decode()


def test_admin_pages_link_to_the_console(admin_client):
    assert f'<a href="{PAGE_URL}">Operator console</a>' in admin_client.get("/admin/").content.decode()


def test_page_embeds_its_snapshot_and_speaks_portuguese(admin_client):
    page = admin_client.get(PAGE_URL, HTTP_ACCEPT_LANGUAGE="pt-BR")
    html = page.content.decode()
    assert "Agora" in html and "Últimas 24 horas" in html and "Vídeos em geração" in html
    assert "Console de operação" in html
    assert page.context["snapshot"]["charts"]["jobs_per_minute"]["unit"] == "tarefas"
    assert 'id="console-snapshot"' in html and "console/console.js" in html and "uPlot.iife.min.js" in html
    data = admin_client.get(DATA_URL, HTTP_ACCEPT_LANGUAGE="pt-BR").json()
    labels = [series["label"] for series in data["charts"]["jobs_per_minute"]["series"]]
    assert labels == ["Na fila", "Processando", "Concluída", "Falhou", "Cancelada"]
    assert data["now"]["generating"]["summary"] == "0 de 2 vagas em uso"


# --- Now ----------------------------------------------------------------------------------------------


def test_videos_at_the_provider_show_stage_operation_running_time_and_slot(admin_client, settings, make_user):
    settings.VIDEO_MAX_CONCURRENT = 2
    owner = make_user(credits=100)
    held, lost = (video_job_create(user_id=owner.pk, prompt=p, aspect_ratio="16:9", duration=4) for p in "ab")
    ninety_seconds_ago = timezone.now() - timedelta(seconds=90)
    Job.objects.filter(id=held.id).update(
        status="processing", stage="generating", operation_name="models/veo/operations/7", started_at=ninety_seconds_ago
    )
    Job.objects.filter(id=lost.id).update(status="processing", stage="starting", started_at=timezone.now())
    video_slots().acquire(str(held.id))
    video_slots().acquire(f"{lost.id}:ambiguous:{lost.id}", lease_seconds=60)

    generating = snapshot(admin_client)["now"]["generating"]
    since = (timezone.now() - ninety_seconds_ago).total_seconds()
    assert (generating["in_use"], generating["cap"], generating["total"]) == (2, 2, 2)
    assert generating["summary"] == "2 of 2 slots in use · 1 held for an ambiguous start"
    first, second = generating["rows"]
    assert first["id"] == str(held.id) and first["url"] == f"/admin/generation/job/{held.id}/change/"
    assert (first["stage"], first["operation"], first["slot"]) == ("Generating", "models/veo/operations/7", "slot held")
    # Ninety seconds, and however long the test took since (the page rounds to a tenth).
    assert 90 <= first["running"] <= since + 0.05
    assert (second["stage"], second["slot"]) == ("Starting", "no live slot: waiting to be resumed")


def test_waiting_videos_are_listed_in_line_order_with_positions_and_estimates(admin_client, settings, make_user):
    settings.VIDEO_MAX_CONCURRENT = 2
    owner = make_user(credits=100)
    line = [video_job_create(user_id=owner.pk, prompt=p, aspect_ratio="16:9", duration=4) for p in "abc"]
    video_job_create(user_id=owner.pk, prompt="d", aspect_ratio="16:9", duration=4, start_frame="https://x.test/f.png")

    waiting = snapshot(admin_client)["now"]["waiting"]
    assert waiting["total"] == 3  # the video still preparing its frames is not in line
    assert [row["id"] for row in waiting["rows"]] == [str(job.id) for job in line]
    assert [row["position"] for row in waiting["rows"]] == [job_position(job=job) for job in line] == [1, 2, 3]
    # No video has completed yet: each is expected to take a minute, two at a time.
    assert [round(row["starts"] / 10) * 10 for row in waiting["rows"]] == [0, 0, 60]
    assert [round(row["finishes"] / 10) * 10 for row in waiting["rows"]] == [60, 60, 120]


def test_image_jobs_waiting_for_a_retry_are_listed_due_first(admin_client):
    due_at = timezone.now() + timedelta(seconds=8)
    later = ImageJobFactory.create(retries=2, error_code="rate_limited", next_run_at=due_at)
    now = ImageJobFactory.create(retries=1, error_code="provider_timeout", next_run_at=None)
    ImageJobFactory.create(retries=1, status=Job.Status.PROCESSING)  # running its retry
    ImageJobFactory.create(retries=0)  # first try
    ImageJobFactory.create(retries=1, kind=Job.Kind.VIDEO, stage=Job.Stage.WAITING)  # in the video line

    retrying = snapshot(admin_client)["now"]["retrying"]
    left = (due_at - timezone.now()).total_seconds()
    assert retrying["total"] == 2
    first, second = retrying["rows"]
    assert (first["id"], first["retries"], first["error_code"], first["due"]) == (str(now.id), 1, "provider_timeout", 0)
    assert (second["id"], second["retries"], second["error_code"]) == (str(later.id), 2, "rate_limited")
    # Eight seconds, less however long the test took since (the page rounds to a tenth).
    assert left - 0.05 <= second["due"] <= 8.05


def test_a_full_table_says_how_many_jobs_it_leaves_out(admin_client, monkeypatch):
    monkeypatch.setattr(queue, "ROWS", 2)
    ImageJobFactory.create_batch(3, retries=1)
    retrying = snapshot(admin_client)["now"]["retrying"]
    assert (len(retrying["rows"]), retrying["total"], retrying["more"]) == (2, 3, "The first 2 of 3")


def test_jobs_near_or_past_their_lease_or_start_deadline_are_listed_soonest_first(admin_client):
    now = timezone.now()
    lease_soon = ImageJobFactory.create(status=Job.Status.PROCESSING, lease_expires_at=now + timedelta(seconds=30))
    lease_past = ImageJobFactory.create(status=Job.Status.PROCESSING, lease_expires_at=now - timedelta(seconds=10))
    deadline = ImageJobFactory.create(start_deadline_at=now + timedelta(seconds=45))
    ImageJobFactory.create(status=Job.Status.PROCESSING, lease_expires_at=now + timedelta(minutes=5))
    ImageJobFactory.create(start_deadline_at=now + timedelta(seconds=20), started_at=now, retries=1)  # started
    ImageJobFactory.create(status=Job.Status.COMPLETED, lease_expires_at=now - timedelta(seconds=5))

    expiring = snapshot(admin_client)["now"]["expiring"]
    assert [row["id"] for row in expiring["rows"]] == [str(lease_past.id), str(lease_soon.id), str(deadline.id)]
    assert [row["limit"] for row in expiring["rows"]] == ["lease expires", "lease expires", "start deadline"]
    # Seconds from now, less however long the test took since (the page rounds to a tenth).
    elapsed = (timezone.now() - now).total_seconds()
    for row, seconds in zip(expiring["rows"], (-10, 30, 45), strict=True):
        assert seconds - elapsed - 0.05 <= row["at"] <= seconds + 0.05
    assert expiring["rows"][0]["status"] == "Processing"


def test_snapshot_reads_the_same_few_queries_whatever_the_queue_holds(admin_client, make_user):
    def queries() -> int:
        estimates._cache.clear()
        with CaptureQueriesContext(connection) as captured:
            snapshot(admin_client)
        return len(captured)

    owner = make_user(credits=500)
    video_job_create(user_id=owner.pk, prompt="one", aspect_ratio="16:9", duration=4)
    ImageJobFactory.create(retries=1, next_run_at=timezone.now())
    few = queries()
    for index in range(4):
        video_job_create(user_id=make_user(credits=50).pk, prompt=f"video {index}", aspect_ratio="16:9", duration=4)
    ImageJobFactory.create_batch(20, retries=1, next_run_at=timezone.now())
    ImageJobFactory.create_batch(20, status=Job.Status.PROCESSING, lease_expires_at=timezone.now())
    # The session and its user, 6 for the tables, 2 for the medians of the estimates, 4 for the charts.
    assert queries() == few <= 14


# --- Last 24 hours ------------------------------------------------------------------------------------


def test_jobs_per_minute_counts_the_jobs_created_in_each_minute_by_status(admin_client):
    minute = hour_start(2) + timedelta(minutes=7)
    for status in ("completed", "completed", "failed"):
        job_at(minute + timedelta(seconds=5), status=status)
    job_at(minute + timedelta(seconds=65))
    job_at(timezone.now() - timedelta(hours=25), status="completed")  # outside the window

    chart = snapshot(admin_client)["charts"]["jobs_per_minute"]
    assert chart["step"] == 60 and chart["summary"] == "total" and len(chart["x"]) == 24 * 60 + 1
    assert (at(chart, "completed", minute), at(chart, "failed", minute), at(chart, "queued", minute)) == (2, 1, 0)
    assert at(chart, "queued", minute + timedelta(minutes=1)) == 1
    assert drawn_total(chart) == 4


def test_timings_give_the_median_and_95th_percentile_per_kind_and_hour(admin_client):
    hour = hour_start(3)
    for wait, took in ((10, 2), (20, 4), (30, 6)):
        job_at(hour + timedelta(minutes=wait), wait=wait, took=took, status="completed")
    # A failed job waited like any other, but its time is not a generation time.
    job_at(hour + timedelta(minutes=40), wait=40, took=100, status="failed")
    job_at(hour + timedelta(minutes=50))  # not started: no wait yet
    job_at(hour + timedelta(minutes=5), wait=60, took=90, status="completed", kind=Job.Kind.VIDEO)

    charts = snapshot(admin_client)["charts"]
    wait, generation = charts["queue_wait"], charts["generation_time"]
    assert (at(wait, "image_p50", hour), at(wait, "image_p95", hour)) == (25, 38.5)
    assert (at(generation, "image_p50", hour), at(generation, "image_p95", hour)) == (4, 5.8)
    assert (at(wait, "video_p50", hour), at(generation, "video_p95", hour)) == (60, 90)
    assert at(wait, "image_p50", hour + timedelta(hours=1)) is None  # no job: a gap, not a zero
    assert wait["summary"] == "latest" and len(wait["x"]) == 25


def test_errors_count_failed_jobs_by_code_and_the_retries_per_hour(admin_client):
    hour = hour_start(1)
    job_at(hour, status="failed", error_code="provider_timeout", retries=3)
    job_at(hour, status="failed", error_code="provider_timeout")
    job_at(hour, status="failed", error_code="content_refused")
    job_at(hour, status="completed", retries=2)
    job_at(hour, retries=1, error_code="rate_limited")  # waiting for its retry
    job_at(hour, status="canceled", error_code="deadline_exceeded")

    chart = snapshot(admin_client)["charts"]["errors"]
    assert [series["key"] for series in chart["series"]] == [
        "failed:provider_timeout",
        "failed:content_refused",
        "retries",
    ]
    assert (at(chart, "failed:provider_timeout", hour), at(chart, "failed:content_refused", hour)) == (2, 1)
    assert at(chart, "retries", hour) == 6
    assert drawn_total(chart) == 9


def test_rare_error_codes_are_drawn_as_one_series(admin_client):
    hour = hour_start(1)
    for index, code in enumerate("abcdefgh"):
        for _ in range(10 - index):
            job_at(hour, status="failed", error_code=f"code_{code}")

    chart = snapshot(admin_client)["charts"]["errors"]
    keys = [series["key"] for series in chart["series"]]
    assert keys == [f"failed:code_{code}" for code in "abcdef"] + ["failed:other", "retries"]
    assert at(chart, "failed:other", hour) == 4 + 3  # code_g and code_h


def test_credits_chart_sets_what_was_charged_against_what_was_refunded_per_hour(admin_client, make_user, settings):
    settings.IMAGE_PRICES = {"flash-image": 2}
    owner = make_user(credits=50)  # a grant: neither charged nor refunded
    failing = image_job_create(user_id=owner.pk, prompt="a", aspect_ratio="1:1", quantity=3, image_urls=[])
    image_job_create(user_id=owner.pk, prompt="b", aspect_ratio="1:1", quantity=1, image_urls=[])
    job_fail(job_id=failing.id, error_code="provider_timeout", error_message="no answer")

    chart = snapshot(admin_client)["charts"]["credits"]
    this_hour = hour_start(0)
    assert (at(chart, "charged", this_hour), at(chart, "refunded", this_hour)) == (8, 6)
    assert drawn_total(chart) == 14
