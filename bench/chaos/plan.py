"""The jobs a chaos run submits: whose, what the fakes answer each one, when it is sent and whether it is canceled."""

from __future__ import annotations

import argparse
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

API_KEY = "chaos-key"
PROJECT_ID = "chaos"
TAG = re.compile(r"<(?:image|video)-\d{3}>")
# The scripted answers that deliver nothing.
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
# "slow_start" is the start call answered late, so that a kill can land while a video is starting.
VIDEO_SCENARIOS = {
    "ok": (0.60, ("ok",)),
    "slow_start": (0.15, ("slow_start",)),
    "rate_limited": (0.10, ("429", "ok")),
    "server_error": (0.05, ("500", "ok")),
    "op_error": (0.05, ("op_error",)),
    "filtered": (0.05, ("filtered",)),
}
# Routes of testing/fakes/frames.py a framed video's start frame is served from: at once, or dripped over seconds so
# that a kill can land while a worker fetches it.
FRAME_ROUTES = ("png", "drip_headers")


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
    # Canceled this many seconds after its 202, or once the API shows it in the stage ``cancel_in_stage``.
    cancel_after: float | None
    cancel_in_stage: str = ""
    # The route of the frame server its start frame comes from; none when empty.
    frame_route: str = ""

    @property
    def tag(self) -> str:
        """The marker in the prompt that the fakes script and record it by."""
        return f"<{self.kind}-{self.index:03d}>"

    @property
    def canceled(self) -> bool:
        return self.cancel_after is not None or bool(self.cancel_in_stage)

    def body(self, frames_url: str) -> dict[str, Any]:
        prompt = f"chaos {self.kind} {self.tag}"
        if self.kind == "image":
            return {"prompt": prompt, "quantity": self.quantity, "project_id": PROJECT_ID}
        body: dict[str, Any] = {"prompt": prompt, "duration": 4, "project_id": PROJECT_ID}
        if self.frame_route:
            # The frame server ignores what follows the route; the tag tells the requests apart in its record.
            body["start_frame"] = f"{frames_url}/{self.frame_route}/{self.kind}-{self.index:03d}.png"
        return body


def _scenarios(table: dict[str, tuple[float, tuple[str, ...]]], count: int, rng: random.Random) -> list[str]:
    """Each scenario's share of ``count`` jobs, the first one taking the rounding, in random order."""
    names = [name for name, (share, _) in table.items() for _ in range(int(share * count))]
    names += [next(iter(table))] * (count - len(names))
    rng.shuffle(names)
    return names


def _behaviours(kind: str, scenario: str, args: argparse.Namespace) -> tuple[str, ...]:
    table = IMAGE_SCENARIOS if kind == "image" else VIDEO_SCENARIOS
    latency = {"ok": f"slow:{args.image_latency:g}" if kind == "image" else "ok"}
    latency["slow_start"] = f"slow_start:{args.slow_start:g}"
    return tuple(latency.get(step, step) for step in table[scenario][1])


def plan_jobs(args: argparse.Namespace, tokens: list[str], rng: random.Random) -> list[JobSpec]:
    """The images and videos in a random order, sent evenly over the submit window, some canceled soon after."""
    kinds = ["image"] * args.images + ["video"] * args.videos
    rng.shuffle(kinds)
    video_scenarios = _scenarios(VIDEO_SCENARIOS, args.videos, rng)
    scenarios = {"image": iter(_scenarios(IMAGE_SCENARIOS, args.images, rng)), "video": iter(video_scenarios)}
    canceled = {
        "image": set(rng.sample(range(args.images), args.image_cancels)),
        "video": set(rng.sample(range(args.videos), args.video_cancels)),
    }
    # Some videos are canceled once generating, so that a kill can land while their operation is being stopped; only
    # ok ones, so that the scripted failures keep their own endings.
    stoppable = [index for index, name in enumerate(video_scenarios) if name == "ok" and index not in canceled["video"]]
    stopped = set(rng.sample(stoppable, min(args.video_stop_cancels, len(stoppable))))
    framed = rng.sample(range(args.videos), args.framed_videos)
    frame_routes = {index: FRAME_ROUTES[position % len(FRAME_ROUTES)] for position, index in enumerate(framed)}
    # A canceled image is caught queued or mid-drawing; a canceled video waiting or generating (it takes seconds).
    cancel_delay = {"image": (0.0, 2.5), "video": (0.5, 1.5 * args.video_seconds)}
    seen: Counter[str] = Counter()
    specs = []
    for position, kind in enumerate(kinds):
        index = seen[kind]
        seen[kind] += 1
        scenario = next(scenarios[kind])
        specs.append(
            JobSpec(
                index=index,
                kind=kind,
                token=tokens[position % len(tokens)],
                # A partial failure refunds something only when it had more than one image to deliver.
                quantity=1 if kind == "video" else rng.randint(2 if scenario == "partial" else 1, 4),
                scenario=scenario,
                behaviours=_behaviours(kind, scenario, args),
                send_at=position * args.submit_seconds / len(kinds),
                cancel_after=rng.uniform(*cancel_delay[kind]) if index in canceled[kind] else None,
                cancel_in_stage="generating" if kind == "video" and index in stopped else "",
                frame_route=frame_routes.get(index, "") if kind == "video" else "",
            )
        )
    return specs
