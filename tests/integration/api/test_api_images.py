"""The image API: validation, authentication, charging and ownership."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from credits.selectors import credit_balance, credit_ledger_total
from generation.models import Job
from testing.clients import token_client

pytestmark = pytest.mark.django_db


def test_accepts_an_image_request_charges_and_answers_with_the_job(api, user):
    response = api.post(
        "/api/images/",
        {"prompt": "a red fox", "aspect_ratio": "16:9", "quantity": 3, "project_id": "p1"},
        format="json",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued"
    assert body["kind"] == "image"
    assert body["quantity"] == 3
    assert body["result_count"] == 0
    assert body["credit_cost"] == 3
    assert body["project_id"] == "p1"
    assert set(body) >= {"id", "position", "result_urls", "retries", "next_run_at", "error", "created_at"}
    assert credit_balance(user_id=user.pk) == 7
    assert Job.objects.get(id=body["id"]).user == user


def test_dispatches_the_job_to_the_image_queue_after_commit(api, broker, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/images/", {"prompt": "a red fox"}, format="json")
    assert response.status_code == 202
    assert broker.client.llen(f"{broker.namespace}:images") == 1


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({}, "prompt", "required"),
        ({"prompt": "   "}, "prompt", "blank"),
        ({"prompt": "x" * 2001}, "prompt", "no more than 2000"),
        ({"prompt": "a", "aspect_ratio": "2:1"}, "aspect_ratio", "not a valid choice"),
        ({"prompt": "a", "quantity": 0}, "quantity", "greater than or equal to 1"),
        ({"prompt": "a", "quantity": 5}, "quantity", "less than or equal to 4"),
        ({"prompt": "a", "quantity": "many"}, "quantity", "valid integer"),
        ({"prompt": "a", "image_urls": ["ftp://example.com/a.png"]}, "image_urls", "http or https"),
        ({"prompt": "a", "image_urls": ["not a url"]}, "image_urls", "http or https URL"),
        ({"prompt": "a", "image_urls": ["http://127.0.0.1/a.png"]}, "image_urls", "private addresses"),
        ({"prompt": "a", "image_urls": ["http://169.254.169.254/latest/"]}, "image_urls", "private addresses"),
        ({"prompt": "a", "image_urls": ["http://[::ffff:10.0.0.1]/a.png"]}, "image_urls", "private addresses"),
        ({"prompt": "a", "image_urls": ["https://printer.local/a.png"]}, "image_urls", "private addresses"),
        ({"prompt": "a", "image_urls": ["https://example.com/a.png"] * 5}, "image_urls", "no more than 4"),
        ({"prompt": "a", "image_urls": "https://example.com/a.png"}, "image_urls", "list"),
        ({"prompt": "a", "colour": "blue"}, "colour", "Unknown field"),
    ],
)
def test_refuses_invalid_input_naming_the_field_and_charges_nothing(api, user, body, field, reason):
    response = api.post("/api/images/", body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert reason in str(error["fields"][field])
    assert credit_balance(user_id=user.pk) == 10
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "raw", [b"{not json", b"[1, 2]", b'"just a string"', b"null", b"\xff\xfe", b'{"prompt": {"nested": 1}}']
)
def test_malformed_bodies_get_400_never_500(api, user, raw):
    response = api.generic("POST", "/api/images/", raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert "error" in response.json()
    assert credit_balance(user_id=user.pk) == 10


def test_answers_402_when_credits_are_short_and_charges_nothing(make_user):
    poor = make_user(credits=2)
    response = token_client(poor).post("/api/images/", {"prompt": "a fox", "quantity": 3}, format="json")
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert credit_balance(user_id=poor.pk) == 2
    assert not Job.objects.exists()


def test_requires_credentials(client):
    assert client.post("/api/images/", {"prompt": "a"}, content_type="application/json").status_code == 401
    assert client.get("/api/jobs/").status_code == 401
    assert client.get("/api/credits/").status_code == 401
    assert client.get("/api/generations/").status_code == 401


def test_another_users_job_is_not_found(api, make_user):
    intruder = token_client(make_user(credits=0))
    job_id = api.post("/api/images/", {"prompt": "mine"}, format="json").json()["id"]
    assert intruder.get(f"/api/jobs/{job_id}/").status_code == 404
    assert intruder.get("/api/jobs/").json()["results"] == []
    assert api.get(f"/api/jobs/{job_id}/").status_code == 200


def test_lists_jobs_filtered_by_project_status_and_kind(api):
    api.post("/api/images/", {"prompt": "one", "project_id": "alpha"}, format="json")
    api.post("/api/images/", {"prompt": "two", "project_id": "beta"}, format="json")
    assert [job["prompt"] for job in api.get("/api/jobs/?project_id=alpha").json()["results"]] == ["one"]
    assert len(api.get("/api/jobs/?status=queued&kind=image").json()["results"]) == 2
    assert api.get("/api/jobs/?status=completed").json()["results"] == []
    assert api.get("/api/jobs/?status=bogus").status_code == 400


@pytest.mark.parametrize("path", ["/api/jobs/", "/api/generations/"])
@pytest.mark.parametrize(
    ("query", "field"), [("project_id=a%00b", "project_id"), ("limit=x", "limit"), ("colour=red", "colour")]
)
def test_list_filters_refuse_bad_parameters_by_name(api, path, query, field):
    response = api.get(f"{path}?{query}")
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]


def test_credits_endpoint_shows_balance_and_recent_entries(api):
    api.post("/api/images/", {"prompt": "one", "quantity": 2}, format="json")
    body = api.get("/api/credits/").json()
    assert body["balance"] == 8
    assert [entry["kind"] for entry in body["entries"]] == ["charge", "grant"]


def test_openapi_schema_and_docs_are_served(api):
    schema = api.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/images/" in paths
    assert "project_id" in [parameter["name"] for parameter in paths["/api/generations/"]["get"]["parameters"]]
    assert api.get("/api/docs/").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_requests_with_credits_for_ten_accept_exactly_ten(make_user):
    spender = make_user(credits=10)

    def submit(_: int) -> int:
        try:
            return token_client(spender).post("/api/images/", {"prompt": "race"}, format="json").status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(pool.map(submit, range(50)))
    assert codes.count(202) == 10
    assert codes.count(402) == 40
    assert credit_balance(user_id=spender.pk) == 0
    assert credit_ledger_total(user_id=spender.pk) == 0
    assert Job.objects.filter(user=spender).count() == 10
