"""Redis down for the web server: requests are still accepted and charged, and run once the reconciler resends them."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from credits.selectors import credit_balance
from generation.models import Job
from generation.recovery.reconciler import jobs_reconcile
from testing.clients import token_headers
from testing.live import child_env, web_server
from testing.waits import wait_finished
from testing.workers import run_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_accepts_jobs_while_redis_is_down_and_runs_them_once_it_is_back(
    broker, gateway_settings, settings, make_user, tmp_path: Path
):
    user = make_user(credits=5)
    headers = token_headers(user)
    # Nothing listens on port 1: for the web server, Redis is down.
    with web_server(child_env(REDIS_URL="redis://127.0.0.1:1/0"), tmp_path / "web.log") as base:
        response = requests.post(f"{base}/api/images/", json={"prompt": "despite redis"}, headers=headers, timeout=10)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert Job.objects.get(id=job_id).status == "queued"
    assert credit_balance(user_id=user.pk) == 4
    settings.RECONCILE_AFTER = 0
    worker = run_worker(broker, {"images"})
    try:
        assert jobs_reconcile().redispatched == 1
        assert wait_finished(job_id).status == "completed"
    finally:
        worker.stop()
