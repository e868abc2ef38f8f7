"""Jobs (one request for images or a video) and the files they generate."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

MAX_IMAGES_PER_JOB = 4


class Job(models.Model):
    """One generation request: what was asked, what it cost, where it stands and what it produced."""

    class Kind(models.TextChoices):
        IMAGE = "image", _("Image")
        VIDEO = "video", _("Video")

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        PROCESSING = "processing", _("Processing")
        COMPLETED = "completed", _("Completed")
        FAILED = "failed", _("Failed")
        CANCELED = "canceled", _("Canceled")

    class Stage(models.TextChoices):
        """Where a video stands in its pipeline (see generation/videos/stages.py); blank for images."""

        PREPARING = "preparing", _("Preparing frames")
        WAITING = "waiting", _("Waiting for a slot")
        STARTING = "starting", _("Starting")
        GENERATING = "generating", _("Generating")
        STOPPING = "stopping", _("Stopping at the provider")
        DOWNLOADING = "downloading", _("Downloading")
        DONE = "done", _("Done")

    FINISHED_STATUSES = (Status.COMPLETED, Status.FAILED, Status.CANCELED)
    # The stages in which the provider may be running an operation for the video: each holds a slot.
    OPERATION_STAGES = (Stage.STARTING, Stage.GENERATING, Stage.STOPPING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="jobs", verbose_name=_("user")
    )
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices)
    status = models.CharField(_("status"), max_length=12, choices=Status.choices, default=Status.QUEUED)
    project_id = models.CharField(_("project id"), max_length=100, blank=True, db_index=True)
    prompt = models.TextField(_("prompt"))
    params = models.JSONField(_("parameters"), default=dict, blank=True)
    quantity = models.PositiveSmallIntegerField(_("quantity"), default=1)
    result_count = models.PositiveSmallIntegerField(_("results delivered"), default=0)
    credit_cost = models.PositiveIntegerField(_("credit cost"))
    retries = models.PositiveSmallIntegerField(_("retries"), default=0)
    next_run_at = models.DateTimeField(_("next run at"), null=True, blank=True)
    lease_expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True)
    error_code = models.CharField(_("error code"), max_length=64, blank=True)
    error_message = models.TextField(_("error message"), blank=True)
    operation_name = models.CharField(_("provider operation"), max_length=300, blank=True)
    stage = models.CharField(_("stage"), max_length=12, choices=Stage.choices, blank=True)
    # A new token at every claim: each conditional update of a claimed job names it, so a worker that lost its
    # claim (its lease ran out and another took over) can no longer change the job.
    claim_token = models.UUIDField(_("claim token"), null=True, blank=True)
    next_poll_at = models.DateTimeField(_("next poll at"), null=True, blank=True)
    # A job that has not started by then is canceled with a full refund (the create's start_within_seconds).
    start_deadline_at = models.DateTimeField(_("start deadline"), null=True, blank=True)
    webhook_url = models.CharField(_("webhook URL"), max_length=2000, blank=True)
    webhook_events = models.JSONField(_("webhook events"), default=list, blank=True)
    idempotency_key = models.CharField(_("idempotency key"), max_length=200, blank=True)
    request_hash = models.CharField(_("request fingerprint"), max_length=64, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="job_user_recent"),
            models.Index(fields=["status", "kind", "created_at"], name="job_status_kind_created"),
            models.Index(fields=["stage", "created_at"], name="job_stage_created", condition=~Q(stage="")),
            models.Index(
                fields=["start_deadline_at"], name="job_start_deadline", condition=Q(start_deadline_at__isnull=False)
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(quantity__gte=1, quantity__lte=MAX_IMAGES_PER_JOB), name="job_quantity_in_range"
            ),
            models.CheckConstraint(condition=Q(result_count__lte=F("quantity")), name="job_results_within_quantity"),
            models.CheckConstraint(
                condition=Q(status__in=["queued", "processing", "completed", "failed", "canceled"]),
                name="job_status_valid",
            ),
            models.CheckConstraint(condition=Q(kind__in=["image", "video"]), name="job_kind_valid"),
            # One job per key and user, whatever races the API: a retried request finds the first job.
            models.UniqueConstraint(
                fields=["user", "idempotency_key"], condition=~Q(idempotency_key=""), name="job_idempotency_key_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.id}"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED_STATUSES

    @property
    def lease_expired(self) -> bool:
        return self.lease_expires_at is not None and self.lease_expires_at <= timezone.now()

    @property
    def unit_cost(self) -> int:
        """What one result costs: the charge is spread evenly over the quantity."""
        return self.credit_cost // self.quantity

    @property
    def undelivered_cost(self) -> int:
        """What the results not delivered yet cost: the refund of a job that ends without them."""
        return (self.quantity - self.result_count) * self.unit_cost


def generation_upload_to(instance: Generation, filename: str) -> str:
    return f"generations/{instance.user_id}/{instance.job_id}/{filename}"


class Generation(models.Model):
    """One generated file of a job."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="generations", verbose_name=_("job"))
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="generations", verbose_name=_("user")
    )
    index = models.PositiveSmallIntegerField(_("index"))
    file = models.FileField(_("file"), upload_to=generation_upload_to, max_length=300)
    mime_type = models.CharField(_("MIME type"), max_length=100)
    size = models.PositiveBigIntegerField(_("size in bytes"))
    prompt = models.TextField(_("prompt"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)
    # Set when MEDIA_RETENTION_DAYS deleted the file: the row stays, as the record of what was delivered.
    expired_at = models.DateTimeField(_("expired at"), null=True, blank=True)

    class Meta:
        verbose_name = _("generation")
        verbose_name_plural = _("generations")
        ordering = ["-created_at", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="generation_once_per_job_index")]

    def __str__(self) -> str:
        return f"{self.job_id} #{self.index}"
