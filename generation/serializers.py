"""How jobs and generations look in JSON."""

from __future__ import annotations

import threading
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request

from generation.models import Generation, Job
from generation.selectors import job_position
from project.serializers import absolute_url


class JobErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class JobOutputSerializer(serializers.ModelSerializer):
    """A job as the API shows it: status, queue position, progress, results, cost and timing."""

    position = serializers.SerializerMethodField()
    result_urls = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "status",
            "stage",
            "position",
            "project_id",
            "prompt",
            "params",
            "quantity",
            "result_count",
            "result_urls",
            "credit_cost",
            "retries",
            "next_run_at",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_position(self, job: Job) -> int | None:
        # The video queue passes every position it computed in one pass, instead of one count per job.
        positions: dict[object, int] = self.context.get("positions", {})
        return positions[job.id] if job.id in positions else job_position(job=job)

    @extend_schema_field(serializers.ListField(child=serializers.URLField()))
    def get_result_urls(self, job: Job) -> list[str]:
        request = self.context.get("request")
        return [absolute_url(request, url) for url in job.result_urls]

    @extend_schema_field(JobErrorSerializer(allow_null=True))
    def get_error(self, job: Job) -> dict[str, Any] | None:
        if not job.error_code:
            return None
        return {"code": job.error_code, "message": job.error_message}


class GenerationOutputSerializer(serializers.ModelSerializer):
    """One generated file with the URL to fetch it."""

    url = serializers.SerializerMethodField()
    job_id = serializers.UUIDField(read_only=True)
    project_id = serializers.CharField(source="job.project_id", read_only=True)

    class Meta:
        model = Generation
        fields = ["id", "job_id", "project_id", "index", "url", "mime_type", "size", "prompt", "created_at"]
        read_only_fields = fields

    def get_url(self, generation: Generation) -> str:
        return absolute_url(self.context.get("request"), generation.file.url)


# DRF builds a ModelSerializer's fields from the model each time one is instantiated, which costs twenty times
# more than serializing a job. One instance serves every snapshot, one thread at a time (the context is shared).
_snapshot_serializer = JobOutputSerializer()
_snapshot_lock = threading.Lock()


def job_snapshot(
    job: Job, *, positions: dict[object, int] | None = None, request: Request | None = None
) -> dict[str, Any]:
    """The job as the API shows it; result URLs are absolute when a request is given, relative to the site (for
    events) otherwise."""
    with _snapshot_lock:
        _snapshot_serializer._context = {"positions": positions or {}, "request": request}
        return dict(_snapshot_serializer.to_representation(job))
