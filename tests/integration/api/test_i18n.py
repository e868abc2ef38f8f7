"""API errors speak the caller's language: Brazilian Portuguese when asked for, English otherwise."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

PORTUGUESE = {"HTTP_ACCEPT_LANGUAGE": "pt-BR"}


@pytest.fixture
def user(make_user):
    """A caller without credits, so that any valid request is refused with 402."""
    return make_user(credits=0)


def error_of(response) -> dict:
    return response.json()["error"]


def test_insufficient_credits_message_is_in_portuguese_when_asked(api):
    response = api.post("/api/images/", {"prompt": "uma raposa", "quantity": 2}, format="json", **PORTUGUESE)
    assert response.status_code == 402
    assert error_of(response)["message"] == "Esta solicitação custa 2 créditos e o saldo é 0."
    assert response["Content-Language"] == "pt-br"


def test_validation_messages_are_in_portuguese_when_asked(api):
    response = api.post("/api/images/", {"quantity": 2, "colour": "blue"}, format="json", **PORTUGUESE)
    assert response.status_code == 400
    error = error_of(response)
    assert error["message"] == "A solicitação tem campos inválidos."
    assert error["fields"]["prompt"] == ["Este campo é obrigatório."]


def test_unknown_field_message_is_in_portuguese_when_asked(api):
    response = api.post("/api/images/", {"prompt": "uma raposa", "colour": "blue"}, format="json", **PORTUGUESE)
    assert response.status_code == 400
    assert error_of(response)["fields"]["colour"] == ["Campo desconhecido."]


def test_messages_are_in_english_without_a_language_header(api):
    refused = api.post("/api/images/", {"prompt": "a fox", "quantity": 2}, format="json")
    invalid = api.post("/api/images/", {"quantity": 2}, format="json")
    assert error_of(refused)["message"] == "This request costs 2 credits and the balance is 0."
    assert error_of(invalid)["message"] == "The request has invalid fields."
    assert error_of(invalid)["fields"]["prompt"] == ["This field is required."]
