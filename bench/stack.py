"""The stack under test: a throwaway database and Redis prefix, users with tokens, the web server and a worker."""

from __future__ import annotations

import http.client
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
import psycopg
import redis

from bench.loadgen import LOCALHOST, free_port
from project import embedded

BASE_DIR = Path(__file__).resolve().parent.parent
CREDITS_PER_USER = 100_000_000
STARTUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class BenchEnvironment:
    """Where the stack under test keeps its state, and the environment its processes run with."""

    database_name: str
    database_url: str
    redis_url: str
    redis_prefix: str
    work_dir: Path
    log_dir: Path
    env: dict[str, str]
    # The PostgreSQL postmaster and the Redis server, when they run on this machine: their CPU is measured too.
    service_pids: dict[str, int]


def _admin_connection(database_url: str) -> psycopg.Connection:
    params = dj_database_url.parse(database_url)
    return psycopg.connect(
        dbname=params["NAME"],
        user=params["USER"] or None,
        password=params["PASSWORD"] or None,
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        autocommit=True,
    )


def _run_sql(database_url: str, statement: str) -> None:
    connection = _admin_connection(database_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def redis_flush(redis_url: str, prefix: str) -> int:
    """Delete every key under the prefix: queued messages included; return how many went."""
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
    return len(keys)


def _is_local(host: str | None) -> bool:
    return not host or host.startswith("/") or host in {"localhost", "127.0.0.1", "::1"}


def _service_pids(database_url: str, redis_url: str) -> dict[str, int]:
    """The postmaster (parent of this connection's backend) and the Redis server, when they run on this machine."""
    from django.db import connection

    pids = {}
    if _is_local(dj_database_url.parse(database_url)["HOST"]):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        pids["postgres"] = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    if _is_local(urlsplit(redis_url).hostname):
        client = redis.Redis.from_url(redis_url)
        pids["redis"] = int(client.info("server")["process_id"])
        client.close()
    return pids


@contextmanager
def bench_environment(*, log_dir: Path) -> Iterator[BenchEnvironment]:
    """Create a fresh database, Redis prefix and media folder, set up Django on them; at the end keep only the logs."""
    admin_url = os.environ.get("DATABASE_URL") or embedded.postgres_url()
    redis_url = os.environ.get("REDIS_URL") or embedded.redis_url()
    suffix = secrets.token_hex(4)
    name = f"genservice_bench_{suffix}"
    work_dir = Path(tempfile.mkdtemp(prefix="genservice-bench-"))
    env = dict(os.environ)
    # As deployed: DEBUG off, a real secret, the local provider drawing at once so that the pipeline is measured.
    env.pop("DEBUG", None)
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        DATABASE_URL=urlsplit(admin_url)._replace(path=f"/{name}").geturl(),
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=f"genservice-bench-{suffix}",
        SECRET_KEY=secrets.token_urlsafe(50),
        MEDIA_ROOT=str(work_dir / "media"),
        SERVE_MEDIA="0",
        IMAGE_PROVIDER="local",
        LOCAL_PROVIDER_LATENCY="0",
        LOCAL_PROVIDER_FAILURE_RATE="0",
        # The per-user rate limit still counts every create request in Redis, but never refuses one here.
        THROTTLE_CREATE_RATE="1000000/min",
    )
    _run_sql(admin_url, f"CREATE DATABASE {name}")
    try:
        os.environ.pop("DEBUG", None)
        os.environ.update(env)
        import django
        from django.core.management import call_command

        django.setup()
        # The servers log as deployed, into log_dir; this process only reports what goes wrong.
        logging.getLogger().setLevel(logging.WARNING)
        call_command("migrate", interactive=False, verbosity=0)
        log_dir.mkdir(parents=True, exist_ok=True)
        services = _service_pids(env["DATABASE_URL"], redis_url)
        yield BenchEnvironment(
            name, env["DATABASE_URL"], redis_url, env["REDIS_KEY_PREFIX"], work_dir, log_dir, env, services
        )
    finally:
        from django.db import connections

        connections.close_all()
        _run_sql(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        redis_flush(redis_url, env["REDIS_KEY_PREFIX"])
        shutil.rmtree(work_dir, ignore_errors=True)


def bench_users(count: int) -> list[str]:
    """Create users with plenty of credits, through the credits service; return their API tokens."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from credits.services import credit_grant

    tokens = []
    for index in range(count):
        user = get_user_model().objects.create_user(username=f"bench-{index}")
        credit_grant(user_id=user.pk, amount=CREDITS_PER_USER, note="benchmark")
        tokens.append(Token.objects.create(user=user).key)
    return tokens


def _answers(port: int) -> bool:
    connection = http.client.HTTPConnection(LOCALHOST, port, timeout=2)
    try:
        connection.request("GET", "/api/credits/")
        return connection.getresponse().status == 401
    except OSError:
        return False
    finally:
        connection.close()


def stop(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Stop a process politely, then its whole group firmly."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass(frozen=True)
class WebServer:
    port: int
    process: subprocess.Popen[bytes]
    workers: int


@contextmanager
def web_server(bench: BenchEnvironment, *, workers: int) -> Iterator[WebServer]:
    """Serve the project as deployed: uvicorn with its worker processes, no access log; stop it at the end."""
    port = free_port()
    log = bench.log_dir / f"web-{workers}-workers.log"
    command = [sys.executable, "-m", "uvicorn", "project.asgi:application", "--host", LOCALHOST, "--port", str(port)]
    command += ["--no-access-log", "--workers", str(workers)]
    # Appended to: a later server with the same worker count must not wipe an earlier one's errors.
    with log.open("a") as output:
        start = output.tell()
        process = subprocess.Popen(
            command, cwd=BASE_DIR, env=bench.env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output_so_far() -> str:
        with log.open() as text:
            text.seek(start)
            return text.read()

    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        # Every worker process says so once it is ready; the first answer alone may come from only one of them.
        while not (output_so_far().count("Application startup complete") >= workers and _answers(port)):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the web server did not start:\n{output_so_far()}")
            time.sleep(0.1)
        yield WebServer(port, process, workers)
    finally:
        stop(process)


@contextmanager
def worker(bench: BenchEnvironment, *, threads: int) -> Iterator[subprocess.Popen[bytes]]:
    """Run one worker process (``manage.py rundramatiq --processes 1``); stop it at the end."""
    command = [sys.executable, "manage.py", "rundramatiq", "--processes", "1", "--threads", str(threads)]
    with (bench.log_dir / "worker.log").open("a") as output:
        process = subprocess.Popen(
            command, cwd=BASE_DIR, env=bench.env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        stop(process)
