"""Run the real web server and real worker processes against the test database, for end-to-end tests."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent
WORKER_READY = "Worker process is ready for action."
_PR_SET_CHILD_SUBREAPER = 36


def database_url() -> str:
    """The URL of the database the tests run against (pytest-django's test database), for child processes."""
    params: Mapping[str, Any] = connection.settings_dict
    credentials = f"{quote(params['USER'] or '')}:{quote(params['PASSWORD'] or '')}"
    host = quote(params["HOST"] or "localhost", safe="")
    port = f":{params['PORT']}" if params["PORT"] else ""
    return f"postgresql://{credentials}@{host}{port}/{params['NAME']}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def child_env(**overrides: str) -> dict[str, str]:
    """This process's environment (the run's Redis prefix and media folder included) pointed at the test database."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="testing.settings", DATABASE_URL=database_url(), **overrides)
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


@contextmanager
def web_server(env: dict[str, str], log: Path) -> Iterator[str]:
    """Serve the project with uvicorn, as deployed; yield its base URL."""
    port = free_port()
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "project.asgi:application", "--port", str(port), "--no-access-log"],
            cwd=BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    requests.get(f"{base}/api/schema/", timeout=1)
                    break
                except requests.ConnectionError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"web server did not start:\n{log.read_text()}") from None
                    time.sleep(0.1)
            yield base
        finally:
            stop(process)


def start_worker(
    env: dict[str, str], log: Path, *, threads: int = 2, queues: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start ``manage.py rundramatiq`` with one worker process."""
    command = [sys.executable, "manage.py", "rundramatiq", "--processes", "1", "--threads", str(threads)]
    if queues:
        command += ["--queues", *queues]
    with log.open("a") as output:
        # start_new_session: a test may kill the worker's whole process group, as a crash would.
        return subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_until_ready(process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """Wait until a worker started with ``start_worker`` on a log of its own says it takes messages."""
    deadline = time.monotonic() + timeout
    while WORKER_READY not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start:\n{log.read_text()}")
        time.sleep(0.05)


def group_members(group: int) -> set[int]:
    """The processes of a process group, zombies included, read from /proc."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # After the parenthesised command name come the state, the parent and the process group.
        if int(stat[stat.rindex(")") + 2 :].split()[2]) == group:
            members.add(int(entry.name))
    return members


def _set_child_subreaper(enabled: bool) -> None:
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, int(enabled), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


@contextmanager
def reaping_orphans() -> Iterator[None]:
    """Make this process the subreaper of its descendants for the block: it inherits the orphans of a process that
    dies and can reap them, where an init that never reaps (in some containers) would leave them as zombies."""
    _set_child_subreaper(True)
    try:
        yield
    finally:
        _set_child_subreaper(False)


def wait_group_gone(group: int, *, after: str, timeout: float = 10) -> None:
    """Wait until no process of a group is left, reaping those this process inherited; fail if some outlive the
    timeout (``after`` names what should have ended them)."""
    deadline = time.monotonic() + timeout
    while members := group_members(group):
        for pid in members:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {sorted(members)} of group {group} outlived {after}")
        time.sleep(0.01)


def kill_group(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGKILL a process started in a session of its own and its whole group, as a crash would, and reap them all."""
    with reaping_orphans():
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
        wait_group_gone(process.pid, after="SIGKILL", timeout=timeout)


def stop(*processes: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Stop child processes politely, all at once so that their shutdowns overlap, then firmly."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
