"""The run's own PostgreSQL and Redis, in a temporary folder: a run restarts its servers, never the shared ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from bench.machine import code_revision
from project import embedded

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Set for the inner process that run_on_own_services starts, whose EMBEDDED_VAR_DIR is a temporary folder, to
# the code revision measured: bench.machine reads it from the folder above EMBEDDED_VAR_DIR, no longer the checkout.
OWN_SERVICES = "GENSERVICE_OWN_SERVICES"


def run_on_own_services(module: str, argv: Sequence[str]) -> NoReturn:
    """Run ``python -m module argv`` against a PostgreSQL and a Redis of its own in a temporary folder, then remove it.

    The servers under var/ serve other people's tests: a run that restarts its servers must never touch them.
    """
    var_dir = Path(tempfile.mkdtemp(prefix="genservice-chaos-"))
    env = {name: value for name, value in os.environ.items() if name not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"EMBEDDED_VAR_DIR": str(var_dir), OWN_SERVICES: json.dumps(code_revision())})
    command = [sys.executable, "-m", "project.embedded", "run", "--", sys.executable, "-m", module, *argv]
    try:
        code = subprocess.run(command, cwd=BASE_DIR, env=env, check=False).returncode
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
    sys.exit(code)


def on_own_services() -> bool:
    """Whether this process runs on the services that run_on_own_services started."""
    return OWN_SERVICES in os.environ and embedded.VAR_DIR.resolve() != (BASE_DIR / "var").resolve()


def code_measured() -> dict[str, Any]:
    """The commit measured and how many files differed from it, as run_on_own_services saw them."""
    revision: dict[str, Any] = json.loads(os.environ[OWN_SERVICES])
    return revision
