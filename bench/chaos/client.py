"""The run's API client and its submissions: every job sent at its moment with an idempotency key, some canceled."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

from bench.chaos.plan import PROJECT_ID, JobSpec

CLIENTS = 16
REQUEST_TIMEOUT = 10.0
# A video canceled once in a stage is looked at this often, for at most this long.
STAGE_POLL_SECONDS = 0.2
STAGE_WAIT_SECONDS = 150.0


class Api:
    """A client of the API that retries connection errors and 5xx answers (same idempotency key) and counts both."""

    def __init__(self, base: str, retry_seconds: float) -> None:
        self.base = base
        self.retry_seconds = retry_seconds
        self._local = threading.local()
        self._lock = threading.Lock()
        self.statuses: Counter[int] = Counter()
        self.server_errors: list[dict[str, Any]] = []
        self.connection_errors: Counter[str] = Counter()
        self.unexpected: list[dict[str, Any]] = []
        self.create_latencies: list[float] = []

    def call(
        self, method: str, path: str, token: str, *, body: dict[str, Any] | None = None, key: str = ""
    ) -> requests.Response | None:
        """Send until an answer below 500 comes or the retry time is up; the last answer, if any."""
        headers = {"Authorization": f"Token {token}", **({"Idempotency-Key": key} if key else {})}
        deadline = time.monotonic() + self.retry_seconds
        pause = 0.2
        while True:
            sent = time.time()
            response: requests.Response | None
            try:
                response = self._session().request(
                    method, f"{self.base}{path}", json=body, headers=headers, timeout=REQUEST_TIMEOUT
                )
            except requests.RequestException as error:
                response = None
                with self._lock:
                    self.connection_errors[type(error).__name__] += 1
            else:
                self._record(method, path, response, sent)
                if response.status_code < 500:
                    return response
            if time.monotonic() > deadline:
                return response
            time.sleep(pause)
            pause = min(2 * pause, 2.0)

    def note_unexpected(self, what: str, response: requests.Response | None) -> None:
        with self._lock:
            self.unexpected.append(
                {
                    "request": what,
                    "status": response.status_code if response is not None else None,
                    "body": response.text[:300] if response is not None else "no answer",
                }
            )

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        session: requests.Session = self._local.session
        return session

    def _record(self, method: str, path: str, response: requests.Response, sent: float) -> None:
        with self._lock:
            self.statuses[response.status_code] += 1
            if response.status_code >= 500:
                self.server_errors.append(
                    {
                        "at": sent,
                        "method": method,
                        "path": path,
                        "status": response.status_code,
                        "body": response.text[:300],
                    }
                )
            elif method == "POST" and response.status_code == 202:
                self.create_latencies.append(time.time() - sent)


@dataclass
class Submitted:
    """What the API answered for one job spec: its id, and for a cancel the status and the stage it left the job in."""

    job_id: str
    cancel_status: int | None = None
    cancel_stage: str = ""


def _wait_for_stage(api: Api, spec: JobSpec, job_id: str) -> None:
    """Wait until the API shows the job in ``spec.cancel_in_stage``, or finished, or the wait is up."""
    deadline = time.monotonic() + STAGE_WAIT_SECONDS
    while time.monotonic() < deadline:
        response = api.call("GET", f"/api/jobs/{job_id}/", spec.token)
        if response is not None and response.status_code == 200:
            job = response.json()
            if job["stage"] == spec.cancel_in_stage or job["finished_at"] is not None:
                return
        time.sleep(STAGE_POLL_SECONDS)


def submit_all(api: Api, specs: list[JobSpec], started: float, frames_url: str) -> dict[str, dict[int, Submitted]]:
    """Send every job at its moment, cancel the chosen ones after their delay or once in their stage; the job ids by
    kind and index."""
    submitted: dict[str, dict[int, Submitted]] = {"image": {}, "video": {}}

    def one(spec: JobSpec) -> None:
        time.sleep(max(0.0, started + spec.send_at - time.time()))
        key = f"{PROJECT_ID}-{spec.tag}"
        response = api.call("POST", f"/api/{spec.kind}s/", spec.token, body=spec.body(frames_url), key=key)
        if response is None or response.status_code != 202:
            api.note_unexpected(f"POST /api/{spec.kind}s/ {spec.tag}", response)
            return
        entry = submitted[spec.kind][spec.index] = Submitted(response.json()["id"])
        if not spec.canceled:
            return
        if spec.cancel_after is not None:
            time.sleep(spec.cancel_after)
        else:
            _wait_for_stage(api, spec, entry.job_id)
        cancel = api.call("POST", f"/api/jobs/{entry.job_id}/cancel/", spec.token)
        entry.cancel_status = cancel.status_code if cancel is not None else None
        if cancel is not None and cancel.status_code == 200:
            entry.cancel_stage = cancel.json()["stage"]
        # 409: the job finished before the cancel arrived, which the policy allows.
        if entry.cancel_status not in (200, 409):
            api.note_unexpected(f"POST /api/jobs/{{id}}/cancel/ {spec.tag}", cancel)

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        list(pool.map(one, specs))
    return submitted


def wait_finished(count: int, timeout: float) -> float | None:
    """Poll the database until ``count`` chaos jobs have finished, each video in the stage ``done`` (a finished video
    may still be stopping at the provider); when that was seen, or None at the timeout."""
    from django.db import DatabaseError, connections
    from django.db.models import Q

    from generation.models import Job

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            finished = Job.objects.filter(project_id=PROJECT_ID, status__in=Job.FINISHED_STATUSES).filter(
                Q(kind=Job.Kind.IMAGE) | Q(stage=Job.Stage.DONE)
            )
            if finished.count() >= count:
                return time.time()
        except DatabaseError:
            # PostgreSQL may be restarting: drop the broken connection, the next query opens a new one.
            connections.close_all()
        time.sleep(0.5)
    return None
