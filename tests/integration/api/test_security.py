"""Hardening: authentication everywhere, rate limits, body limits, and settings that refuse to run unsafely."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from django.urls import reverse

from core.throttling import ScopedRateThrottleFailOpen
from credits.selectors import credit_balance
from testing.live import BASE_DIR

PRODUCTION_SECRET = "k3y-" + "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRS"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "name", "kwargs"),
    [
        ("post", "image-create", {}),
        ("post", "video-create", {}),
        ("get", "job-list", {}),
        ("get", "job-detail", {"job_id": "00000000-0000-0000-0000-000000000000"}),
        ("post", "job-cancel", {"job_id": "00000000-0000-0000-0000-000000000000"}),
        ("get", "generation-list", {}),
        ("get", "credits", {}),
        ("get", "events", {}),
    ],
)
def test_every_api_endpoint_requires_authentication(client, method, name, kwargs):
    response = getattr(client, method)(reverse(name, kwargs=kwargs))
    assert response.status_code == 401


@pytest.mark.django_db
def test_the_admin_is_for_staff_only(client, make_user):
    user = make_user()
    client.force_login(user)
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_create_requests_are_rate_limited_per_user(api, user, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"create": "3/min"}}
    codes = [api.post("/api/images/", {"prompt": "burst"}, format="json").status_code for _ in range(5)]
    assert codes == [202, 202, 202, 429, 429]
    assert credit_balance(user_id=user.pk) == 7


def test_the_rate_limit_counts_concurrent_requests_exactly(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"create": "5/min"}}
    request = SimpleNamespace(user=SimpleNamespace(pk=uuid.uuid4().int, is_authenticated=True))
    view = SimpleNamespace(throttle_scope="create")
    start = threading.Barrier(20)

    def attempt(_: int) -> bool:
        start.wait()
        return ScopedRateThrottleFailOpen().allow_request(request, view)  # type: ignore[arg-type]

    with ThreadPoolExecutor(20) as pool:
        allowed = list(pool.map(attempt, range(20)))
    assert allowed.count(True) == 5
    refused = ScopedRateThrottleFailOpen()
    assert not refused.allow_request(request, view)  # type: ignore[arg-type]
    assert 0 < (refused.wait() or 0) <= 60


@pytest.mark.django_db
def test_an_oversized_body_is_refused_before_parsing(api, user):
    response = api.post("/api/images/", {"prompt": "x" * (300 * 1024)}, format="json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert credit_balance(user_id=user.pk) == 10


def run_settings(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    """Run manage.py with only the given deployment variables (and this run's services) set."""
    keep = {name: os.environ[name] for name in ("PATH", "DATABASE_URL", "REDIS_URL", "HOME") if name in os.environ}
    return subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=BASE_DIR,
        env={**keep, "DJANGO_SETTINGS_MODULE": "project.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"DEPLOYMENT": "production", "DEBUG": "1", "SECRET_KEY": PRODUCTION_SECRET}, "DEBUG must be off"),
        ({"DEPLOYMENT": "production"}, "SECRET_KEY must be set"),
        ({"DEPLOYMENT": "production", "SECRET_KEY": "short"}, "random SECRET_KEY"),
    ],
)
def test_production_settings_refuse_to_start_unsafely(env, complaint):
    result = run_settings(env, "check")
    assert result.returncode != 0
    assert complaint in result.stderr


def test_production_settings_pass_the_deployment_checklist():
    result = run_settings(
        {"DEPLOYMENT": "production", "SECRET_KEY": PRODUCTION_SECRET, "ALLOWED_HOSTS": "api.example.com"},
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
