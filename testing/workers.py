"""Dramatiq workers run in the test's own process, consuming the real Redis broker."""

from __future__ import annotations

import dramatiq


def run_worker(broker: dramatiq.Broker, queues: set[str]) -> dramatiq.Worker:
    """Start a real worker consuming the given queues from Redis in this process."""
    worker = dramatiq.Worker(broker, queues=queues, worker_threads=4, worker_timeout=20)
    worker.start()
    return worker
