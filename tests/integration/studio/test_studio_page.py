"""The studio page through Django's test client: served to signed-in users, with the catalog, in their language."""

from __future__ import annotations

import pytest
from django.test import Client

PASSWORD = "a-studio-password"


@pytest.mark.django_db
def test_anonymous_visitor_is_sent_to_the_login_page(client: Client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"
    assert client.get(response["Location"]).status_code == 200


@pytest.mark.django_db
def test_signed_in_user_gets_the_studio_with_balance_and_forms(client: Client, make_user):
    client.force_login(make_user(credits=7))
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="image-form"' in page and 'id="video-form"' in page
    assert '<strong id="balance">7</strong>' in page
    assert "/jsi18n/" in page and "studio/studio.js" in page


@pytest.mark.django_db
def test_studio_offers_the_catalog_models_and_embeds_the_prices(client: Client, make_user, settings):
    settings.IMAGE_PRICES = {"flash-image": 1, "pro-image": 4}
    client.force_login(make_user())
    response = client.get("/")
    page = response.content.decode()
    assert 'id="image-model"' in page and '<option value="pro-image">' in page
    assert 'id="video-model"' in page and '<option value="1080p">' in page
    prices = response.context["config"]["prices"]
    assert prices["image"]["models"][1] == {"model": "pro-image", "credits_per_image": 4}
    assert response.context["config"]["urls"]["webhookSecret"] == "/api/webhooks/secret/"


@pytest.mark.django_db
def test_image_model_choice_is_left_out_when_the_catalog_has_one_model(client: Client, make_user, settings):
    settings.IMAGE_PRICES = None
    client.force_login(make_user())
    assert 'id="image-model"' not in client.get("/").content.decode()


@pytest.mark.django_db
def test_login_page_signs_the_user_in_and_returns_to_the_studio(client: Client, make_user):
    user = make_user()
    user.set_password(PASSWORD)
    user.save()
    response = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD, "next": "/"})
    assert response.status_code == 302
    assert response["Location"] == "/"


@pytest.mark.django_db
def test_logout_signs_the_user_out_and_shows_the_login_page(client: Client, make_user):
    client.force_login(make_user())
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_studio_speaks_portuguese_to_a_brazilian_browser(client: Client, make_user):
    client.force_login(make_user())
    page = client.get("/", HTTP_ACCEPT_LANGUAGE="pt-BR,pt;q=0.9,en;q=0.5").content.decode()
    assert '<html lang="pt-br">' in page
    assert "Gerar imagens" in page and "Galeria" in page and "Proporção" in page


@pytest.mark.django_db
def test_language_switch_overrides_the_browser_language(client: Client, make_user):
    client.force_login(make_user())
    client.post("/i18n/setlang/", {"language": "pt-br", "next": "/"}, HTTP_ACCEPT_LANGUAGE="en")
    assert "Gerar imagens" in client.get("/", HTTP_ACCEPT_LANGUAGE="en").content.decode()


def test_javascript_catalog_serves_portuguese_strings(client: Client):
    catalog = client.get("/jsi18n/", HTTP_ACCEPT_LANGUAGE="pt-BR").content.decode()
    assert '"In queue, position %(position)s": "Na fila, posi\\u00e7\\u00e3o %(position)s"' in catalog
    assert '"Try again": "Tentar novamente"' in catalog
    assert '"starts in about %(minutes)s min": "come\\u00e7a em cerca de %(minutes)s min"' in catalog
