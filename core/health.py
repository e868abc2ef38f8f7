"""Probes for load balancers and orchestrators: ``/healthz`` (the process is up) and ``/readyz`` (it can serve)."""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

# Seconds a readiness check may wait for a service; probes come every few seconds and must not pile up.
# libpq rounds a connect timeout below 2 s up to 2 s.
DATABASE_TIMEOUT = 2
REDIS_TIMEOUT = 1.0


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """``GET /healthz``: answers while the process can serve a request, without touching any other service."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """``GET /readyz``: 200 when the database and Redis answer, else 503 naming the one that did not."""
    checks = {
        "database": "ok" if _database_reachable() else "unavailable",
        "redis": "ok" if _redis_reachable() else "unavailable",
    }
    ready = all(state == "ok" for state in checks.values())
    return JsonResponse({"status": "ready" if ready else "not_ready", **checks}, status=200 if ready else 503)


def _database_reachable() -> bool:
    # A connection of its own, outside the pool and closed at once: a pooled connection could be an old one
    # that proves nothing, and a probe must not wait for the operating system's connect timeout (minutes)
    # when the database host stops answering.
    probe = connections.create_connection(DEFAULT_DB_ALIAS)
    options = {name: value for name, value in probe.settings_dict.get("OPTIONS", {}).items() if name != "pool"}
    probe.settings_dict = {**probe.settings_dict, "OPTIONS": {**options, "connect_timeout": DATABASE_TIMEOUT}}
    try:
        with probe.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError as error:
        logger.warning("readiness: database unreachable: %s", error)
        return False
    finally:
        probe.close()


def _redis_reachable() -> bool:
    # A client of its own, for the same reason: the shared client waits without a timeout.
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
    )
    try:
        return bool(client.ping())
    except redis.RedisError as error:
        logger.warning("readiness: Redis unreachable: %s", error)
        return False
    finally:
        client.close()
