"""``GET /metrics``: the service's state for Prometheus, read from the database and Redis at each scrape.

Nothing is counted in process memory: every web process answers with the same cluster-wide numbers, so a
scrape may land on any of them. Each app registers the readers of its own metrics in its ``AppConfig.ready()``
with ``metrics_source_register``. Dramatiq's own per-message metrics come from its Prometheus middleware in
the worker processes, on a port of their own.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator

import redis
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

logger = logging.getLogger(__name__)

Reader = Callable[[], Iterator[Metric]]


class ServiceCollector:
    """Reads every registered source when Prometheus scrapes; keeps nothing between scrapes."""

    def __init__(self) -> None:
        # Each source ("database", "redis") with its readers, in the order the apps registered them.
        self.sources: dict[str, list[Reader]] = {}

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "genservice_metrics_source_up", "1 when this scrape could read the source, else 0.", labels=["source"]
        )
        for source, readers in self.sources.items():
            # A service that is down must not hide the other one's numbers, which matter most during an outage.
            try:
                metrics = [metric for read in readers for metric in read()]
            except (DatabaseError, redis.RedisError) as error:
                logger.warning("metrics: could not read the %s: %s", source, error)
                up.add_metric([source], 0)
            else:
                up.add_metric([source], 1)
                yield from metrics
        yield up


collector = ServiceCollector()
registry = CollectorRegistry()
registry.register(collector)


def metrics_source_register(source: str, read: Reader) -> None:
    """Have ``/metrics`` call ``read`` at each scrape; ``source`` names what it reads, for ``metrics_source_up``."""
    readers = collector.sources.setdefault(source, [])
    if read not in readers:
        readers.append(read)


def _allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    scheme, _space, credentials = request.headers.get("Authorization", "").partition(" ")
    # compare_digest: the time a comparison takes must not tell how much of a guessed token was right.
    if token and scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode()):
        return True
    return bool(request.user.is_staff)


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: Prometheus text format, for staff users and for ``Authorization: Bearer METRICS_TOKEN``."""
    if not _allowed(request):
        body = {"error": {"code": "permission_denied", "message": _("Metrics are for staff and the metrics token.")}}
        return JsonResponse(body, status=403)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
