"""The periodic duties each worker process runs beside its actors."""

from __future__ import annotations

import logging
import threading
import time

import dramatiq
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)


class Housekeeping(Middleware):
    """Runs the periodic duties in each worker process: start deadlines, the video dispatcher's tick and the
    reconciler.

    Job creation and finished generations wake the dispatcher at once; the tick (every ``VIDEO_DISPATCH_TICK``
    seconds) cancels the jobs that did not start by their deadline and is the safety net that adopts
    generations whose poll chain went quiet and starts videos whose retry became due. Every
    ``RECONCILE_INTERVAL`` seconds one process of the cluster runs the reconciler, which re-sends jobs whose
    message was lost and recovers image jobs whose worker died.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._tick, name="housekeeping", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _tick(self) -> None:
        # Imported here: Dramatiq loads its middleware with the settings, before Django's apps are ready.
        from django.conf import settings
        from django.db import close_old_connections

        from generation.recovery.reconciler import reconcile_once_across_the_cluster
        from generation.services import job_deadlines_enforce
        from generation.videos.dispatcher import video_dispatch

        next_reconcile = time.monotonic() + settings.RECONCILE_INTERVAL
        while not self._stop.wait(settings.VIDEO_DISPATCH_TICK):
            try:
                if time.monotonic() >= next_reconcile:
                    next_reconcile = time.monotonic() + settings.RECONCILE_INTERVAL
                    reconcile_once_across_the_cluster()
                else:
                    job_deadlines_enforce()
                    video_dispatch()
            except Exception:
                # Redis or the database may be down for a while; the next tick tries again.
                logger.exception("housekeeping tick failed; trying again at the next tick")
            finally:
                close_old_connections()
