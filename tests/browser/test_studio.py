"""The studio page driven in headless Chromium end to end, against the real server and worker."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Dialog, Page, Route, expect, sync_playwright

from testing.browser import CHROMIUM_ARGS, CHROMIUM_PATH, STEP_TIMEOUT_MS, browser_test
from testing.fakes.provider import FakeProviderServer
from testing.fakes.veo import FakeVeoServer
from testing.live import BASE_DIR, child_env, start_worker, stop, web_server
from testing.videos import video_queue_forget

ARTIFACTS = BASE_DIR / "test-artifacts"
PASSWORD = "a-studio-password"


@pytest.fixture
def studio_credits() -> int:
    return 40


@pytest.fixture
def studio_user(make_user, studio_credits: int) -> Any:
    user = make_user(credits=studio_credits, username="ana")
    user.set_password(PASSWORD)
    user.save()
    return user


@pytest.fixture
def stack_env() -> dict[str, str]:
    """Settings a test adds to the server's and the worker's environment."""
    return {}


@pytest.fixture
def stack(provider: FakeProviderServer, veo: FakeVeoServer, tmp_path: Path, stack_env: dict[str, str]) -> Iterator[str]:
    """The real uvicorn server (DEBUG, as ``make run`` serves static files) and a real worker; yield the base URL."""
    veo.generation_seconds = 2
    env = child_env(
        **stack_env,
        DEBUG="1",
        SERVE_MEDIA="1",
        IMAGE_PROVIDER="gateway",
        AI_GATEWAY_URL=provider.url,
        AI_GATEWAY_API_KEY="test-key",
        IMAGE_RETRY_DELAYS="0.5,1,2",
        VIDEO_PROVIDER="veo",
        GEMINI_API_BASE=veo.url,
        GEMINI_API_KEY="veo-key",
        VIDEO_MAX_CONCURRENT="1",
        VIDEO_FIRST_POLL="0.2",
        VIDEO_POLL_INTERVAL="0.2",
        VIDEO_DISPATCH_TICK="0.2",
    )
    worker = start_worker(env, tmp_path / "worker.log", threads=4)
    try:
        with web_server(env, tmp_path / "web.log") as base:
            yield base
    finally:
        stop(worker)
        # A video the worker left mid-generation keeps its slot lease (30 s here): not into the next test.
        video_queue_forget()


@pytest.fixture
def page(stack: str, studio_user: Any) -> Iterator[Page]:
    """A headless Chromium page signed in to the studio through the login page.

    Started after the database fixtures: Playwright's sync API leaves an event loop running in this thread, so
    the test body talks to the server only, never to the ORM.
    """
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=stack, locale="en-US", viewport={"width": 1280, "height": 900})
        context.set_default_timeout(STEP_TIMEOUT_MS)
        page = context.new_page()
        page.goto("/")
        expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
        screenshot(page, "login")
        page.get_by_label("Username").fill(studio_user.username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{stack}/")
        expect(page.locator("#connection")).to_have_attribute("data-mode", "live")
        record_job_details(page)
        yield page
        browser.close()


class StreamCuttingProxy:
    """A TCP proxy in front of the web server that can drop the event streams passing through it, as a flaky
    network or a load balancer would, and refuse new ones while every other request goes through."""

    STREAM_REQUEST = b"GET /api/events/"

    def __init__(self, target: str) -> None:
        self._target = (urlsplit(target).hostname or "127.0.0.1", urlsplit(target).port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        # Guards the set of stream connections and the refusing flag, shared by the piping threads.
        self._lock = threading.Lock()
        self._streams: set[socket.socket] = set()
        self._refusing = False
        threading.Thread(target=self._accept, name="stream-cutting-proxy", daemon=True).start()

    def cut_streams(self) -> None:
        """Drop every open event stream and refuse new ones until ``restore_streams``."""
        with self._lock:
            self._refusing = True
            for browser_side in self._streams:
                with suppress(OSError):
                    browser_side.shutdown(socket.SHUT_RDWR)
            self._streams.clear()

    def restore_streams(self) -> None:
        """Let event streams through again."""
        with self._lock:
            self._refusing = False

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                browser_side, _address = self._listener.accept()
            except OSError:
                return
            server_side = socket.create_connection(self._target)
            for source, sink in ((browser_side, server_side), (server_side, browser_side)):
                threading.Thread(target=self._pipe, args=(source, sink, source is browser_side), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_browser: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if from_browser and self.STREAM_REQUEST in chunk:
                    with self._lock:
                        if self._refusing:
                            break
                        self._streams.add(source)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"studio-{name}.png", full_page=True)


def record_job_details(page: Page) -> None:
    """Record in the page every status line each job card shows, in order, however briefly it shows it."""
    page.evaluate(
        """() => {
            window.seenDetails = {};
            const record = () => {
                for (const card of document.querySelectorAll(".job")) {
                    const prompt = card.querySelector(".job-prompt").textContent;
                    const detail = card.querySelector(".job-detail").textContent;
                    const seen = (window.seenDetails[prompt] ??= []);
                    if (seen.at(-1) !== detail) seen.push(detail);
                }
            };
            const observer = new MutationObserver(record);
            observer.observe(document.getElementById("jobs"), {childList: true, subtree: true, characterData: true});
        }"""
    )


def wait_until(page: Page, condition: Callable[[], bool]) -> None:
    """Wait for a condition on what the test saw, letting Playwright run its handlers meanwhile."""
    deadline = time.monotonic() + STEP_TIMEOUT_MS / 1000
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(100)


def details_seen(page: Page, prompt: str) -> list[str]:
    return list(page.evaluate("(prompt) => window.seenDetails[prompt] ?? []", prompt))


def in_order(seen: list[str], *expected: str) -> bool:
    """Whether each expected text occurs in ``seen``, one after another."""
    remaining = iter(seen)
    return all(any(text in line for line in remaining) for text in expected)


def submit_images(page: Page, prompt: str, quantity: int, reference_urls: str = "") -> None:
    form = page.locator("#image-form")
    form.get_by_label("Prompt").fill(prompt)
    form.get_by_label("Quantity").fill(str(quantity))
    form.get_by_label("Reference image URLs").fill(reference_urls)
    form.get_by_role("button", name="Generate images").click()


def submit_video(page: Page, prompt: str) -> None:
    form = page.locator("#video-form")
    form.get_by_label("Prompt").fill(prompt)
    form.get_by_label("Duration").select_option("4")
    form.get_by_role("button", name="Generate video").click()
    expect(job_card(page, prompt)).to_be_visible()


def job_card(page: Page, prompt: str, status: str = "") -> Any:
    selector = f'.job[data-status="{status}"]' if status else ".job"
    return page.locator(selector, has_text=prompt)


def call_api(page: Page, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call the API from the page, with its session and CSRF token; return the answer's JSON."""
    return page.evaluate(
        """async ([method, path, body]) => {
            const headers = {
                "Content-Type": "application/json",
                "X-CSRFToken": document.querySelector("meta[name=csrf-token]").content,
            };
            const response = await fetch(path, {method, headers, body: body && JSON.stringify(body)});
            return response.json();
        }""",
        [method, path, body],
    )


def jobs_with_prompt(page: Page, prompt: str) -> list[dict[str, Any]]:
    return [job for job in call_api(page, "GET", "/api/jobs/")["results"] if job["prompt"] == prompt]


@browser_test
def test_images_show_progress_and_appear_without_a_reload(page: Page, provider: FakeProviderServer):
    provider.script("lighthouse", ["slow:1"])
    page.evaluate("window.notReloaded = true")
    submit_images(page, "a lighthouse at dawn", 3)

    card = job_card(page, "a lighthouse at dawn")
    expect(card).to_contain_text("1 of 3 images")
    screenshot(page, "images-in-progress")
    expect(card.locator(".badge")).to_have_text("Completed")
    expect(page.locator("#gallery img")).to_have_count(3)
    page.wait_for_function("[...document.querySelectorAll('#gallery img')].every((img) => img.naturalWidth > 0)")
    expect(page.locator("#balance")).to_have_text("37")
    expect(page.locator(".toast", has_text="Ready: a lighthouse at dawn")).to_be_visible()
    screenshot(page, "images-completed")

    assert in_order(details_seen(page, "a lighthouse at dawn"), "1 of 3 images", "2 of 3 images", "3 of 3 images")
    assert page.evaluate("window.notReloaded") is True


@browser_test
def test_three_videos_count_down_their_queue_positions(page: Page, veo: FakeVeoServer):
    for prompt in ("first wave", "second wave", "third wave"):
        submit_video(page, prompt)
    expect(job_card(page, "third wave")).to_contain_text(re.compile(r"In queue, position [23]"))
    screenshot(page, "videos-queued")

    expect(job_card(page, "third wave")).to_contain_text("In queue, position 1")
    screenshot(page, "videos-position-1")
    for prompt in ("first wave", "second wave", "third wave"):
        expect(job_card(page, prompt).locator(".badge")).to_have_text("Completed")
    expect(page.locator("#gallery video")).to_have_count(3)
    # Metadata loaded: the browser can play what the worker stored.
    page.wait_for_function("document.querySelector('#gallery video').readyState >= 1")
    # Three 4 s videos at the default model's 3 credits a second.
    expect(page.locator("#balance")).to_have_text(str(40 - 3 * 4 * 3))
    screenshot(page, "videos-completed")

    third = details_seen(page, "third wave")
    assert in_order(third, "In queue, position 2", "In queue, position 1", "Generating the video", "Video ready"), third
    assert veo.max_concurrency == 1


@browser_test
def test_polling_takes_over_when_the_stream_is_cut(page: Page, stack: str, provider: FakeProviderServer):
    proxy = StreamCuttingProxy(stack)
    try:
        # The session cookie belongs to the host, not the port: the page stays signed in through the proxy.
        page.goto(f"{proxy.url}/")
        indicator = page.locator("#connection")
        expect(indicator).to_have_attribute("data-mode", "live")
        record_job_details(page)
        provider.script("harbour", ["slow:1.5"])
        submit_images(page, "a quiet harbour", 3)
        card = job_card(page, "a quiet harbour")
        expect(card).to_contain_text("1 of 3 images")

        polls: list[str] = []
        page.on("request", lambda request: polls.append(request.url) if "/api/jobs/" in request.url else None)
        proxy.cut_streams()
        expect(indicator).to_have_attribute("data-mode", "polling")
        expect(indicator).to_have_text("Polling")
        screenshot(page, "polling")

        expect(card.locator(".badge")).to_have_text("Completed")
        expect(page.locator("#gallery img")).to_have_count(3)
        # Still polling: the completion came through GET /api/jobs/{id}/, not through a stream.
        expect(indicator).to_have_attribute("data-mode", "polling")
        assert any(re.search(r"/api/jobs/[0-9a-f-]{36}/$", url) for url in polls), polls
        assert in_order(details_seen(page, "a quiet harbour"), "1 of 3 images", "3 of 3 images")

        proxy.restore_streams()
        expect(indicator).to_have_attribute("data-mode", "live")
        polls.clear()
        page.wait_for_timeout(4000)
        assert polls == [], "polling goes on after the stream came back"
        screenshot(page, "live-again")

        # A server that answers the stream with an error closes the EventSource for good (readyState CLOSED):
        # the browser stops retrying, so the page itself opens a new stream a little later.
        refusals: list[str] = []

        def refuse(route: Route) -> None:
            refusals.append(route.request.url)
            route.fulfill(status=503)

        page.route("**/api/events/**", refuse)
        proxy.cut_streams()
        proxy.restore_streams()
        expect(indicator).to_have_attribute("data-mode", "polling")
        # After a 503 the browser does not retry by itself: a second request is the page opening a new stream.
        wait_until(page, lambda: len(refusals) >= 2)
        page.unroute("**/api/events/**")
        expect(indicator).to_have_attribute("data-mode", "live")
    finally:
        proxy.close()


@browser_test
def test_failed_job_shows_its_reason_and_try_again_resubmits_it(page: Page, provider: FakeProviderServer):
    provider.script("forbidden castle", ["content_policy", "ok"])
    submit_images(page, "a forbidden castle", 2)

    failed = job_card(page, "a forbidden castle", "failed")
    expect(failed).to_contain_text("safety system")
    expect(page.locator(".toast-error", has_text="Failed: a forbidden castle")).to_be_visible()
    expect(page.locator("#balance")).to_have_text("40")
    screenshot(page, "failed")

    failed.get_by_role("button", name="Try again").click()
    expect(job_card(page, "a forbidden castle", "completed")).to_contain_text("2 of 2 images")
    expect(page.locator("#gallery img")).to_have_count(2)
    expect(page.locator("#balance")).to_have_text("38")
    expect(failed).to_be_visible()
    screenshot(page, "tried-again")


@browser_test
@pytest.mark.parametrize("studio_credits", [3])
def test_form_shows_field_errors_and_refusals_and_switches_language(page: Page):
    submit_images(page, "a cat", 1, reference_urls="not-a-url")
    expect(page.locator("#image-urls-error")).to_contain_text("Enter an http or https URL.")
    expect(page.get_by_label("Reference image URLs")).to_have_attribute("aria-invalid", "true")

    submit_images(page, "four cats", 4)
    expect(page.locator("#image-urls-error")).to_be_hidden()
    expect(page.locator(".toast-error")).to_contain_text("This request costs 4 credits and the balance is 3.")
    screenshot(page, "refused")

    page.get_by_role("button", name="PT-BR").click()
    expect(page.get_by_role("heading", name="Imagens")).to_be_visible()
    expect(page.locator("#connection")).to_have_text("Ao vivo")
    expect(page.locator("#image-form .cost")).to_have_text("Custa 1 crédito")
    screenshot(page, "portuguese")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "portuguese-phone")


@browser_test
def test_cancel_on_a_queued_video_cancels_it_and_refunds_it(page: Page, veo: FakeVeoServer):
    # The first video holds the only slot long enough for the next ones to wait in line.
    veo.generation_seconds = 60
    for prompt in ("a long tide", "a short tide", "a late tide"):
        submit_video(page, prompt)
    waiting = job_card(page, "a short tide")
    expect(waiting).to_contain_text("In queue, position 1")
    # Three 4 s videos at 3 credits a second.
    expect(page.locator("#balance")).to_have_text(str(40 - 3 * 12))

    waiting.get_by_role("button", name="Cancel").click()
    expect(waiting.locator(".badge")).to_have_text("Canceled")
    expect(waiting.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(page.locator("#balance")).to_have_text(str(40 - 2 * 12))
    expect(job_card(page, "a late tide")).to_contain_text("In queue, position 1")
    screenshot(page, "video-canceled")

    # A cancel that comes too late (the job was canceled meanwhile, in another tab say) is a 409, shown as a toast.
    def cancel_twice(route: Route) -> None:
        route.fetch()
        route.continue_()

    page.route("**/cancel/", cancel_twice)
    late = job_card(page, "a late tide")
    late.get_by_role("button", name="Cancel").click()
    expect(page.locator(".toast-error", has_text="This job has already finished.")).to_be_visible()
    expect(late.locator(".badge")).to_have_text("Canceled")
    expect(page.locator("#balance")).to_have_text(str(40 - 12))
    assert jobs_with_prompt(page, "a late tide")[0]["status"] == "canceled"
    page.unroute("**/cancel/")

    # A video the provider is making is refunded by half, so the page asks first.
    questions: list[str] = []

    def accept(dialog: Dialog) -> None:
        questions.append(dialog.message)
        dialog.accept()

    running = job_card(page, "a long tide")
    expect(running).to_contain_text("Generating the video")
    page.once("dialog", accept)
    running.get_by_role("button", name="Cancel").click()
    expect(running.locator(".badge")).to_have_text("Canceled")
    expect(page.locator("#balance")).to_have_text(str(40 - 12 // 2))
    assert "refunds half" in questions[0], questions


@browser_test
def test_double_click_on_submit_creates_one_job_and_charges_once(page: Page):
    keys: list[str] = []
    page.on(
        "request",
        lambda request: (
            keys.append(request.headers.get("idempotency-key", ""))
            if request.method == "POST" and request.url.endswith("/api/images/")
            else None
        ),
    )
    form = page.locator("#image-form")
    form.get_by_label("Prompt").fill("a single heron")
    form.get_by_label("Quantity").fill("2")
    form.get_by_role("button", name="Generate images").dblclick()

    expect(job_card(page, "a single heron", "completed")).to_contain_text("2 of 2 images")
    expect(page.locator("#balance")).to_have_text("38")
    assert len(jobs_with_prompt(page, "a single heron")) == 1
    assert len(keys) == 1 and re.fullmatch(r"[0-9a-f-]{32,36}", keys[0]), keys
    expect(page.locator(".job")).to_have_count(1)


@browser_test
def test_submit_retried_after_a_lost_answer_returns_the_first_job(page: Page):
    keys: list[str] = []

    def lose_first_answer(route: Route) -> None:
        keys.append(route.request.headers.get("idempotency-key", ""))
        if len(keys) == 1:
            # The server makes the job; the answer never reaches the page.
            route.fetch()
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/api/images/", lose_first_answer)
    submit_images(page, "a lost answer", 1)
    expect(page.locator(".toast-error", has_text="The server could not be reached")).to_be_visible()
    page.locator("#image-form").get_by_role("button", name="Generate images").click()
    expect(job_card(page, "a lost answer", "completed")).to_be_visible()
    wait_until(page, lambda: len(keys) == 2)
    assert keys[0] == keys[1], keys
    expect(page.locator("#balance")).to_have_text("39")
    assert len(jobs_with_prompt(page, "a lost answer")) == 1

    # Once answered, the same form submitted again is a new request: a second job, with a key of its own.
    page.locator("#image-form").get_by_role("button", name="Generate images").click()
    expect(job_card(page, "a lost answer", "completed")).to_have_count(2)
    expect(page.locator("#balance")).to_have_text("38")
    assert len(keys) == 3 and keys[2] != keys[0], keys


@browser_test
@pytest.mark.parametrize("stack_env", [{"IMAGE_PRICES": json.dumps({"flash-image": 1, "pro-image": 4})}])
def test_cost_note_follows_the_form_and_matches_the_quote(page: Page):
    def assert_cost(kind: str, credits: int, body: dict[str, Any]) -> None:
        note = page.locator(f"#{kind}-form .cost")
        expect(note).to_contain_text(f"Costs {credits} credit")
        quote = call_api(page, "POST", "/api/quotes/", {"kind": kind, "prompt": "a quote", **body})
        assert quote["credit_cost"] == credits, quote
        expect(note).to_have_attribute("data-covered", "true" if quote["affordable"] else "false")

    images = page.locator("#image-form")
    assert_cost("image", 1, {"quantity": 1, "model": "flash-image"})
    images.get_by_label("Quantity").fill("3")
    assert_cost("image", 3, {"quantity": 3, "model": "flash-image"})
    images.get_by_label("Model").select_option("pro-image")
    assert_cost("image", 12, {"quantity": 3, "model": "pro-image"})

    videos = page.locator("#video-form")
    standard, fast = "veo-3.0-generate-001", "veo-3.0-fast-generate-001"
    # The default: 8 seconds of the standard model in 720p, at 3 credits a second.
    assert_cost("video", 24, {"duration": 8, "model": standard, "resolution": "720p"})
    videos.get_by_label("Duration").select_option("4")
    assert_cost("video", 12, {"duration": 4, "model": standard, "resolution": "720p"})
    videos.get_by_label("Model").select_option(fast)
    assert_cost("video", 4, {"duration": 4, "model": fast, "resolution": "720p"})
    videos.get_by_label("Resolution").select_option("1080p")
    assert_cost("video", 8, {"duration": 4, "model": fast, "resolution": "1080p"})
    videos.get_by_label("Model").select_option(standard)
    videos.get_by_label("Duration").select_option("8")
    assert_cost("video", 48, {"duration": 8, "model": standard, "resolution": "1080p"})
    expect(videos.locator(".cost")).to_have_text("Costs 48 credits, more than your balance of 40")
    screenshot(page, "cost-over-balance")

    # 1080p is made in 16:9 only: a portrait video falls back to 720p.
    videos.get_by_label("Aspect ratio").select_option("9:16")
    expect(videos.get_by_label("Resolution")).to_have_value("720p")
    expect(videos.locator("option[value='1080p']")).to_be_disabled()
    assert_cost("video", 24, {"duration": 8, "model": standard, "resolution": "720p", "aspect_ratio": "9:16"})


@browser_test
def test_queued_video_shows_when_it_should_start(page: Page, veo: FakeVeoServer):
    veo.generation_seconds = 60
    submit_video(page, "an early swell")
    submit_video(page, "a later swell")
    detail = job_card(page, "a later swell").locator(".job-detail")
    expect(detail).to_have_text(re.compile(r"^In queue, position 1 · starts in about \d+ (s|min)$"))
    screenshot(page, "video-eta")
    # It counts down between events.
    shown = detail.text_content() or ""
    expect(detail).not_to_have_text(shown, timeout=45_000)
    expect(detail).to_contain_text("In queue, position 1 · starts in about")

    page.get_by_role("button", name="PT-BR").click()
    later = job_card(page, "a later swell").locator(".job-detail")
    expect(later).to_have_text(re.compile(r"^Na fila, posição 1 · começa em cerca de \d+ (s|min)$"))


@browser_test
def test_webhook_panel_shows_the_signing_secret_and_rotates_it(page: Page):
    panel = page.locator("#webhooks")
    secret = page.get_by_label("Signing secret")

    page.route("**/api/webhooks/secret/", lambda route: route.fulfill(status=503, json={}))
    panel.locator("summary").click()
    expect(panel.get_by_role("status")).to_contain_text("Webhook settings are unavailable right now.")
    expect(panel.get_by_role("button", name="Rotate")).to_be_disabled()
    page.unroute("**/api/webhooks/secret/")
    panel.locator("summary").click()
    panel.locator("summary").click()

    expect(secret).to_have_value(re.compile(r"^whsec_[A-Za-z0-9+/=]{40,}$"))
    expect(secret).to_have_attribute("type", "password")
    panel.get_by_role("button", name="Show", exact=True).click()
    expect(secret).to_have_attribute("type", "text")
    first = secret.input_value()

    page.once("dialog", lambda dialog: dialog.dismiss())
    panel.get_by_role("button", name="Rotate").click()
    page.once("dialog", lambda dialog: dialog.accept())
    panel.get_by_role("button", name="Rotate").click()
    expect(panel.get_by_role("status")).to_contain_text("Secret rotated")
    expect(secret).to_have_value(re.compile(r"^whsec_"))
    expect(secret).not_to_have_value(first)
    assert call_api(page, "GET", "/api/webhooks/secret/")["secret"] == secret.input_value()
    screenshot(page, "webhooks")
