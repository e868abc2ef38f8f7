"""What the run leaves behind: the video slots still held in Redis, and the ambiguous starts the workers logged."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, cast

import redis

# generation/videos/stages.py (_retry_later) logs a start put back in line as "job <id>: waiting retry <n> in <s> s
# after <code>". The dispatcher holds a slot for every such start but a refused or never connected one
# (generation/videos/dispatcher.py, _NOT_STARTED_CODES): the provider may have started it, so a second start may
# follow.
_START_RETRY = re.compile(r"job (?P<job>[0-9a-f-]{36}): waiting retry \d+ in [\d.]+ s after (?P<code>\S+)")
_NOT_STARTED_CODES = {"rate_limited", "provider_unreachable"}
_AMBIGUOUS_HOLDER = re.compile(r"[0-9a-f-]{36}:ambiguous:[0-9a-f-]{36}")
# Redis's clock against the hold's length: a little slack for the moments between the hold and this reading.
_SLACK_MS = 1000


def ambiguous_starts(log_dir: Path) -> tuple[Counter[str], Counter[str]]:
    """The starts the workers put back in line without knowing whether the provider started them: by job id, and
    by error code (``start_ambiguous`` for a dispatcher that died during the call)."""
    by_job: Counter[str] = Counter()
    by_code: Counter[str] = Counter()
    for log in sorted(log_dir.glob("worker-*.log")):
        for match in _START_RETRY.finditer(log.read_text(errors="replace")):
            if match["code"] not in _NOT_STARTED_CODES:
                by_job[match["job"]] += 1
                by_code[match["code"]] += 1
    return by_job, by_code


def slots_at_end(redis_url: str) -> dict[str, Any]:
    """The video slots still live, each with the seconds it has left; and those that are not ambiguous holds bound to
    run out within ``VIDEO_AMBIGUOUS_START_HOLD``."""
    from django.conf import settings

    from generation.videos.slots import video_slots

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    seconds, microseconds = client.time()
    now_ms = seconds * 1000 + microseconds // 1000
    hold_ms = settings.VIDEO_AMBIGUOUS_START_HOLD * 1000
    live = []
    slots = cast(list[tuple[bytes, float]], client.zrange(video_slots().key, 0, -1, withscores=True))
    for member, expiry in slots:
        if expiry > now_ms:
            holder = member.decode()
            left_ms = expiry - now_ms
            ambiguous = bool(_AMBIGUOUS_HOLDER.fullmatch(holder)) and left_ms <= hold_ms + _SLACK_MS
            live.append({"holder": holder, "seconds_left": round(left_ms / 1000, 2), "ambiguous_hold": ambiguous})
    return {"live": live, "held_otherwise": [slot for slot in live if not slot["ambiguous_hold"]]}
