"""How jobs and generations look in JSON."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar
from typing import Any, cast

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request

from core.serializers import absolute_url
from generation.estimates import Estimate, job_estimate, video_line_estimates
from generation.media import generation_url
from generation.models import Generation, Job
from generation.selectors import job_position


class JobErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class JobOutputSerializer(serializers.ModelSerializer):
    """A job as the API shows it: status, queue position, progress, results, cost and timing."""

    position = serializers.SerializerMethodField()
    estimated_start_at = serializers.SerializerMethodField()
    estimated_finish_at = serializers.SerializerMethodField()
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
            "estimated_start_at",
            "estimated_finish_at",
            "project_id",
            "prompt",
            "params",
            "quantity",
            "result_count",
            "result_urls",
            "credit_cost",
            "retries",
            "next_run_at",
            "start_deadline_at",
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

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_estimated_start_at(self, job: Job) -> str | None:
        estimate = self._estimate(job)
        return estimate.start_at.isoformat() if estimate else None

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_estimated_finish_at(self, job: Job) -> str | None:
        estimate = self._estimate(job)
        return estimate.finish_at.isoformat() if estimate else None

    def _estimate(self, job: Job) -> Estimate | None:
        if job.status != Job.Status.QUEUED:
            return None
        if job.kind == Job.Kind.IMAGE:
            return job_estimate(job=job)
        # The video line is played forward once per serialization: a list, or an event for every waiting video.
        context = cast(dict[str, Any], self.context)
        if "line" not in context:
            context["line"] = video_line_estimates()
        line: dict[object, Estimate] = context["line"]
        return line.get(job.id)

    @extend_schema_field(serializers.ListField(child=serializers.URLField()))
    def get_result_urls(self, job: Job) -> list[str]:
        """Links to the job's files, built now so that they expire (an expired file is left out)."""
        if not job.result_count:
            return []
        request = self.context.get("request")
        links = [(g.index, generation_url(g)) for g in job.generations.all()]
        return [absolute_url(request, url) for _index, url in sorted(links, key=lambda link: link[0]) if url]

    @extend_schema_field(JobErrorSerializer(allow_null=True))
    def get_error(self, job: Job) -> dict[str, Any] | None:
        if not job.error_code:
            return None
        return {"code": job.error_code, "message": job.error_message}


class GenerationOutputSerializer(serializers.ModelSerializer):
    """One generated file with the URL to fetch it."""

    url = serializers.SerializerMethodField(help_text="A link that expires; null once the file has expired.")
    job_id = serializers.UUIDField(read_only=True)
    project_id = serializers.CharField(source="job.project_id", read_only=True)

    class Meta:
        model = Generation
        fields = [
            "id",
            "job_id",
            "project_id",
            "index",
            "url",
            "mime_type",
            "size",
            "prompt",
            "created_at",
            "expired_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_url(self, generation: Generation) -> str | None:
        url = generation_url(generation)
        return absolute_url(self.context.get("request"), url) if url else None


class _SnapshotContext(MutableMapping[str, Any]):
    """The context of the one snapshot serializer: the values of the ``job_snapshot`` call running in this thread
    (or task), so that concurrent snapshots share the serializer's fields but never each other's context."""

    def __getitem__(self, key: str) -> Any:
        return _snapshot_values.get()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        _snapshot_values.get()[key] = value

    def __delitem__(self, key: str) -> None:
        del _snapshot_values.get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(_snapshot_values.get())

    def __len__(self) -> int:
        return len(_snapshot_values.get())


_snapshot_values: ContextVar[dict[str, Any]] = ContextVar("job_snapshot_context")
# DRF builds a ModelSerializer's fields from the model each time one is instantiated, which costs twenty times
# more than serializing a job, and the web server runs each request in a thread of its own (one serializer per
# thread was one per request): one instance per process, its fields built by the first snapshot.
_snapshot_serializer = JobOutputSerializer(context=_SnapshotContext())


def job_snapshot(
    job: Job,
    *,
    positions: dict[object, int] | None = None,
    line: dict[object, Estimate] | None = None,
    request: Request | None = None,
) -> dict[str, Any]:
    """The job as the API shows it; result URLs are absolute when a request is given, relative to the site (for
    events) otherwise. ``positions`` and ``line`` (estimates) may be passed when computed for many jobs at once."""
    values: dict[str, Any] = {"positions": positions or {}, "request": request}
    if line is not None:
        values["line"] = line
    token = _snapshot_values.set(values)
    try:
        return dict(_snapshot_serializer.to_representation(job))
    finally:
        _snapshot_values.reset(token)
