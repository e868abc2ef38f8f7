"""Headless Chromium for the browser tests: where it is, how it is started, how long a step may take."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Long enough for a browser to see every step; expect() waits this many milliseconds at most.
STEP_TIMEOUT_MS = 30_000

NO_CHROMIUM = f"no Chromium at {CHROMIUM_PATH}: install Debian's chromium package or set CHROMIUM_PATH"


def browser_test(test: Any) -> Any:
    """Mark a test as driving headless Chromium against the live stack, skipped when Chromium is missing."""
    for mark in (
        pytest.mark.browser,
        pytest.mark.django_db(transaction=True),
        pytest.mark.skipif(not Path(CHROMIUM_PATH).exists(), reason=NO_CHROMIUM),
    ):
        test = mark(test)
    return test
