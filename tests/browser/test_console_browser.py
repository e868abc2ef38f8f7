"""The operator console in headless Chromium: a staff member signs in, sees the queue and a day of charts drawn
from the live server, in English and in Brazilian Portuguese, and watches the page refresh itself."""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.db import connections
from django.db.models import F
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect, sync_playwright

from credits.services import credit_grant
from generation.images.services import image_job_create
from generation.models import Job
from generation.services import job_fail
from generation.videos.services import video_job_create
from generation.videos.slots import video_slots
from testing.browser import CHROMIUM_ARGS, CHROMIUM_PATH, STEP_TIMEOUT_MS, browser_test
from testing.factories import UserFactory
from testing.live import child_env, web_server
from testing.videos import video_queue_forget

PASSWORD = "a-console-password"
CONSOLE = "/admin/generation/job/console/"
ERROR_CODES = ("provider_timeout", "rate_limited", "provider_unavailable", "content_refused", "worker_lost")


def clock_at(moment: datetime) -> AbstractContextManager[Any]:
    """Let the services run as if it were ``moment``: their rows and ledger entries carry that time."""
    return mock.patch("django.utils.timezone.now", return_value=moment)


def image(owner: Any, prompt: str, quantity: int = 1) -> Job:
    return image_job_create(user_id=owner.pk, prompt=prompt, aspect_ratio="1:1", quantity=quantity, image_urls=[])


def video(owner: Any, prompt: str) -> Job:
    return video_job_create(user_id=owner.pk, prompt=prompt, aspect_ratio="16:9", duration=4)


def past_job(owner: Any, created: datetime, rng: random.Random) -> str:
    """One job of the past day, created and charged (and refunded when it failed) through the services at its own
    times; returns its status."""
    is_video = rng.random() < 0.15
    with clock_at(created):
        job = video(owner, "a past take") if is_video else image(owner, "a past picture", rng.choice((1, 1, 2, 4)))
    started = created + timedelta(seconds=rng.uniform(20, 240) if is_video else rng.expovariate(1 / 3) + 0.5)
    finished = started + timedelta(seconds=rng.uniform(40, 180) if is_video else rng.uniform(2, 12))
    roll = rng.random()
    retries = rng.choice((1, 1, 2, 3)) if roll < 0.2 else 0
    if roll < 0.08:
        with clock_at(finished):
            job_fail(job_id=job.id, error_code=rng.choice(ERROR_CODES), error_message="The provider gave up.")
        Job.objects.filter(id=job.id).update(started_at=started, retries=retries)
        return Job.Status.FAILED
    done = Job.Stage.DONE if is_video else ""
    Job.objects.filter(id=job.id).update(
        status=Job.Status.COMPLETED, stage=done, started_at=started, finished_at=finished, retries=retries
    )
    Job.objects.filter(id=job.id).update(result_count=F("quantity"))
    return Job.Status.COMPLETED


def seed_day(now: datetime) -> Counter[str]:
    """A representative day: busier in some hours, 15 % videos, a few failures and retries; then the queue as it
    stands now. Returns how many past jobs ended in each status."""
    rng = random.Random(7)
    owners = [UserFactory.create(username=name) for name in ("ana", "bruno", "carla", "davi")]
    with clock_at(now - timedelta(hours=25)):
        for owner in owners:
            credit_grant(user_id=owner.pk, amount=100_000, note="seed")
    statuses: Counter[str] = Counter()
    for hours_ago in range(23, -1, -1):
        busy = 6 + int(10 * abs(((hours_ago + 5) % 12) - 6) / 6)
        for _ in range(busy):
            created = now - timedelta(hours=hours_ago, seconds=rng.uniform(600, 3600))
            statuses[past_job(rng.choice(owners), created, rng)] += 1

    ana, bruno, carla, davi = owners
    running = video(ana, "a lighthouse in a storm")
    Job.objects.filter(id=running.id).update(
        created_at=now - timedelta(seconds=170),
        status=Job.Status.PROCESSING,
        stage=Job.Stage.GENERATING,
        operation_name="models/veo-3.0-generate-001/operations/k2x9",
        started_at=now - timedelta(seconds=95),
    )
    video_slots().acquire(str(running.id), lease_seconds=600)
    for owner, prompt in ((bruno, "waves at dusk"), (carla, "a city timelapse"), (ana, "a fox in the snow")):
        video(owner, prompt)
    for retries, code, due in ((1, "rate_limited", 70), (2, "provider_timeout", 130)):
        Job.objects.filter(id=image(davi, "a retried poster").id).update(
            retries=retries, error_code=code, error_message="Retrying.", next_run_at=now + timedelta(seconds=due)
        )
    Job.objects.filter(id=image(bruno, "a slow album", 4).id).update(
        created_at=now - timedelta(seconds=20),
        status=Job.Status.PROCESSING,
        started_at=now - timedelta(seconds=16),
        lease_expires_at=now + timedelta(seconds=40),
    )
    image_job_create(
        user_id=carla.pk,
        prompt="a hurried card",
        aspect_ratio="1:1",
        quantity=1,
        image_urls=[],
        start_within_seconds=55,
    )
    return statuses


@pytest.fixture
def operator() -> Any:
    user = UserFactory.create(username="olivia", is_staff=True, is_superuser=True)
    user.set_password(PASSWORD)
    user.save()
    return user


@pytest.fixture
def day(transactional_db: None, broker: Any) -> Iterator[Counter[str]]:
    yield seed_day(timezone.now())
    video_queue_forget()


@pytest.fixture
def browser(operator: Any, day: Counter[str], tmp_path: Path) -> Iterator[tuple[Browser, str]]:
    """Chromium and the real web server (uvicorn, serving the static files as ``make run`` does), started after
    the data: Playwright's sync API leaves an event loop in this thread, where the ORM then refuses to run."""
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    with (
        web_server(child_env(DEBUG="1", VIDEO_MAX_CONCURRENT="2"), tmp_path / "web.log") as base,
        sync_playwright() as playwright,
    ):
        chromium = playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
        yield chromium, base
        chromium.close()


def open_console(browser: tuple[Browser, str], operator: Any, locale: str) -> Page:
    """Sign in through the admin's form and land on the console, its charts drawn."""
    chromium, base = browser
    context = chromium.new_context(base_url=base, locale=locale, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    page = context.new_page()
    page.clock.install()
    page.goto(CONSOLE)
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    page.locator("#id_username").fill(operator.username)
    page.locator("#id_password").fill(PASSWORD)
    page.locator("input[type=submit]").click()
    expect(page).to_have_url(f"{base}{CONSOLE}")
    expect(page.locator("[data-chart] canvas")).to_have_count(5)
    return page


def legend(page: Page, chart: str, label: str) -> Any:
    return page.locator(f'[data-chart="{chart}"] .u-legend .u-series', has_text=label).locator(".u-value")


def rows(page: Page, table: str) -> Any:
    return page.locator(f"#console-{table} tbody tr")


def in_a_thread_of_its_own(work: Callable[[], object]) -> None:
    """Run ORM work away from the event loop that Playwright keeps in the test's thread; raise what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def late_arrival() -> None:
    eva = UserFactory.create(username="eva")
    credit_grant(user_id=eva.pk, amount=100, note="seed")
    video(eva, "a late arrival")


@browser_test
def test_console_shows_the_queue_and_the_day_and_refreshes_itself(browser, operator, day, tmp_path: Path):
    page = open_console(browser, operator, "en-US")
    expect(page.locator("#console-generating h2")).to_contain_text("1 of 2 slots in use")
    expect(rows(page, "generating")).to_have_count(1)
    expect(rows(page, "generating").first).to_contain_text("Generating")
    expect(rows(page, "generating").first).to_contain_text("slot held")
    expect(rows(page, "waiting")).to_have_count(3)
    expect(rows(page, "waiting").locator("td:first-child")).to_have_text(["1", "2", "3"])
    expect(rows(page, "retrying")).to_have_count(2)
    expect(rows(page, "retrying").first).to_contain_text("rate_limited")
    expect(rows(page, "expiring")).to_have_count(2)
    expect(rows(page, "expiring").first).to_contain_text("lease expires")
    # The legends show the day's totals until the pointer rests on a chart.
    expect(legend(page, "jobs_per_minute", "Completed")).to_have_text(str(day[Job.Status.COMPLETED]))
    expect(legend(page, "jobs_per_minute", "Failed")).to_have_text(str(day[Job.Status.FAILED]))
    expect(legend(page, "credits", "Charged")).not_to_have_text(re.compile(r"^(0|—)$"))
    expect(legend(page, "queue_wait", "Image, median")).to_have_text(re.compile(r"^\d+(\.\d)?$"))
    page.screenshot(path=tmp_path / "console.png", full_page=True)

    link = rows(page, "generating").first.locator("a")
    assert re.fullmatch(r"/admin/generation/job/[0-9a-f-]{36}/change/", link.get_attribute("href") or "")

    in_a_thread_of_its_own(late_arrival)
    with page.expect_response(re.compile(r"/console/data/$")) as refreshed:
        page.clock.fast_forward(16_000)
    assert refreshed.value.status == 200
    expect(rows(page, "waiting")).to_have_count(4)
    expect(page.locator("#console-waiting .console-total")).to_have_text("4")


@browser_test
def test_console_speaks_portuguese_to_a_brazilian_browser(browser, operator, tmp_path: Path):
    page = open_console(browser, operator, "pt-BR")
    expect(page.get_by_role("heading", name="Agora")).to_be_visible()
    expect(page.get_by_role("heading", name="Últimas 24 horas")).to_be_visible()
    expect(page.locator("#console-generating h2")).to_contain_text("Vídeos em geração")
    expect(page.locator("#console-generating h2")).to_contain_text("1 de 2 vagas em uso")
    expect(rows(page, "generating").first).to_contain_text("vaga ocupada")
    expect(rows(page, "expiring").first).to_contain_text("a reserva expira")
    expect(legend(page, "jobs_per_minute", "Concluída")).not_to_have_text("—")
    expect(page.locator("#console .u-legend").first).to_contain_text("Horário")
    expect(page.locator("#console .u-legend").first).to_contain_text("Total em 24 h")
    page.screenshot(path=tmp_path / "console-pt-br.png", full_page=True)
