"""The application error hierarchy and the one DRF exception handler that turns errors into responses."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApplicationError(Exception):
    """A domain rule refused the request; subclasses set the HTTP status and a stable code."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    code = "error"
    default_message: Any = _("The request could not be completed.")

    def __init__(self, message: Any = None, *, extra: dict[str, Any] | None = None) -> None:
        self.message = message if message is not None else self.default_message
        self.extra = extra or {}
        super().__init__(str(self.message))


class Conflict(ApplicationError):
    """The state change no longer applies to the object as it is now."""

    status_code = status.HTTP_409_CONFLICT
    code = "conflict"
    default_message = _("This change no longer applies.")


def _error_body(code: str, message: Any, fields: Any = None, **extra: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": str(message)}
    if fields:
        error["fields"] = fields
    error.update(extra)
    return {"error": error}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Answer every error in one shape: ``{"error": {"code", "message", "fields"?}}``."""
    if isinstance(exc, ApplicationError):
        return Response(_error_body(exc.code, exc.message, **exc.extra), status=exc.status_code)
    if isinstance(exc, OperationalError | InterfaceError):
        # The database went away mid-request: the transaction rolled back, nothing was charged, a retry is safe.
        unavailable = Response(
            _error_body("unavailable", _("The service is briefly unavailable; please try again.")),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        unavailable["Retry-After"] = "1"
        return unavailable
    if isinstance(exc, RequestDataTooBig):
        too_large = _("The request body is larger than %(limit)d bytes.") % {
            "limit": settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        }
        return Response(_error_body("too_large", too_large), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = _error_body("invalid", _("The request has invalid fields."), fields)
    else:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
        response.data = _error_body(code, exc.detail)
    return response
