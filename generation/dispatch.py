"""The one place that sends messages: by actor name, carrying ids only, after the current transaction commits.

Sending by name keeps the services free of the actor modules (which import the services): the actors are
registered with the broker when the app is ready, in every process that may send.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from django.db import transaction

from generation.models import Job

# The actor that owns each leased stage of a video's pipeline (see generation/videos/stages.py). A waiting video is
# started by the dispatcher, and a running one's polls belong to one message at a time: the dispatcher adopts a
# quiet poll chain, so nothing here may send them.
VIDEO_STAGE_ACTORS: dict[str, str] = {Job.Stage.PREPARING: "prepare_video", Job.Stage.DOWNLOADING: "download_video"}


def message_new(actor_name: str, *args: str, **options: Any) -> dramatiq.Message[Any]:
    """A message for the named actor, not sent yet: its id can be recorded as the owner of a step first."""
    return dramatiq.get_broker().get_actor(actor_name).message_with_options(args=args, **options)


def message_enqueue(message: dramatiq.Message[Any], *, delay: float = 0) -> None:
    """Send a message made by ``message_new``, after ``delay`` seconds."""
    # Dramatiq puts any delay that is not None, 0 included, on the delay queue: no delay must be None.
    dramatiq.get_broker().enqueue(message, delay=int(delay * 1000) or None)


def message_send(actor_name: str, *args: str, delay: float = 0, **options: Any) -> None:
    """Send a message to the named actor now, after ``delay`` seconds."""
    message_enqueue(message_new(actor_name, *args, **options), delay=delay)


def message_send_on_commit(actor_name: str, *args: str, delay: float = 0, **options: Any) -> None:
    """Send the message once the current transaction commits (at once outside one)."""
    # robust: a broker that is down must not undo or fail a committed change; the database is the source of
    # truth, and the reconciler sends again what was lost.
    transaction.on_commit(lambda: message_send(actor_name, *args, delay=delay, **options), robust=True)


def job_dispatch(*, job: Job, delay: float = 0) -> None:
    """Wake the worker that owns the job's next step once the current transaction commits."""
    if job.kind == Job.Kind.IMAGE:
        message_send_on_commit("generate_images", str(job.id), delay=delay, retries=job.retries)
    elif job.stage == Job.Stage.WAITING:
        # Videos start in order through the dispatcher, never directly.
        message_send_on_commit("dispatch_videos", delay=delay)
    elif job.stage in VIDEO_STAGE_ACTORS:
        message_send_on_commit(VIDEO_STAGE_ACTORS[job.stage], str(job.id), delay=delay)
