"""The reconciler: finds jobs that lost their broker message or their worker, and sets them going again."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from core.connections import redis_client
from core.leases import SingleRunner
from generation import services
from generation.dispatch import job_dispatch
from generation.media import generations_expire
from generation.models import Job
from generation.videos.dispatcher import video_dispatch
from generation.webhooks.services import webhook_deliveries_resend

logger = logging.getLogger(__name__)

# At most this many jobs are handled in one pass, so that a large backlog is worked through in bounded steps.
BATCH = 500
# The video stages whose worker holds a lease on the job rather than a slot.
_LEASED_VIDEO_STAGES = (Job.Stage.PREPARING, Job.Stage.DOWNLOADING)


@dataclass
class Reconciled:
    """What one pass did."""

    redispatched: int = 0
    recovered: int = 0
    failed: int = 0
    expired: int = 0
    webhooks_resent: int = 0


def jobs_reconcile() -> Reconciled:
    """Re-send due jobs untouched for ``RECONCILE_AFTER`` seconds, recover image jobs whose lease ran out, wake
    the video dispatcher (which adopts running videos whose poll chain went quiet) and delete the files past
    ``MEDIA_RETENTION_DAYS``."""
    done = Reconciled()
    now = timezone.now()
    untouched = now - timedelta(seconds=settings.RECONCILE_AFTER)
    due = Q(next_run_at__isnull=True) | Q(next_run_at__lt=untouched)
    # Steps owned by whoever holds a message: the message was lost (or its worker died and its lease ran out).
    lost = (Q(kind=Job.Kind.IMAGE, status=Job.Status.QUEUED) | Q(stage__in=_LEASED_VIDEO_STAGES)) & (
        Q(lease_expires_at__isnull=True, updated_at__lt=untouched) | Q(lease_expires_at__lt=now)
    )
    for job in Job.objects.filter(lost, due).order_by("created_at")[:BATCH]:
        # Touching the row first means the next pass waits another RECONCILE_AFTER before sending again;
        # a duplicate message is harmless anyway, since only one claim can succeed.
        if Job.objects.filter(id=job.id, updated_at=job.updated_at).update(updated_at=now):
            job_dispatch(job=job)
            done.redispatched += 1
    abandoned = Job.objects.filter(kind=Job.Kind.IMAGE, status=Job.Status.PROCESSING, lease_expires_at__lt=now)
    for job_id in abandoned.order_by("lease_expires_at").values_list("id", flat=True)[:BATCH]:
        # A job whose worker renewed its lease meanwhile is left alone and counted nowhere.
        status = services.job_recover(job_id=job_id)
        done.recovered += status == Job.Status.QUEUED
        done.failed += status == Job.Status.FAILED
    video_dispatch()
    done.expired = generations_expire()
    done.webhooks_resent = webhook_deliveries_resend()
    if done.redispatched or done.recovered or done.failed or done.webhooks_resent:
        logger.warning("reconciler: %s", done)
    return done


def reconcile_once_across_the_cluster() -> None:
    """Run a reconciler pass unless another worker process is running one right now."""
    # Renewed while a pass runs, the lock of a worker that died mid-pass runs out before the next pass is due.
    SingleRunner(
        client=redis_client(), key=f"{settings.REDIS_KEY_PREFIX}:reconciler", lock_seconds=settings.RECONCILE_INTERVAL
    ).run(jobs_reconcile)
