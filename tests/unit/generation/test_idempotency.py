"""Idempotency keys on the create endpoints: a retried request gets its first job back and pays once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from credits.selectors import credit_balance
from generation.models import Job
from testing.clients import token_client


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "body"), [("/api/images/", {"prompt": "once"}), ("/api/videos/", {"prompt": "once"})])
def test_the_same_key_and_body_returns_the_first_job_without_a_second_charge(make_user, path, body):
    user = make_user(credits=100)
    api = token_client(user)
    first = api.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    balance = credit_balance(user_id=user.pk)
    again = api.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert credit_balance(user_id=user.pk) == balance
    assert Job.objects.filter(user=user).count() == 1


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_refused(api, user):
    api.post("/api/images/", {"prompt": "first"}, format="json", HTTP_IDEMPOTENCY_KEY="key-2")
    other = api.post("/api/images/", {"prompt": "second"}, format="json", HTTP_IDEMPOTENCY_KEY="key-2")
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert credit_balance(user_id=user.pk) == 9


@pytest.mark.django_db
def test_keys_belong_to_their_user(api, make_user):
    mine = api.post("/api/images/", {"prompt": "mine"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    theirs = token_client(make_user(credits=5)).post(
        "/api/images/", {"prompt": "theirs"}, format="json", HTTP_IDEMPOTENCY_KEY="shared"
    )
    assert theirs.status_code == 202
    assert theirs.json()["id"] != mine.json()["id"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_create_one_job(make_user):
    user = make_user(credits=10)

    def submit(_: int) -> str:
        try:
            response = token_client(user).post(
                "/api/images/", {"prompt": "raced"}, format="json", HTTP_IDEMPOTENCY_KEY="raced-key"
            )
            assert response.status_code == 202
            return str(response.json()["id"])
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=10) as pool:
        ids = set(pool.map(submit, range(10)))
    assert len(ids) == 1
    assert credit_balance(user_id=user.pk) == 9
