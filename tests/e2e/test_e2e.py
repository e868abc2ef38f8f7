"""End to end: the real web server and a real rundramatiq worker process against the fake gateway."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from django.conf import settings

from credits.models import CreditLedgerEntry
from credits.selectors import credit_balance, credit_ledger_total
from generation.models import Job
from testing.clients import token_headers
from testing.live import child_env, start_worker, stop, web_server
from testing.waits import poll_until_finished

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_three_jobs_through_the_real_server_and_worker(make_user, provider, tmp_path: Path):
    user = make_user(credits=20)
    headers = token_headers(user)
    provider.script("wobbly", ["500", "500", "ok"])
    provider.script("broken", ["500"])
    env = child_env(
        IMAGE_PROVIDER="gateway",
        AI_GATEWAY_URL=provider.url,
        AI_GATEWAY_API_KEY="test-key",
        IMAGE_RETRY_DELAYS="0.2,0.4,0.8",
        SERVE_MEDIA="1",
    )
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        with web_server(env, tmp_path / "web.log") as base:
            submitted = {}
            for prompt, quantity in (("steady lighthouse", 2), ("wobbly lighthouse", 1), ("broken lighthouse", 3)):
                response = requests.post(
                    f"{base}/api/images/", json={"prompt": prompt, "quantity": quantity}, headers=headers, timeout=5
                )
                assert response.status_code == 202, response.text
                submitted[prompt.split()[0]] = response.json()["id"]
            finished = {name: poll_until_finished(base, headers, job_id) for name, job_id in submitted.items()}
            image = requests.get(finished["steady"]["result_urls"][0], timeout=5)
    finally:
        stop(worker)

    assert finished["steady"]["status"] == "completed"
    assert finished["steady"]["result_count"] == 2
    assert finished["wobbly"]["status"] == "completed"
    assert finished["wobbly"]["retries"] == 2
    assert finished["broken"]["status"] == "failed"
    assert finished["broken"]["error"]["code"] == "provider_unavailable"
    assert finished["broken"]["retries"] == 3
    assert image.status_code == 200
    assert image.headers["Content-Type"] == "image/png"

    for name in ("steady", "wobbly"):
        for generation in Job.objects.get(id=submitted[name]).generations.all():
            assert (Path(settings.MEDIA_ROOT) / str(generation.file.name)).is_file()
    assert len(provider.received(prompt_contains="wobbly")) == 3
    assert len(provider.received(prompt_contains="broken")) == 4
    assert CreditLedgerEntry.objects.get(job_id=submitted["broken"], kind="refund").amount == 3
    assert not CreditLedgerEntry.objects.filter(job_id__in=[submitted["steady"], submitted["wobbly"]], kind="refund")
    assert credit_balance(user_id=user.pk) == credit_ledger_total(user_id=user.pk) == 20 - 2 - 1
