"""Chaos run: image and video jobs through the API while workers are SIGKILLed and Redis and PostgreSQL restart.

Run from the repository root: ``python -m bench.chaos [options]``. It starts a PostgreSQL and a Redis of its own
under a temporary folder (never the shared ones under var/), the real uvicorn server, two real ``rundramatiq``
worker processes and the fake providers of tests/ in this process. It submits the jobs over HTTP with
idempotency keys and client retries, cancels some, and meanwhile SIGKILLs a random worker's process group every
few seconds (a replacement starts at once), restarts Redis empty once and PostgreSQL once. When every job has
finished it checks that each one completed, failed or was canceled; that no image or video was generated at the
provider more often than the at-least-once window of docs/chaos.md allows; that the ledger is exact; and that
``manage.py audit_credits`` is clean. The figures go to bench/results/chaos-*.json, the servers' logs beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import redis
import requests

from bench import report
from bench.loadgen import LOCALHOST, latency_summary
from bench.machine import code_revision, machine_description
from bench.stack import CREDITS_PER_USER, BenchEnvironment, bench_environment, bench_users, web_server
from project import embedded
from tests.fake_provider import FakeProviderServer
from tests.fake_veo import FakeVeoServer
from tests.live import WORKER_READY, kill_group, start_worker, stop, wait_until_ready

BASE_DIR = Path(__file__).resolve().parent.parent
# Set for the inner process that run_on_own_services starts, whose EMBEDDED_VAR_DIR is a temporary folder, to
# the code revision measured: bench.machine reads it from the folder above EMBEDDED_VAR_DIR, no longer the checkout.
OWN_SERVICES = "GENSERVICE_OWN_SERVICES"
API_KEY = "chaos-key"
PROJECT_ID = "chaos"
WORKERS = 2
# Each worker asks for a model named after itself: the fakes record the model, so they tell which worker called.
MODEL_PREFIX = "chaos-"
CLIENTS = 16
# A dispatch round or reconciler pass holds its lock for milliseconds, or a second on a loaded machine; a hold
# this long most likely means its holder died.
LONG_HOLD_SECONDS = 1.5
AIM_SECONDS = 2.0
REQUEST_TIMEOUT = 10.0
TAG = re.compile(r"<(?:image|video)-\d{3}>")
FAILURES = {"500", "429", "400", "content_policy"}
# name: (share of the jobs, what the fake answers each call in turn, the last repeating); "ok" is the latency.
IMAGE_SCENARIOS = {
    "ok": (0.70, ("ok",)),
    "transient": (0.12, ("500", "ok")),
    "rate_limited": (0.06, ("429", "500", "ok")),
    "exhausted": (0.04, ("500",)),
    "partial": (0.04, ("ok", "500")),
    "refused": (0.04, ("content_policy",)),
}
VIDEO_SCENARIOS = {
    "ok": (0.75, ("ok",)),
    "rate_limited": (0.10, ("429", "ok")),
    "server_error": (0.05, ("500", "ok")),
    "op_error": (0.05, ("op_error",)),
    "filtered": (0.05, ("filtered",)),
}


def run_on_own_services(module: str, argv: Sequence[str]) -> NoReturn:
    """Run ``python -m module argv`` against a PostgreSQL and a Redis of its own in a temporary folder, then remove it.

    The servers under var/ serve other people's tests: a run that restarts its servers must never touch them.
    """
    var_dir = Path(tempfile.mkdtemp(prefix="genservice-chaos-"))
    env = {name: value for name, value in os.environ.items() if name not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"EMBEDDED_VAR_DIR": str(var_dir), OWN_SERVICES: json.dumps(code_revision())})
    command = [sys.executable, "-m", "project.embedded", "run", "--", sys.executable, "-m", module, *argv]
    try:
        code = subprocess.run(command, cwd=BASE_DIR, env=env, check=False).returncode
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
    sys.exit(code)


def on_own_services() -> bool:
    """Whether this process runs on the services that run_on_own_services started."""
    return OWN_SERVICES in os.environ and embedded.VAR_DIR.resolve() != (BASE_DIR / "var").resolve()


def code_measured() -> dict[str, Any]:
    """The commit measured and how many files differed from it, as run_on_own_services saw them."""
    revision: dict[str, Any] = json.loads(os.environ[OWN_SERVICES])
    return revision


@dataclass(frozen=True)
class Disruption:
    """One thing done to the stack: a worker killed or dead by itself, or Redis or PostgreSQL down for a while."""

    kind: str
    start: float
    end: float
    worker: str = ""

    def overlaps(self, start: float, end: float) -> bool:
        return self.start <= end and start <= self.end


def redis_restart_empty(down: float) -> Disruption:
    """Stop this run's Redis, delete its data and start it again, empty, on the same socket."""
    began = time.time()
    embedded.stop_redis()
    for path in (embedded.VAR_DIR / "redis").iterdir():
        if path.name.startswith(("appendonly", "dump")):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    time.sleep(down)
    embedded.redis_url()
    return Disruption("redis", began, time.time())


def postgres_restart(down: float) -> Disruption:
    """Stop this run's PostgreSQL and start it again on the same socket."""
    began = time.time()
    embedded.stop_postgres()
    time.sleep(down)
    # Imported once embedded.stop_postgres() has, which silences pgserver's warning at import.
    import pgserver

    pgdata = embedded.VAR_DIR / "postgres"
    # A stopped server restarts with the options of its last start (postmaster.opts), its socket folder included;
    # pgserver runs it as a user of its own when this process is root.
    user = "pgserver" if os.geteuid() == 0 else None
    # pgserver generates its command functions at import, out of sight of type checkers.
    pgserver.pg_ctl(["-w", "-l", str(pgdata / "log"), "restart"], pgdata=pgdata, user=user)  # type: ignore[attr-defined]
    return Disruption("postgres", began, time.time())


@dataclass(frozen=True)
class JobSpec:
    """One job the run submits: whose, what the fake provider answers it, when it is sent and whether it is canceled."""

    index: int
    kind: str
    token: str
    quantity: int
    scenario: str
    behaviours: tuple[str, ...]
    send_at: float
    cancel_after: float | None

    @property
    def tag(self) -> str:
        """The marker in the prompt that the fakes script and record it by."""
        return f"<{self.kind}-{self.index:03d}>"

    def body(self) -> dict[str, Any]:
        prompt = f"chaos {self.kind} {self.tag}"
        if self.kind == "video":
            return {"prompt": prompt, "duration": 4, "project_id": PROJECT_ID}
        return {"prompt": prompt, "quantity": self.quantity, "project_id": PROJECT_ID}


def _scenarios(table: dict[str, tuple[float, tuple[str, ...]]], count: int, rng: random.Random) -> list[str]:
    """Each scenario's share of ``count`` jobs, the first one taking the rounding, in random order."""
    names = [name for name, (share, _) in table.items() for _ in range(int(share * count))]
    names += [next(iter(table))] * (count - len(names))
    rng.shuffle(names)
    return names


def plan_jobs(args: argparse.Namespace, tokens: list[str], rng: random.Random) -> list[JobSpec]:
    """The images and videos in a random order, sent evenly over the submit window, some canceled soon after."""
    kinds = ["image"] * args.images + ["video"] * args.videos
    rng.shuffle(kinds)
    scenarios = {
        "image": iter(_scenarios(IMAGE_SCENARIOS, args.images, rng)),
        "video": iter(_scenarios(VIDEO_SCENARIOS, args.videos, rng)),
    }
    canceled = {
        "image": set(rng.sample(range(args.images), args.image_cancels)),
        "video": set(rng.sample(range(args.videos), args.video_cancels)),
    }
    # A canceled image is caught queued or mid-drawing; a canceled video waiting or generating (it takes seconds).
    cancel_delay = {"image": (0.0, 2.5), "video": (0.5, 1.5 * args.video_seconds)}
    latency = {"image": f"slow:{args.image_latency:g}", "video": "ok"}
    seen: Counter[str] = Counter()
    specs = []
    for position, kind in enumerate(kinds):
        index = seen[kind]
        seen[kind] += 1
        scenario = next(scenarios[kind])
        table = IMAGE_SCENARIOS if kind == "image" else VIDEO_SCENARIOS
        behaviours = tuple(latency[kind] if step == "ok" else step for step in table[scenario][1])
        specs.append(
            JobSpec(
                index=index,
                kind=kind,
                token=tokens[position % len(tokens)],
                # A partial failure refunds something only when it had more than one image to deliver.
                quantity=1 if kind == "video" else rng.randint(2 if scenario == "partial" else 1, 4),
                scenario=scenario,
                behaviours=behaviours,
                send_at=position * args.submit_seconds / len(kinds),
                cancel_after=rng.uniform(*cancel_delay[kind]) if index in canceled[kind] else None,
            )
        )
    return specs


@dataclass
class Worker:
    """One worker incarnation: a ``rundramatiq`` process group of its own and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    died_at: float | None = None

    @property
    def ready(self) -> bool:
        return WORKER_READY in self.log.read_text()


class WorkerPool:
    """Keeps WORKERS worker processes running; each is started with a model name of its own."""

    def __init__(self, bench: BenchEnvironment, threads: int) -> None:
        self.bench = bench
        self.threads = threads
        self.started: list[Worker] = []
        self.running: list[Worker] = []

    def start(self) -> Worker:
        name = f"w{len(self.started) + 1:02d}"
        model = f"{MODEL_PREFIX}{name}"
        env = {**self.bench.env, "AI_GATEWAY_IMAGE_MODEL": model, "VEO_MODEL": model}
        log = self.bench.log_dir / f"worker-{name}.log"
        worker = Worker(name, start_worker(env, log, threads=self.threads), log)
        self.started.append(worker)
        self.running.append(worker)
        return worker

    def start_all(self) -> None:
        for worker in [self.start() for _ in range(WORKERS)]:
            wait_until_ready(worker.process, worker.log, timeout=120)

    def kill_random(self, rng: random.Random) -> Disruption | None:
        """SIGKILL the process group of a random worker that takes messages and start its replacement."""
        ready = [worker for worker in self.running if worker.ready]
        if not ready:
            return None
        victim = rng.choice(ready)
        victim.died_at = time.time()
        kill_group(victim.process)
        self.running.remove(victim)
        self.start()
        return Disruption("kill", victim.died_at, victim.died_at, victim.name)

    def replace_exited(self) -> list[Disruption]:
        """Start a replacement for every worker that exited by itself, which the run counts as a crash."""
        exits = []
        for worker in [worker for worker in self.running if worker.process.poll() is not None]:
            worker.died_at = time.time()
            self.running.remove(worker)
            self.start()
            exits.append(Disruption("exit", worker.died_at, worker.died_at, worker.name))
        return exits

    def dead(self) -> set[str]:
        return {worker.name for worker in self.started if worker.died_at is not None}

    def stop(self) -> None:
        stop(*(worker.process for worker in self.running))


class LockWatch:
    """Samples the cluster-wide locks (video dispatcher, reconciler) and remembers how long each holder kept one.

    A round holds its lock for milliseconds; a holder that keeps it for seconds died with it.
    """

    def __init__(self, redis_url: str) -> None:
        from django.conf import settings

        from generation.slots import video_dispatcher

        self.client = redis.Redis.from_url(redis_url, socket_timeout=1)
        # The reconciler's key as generation/reconciler.py builds it; it has no accessor of its own.
        self.keys = {
            "video dispatcher": video_dispatcher().lock_key,
            "reconciler": f"{settings.REDIS_KEY_PREFIX}:reconciler:lock",
        }
        self.holders: dict[tuple[str, bytes | str], list[float]] = {}

    def sample(self) -> bool:
        """Note who holds each lock now; whether any is held."""
        now = time.time()
        held = False
        for name, key in self.keys.items():
            try:
                token = self.client.get(key)
            except redis.RedisError:
                continue
            if token is not None:
                held = True
                self.holders.setdefault((name, token), [now, now])[1] = now
        return held

    def long_holds(self, seconds: float, disruptions: list[Disruption]) -> list[dict[str, Any]]:
        """Every hold longer than ``seconds``, with the holder: the first worker to die while it lasted."""
        holds = []
        for (name, _), (first, last) in self.holders.items():
            if last - first > seconds:
                deaths = [d.worker for d in disruptions if d.kind in ("kill", "exit") and first <= d.start <= last]
                hold = {"lock": name, "from": first, "to": last, "seconds": round(last - first, 1)}
                holds.append({**hold, "holder": deaths[0] if deaths else ""})
        return holds


class Chaos:
    """SIGKILLs a random worker every few seconds, and takes Redis and then PostgreSQL down once, at set moments."""

    def __init__(
        self, pool: WorkerPool, locks: LockWatch, rng: random.Random, args: argparse.Namespace, started: float
    ) -> None:
        self.pool = pool
        self.locks = locks
        self.rng = rng
        self.args = args
        self.started = started
        self.disruptions: list[Disruption] = []
        self.error = ""
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except Exception as error:
            self.error = f"{type(error).__name__}: {error}"
            raise

    def _run(self) -> None:
        outages: list[tuple[float, Callable[[float], Disruption]]] = sorted(
            [
                (self.started + self.args.redis_at, redis_restart_empty),
                (self.started + self.args.postgres_at, postgres_restart),
            ],
            key=lambda outage: outage[0],
        )
        next_kill = self.started + self.rng.uniform(*self.args.kill_every)
        # Dead workers are replaced until the end; the kills and outages stop with the chaos window.
        while not self.stop.wait(0.1):
            held = self.locks.sample()
            self.disruptions += self.pool.replace_exited()
            now = time.time()
            due = next_kill <= now < self.started + self.args.chaos_seconds
            # Aiming, a due kill waits up to AIM_SECONDS for a moment when a worker holds a cluster-wide lock.
            aimed = held or not self.args.aim_at_locks or now >= next_kill + AIM_SECONDS
            if outages and now >= outages[0][0]:
                self.disruptions.append(outages.pop(0)[1](self.args.outage_seconds))
            elif due and aimed:
                killed = self.pool.kill_random(self.rng)
                if killed is not None:
                    self.disruptions.append(killed)
                    next_kill = now + self.rng.uniform(*self.args.kill_every)


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
    """What the API answered for one job spec."""

    job_id: str
    cancel_status: int | None = None


def submit_all(api: Api, specs: list[JobSpec], started: float) -> dict[str, dict[int, Submitted]]:
    """Send every job at its moment, cancel the chosen ones after their delay; the job ids by kind and index."""
    submitted: dict[str, dict[int, Submitted]] = {"image": {}, "video": {}}

    def one(spec: JobSpec) -> None:
        time.sleep(max(0.0, started + spec.send_at - time.time()))
        key = f"{PROJECT_ID}-{spec.tag}"
        response = api.call("POST", f"/api/{spec.kind}s/", spec.token, body=spec.body(), key=key)
        if response is None or response.status_code != 202:
            api.note_unexpected(f"POST /api/{spec.kind}s/ {spec.tag}", response)
            return
        entry = submitted[spec.kind][spec.index] = Submitted(response.json()["id"])
        if spec.cancel_after is None:
            return
        time.sleep(spec.cancel_after)
        cancel = api.call("POST", f"/api/jobs/{entry.job_id}/cancel/", spec.token)
        entry.cancel_status = cancel.status_code if cancel is not None else None
        # 409: the job finished before the cancel arrived, which the policy allows.
        if entry.cancel_status not in (200, 409):
            api.note_unexpected(f"POST /api/jobs/{{id}}/cancel/ {spec.tag}", cancel)

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        list(pool.map(one, specs))
    return submitted


def wait_finished(count: int, timeout: float) -> float | None:
    """Poll the database until ``count`` chaos jobs have finished; when that was seen, or None at the timeout."""
    from django.db import DatabaseError, connections

    from generation.models import Job

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if Job.objects.filter(project_id=PROJECT_ID, status__in=Job.FINISHED_STATUSES).count() >= count:
                return time.time()
        except DatabaseError:
            # PostgreSQL may be restarting: drop the broken connection, the next query opens a new one.
            connections.close_all()
        time.sleep(0.5)
    return None


def _knobs(images_url: str, veo_url: str) -> dict[str, str]:
    """Short timings so that a crash is noticed in seconds and the whole run takes a few minutes."""
    return {
        "IMAGE_PROVIDER": "gateway",
        "AI_GATEWAY_URL": images_url,
        "AI_GATEWAY_API_KEY": API_KEY,
        "VIDEO_PROVIDER": "veo",
        "GEMINI_API_BASE": veo_url,
        "GEMINI_API_KEY": API_KEY,
        "IMAGE_RETRY_DELAYS": "0.5,1,2",
        "JOB_LEASE_SECONDS": "10",
        "VIDEO_SLOT_LEASE": "5",
        "VIDEO_DISPATCH_TICK": "1",
        "VIDEO_POLL_INTERVAL": "0.3",
        "VIDEO_TIMEOUT": "120",
        "VIDEO_MAX_QUEUED_PER_USER": "1000",
        "RECONCILE_INTERVAL": "2",
        "RECONCILE_AFTER": "5",
        # What a worker logged just before its SIGKILL must be in its log.
        "PYTHONUNBUFFERED": "1",
    }


def _generations(behaviours: tuple[str, ...], calls: int) -> int:
    """How many of ``calls`` scripted answers delivered an image: the n-th call gets the n-th behaviour, the last
    repeating."""
    return sum(behaviours[min(call, len(behaviours) - 1)] not in FAILURES for call in range(calls))


def _worker_of(model: str) -> str:
    return model.removeprefix(MODEL_PREFIX)


def _expected_refund(job: dict[str, Any]) -> int:
    """The refund the policy gives: what was not delivered, except half a video canceled while generating."""
    undelivered = (job["quantity"] - job["result_count"]) * (job["credit_cost"] // job["quantity"])
    if job["status"] == "canceled" and job["kind"] == "video" and job["operation_name"]:
        return job["credit_cost"] // 2
    return undelivered if job["status"] in ("failed", "canceled") else 0


def _job_rows() -> dict[str, dict[str, Any]]:
    """Every chaos job as stored, with its generations counted and its ledger entries listed."""
    from django.db.models import Count

    from credits.models import CreditLedgerEntry
    from generation.models import Job

    fields = ("id", "user_id", "kind", "status", "quantity", "result_count", "credit_cost", "retries", "error_code")
    rows = {
        str(row["id"]): {**row, "charges": [], "refunds": []}
        for row in Job.objects.filter(project_id=PROJECT_ID)
        .annotate(generations_stored=Count("generations"))
        .values(*fields, "operation_name", "created_at", "finished_at", "generations_stored")
    }
    for entry in CreditLedgerEntry.objects.filter(job__project_id=PROJECT_ID).values("job_id", "kind", "amount"):
        rows[str(entry["job_id"])][f"{entry['kind']}s"].append(entry["amount"])
    return rows


@dataclass
class Analysis:
    """The per-job verdicts and the counts behind the summary."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def _check_job(
    spec: JobSpec,
    job: dict[str, Any],
    calls: list[tuple[str, float]],
    dead: set[str],
    disruptions: list[Disruption],
    prices: dict[str, int],
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """One job's figures and what is wrong with it: status, provider generations against its window, money."""
    problems: dict[str, list[str]] = defaultdict(list)
    name = f"{spec.kind} {spec.tag} ({spec.scenario}, job {job['id']})"
    if job["status"] not in ("completed", "failed", "canceled"):
        problems["terminal"].append(f"{name} is still {job['status']}")
    finished = job["finished_at"].timestamp() if job["finished_at"] else time.time()
    first_call = min((moment for _, moment in calls), default=finished)
    # Images are stored through PostgreSQL only; a video start is recorded in PostgreSQL but its slot and the
    # dispatcher's lock live in Redis, so for videos both outages open the window.
    outage_kinds = ("postgres",) if spec.kind == "image" else ("postgres", "redis")
    outages = sum(d.kind in outage_kinds and d.overlaps(first_call, finished) for d in disruptions)
    dead_callers = {worker for worker, _ in calls} & dead
    if spec.kind == "image":
        generated = _generations(spec.behaviours, len(calls))
        # Every stored image was generated once; a cancel may land while one more is being drawn.
        needed = job["generations_stored"]
        allowance = len(dead_callers) + outages + int(job["status"] == "canceled" and bool(calls))
    else:
        generated = len(calls)
        needed = min(generated, 1)
        allowance = len(dead_callers) + outages
    if generated > needed + allowance:
        problems["window"].append(
            f"{name}: {generated} generations at the provider for {needed} needed; the window allows {allowance} "
            f"more ({len(dead_callers)} workers that called died, {outages} outages)"
        )
    if spec.kind == "image" and generated < needed:
        problems["window"].append(f"{name}: {needed} images stored but only {generated} generated")
    if job["result_count"] != job["generations_stored"] or (
        job["status"] == "completed" and job["result_count"] != job["quantity"]
    ):
        problems["results"].append(f"{name}: {job['result_count']} results counted, {job['generations_stored']} stored")
    cost = spec.quantity * prices[spec.kind]
    refund = _expected_refund(job)
    if job["credit_cost"] != cost or job["charges"] != [-cost]:
        problems["ledger"].append(f"{name}: costs {job['credit_cost']} (expected {cost}), charged {job['charges']}")
    if sum(job["refunds"]) != refund or len(job["refunds"]) > 1:
        problems["ledger"].append(f"{name}: refunded {job['refunds']}, expected {refund} ({job['status']})")
    figures = {
        "kind": spec.kind,
        "tag": spec.tag,
        "id": job["id"],
        "scenario": spec.scenario,
        "quantity": spec.quantity,
        "status": job["status"],
        "error_code": job["error_code"],
        "retries": job["retries"],
        "provider_calls": len(calls),
        "generated": generated,
        "stored": job["generations_stored"],
        "extra": max(0, generated - needed),
        "allowed_extra": allowance,
        "dead_workers_called": sorted(dead_callers),
        # A video canceled between its claim and the recording of its operation is refunded in full, yet runs.
        "started_after_cancel": spec.kind == "video"
        and job["status"] == "canceled"
        and generated > 0
        and not job["operation_name"],
        "outages": outages,
        "refund": sum(job["refunds"]),
        "expected_refund": refund,
        "seconds_to_finish": round(finished - job["created_at"].timestamp(), 2),
    }
    return figures, problems


def analyse(
    specs: list[JobSpec],
    submitted: dict[str, dict[int, Submitted]],
    images: FakeProviderServer,
    veo: FakeVeoServer,
    pool: WorkerPool,
    disruptions: list[Disruption],
) -> Analysis:
    """Check every job, and every user's balance against the ledger and against what the jobs should have left."""
    from credits.models import CreditAccount
    from credits.selectors import credit_ledger_total
    from generation.prices import (
        image_cost,
        image_model_default,
        video_cost,
        video_model_default,
        video_resolution_default,
    )

    calls: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for request in images.received():
        if (match := TAG.search(request.prompt)) and request.body:
            calls[match[0]].append((_worker_of(str(request.body.get("model", ""))), request.received_at))
    for start in veo.starts:
        if match := TAG.search(start.prompt):
            # Operation names read models/{model}/operations/{id}.
            calls[match[0]].append((_worker_of(start.operation_name.split("/")[1]), start.started_at))
    rows = _job_rows()
    # Every video here is 4 s long, at the default model and resolution.
    video_model = video_model_default()
    prices = {
        "image": image_cost(model=image_model_default(), quantity=1),
        "video": video_cost(model=video_model, resolution=video_resolution_default(video_model), duration=4),
    }
    analysis = Analysis()
    left: Counter[int] = Counter()
    for spec in specs:
        entry = submitted[spec.kind].get(spec.index)
        if entry is None:
            analysis.problems["submitted"].append(f"{spec.kind} {spec.tag} was never accepted")
            continue
        job = rows.pop(entry.job_id, None)
        if job is None:
            analysis.problems["submitted"].append(f"{spec.kind} {spec.tag}: job {entry.job_id} is not in the database")
            continue
        figures, problems = _check_job(spec, job, calls[spec.tag], pool.dead(), disruptions, prices)
        analysis.jobs.append({**figures, "cancel_status": entry.cancel_status})
        for check, lines in problems.items():
            analysis.problems[check] += lines
        left[job["user_id"]] += sum(job["refunds"]) - job["credit_cost"]
    analysis.problems["submitted"] += [f"job {job_id} was created but never answered" for job_id in rows]
    for user_id, balance in CreditAccount.objects.values_list("user_id", "balance"):
        ledger = credit_ledger_total(user_id=user_id)
        expected = CREDITS_PER_USER + left[user_id]
        if not balance == ledger == expected:
            analysis.problems["ledger"].append(
                f"user {user_id}: balance {balance}, ledger {ledger}, expected {expected}"
            )
    return analysis


def audit_credits(bench: BenchEnvironment) -> dict[str, Any]:
    """Run ``manage.py audit_credits`` as an operator would."""
    command = [sys.executable, "manage.py", "audit_credits"]
    completed = subprocess.run(command, cwd=BASE_DIR, env=bench.env, capture_output=True, text=True, check=False)
    return {"exit_code": completed.returncode, "output": (completed.stdout + completed.stderr).strip()[-3000:]}


def _outage_of(moment: float, disruptions: list[Disruption]) -> str:
    """The last outage that began before a moment and ended at most a second before it, else an empty string."""
    outages = [d.kind for d in disruptions if d.kind in ("redis", "postgres") and d.start <= moment <= d.end + 1]
    return outages[-1] if outages else ""


def summarise(
    api: Api,
    chaos: Chaos,
    analysis: Analysis,
    audit: dict[str, Any],
    moments: dict[str, float | None],
    veo: FakeVeoServer,
) -> dict[str, Any]:
    """The run's figures and verdicts, times in seconds from the first submission."""
    from django.conf import settings

    started = chaos.started

    def since(moment: float | None) -> float | None:
        return round(moment - started, 2) if moment is not None else None

    jobs = analysis.jobs
    by_kind = {kind: [job for job in jobs if job["kind"] == kind] for kind in ("image", "video")}
    server_errors = [
        {**error, "at": since(error["at"]), "outage": _outage_of(error["at"], chaos.disruptions)}
        for error in api.server_errors
    ]
    summary: dict[str, Any] = {
        "disruptions": [
            {"kind": d.kind, "at": since(d.start), "down_s": round(d.end - d.start, 2), "worker": d.worker}
            for d in chaos.disruptions
        ],
        "chaos_error": chaos.error,
        "long_lock_holds": [
            {**hold, "from": since(hold["from"]), "to": since(hold["to"])}
            for hold in chaos.locks.long_holds(LONG_HOLD_SECONDS, chaos.disruptions)
        ],
        "slowest_jobs": sorted(jobs, key=lambda job: -job["seconds_to_finish"])[:5],
        "moments": {name: since(moment) for name, moment in moments.items()},
        "api": {
            "requests": sum(api.statuses.values()),
            "statuses": {str(status): count for status, count in sorted(api.statuses.items())},
            "server_errors": server_errors,
            "server_errors_outside_outages": sum(not error["outage"] for error in server_errors),
            "connection_errors": dict(api.connection_errors),
            "unexpected": api.unexpected,
            "create_latency_ms": latency_summary(api.create_latencies),
        },
        "jobs": {
            kind: {
                "statuses": dict(Counter(job["status"] for job in group)),
                "error_codes": dict(Counter(job["error_code"] for job in group if job["error_code"])),
                "retries": dict(Counter(job["retries"] for job in group)),
                "provider_calls": sum(job["provider_calls"] for job in group),
                "generated": sum(job["generated"] for job in group),
                "stored": sum(job["stored"] for job in group),
                "extra": sum(job["extra"] for job in group),
                "max_extra_per_job": max((job["extra"] for job in group), default=0),
                "jobs_with_extra": sum(job["extra"] > 0 for job in group),
                "max_allowed_extra_per_job": max((job["allowed_extra"] for job in group), default=0),
                "canceled_by_client": sum(job["cancel_status"] == 200 for job in group),
                "started_after_cancel": sum(job["started_after_cancel"] for job in group),
            }
            for kind, group in by_kind.items()
        },
        "veo": {
            "start_attempts": veo.start_attempts,
            "starts": len(veo.starts),
            "downloads": len(veo.downloads),
            "cancels": len(veo.cancels),
            "max_concurrency": veo.max_concurrency,
            "concurrency_limit": settings.VIDEO_MAX_CONCURRENT,
        },
        "audit_credits": audit,
        "problems": dict(analysis.problems),
    }
    summary["verdicts"] = {
        "every_job_accepted_once": not analysis.problems.get("submitted") and not api.unexpected,
        "every_job_finished": not analysis.problems.get("terminal") and moments["all_finished"] is not None,
        "no_5xx": not server_errors,
        "within_at_least_once_window": not analysis.problems.get("window"),
        "results_match_their_files": not analysis.problems.get("results"),
        "ledger_exact": not analysis.problems.get("ledger"),
        "audit_credits_clean": audit["exit_code"] == 0,
        "chaos_ran": not chaos.error and {"kill", "redis", "postgres"} <= {d.kind for d in chaos.disruptions},
    }
    summary["jobs_detail"] = jobs
    return summary


def render(results: dict[str, Any]) -> str:
    """The run as plain text."""
    machine, args, summary, api = results["machine"], results["settings"], results["summary"], results["summary"]["api"]
    disruptions = summary["disruptions"]
    kills = [d["at"] for d in disruptions if d["kind"] == "kill"]
    outages = "; ".join(
        f"{d['kind']} down at t={d['at']} s for {d['down_s']} s"
        for d in disruptions
        if d["kind"] in ("redis", "postgres")
    )
    error_codes = {kind: figures["error_codes"] for kind, figures in summary["jobs"].items()}
    lines = [
        f"Machine: {machine['cpu_model']}, {machine['cpus']} CPUs; load average at start "
        f"{' '.join(map(str, machine['load_average_at_start']))}",
        f"{args['images']} image and {args['videos']} video jobs from {args['users']} users over "
        f"{args['submit_seconds']:g} s; {WORKERS} workers x {args['threads']} threads; seed {args['seed']}",
        f"Disruptions: {len(kills)} SIGKILLs between t={min(kills, default=0)} and {max(kills, default=0)} s; "
        f"{sum(d['kind'] == 'exit' for d in disruptions)} workers dead by themselves; {outages}",
        f"Moments (s): {summary['moments']}",
        f"API: {api['requests']} answers {api['statuses']}; 5xx {len(api['server_errors'])} "
        f"({api['server_errors_outside_outages']} outside an outage); connection errors {api['connection_errors']}; "
        f"202 latency ms p50 {api['create_latency_ms']['p50']} p99 {api['create_latency_ms']['p99']}",
        "",
        f"  {'kind':<6} {'statuses':<46} {'calls':>6} {'gen':>5} {'stored':>6} {'extra':>5} {'max':>4} {'allowed':>7}",
    ]
    for kind, figures in summary["jobs"].items():
        statuses = " ".join(f"{name} {count}" for name, count in sorted(figures["statuses"].items()))
        lines.append(
            f"  {kind:<6} {statuses:<46} {figures['provider_calls']:>6} {figures['generated']:>5} "
            f"{figures['stored']:>6} {figures['extra']:>5} {figures['max_extra_per_job']:>4} "
            f"{figures['max_allowed_extra_per_job']:>7}"
        )
    lines += [
        "  (calls: requests at the fake image server, successful starts at the fake Veo; extra: generations beyond"
        " the stored results; max: the most extra of one job; allowed: the largest window one job had)",
        f"  error codes: {error_codes}",
        f"  Veo: {summary['veo']}",
        f"  slowest jobs (s): {[(job['tag'], job['seconds_to_finish']) for job in summary['slowest_jobs']]}",
        *(
            f"  {hold['lock']} lock held {hold['seconds']} s (t={hold['from']}..{hold['to']}), "
            f"its holder {hold['holder'] or 'still alive'}"
            for hold in summary["long_lock_holds"]
        ),
        f"  audit_credits: exit {summary['audit_credits']['exit_code']}: {summary['audit_credits']['output'][-200:]}",
        "",
        "Verdicts: " + ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in summary["verdicts"].items()),
    ]
    for check, problems in summary["problems"].items():
        lines += [f"  {check}: {problem}" for problem in problems[:20]]
    lines += [
        f"  5xx at t={error['at']} s ({error['outage'] or 'no outage'}): {error['method']} {error['path']} -> "
        f"{error['status']}"
        for error in api["server_errors"][:10]
    ]
    return "\n".join(lines)


def _pair(text: str) -> tuple[float, float]:
    low, high = (float(part) for part in text.split(","))
    return low, high


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="image jobs (default 200)")
    parser.add_argument("--videos", type=int, default=20, help="video jobs (default 20)")
    parser.add_argument("--users", type=int, default=4, help="users the jobs are spread over (default 4)")
    parser.add_argument("--threads", type=int, default=4, help="threads of each worker process (default 4)")
    parser.add_argument("--submit-seconds", type=float, default=45, help="seconds the submissions span (default 45)")
    parser.add_argument("--image-cancels", type=int, default=12, help="image jobs canceled (default 12)")
    parser.add_argument("--video-cancels", type=int, default=3, help="video jobs canceled (default 3)")
    parser.add_argument("--image-latency", type=float, default=0.3, help="seconds per image at the fake (default 0.3)")
    parser.add_argument("--video-seconds", type=float, default=3, help="seconds per video at the fake (default 3)")
    parser.add_argument("--kill-every", type=_pair, default=(3.0, 6.0), help="seconds between kills, MIN,MAX")
    parser.add_argument("--chaos-seconds", type=float, default=100, help="kills stop this long after the start")
    parser.add_argument(
        "--aim-at-locks",
        action="store_true",
        help="time each kill, within 2 s, for a moment when a worker holds the dispatcher's or the reconciler's lock",
    )
    parser.add_argument("--redis-at", type=float, default=15, help="seconds into the run Redis goes down")
    parser.add_argument("--postgres-at", type=float, default=30, help="seconds into the run PostgreSQL goes down")
    parser.add_argument("--outage-seconds", type=float, default=3, help="how long each server stays down")
    parser.add_argument("--timeout", type=float, default=180, help="give up waiting this long after the submissions")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the plan and the kills (default 1)")
    parser.add_argument("--output", type=Path, help="where to write the JSON (default bench/results/chaos-*.json)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """Set the stack up, submit under chaos, wait for every job, check, and return the results."""
    rng = random.Random(args.seed)
    results: dict[str, Any] = {"settings": {**vars(args), "output": str(path)}, "code": code_measured()}
    with (
        bench_environment(log_dir=path.with_name(f"{path.stem}-logs")) as plain,
        FakeProviderServer(api_key=API_KEY) as images,
        FakeVeoServer(api_key=API_KEY, generation_seconds=args.video_seconds) as veo,
    ):
        results["machine"] = machine_description(database_url=plain.database_url, redis_url=plain.redis_url)
        specs = plan_jobs(args, bench_users(args.users), rng)
        for spec in specs:
            (images if spec.kind == "image" else veo).script(spec.tag, spec.behaviours)
        results["knobs"] = knobs = _knobs(images.url, veo.url)
        bench = dataclasses.replace(plain, env={**plain.env, **knobs})
        pool = WorkerPool(bench, args.threads)
        with web_server(bench, workers=1) as server:
            try:
                pool.start_all()
                api = Api(f"http://{LOCALHOST}:{server.port}", retry_seconds=60)
                chaos = Chaos(pool, LockWatch(bench.redis_url), rng, args, started=time.time())
                thread = threading.Thread(target=chaos.run, name="chaos", daemon=True)
                thread.start()
                try:
                    submitted = submit_all(api, specs, chaos.started)
                    moments: dict[str, float | None] = {"all_submitted": time.time()}
                    accepted = sum(len(by_index) for by_index in submitted.values())
                    moments["all_finished"] = wait_finished(accepted, args.timeout)
                finally:
                    chaos.stop.set()
                    thread.join()
            finally:
                pool.stop()
        analysis = analyse(specs, submitted, images, veo, pool, chaos.disruptions)
        audit = audit_credits(bench)
        results["summary"] = summarise(api, chaos, analysis, audit, moments, veo)
        results["workers_started"] = [worker.name for worker in pool.started]
    return results


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not on_own_services():
        run_on_own_services("bench.chaos", arguments)
    args = parse_arguments(arguments)
    path = args.output or report.RESULTS_DIR / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}.json"
    results = run(args, path)
    report.write_json(results, path)
    print(render(results))
    print(f"\nResults written to {path}, the servers' logs to {path.with_name(f'{path.stem}-logs')}/")
    sys.exit(0 if all(results["summary"]["verdicts"].values()) else 1)


if __name__ == "__main__":
    main()
