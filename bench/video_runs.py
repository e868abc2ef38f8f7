"""One measured run of the video queue: submit over HTTP, wait, then read the timings off the fake Veo and the database.

The fake records when each generation started (``started_at``) and it ends T seconds later; ``TimedFakeVeo`` also
records when each poll arrived. From those, per run:

- the provider idle gap pairs the k-th start (k > S, with S slots) with the (k - S)-th generation end: with S slots
  the k-th start needs k - S slots given back, each after a generation ended, so the gap never goes negative;
- it splits into the end's detection (the first poll at or after the end, minus the end) and the dispatch (the
  start minus the (k - S)-th detecting poll), paired the same way;
- polls per video are the fake's ``polls(operation_name)``.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from bench.latency import latency_summary
from bench.loadgen import LOCALHOST
from bench.pipeline import _wait_finished
from testing.fakes.frames import FakeFrameServer
from testing.fakes.veo import FakeVeoServer, _Operation

SUBMIT_TIMEOUT = 10.0
# How long the dripping frames are fetched before the plain video is submitted: within FRAME_TIMEOUT (10 s).
HOSTILE_HEAD_START = 3.0


class TimedFakeVeo(FakeVeoServer):
    """The tests' fake Veo that also records when each poll of each operation arrived."""

    def __init__(self, **options: Any) -> None:
        self.poll_times: dict[str, list[float]] = defaultdict(list)
        super().__init__(**options)

    def _forget(self) -> None:
        super()._forget()
        self.poll_times.clear()

    def _poll(self, name: str, operation_id: str) -> _Operation | None:
        operation = super()._poll(name, operation_id)
        if operation is not None:
            with self._lock:
                self.poll_times[name].append(time.time())
        return operation


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def video_post(session: requests.Session, port: int, token: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST one video; its job as the API answers it."""
    response = session.post(
        f"http://{LOCALHOST}:{port}/api/videos/",
        json={"duration": 4, **body},
        headers={"Authorization": f"Token {token}"},
        timeout=SUBMIT_TIMEOUT,
    )
    if response.status_code != 202:
        raise RuntimeError(f"submitting {body['prompt']!r} failed: {response.status_code} {response.text[:200]}")
    answer: dict[str, Any] = response.json()
    return answer


def videos_submit(port: int, tokens: list[str], tag: str, count: int, clients: int = 1) -> list[tuple[str, float]]:
    """POST the videos from ``clients`` threads, spread over the users; each prompt with when it was sent, in order."""

    def post_share(first: int) -> list[tuple[str, float]]:
        sent = []
        with requests.Session() as session:
            for index in range(first, count, clients):
                prompt = f"{tag} video {index}"
                moment = time.time()
                video_post(session, port, tokens[index % len(tokens)], {"prompt": prompt, "project_id": tag})
                sent.append((prompt, moment))
        return sent

    with ThreadPoolExecutor(clients) as pool:
        shares = list(pool.map(post_share, range(clients)))
    return sorted((entry for share in shares for entry in share), key=lambda entry: entry[1])


def slots_wait_free(timeout: float = 60) -> None:
    """Wait until the last poll chain of the previous run has given its slot back."""
    from generation.videos.slots import video_slots

    deadline = time.monotonic() + timeout
    while video_slots().holders():
        if time.monotonic() > deadline:
            raise RuntimeError("video slots still held after every job finished")
        time.sleep(0.02)


def _paired(later: list[float], earlier: list[float], slots: int) -> list[float]:
    """The k-th of ``later`` (k > slots) minus the (k - slots)-th of ``earlier``, both sorted."""
    later, earlier = sorted(later), sorted(earlier)
    return [later[k] - earlier[k - slots] for k in range(slots, len(later))]


def _rounded(values: list[float]) -> list[float]:
    return [round(value, 4) for value in values]


def _polls(veo: TimedFakeVeo, starts: dict[str, float], names: dict[str, str], seconds: float) -> dict[str, Any]:
    """When each generation's end was first seen by a poll, how many polls it cost and how far apart they came."""
    noticed, counts, chains, first_polls, periods = {}, [], [], [], []
    for prompt, name in names.items():
        times = veo.poll_times[name]
        counts.append(veo.polls(name))
        seen = [moment for moment in times if moment >= starts[prompt] + seconds]
        # The poll chain ends with the poll that sees the end; the download asks for the operation once more.
        chain = times[: times.index(seen[0]) + 1] if seen else times
        if seen:
            noticed[prompt] = seen[0]
        if chain:
            first_polls.append(chain[0] - starts[prompt])
        chains.append(len(chain))
        periods += [later - earlier for earlier, later in itertools.pairwise(chain)]
    return {
        "noticed": noticed,
        "polls_per_video": counts,
        "chain_polls_per_video": chains,
        "first_poll_after_start_ms": latency_summary(first_polls),
        "poll_period_ms": latency_summary(periods),
    }


def queue_run(
    port: int, tokens: list[str], veo: TimedFakeVeo, *, videos: int, seconds: float, slots: int, clients: int, tag: str
) -> dict[str, Any]:
    """Queue the videos with the workers idle and time them through the slots."""
    from generation.models import Job

    slots_wait_free()
    veo.reset()
    veo.generation_seconds = seconds
    load_before = load_average()
    sent = videos_submit(port, tokens, tag, videos, clients)
    _wait_finished(tag, videos, timeout=10 * seconds * math.ceil(videos / slots) + 120)
    jobs = list(Job.objects.filter(project_id=tag))
    finished = {job.prompt: job.finished_at.timestamp() for job in jobs if job.finished_at is not None}
    starts = {start.prompt: start.started_at for start in veo.starts}
    names = {start.prompt: start.operation_name for start in veo.starts}
    polls = _polls(veo, starts, names, seconds)
    ends = {prompt: moment + seconds for prompt, moment in starts.items()}
    noticed: dict[str, float] = polls.pop("noticed")
    first_submit = sent[0][1]
    makespan = max(finished.values()) - first_submit
    ideal = math.ceil(videos / slots) * seconds
    return {
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "completed": sum(job.status == Job.Status.COMPLETED for job in jobs),
        "starts_in_submit_order": [start.prompt for start in veo.starts] == [prompt for prompt, _ in sent],
        "start_attempts": veo.start_attempts,
        "max_concurrency": veo.max_concurrency,
        "submit_s": round(sent[-1][1] - first_submit, 3),
        "first_start_s": round(min(starts.values()) - first_submit, 3),
        "last_start_s": round(max(starts.values()) - first_submit, 3),
        "makespan_s": round(makespan, 3),
        "ideal_s": ideal,
        "makespan_ratio": round(makespan / ideal, 4),
        "provider_idle_gaps_s": _rounded(_paired(list(starts.values()), list(ends.values()), slots)),
        "detection_delays_s": _rounded([noticed[prompt] - ends[prompt] for prompt in noticed]),
        "dispatch_delays_s": _rounded(_paired(list(starts.values()), list(noticed.values()), slots)),
        # From the generation's end to the job's completion: detection, download and storage.
        "completion_lag_ms": latency_summary([finished[prompt] - ends[prompt] for prompt in finished]),
        **polls,
    }


def runs_summary(runs: list[dict[str, Any]], *, videos: int, slots: int) -> dict[str, Any]:
    """The figures of several runs together: medians of per-run figures, gaps pooled over the runs."""

    def pooled(key: str) -> dict[str, float | None]:
        return latency_summary([gap for run in runs for gap in run[key]])

    def spread(key: str) -> dict[str, float]:
        values = [value for run in runs for value in run[key]]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {
        "run_count": len(runs),
        "makespan_s": [run["makespan_s"] for run in runs],
        "median_makespan_s": statistics.median(run["makespan_s"] for run in runs),
        "median_makespan_ratio": statistics.median(run["makespan_ratio"] for run in runs),
        "worst_makespan_ratio": max(run["makespan_ratio"] for run in runs),
        "max_concurrency": [run["max_concurrency"] for run in runs],
        "provider_idle_gap_ms": pooled("provider_idle_gaps_s"),
        "provider_idle_gap_p99_per_run_ms": [latency_summary(run["provider_idle_gaps_s"])["p99"] for run in runs],
        "detection_delay_ms": pooled("detection_delays_s"),
        "dispatch_delay_ms": pooled("dispatch_delays_s"),
        "polls_per_video": spread("polls_per_video"),
        "chain_polls_per_video": spread("chain_polls_per_video"),
        "poll_period_median_ms": statistics.median(run["poll_period_ms"]["p50"] for run in runs),
        "load_average_1min": [run["load_average_before"][0] for run in runs],
        "all_completed_once": all(
            run["completed"] == videos and run["start_attempts"] == videos and len(run["polls_per_video"]) == videos
            for run in runs
        ),
        "concurrency_exact": all(run["max_concurrency"] == slots for run in runs),
    }


def _wait_for(check: Any, what: str, timeout: float) -> float:
    """Poll ``check`` until it answers true; when that was seen."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.005)
    return time.time()


def hostile_trial(
    port: int, tokens: list[str], veo: TimedFakeVeo, frames: FakeFrameServer, *, tag: str, dripping: int
) -> dict[str, Any]:
    """Queue videos whose start frame drips its headers, then another user's plain video: time that one's start."""
    slots_wait_free()
    veo.reset()
    veo.generation_seconds = 1
    load_before = load_average()
    fetches_before = len(frames.requests)
    prompt = f"{tag} plain"
    with requests.Session() as session:
        hostile = [
            video_post(
                session,
                port,
                tokens[0],
                {"prompt": f"{tag} dripping {index}", "project_id": tag, "start_frame": frames.url("drip_headers")},
            )
            for index in range(dripping)
        ]
        # The plain video goes in once every dripping frame has been dripping for a while, ahead of it.
        fetching = _wait_for(lambda: len(frames.requests) >= fetches_before + dripping, "the frame fetches", 10)
        time.sleep(HOSTILE_HEAD_START)
        submitted = time.time()
        video_post(session, port, tokens[1], {"prompt": prompt, "project_id": tag})
        answered = time.time()
        _wait_for(lambda: any(start.prompt == prompt for start in veo.starts), "the plain video's start", 30)
        started = next(start.started_at for start in veo.starts if start.prompt == prompt)
        for job in hostile:
            response = session.post(
                f"http://{LOCALHOST}:{port}/api/jobs/{job['id']}/cancel/",
                headers={"Authorization": f"Token {tokens[0]}"},
                timeout=SUBMIT_TIMEOUT,
            )
            response.raise_for_status()
    _wait_finished(tag, dripping + 1, timeout=60)
    return {
        "load_average_before": load_before,
        "fetch_begun_before_submit_s": round(submitted - fetching, 3),
        "post_s": round(answered - submitted, 3),
        "submit_to_start_s": round(started - submitted, 3),
        "starts": len(veo.starts),
    }
