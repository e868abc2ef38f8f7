"""Signing secrets, the deliveries a job's changes produce, their attempts, and the URLs that answered 410 Gone."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import MD5
from django.utils.translation import gettext_lazy as _

from generation.models import Job


class WebhookSecret(models.Model):
    """A user's signing secret, and the one it replaced while the rotation's overlap lasts."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="webhook_secret",
        verbose_name=_("user"),
    )
    secret = models.CharField(_("secret"), max_length=200)
    previous_secret = models.CharField(_("previous secret"), max_length=200, blank=True)
    previous_valid_until = models.DateTimeField(_("previous secret valid until"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    rotated_at = models.DateTimeField(_("rotated at"), null=True, blank=True)

    class Meta:
        verbose_name = _("webhook secret")
        verbose_name_plural = _("webhook secrets")

    def __str__(self) -> str:
        return f"webhook secret of user {self.user_id}"

    def signing_secrets(self, at: datetime) -> list[str]:
        """The secrets a delivery attempted at ``at`` is signed with: the current one, then the previous one."""
        if self.previous_secret and self.previous_valid_until is not None and self.previous_valid_until > at:
            return [self.secret, self.previous_secret]
        return [self.secret]


class WebhookDelivery(models.Model):
    """One event of a job to deliver to its webhook URL, at least once; its id is the stable ``webhook-id``."""

    class Event(models.TextChoices):
        START = "start", _("Start")
        PROGRESS = "progress", _("Progress")
        COMPLETED = "completed", _("Completed")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed")
        STOPPED = "stopped", _("Stopped (URL gone)")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="webhook_deliveries", verbose_name=_("job"))
    event = models.CharField(_("event"), max_length=12, choices=Event.choices)
    # The job's result count when the event was made: progress events are told apart by it.
    result_count = models.PositiveSmallIntegerField(_("results delivered"))
    # 1, 2, 3... per job, in the order the events were made, so that a receiver can drop a stale one.
    sequence = models.PositiveIntegerField(_("sequence"))
    url = models.CharField(_("URL"), max_length=2000)
    payload = models.JSONField(_("payload"))
    status = models.CharField(_("status"), max_length=12, choices=Status.choices, default=Status.PENDING)
    attempt_count = models.PositiveSmallIntegerField(_("attempts"), default=0)
    last_status_code = models.PositiveSmallIntegerField(_("last status code"), null=True, blank=True)
    # When the next attempt is due; while one runs, when it counts as abandoned. Null once the delivery ended.
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        ordering = ["-created_at"]
        constraints = [
            # Whichever process publishes a change first makes the event; the others find it made.
            models.UniqueConstraint(
                fields=["job", "event"], condition=Q(event__in=["start", "completed"]), name="webhook_event_once"
            ),
            models.UniqueConstraint(
                fields=["job", "event", "result_count"],
                condition=Q(event="progress"),
                name="webhook_progress_once_per_count",
            ),
            models.UniqueConstraint(fields=["job", "sequence"], name="webhook_sequence_once_per_job"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "delivered", "failed", "stopped"]), name="webhook_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(event__in=["start", "progress", "completed"]), name="webhook_event_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} #{self.sequence} of {self.job_id}"

    @property
    def message_id(self) -> str:
        """The ``webhook-id`` header: the same for every attempt of this event."""
        return f"msg_{self.id}"


class WebhookAttempt(models.Model):
    """One try at posting a delivery: what the receiver answered, or why it did not."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempts", verbose_name=_("delivery")
    )
    status_code = models.PositiveSmallIntegerField(_("status code"), null=True, blank=True)
    latency_ms = models.PositiveIntegerField(_("latency (ms)"))
    error = models.TextField(_("error"), blank=True)
    attempted_at = models.DateTimeField(_("attempted at"))

    class Meta:
        verbose_name = _("webhook attempt")
        verbose_name_plural = _("webhook attempts")
        ordering = ["attempted_at", "id"]

    def __str__(self) -> str:
        return f"{self.status_code or self.error[:40]} at {self.attempted_at:%Y-%m-%d %H:%M:%S}"


class WebhookGoneUrl(models.Model):
    """A URL whose receiver answered 410 Gone: nothing more is delivered there for this user."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_gone_urls", verbose_name=_("user")
    )
    url = models.CharField(_("URL"), max_length=2000)
    gone_at = models.DateTimeField(_("gone at"), auto_now_add=True)

    class Meta:
        verbose_name = _("gone webhook URL")
        verbose_name_plural = _("gone webhook URLs")
        ordering = ["-gone_at"]
        constraints = [
            # A digest, since a 2000-character URL can outgrow a B-tree index entry.
            models.UniqueConstraint(F("user"), MD5("url"), name="webhook_gone_url_once_per_user"),
        ]

    def __str__(self) -> str:
        return self.url
