"""`make run`'s stack as a supervisor sees it: stopped with SIGTERM, it stops its web server and its worker too."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.conf import settings

from testing.live import (
    BASE_DIR,
    WORKER_READY,
    child_env,
    free_port,
    group_members,
    kill_group,
    reaping_orphans,
    wait_group_gone,
)
from testing.waits import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def answers(port: int) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    return False


def test_a_stack_stopped_with_sigterm_leaves_no_process_behind(tmp_path: Path):
    port = free_port()
    log = tmp_path / "stack.log"
    # As `make run` starts it; with DATABASE_URL and REDIS_URL set, the wrapper starts no embedded server here.
    command = [sys.executable, "-m", "project.embedded", "run", "--"]
    command += [sys.executable, "manage.py", "runstack", "--port", str(port), "--worker-threads", "1"]
    env = child_env(REDIS_URL=settings.REDIS_URL)
    with log.open("w") as output:
        stack = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for(lambda: WORKER_READY in log.read_text() and answers(port), timeout=60, message="the stack started")
        # The wrapper, runstack, uvicorn, and rundramatiq with its worker process at least.
        assert len(group_members(stack.pid)) >= 5
        with reaping_orphans():
            # Only the top process is told, as `docker stop` or a service manager tells a container's first process.
            stack.send_signal(signal.SIGTERM)
            stack.wait(timeout=40)
            wait_group_gone(stack.pid, after="the stack's SIGTERM", timeout=10)
        assert not answers(port)
    finally:
        if group_members(stack.pid):
            kill_group(stack)
