"""Signals other parts of the service listen to, so that the job services need not know them."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once a change of a job has committed and its event is published, with ``job`` (as committed) and
# ``snapshot`` (the job as the API shows it). Receivers must be quick and must not raise: they run in the
# request or the worker that changed the job.
job_published = Signal()
