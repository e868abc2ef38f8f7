from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from rest_framework.authtoken.models import Token

from credits.models import CreditLedgerEntry
from credits.services import credit_grant

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo"
DEMO_CREDITS = 100
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin"
# How long a stop waits for the web server and the worker before killing them.
SHUTDOWN_SECONDS = 20


class Command(BaseCommand):
    help = "Run the whole service on this machine: migrations, demo users, the web server and a worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--worker-threads", type=int, default=4)

    def handle(self, *args: Any, host: str, port: int, worker_threads: int, **options: Any) -> None:
        # A supervisor's stop (SIGTERM) ends the stack as Ctrl-C does, instead of leaving the server and the worker
        # running without it; a second one while stopping changes nothing.
        stopping = threading.Event()
        signal.signal(signal.SIGTERM, lambda _signum, _frame: stopping.set())
        call_command("migrate", interactive=False, verbosity=0)
        token = self._demo_users()
        if stopping.is_set():
            return
        python = sys.executable
        processes = [
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "uvicorn",
                    "project.asgi:application",
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--no-access-log",
                    # Open event streams would otherwise hold a stop up until they close.
                    "--timeout-graceful-shutdown",
                    str(SHUTDOWN_SECONDS // 2),
                ]
            ),
            subprocess.Popen(
                [
                    python,
                    "manage.py",
                    "rundramatiq",
                    "--processes",
                    "1",
                    "--threads",
                    str(worker_threads),
                    # A job in hand is given this long to finish (Dramatiq's default is ten minutes); the
                    # reconciler picks up what a stop cuts short.
                    "--worker-shutdown-timeout",
                    str(SHUTDOWN_SECONDS // 2 * 1000),
                ]
            ),
        ]
        base = f"http://{host}:{port}"
        self.stdout.write(
            self.style.SUCCESS("\nThe generation service is starting.\n")
            + f"  Studio     {base}/   (log in as {DEMO_USERNAME} / {DEMO_PASSWORD})\n"
            + f"  API docs   {base}/api/docs/\n"
            + f"  Admin      {base}/admin/   (user {ADMIN_USERNAME}, password {ADMIN_PASSWORD})\n"
            + f"  Demo user  {DEMO_USERNAME} / {DEMO_PASSWORD}, token {token}\n"
            + f"  Try it     curl -X POST {base}/api/images/ -H 'Authorization: Token {token}' "
            + '-H \'Content-Type: application/json\' -d \'{"prompt": "a lighthouse at dawn", "quantity": 2}\'\n'
            + f"  Database   {settings.DATABASES['default']['NAME']}, Redis {settings.REDIS_URL}\n"
            + "Press Ctrl-C to stop.\n"
        )
        self._supervise(processes, stopping)

    def _demo_users(self) -> str:
        users = get_user_model().objects
        if not users.filter(username=ADMIN_USERNAME).exists():
            users.create_superuser(ADMIN_USERNAME, "admin@example.com", ADMIN_PASSWORD)
        demo, created = users.get_or_create(username=DEMO_USERNAME)
        if created:
            demo.set_password(DEMO_PASSWORD)
            demo.save()
        if not CreditLedgerEntry.objects.filter(account__user=demo, kind=CreditLedgerEntry.Kind.GRANT).exists():
            credit_grant(user_id=demo.pk, amount=DEMO_CREDITS, note="demo credits")
        return Token.objects.get_or_create(user=demo)[0].key

    def _supervise(self, processes: list[subprocess.Popen[bytes]], stopping: threading.Event) -> None:
        try:
            while not stopping.wait(0.5):
                if not all(process.poll() is None for process in processes):
                    self.stderr.write("A process of the stack exited; stopping the others.")
                    break
        except KeyboardInterrupt:
            pass
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + SHUTDOWN_SECONDS
            for process in processes:
                try:
                    process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
