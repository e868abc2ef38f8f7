"""A live video stack for end-to-end tests: the real web server and rundramatiq workers against one fake Veo."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from core.connections import redis_client
from testing.fakes.veo import FakeVeoServer
from testing.live import child_env, start_worker, stop, wait_until_ready, web_server
from testing.videos import video_queue_forget

SLOT_LEASE = 3.0
DISPATCH_TICK = 0.5
AMBIGUOUS_HOLD = 4.0
# Every video of the cluster is 4 s long, at 2 credits a second.
VIDEO_COST = 8


@dataclass
class Cluster:
    """The web server and the worker processes of one test, all against the same fake Veo."""

    base: str
    env: dict[str, str]
    log_dir: Path
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_workers(self, *names: str) -> list[subprocess.Popen[bytes]]:
        """Start worker processes (each as on a machine of its own) and wait until all take messages."""
        logs = {name: self.log_dir / f"worker-{name}.log" for name in names}
        for name, log in logs.items():
            self.workers[name] = start_worker(self.env, log)
        for name, log in logs.items():
            wait_until_ready(self.workers[name], log)
        return [self.workers[name] for name in names]


@contextmanager
def cluster(veo: FakeVeoServer, log_dir: Path, **overrides: str) -> Iterator[Cluster]:
    """Serve the API against the fake Veo with short polls, leases and ticks; stop every process at the end."""
    video_queue_forget()
    env = child_env(
        VIDEO_PROVIDER="veo",
        GEMINI_API_BASE=veo.url,
        GEMINI_API_KEY="veo-key",
        VIDEO_FIRST_POLL="0.2",
        VIDEO_POLL_INTERVAL="0.1",
        VIDEO_AMBIGUOUS_START_HOLD=f"{AMBIGUOUS_HOLD:g}",
        VIDEO_STOP_GRACE="2",
        VIDEO_SLOT_LEASE=f"{SLOT_LEASE:g}",
        VIDEO_DISPATCH_TICK=f"{DISPATCH_TICK:g}",
        VIDEO_MAX_QUEUED_PER_USER="20",
        IMAGE_RETRY_DELAYS="0.5,1,2",
        # The dispatcher's lock lasts four provider timeouts; the default two minutes would make it eight.
        PROVIDER_TIMEOUT="5",
        VIDEO_PRICES=json.dumps({"veo-3.0-generate-001": {"720p": VIDEO_COST // 4}}),
        **overrides,
    )
    with web_server(env, log_dir / "web.log") as base:
        running = Cluster(base, env, log_dir)
        try:
            yield running
        finally:
            stop(*running.workers.values())
            # A killed worker leaves its slots and maybe the dispatch lock behind; the next test starts clean.
            stale = list(redis_client().scan_iter(match=f"{settings.REDIS_KEY_PREFIX}:video:*"))
            if stale:
                redis_client().delete(*stale)
