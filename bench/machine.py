"""A description of the machine and services a benchmark ran on, for the figures to be read against."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import redis

from project import embedded


def _cpu_model() -> str:
    """The model name with family, model and clock, which tell generations apart when the name is terse."""
    fields: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    if "model name" not in fields:
        return platform.processor() or "unknown"
    details = [f"family {fields['cpu family']}" if "cpu family" in fields else "", f"model {fields.get('model', '?')}"]
    if "cpu MHz" in fields:
        details.append(f"{float(fields['cpu MHz']):.0f} MHz")
    return f"{fields['model name']} ({', '.join(part for part in details if part)})"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def _is_embedded(url: str) -> bool:
    parts = urlsplit(url)
    location = unquote(parts.hostname or "") if parts.scheme.startswith("postgres") else parts.path
    return location.startswith(str(embedded.VAR_DIR)) or "genservice-redis-" in location


def code_revision() -> dict[str, Any]:
    """The commit measured and how many files differed from it (read-only git calls that take no lock)."""
    # The repository's own folder: the embedded servers' folder may be anywhere (EMBEDDED_VAR_DIR).
    git = ["git", "--no-optional-locks", "-C", str(Path(__file__).resolve().parent.parent)]
    try:
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
        changes = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "changed_files": None}
    return {"commit": commit.strip(), "changed_files": len(changes.splitlines())}


def machine_description(*, database_url: str, redis_url: str) -> dict[str, Any]:
    """Cores, memory, CPU model, Python, PostgreSQL and Redis versions, and whether the services are embedded."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres_version = cursor.fetchone()[0]
    client = redis.Redis.from_url(redis_url)
    redis_version = client.info("server")["redis_version"]
    client.close()
    return {
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "postgresql": postgres_version,
        "postgresql_embedded": _is_embedded(database_url),
        "redis": redis_version,
        "redis_embedded": _is_embedded(redis_url),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }
