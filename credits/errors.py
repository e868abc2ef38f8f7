"""Errors of the credits domain."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework import status

from core.exceptions import ApplicationError


class InsufficientCredits(ApplicationError):
    """The account cannot pay for the request."""

    status_code = status.HTTP_402_PAYMENT_REQUIRED
    code = "insufficient_credits"
    default_message = _("Not enough credits for this request.")
