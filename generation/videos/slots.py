"""The video pipeline's cluster-wide slots and dispatcher lock (see ``core.leases``)."""

from __future__ import annotations

from django.conf import settings

from core.connections import redis_client
from core.leases import SingleRunner, SlotLimiter


def video_slots() -> SlotLimiter:
    """The cluster's video slots: ``VIDEO_MAX_CONCURRENT`` generations at the provider at once."""
    return SlotLimiter(
        client=redis_client(),
        key=f"{settings.REDIS_KEY_PREFIX}:video:slots",
        limit=settings.VIDEO_MAX_CONCURRENT,
        lease_seconds=settings.VIDEO_SLOT_LEASE,
    )


def video_dispatcher() -> SingleRunner:
    """Serialises video dispatch across the cluster, so that waiting videos start strictly in order."""
    # Renewed while a round runs, the lock of a dispatcher that died runs out within one slot lease.
    return SingleRunner(
        client=redis_client(),
        key=f"{settings.REDIS_KEY_PREFIX}:video:dispatch",
        lock_seconds=settings.VIDEO_SLOT_LEASE,
    )
