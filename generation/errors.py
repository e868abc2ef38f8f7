"""Errors of the generation domain."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework import status

from core.exceptions import ApplicationError, Conflict


class JobNotFound(ApplicationError):
    """No job with that id belongs to the caller."""

    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"
    default_message = _("Job not found.")


class JobAlreadyFinished(Conflict):
    """The job has already reached a final status."""

    code = "job_finished"
    default_message = _("This job has already finished.")


class TooManyQueuedVideos(ApplicationError):
    """The user already has as many videos waiting as one user may."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "too_many_queued_videos"
    default_message = _("You already have %(limit)d videos waiting; wait for one to start before adding another.")


class IdempotencyKeyReused(ApplicationError):
    """The Idempotency-Key was already used for a different request."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "idempotency_key_reused"
    default_message = _("This Idempotency-Key was already used with a different request body.")
