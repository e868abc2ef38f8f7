"""Test settings: the project's settings with a database, Redis key prefix and media folder of this run's own."""

from __future__ import annotations

import os
import tempfile
import uuid

RUN_ID = uuid.uuid4().hex[:8]

# Set before the project settings read them, so that every process of this run (workers too) shares them.
os.environ.setdefault("REDIS_KEY_PREFIX", f"genservice-test-{RUN_ID}")
os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="genservice-media-"))
os.environ.setdefault("SECRET_KEY", "test-only-secret-key")
# Tests send bursts on purpose; the one that checks the limit lowers it.
os.environ.setdefault("THROTTLE_CREATE_RATE", "10000/min")

from project.settings import *  # noqa: E402,F403
from project.settings import DATABASES  # noqa: E402

# Runs sharing one server (two checkouts, CI beside a developer) each get a test database of their own.
DATABASES["default"]["TEST"] = {"NAME": f"test_genservice_{RUN_ID}"}
