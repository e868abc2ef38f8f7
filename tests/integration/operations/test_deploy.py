"""The monitoring files in deploy/: promtool accepts the alerting rules, their unit tests and the scrape configuration;
the Grafana dashboard queries Prometheus through its datasource variable; and every metric that the rules and the
dashboard name is one that /metrics or Dramatiq's Prometheus middleware exports. Also the two gauges written for
them: stuck jobs and the age of the oldest video slot holder."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import yaml
from django.utils import timezone
from dramatiq.middleware.prometheus import Prometheus
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from generation.models import Job
from generation.videos.services import video_job_create
from testing.factories import charged_image_job
from testing.live import BASE_DIR
from testing.metrics import scrape

DEPLOY = BASE_DIR / "deploy"
ALERTS = DEPLOY / "prometheus-alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus-alerts.test.yml"
SCRAPE_CONFIG = DEPLOY / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
# The scrape configuration's bearer token file, which `promtool check config` insists exists.
TOKEN_FILE = "/etc/prometheus/genservice-metrics-token"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not on PATH (Debian: apt-get install --no-install-recommends prometheus)"
)

# A metric of the service or of Dramatiq's middleware, not the tail of a longer name or of a recording rule's name.
METRIC_NAME = re.compile(r"(?<![\w:])(?:genservice|dramatiq)_\w+")
# The names a family's samples take in the text format, whether or not the family has samples right now.
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}
# What the dashboard must show: one metric for each of its subjects.
DASHBOARD_SUBJECTS = {
    "genservice_jobs",
    "genservice_video_stage",
    "genservice_queue_depth",
    "genservice_jobs_stuck",
    "genservice_refunds_total",
    "genservice_job_retries_total",
    "genservice_video_slots_in_use",
    "genservice_video_slots_limit",
    "genservice_video_slot_oldest_seconds",
    "genservice_job_wait_seconds",
    "genservice_job_duration_seconds",
    "genservice_event_streams_open",
    "genservice_metrics_source_up",
}


def promtool(*args: str, cwd: Path = DEPLOY) -> str:
    assert PROMTOOL is not None
    run = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def alert_tests() -> list[dict[str, Any]]:
    return yaml.safe_load(ALERT_TESTS.read_text())["tests"]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> Iterator[dict[str, Any]]:
    """Every panel that shows data, rows left out (a collapsed row holds its panels)."""
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])]


def named_metrics() -> set[str]:
    """The metric names in the rules' and the dashboard's PromQL and in the series the rules are tested with."""
    texts = [rule["expr"] for rule in alert_rules()] + dashboard_expressions()
    texts += [series["series"] for test in alert_tests() for series in test["input_series"]]
    return {name for text in texts for name in METRIC_NAME.findall(text)}


def sample_names(families: Iterable[Metric]) -> set[str]:
    names: set[str] = set()
    for family in families:
        names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def sample_list(families: Iterable[Metric], name: str) -> list[Any]:
    return [sample for family in families for sample in family.samples if sample.name == name]


# --- promtool ----------------------------------------------------------------------------------------------------


@needs_promtool
def test_promtool_accepts_the_alerting_rules():
    assert f"SUCCESS: {len(alert_rules())} rules found" in promtool("check", "rules", ALERTS.name)


@needs_promtool
def test_alerting_rules_pass_their_unit_tests():
    assert "SUCCESS" in promtool("test", "rules", ALERT_TESTS.name)


@needs_promtool
def test_promtool_accepts_the_scrape_configuration(tmp_path):
    # Checked beside a token file of its own: the real one lives on the Prometheus server.
    token = tmp_path / "metrics-token"
    token.write_text("scrape-token\n")
    config = SCRAPE_CONFIG.read_text()
    assert TOKEN_FILE in config
    (tmp_path / SCRAPE_CONFIG.name).write_text(config.replace(TOKEN_FILE, str(token)))
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    assert "SUCCESS: 1 rule files found" in promtool("check", "config", SCRAPE_CONFIG.name, cwd=tmp_path)


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path):
    # promtool parses PromQL offline only inside rules, so each query becomes a recording rule.
    rules = [{"record": f"dashboard_query_{index}", "expr": expr} for index, expr in enumerate(dashboard_expressions())]
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", "dashboard.yml", cwd=tmp_path)


# --- the files themselves ----------------------------------------------------------------------------------------


def test_every_alert_has_a_for_a_severity_a_summary_and_a_description():
    rules = alert_rules()
    assert rules
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"].keys() >= {"summary", "description"}, rule["alert"]


def test_every_alert_is_tested_both_firing_and_quiet():
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in alert_tests():
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts - firing == set()
    assert alerts - quiet == set()


def test_every_dashboard_panel_queries_prometheus_through_the_datasource_variable():
    board = dashboard()
    assert board["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = list(dashboard_panels())
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]


def test_dashboard_shows_every_subject():
    shown = {name for expr in dashboard_expressions() for name in METRIC_NAME.findall(expr)}
    assert DASHBOARD_SUBJECTS - shown == set()


# --- the metrics they name ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_every_service_metric_named_in_deploy_is_exported(client, make_user, settings):
    settings.METRICS_TOKEN = "scrape-token"
    user = make_user(credits=50)
    charged_image_job(user)
    completed = charged_image_job(user, quantity=2)
    now = timezone.now()
    Job.objects.filter(id=completed.id).update(
        status=Job.Status.COMPLETED, started_at=now - timedelta(seconds=5), finished_at=now
    )
    video_job_create(user_id=user.pk, prompt="a harbour at dawn", aspect_ratio="16:9", duration=4)
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token")
    assert response.status_code == 200
    families = list(text_string_to_metric_families(response.content.decode()))
    # Both sources were read, so nothing below is missing because of an outage.
    up = {sample.labels["source"]: sample.value for sample in sample_list(families, "genservice_metrics_source_up")}
    assert up == {"database": 1, "redis": 1}

    named = {name for name in named_metrics() if name.startswith("genservice_")}
    assert named >= DASHBOARD_SUBJECTS
    assert named - sample_names(families) == set()


def test_every_dramatiq_metric_named_in_deploy_is_exported_by_its_middleware(monkeypatch, tmp_path):
    # The middleware creates its metrics when a worker process boots, after pointing prometheus_client at its
    # multiprocess folder through the environment; monkeypatch puts the environment back.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("prometheus_multiproc_dir", str(tmp_path))
    middleware = Prometheus()
    middleware.after_process_boot(dramatiq.get_broker())
    families = [
        family
        for attribute in vars(middleware).values()
        if isinstance(attribute, MetricWrapperBase)
        for family in attribute.collect()
    ]
    assert families, "Dramatiq's Prometheus middleware no longer keeps its metrics as attributes"

    named = {name for name in named_metrics() if name.startswith("dramatiq_")}
    assert named
    assert named - sample_names(families) == set()


# --- the gauges written for the alerts ---------------------------------------------------------------------------


def video_at(user: Any, **fields: Any) -> Job:
    job = video_job_create(user_id=user.pk, prompt="a harbour at dawn", aspect_ratio="16:9", duration=4)
    Job.objects.filter(id=job.id).update(**fields)
    return job


def image_at(user: Any, **fields: Any) -> Job:
    job = charged_image_job(user)
    Job.objects.filter(id=job.id).update(**fields)
    return job


@pytest.mark.django_db
def test_stuck_jobs_count_the_unfinished_jobs_whose_recovery_is_overdue(admin_client, make_user, settings):
    # Twice the longest recovery path: 2 x max(120 + 30, 120 + 30) = 300 s.
    settings.RECONCILE_AFTER, settings.RECONCILE_INTERVAL = 120, 30
    settings.PROVIDER_TIMEOUT, settings.VIDEO_SLOT_LEASE = 120, 30
    user = make_user(credits=500)
    now = timezone.now()
    long_ago, lately = now - timedelta(minutes=10), now - timedelta(minutes=1)
    processing, generating = Job.Status.PROCESSING, Job.Stage.GENERATING
    # Stuck: a worker's lease ran out 10 minutes ago; a queued job whose message never came.
    image_at(user, status=processing, started_at=long_ago, lease_expires_at=long_ago)
    image_at(user, updated_at=long_ago)
    # Not stuck (yet): a lease that ran out a minute ago; a retry that came due a minute ago; a failed job.
    image_at(user, status=processing, started_at=long_ago, lease_expires_at=lately)
    image_at(user, updated_at=long_ago, next_run_at=lately, retries=1)
    image_at(user, status=Job.Status.FAILED, lease_expires_at=None, updated_at=long_ago, finished_at=long_ago)
    # Stuck: a generation nobody polled for 10 minutes; a start call that ended nowhere, its job canceled meanwhile.
    video_at(user, status=processing, stage=generating, operation_name="op/1", next_poll_at=long_ago)
    video_at(user, status=Job.Status.CANCELED, stage=Job.Stage.STOPPING, started_at=long_ago, updated_at=long_ago)
    # Not stuck: a long generation polled a second ago; a video waiting an hour for a slot.
    video_at(user, status=processing, stage=generating, operation_name="op/2", next_poll_at=now)
    video_at(user, stage=Job.Stage.WAITING, updated_at=now - timedelta(hours=1))

    samples = scrape(admin_client)

    assert samples["genservice_jobs_stuck", (("kind", "image"),)] == 2
    assert samples["genservice_jobs_stuck", (("kind", "video"),)] == 2


@pytest.mark.django_db
def test_video_slot_oldest_seconds_is_the_age_of_the_oldest_video_at_the_provider(admin_client, make_user):
    user = make_user(credits=500)
    assert scrape(admin_client)["genservice_video_slot_oldest_seconds", ()] == 0
    now = timezone.now()
    processing = Job.Status.PROCESSING
    video_at(user, status=processing, stage=Job.Stage.GENERATING, started_at=now - timedelta(seconds=400))
    video_at(user, status=Job.Status.FAILED, stage=Job.Stage.STOPPING, started_at=now - timedelta(seconds=300))
    video_at(user, status=processing, stage=Job.Stage.STARTING, started_at=now - timedelta(seconds=2))
    # Not at the provider: a finished video, one waiting for a slot, an image.
    video_at(user, status=Job.Status.COMPLETED, stage=Job.Stage.DONE, started_at=now - timedelta(hours=2))
    video_at(user, stage=Job.Stage.WAITING, created_at=now - timedelta(hours=1))
    image_at(user, status=processing, started_at=now - timedelta(hours=1))

    age = scrape(admin_client)["genservice_video_slot_oldest_seconds", ()]

    # 400 s, and however long the test took since (within a second of rounding either way).
    assert 400 - 1 <= age <= 400 + (timezone.now() - now).total_seconds() + 1
