"""The price catalog, model choice and quotes: what a create costs, said before anything is charged."""

from __future__ import annotations

import pytest

from credits.models import CreditLedgerEntry
from credits.selectors import credit_balance
from generation.models import Job
from testing.clients import token_client

pytestmark = pytest.mark.django_db

VEO = "veo-3.0-generate-001"
VEO_FAST = "veo-3.0-fast-generate-001"


def test_the_catalog_lists_image_and_video_prices_with_their_defaults(api, settings):
    settings.IMAGE_PRICES = {"gpt-image-1": 4, "gpt-image-1-mini": 1}
    catalog = api.get("/api/prices/").json()
    assert catalog["image"] == {
        "default_model": "gpt-image-1",
        "models": [
            {"model": "gpt-image-1", "credits_per_image": 4},
            {"model": "gpt-image-1-mini", "credits_per_image": 1},
        ],
    }
    video = {entry["model"]: entry for entry in catalog["video"]["models"]}
    assert catalog["video"]["default_model"] == VEO
    assert catalog["video"]["durations"] == [4, 6, 8]
    standard = {r["resolution"]: r["credits_per_second"] for r in video[VEO]["resolutions"]}
    fast = {r["resolution"]: r["credits_per_second"] for r in video[VEO_FAST]["resolutions"]}
    # Veo bills per second; Fast costs a third of Standard.
    assert {resolution: price / 3 for resolution, price in standard.items()} == fast


def test_an_image_job_costs_its_models_price_per_image(api, user, settings):
    settings.IMAGE_PRICES = {"gpt-image-1": 3, "gpt-image-1-mini": 1}
    response = api.post("/api/images/", {"prompt": "two", "quantity": 2, "model": "gpt-image-1-mini"}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["credit_cost"] == 2
    assert Job.objects.get(id=response.json()["id"]).params["model"] == "gpt-image-1-mini"
    default = api.post("/api/images/", {"prompt": "one"}, format="json").json()
    assert (default["credit_cost"], default["params"]["model"]) == (3, "gpt-image-1")


def test_an_unknown_image_model_is_refused_naming_the_choices(api, user, settings):
    settings.IMAGE_PRICES = {"gpt-image-1": 3}
    response = api.post("/api/images/", {"prompt": "x", "model": "dall-e-2"}, format="json")
    assert response.status_code == 400
    assert "gpt-image-1" in str(response.json()["error"]["fields"]["model"])
    assert credit_balance(user_id=user.pk) == 10


def test_a_video_costs_its_seconds_at_its_model_and_resolutions_price(make_user):
    user = make_user(credits=100)
    api = token_client(user)
    body = {"prompt": "sea", "duration": 8, "model": VEO_FAST, "resolution": "1080p"}
    response = api.post("/api/videos/", body, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["credit_cost"] == 16
    assert CreditLedgerEntry.objects.get(job_id=response.json()["id"], kind="charge").amount == -16


@pytest.mark.parametrize(
    ("body", "cost"),
    [
        ({"kind": "image", "prompt": "three", "quantity": 3}, 3),
        ({"kind": "video", "prompt": "sea", "duration": 4}, 12),
        ({"kind": "video", "prompt": "sea", "duration": 8, "model": VEO_FAST, "resolution": "720p"}, 8),
    ],
)
def test_a_quote_gives_the_cost_and_whether_the_balance_covers_it_charging_nothing(api, user, body, cost):
    quote = api.post("/api/quotes/", body, format="json")
    assert quote.status_code == 200, quote.content
    assert quote.json()["credit_cost"] == cost
    assert quote.json()["balance"] == 10
    assert quote.json()["affordable"] is (cost <= 10)
    assert credit_balance(user_id=user.pk) == 10
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "no kind"}, "kind"),
        ({"kind": "audio", "prompt": "x"}, "kind"),
        ({"kind": "video", "prompt": "x", "duration": 5}, "duration"),
        ({"kind": "image", "prompt": "x", "quantity": 9}, "quantity"),
    ],
)
def test_an_invalid_quote_names_the_field(api, body, field):
    response = api.post("/api/quotes/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_a_quote_posted_as_a_form_is_read_as_one(api):
    response = api.post("/api/quotes/", {"kind": "image", "prompt": "a form"}, format="multipart")
    assert response.status_code == 200
    assert response.json()["kind"] == "image"


def test_a_form_quote_of_no_known_kind_names_the_field(api):
    response = api.post("/api/quotes/", {"kind": "AAA", "prompt": "a form"}, format="multipart")
    assert response.status_code == 400
    assert "kind" in response.json()["error"]["fields"]


def test_quotes_need_credentials(client):
    assert (
        client.post("/api/quotes/", {"kind": "image", "prompt": "x"}, content_type="application/json").status_code
        == 401
    )
