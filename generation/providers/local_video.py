"""A video provider that films a short real WebM on this machine, so the video queue runs without any key.

A generation is started in one worker process and polled in another, so the provider keeps no state: the
operation name itself carries when the generation started, how long it runs, how it ends and what it shows.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import random
import time
from typing import Any

from PIL import Image, ImageDraw

from generation.providers.base import PermanentProviderError
from generation.providers.local import render_png
from generation.providers.video import GeneratedVideo, VideoOperation, VideoRequest

VIDEO_SIZES: dict[str, tuple[int, int]] = {"16:9": (320, 180), "9:16": (180, 320)}
FRAMES_PER_SECOND = 12
OPERATION_PREFIX = "operations/local-"
URI_PREFIX = "local:"
# How each simulated failure ends, in the codes the Veo client uses for the same endings.
_FAILURES = {
    "error": ("operation_failed", "The local provider simulated a failed generation."),
    "filtered": ("safety_filtered", "The local provider simulated a video filtered out by safety checks."),
}
# The operation name must fit the job's 300-character column even when every byte needs escaping in JSON.
_CAPTION_BYTES = 40
_REALTIME = {"deadline": "realtime", "cpu-used": "8"}


class LocalVideoProvider:
    """Pretends each generation runs for ``seconds``, failing or being filtered with probability ``failure_rate``."""

    def __init__(self, *, seconds: float, failure_rate: float) -> None:
        self.seconds = seconds
        self.failure_rate = failure_rate

    def start(self, request: VideoRequest) -> str:
        """Draw the generation's outcome now and return an operation name that holds everything poll needs."""
        if request.aspect_ratio not in VIDEO_SIZES:
            raise PermanentProviderError(f"Unsupported aspect ratio {request.aspect_ratio!r}.", code="invalid_request")
        state = {
            "started": time.time(),
            "seconds": self.seconds,
            "outcome": random.choice(tuple(_FAILURES)) if random.random() < self.failure_rate else "ok",
            "aspect": request.aspect_ratio,
            "prompt": _caption(request.prompt),
        }
        encoded = json.dumps(state, ensure_ascii=False, separators=(",", ":")).encode()
        return OPERATION_PREFIX + base64.urlsafe_b64encode(encoded).decode().rstrip("=")

    def poll(self, operation_name: str) -> VideoOperation:
        """Report the operation done once its seconds have passed, with a video URI or the drawn failure."""
        encoded = _strip(operation_name, OPERATION_PREFIX)
        state = _decode(encoded)
        if time.time() < state["started"] + state["seconds"]:
            return VideoOperation(done=False)
        if state["outcome"] in _FAILURES:
            error_code, error_message = _FAILURES[state["outcome"]]
            return VideoOperation(done=True, error_code=error_code, error_message=error_message)
        return VideoOperation(done=True, video_uri=URI_PREFIX + encoded)

    def cancel(self, operation_name: str) -> None:
        """Nothing runs anywhere for a local generation, so there is nothing to stop."""

    def download(self, video_uri: str) -> GeneratedVideo:
        """Film the video the URI describes."""
        state = _decode(_strip(video_uri, URI_PREFIX))
        if state["outcome"] != "ok":
            raise PermanentProviderError("This local generation made no video.", code="invalid_request")
        return GeneratedVideo(
            content=render_webm(state["prompt"], VIDEO_SIZES[state["aspect"]]), mime_type="video/webm"
        )


def render_webm(prompt: str, size: tuple[int, int]) -> bytes:
    """Film one second of VP8 WebM: the local image provider's picture for the prompt over a filling progress bar."""
    # PyAV loads FFmpeg, which takes a noticeable fraction of a second; only processes that film pay for it.
    import av

    width, height = size
    still = Image.open(io.BytesIO(render_png(prompt, size))).convert("RGB")
    bar_top = height - max(4, height // 20)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as container:
        # The real-time settings trade compression, which a one-second demo clip does not need, for speed.
        stream = container.add_stream("libvpx", rate=FRAMES_PER_SECOND, options=_REALTIME)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(1, FRAMES_PER_SECOND + 1):
            picture = still.copy()
            ImageDraw.Draw(picture).rectangle((0, bar_top, width * index // FRAMES_PER_SECOND, height), fill="white")
            container.mux(stream.encode(av.VideoFrame.from_image(picture)))
        # Encoding nothing flushes the frames the encoder still holds.
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _caption(prompt: str) -> str:
    printable = "".join(character for character in prompt if character.isprintable())
    return printable.encode()[:_CAPTION_BYTES].decode(errors="ignore")


def _strip(value: str, prefix: str) -> str:
    if not value.startswith(prefix):
        raise PermanentProviderError(f"{value[:80]!r} is not a local video operation.", code="invalid_request")
    return value.removeprefix(prefix)


def _decode(encoded: str) -> dict[str, Any]:
    try:
        state = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (binascii.Error, ValueError) as error:
        raise _corrupt() from error
    if not (isinstance(state, dict) and _well_formed(state)):
        raise _corrupt()
    return state


def _well_formed(state: dict[str, Any]) -> bool:
    return (
        isinstance(state.get("started"), float | int)
        and isinstance(state.get("seconds"), float | int)
        and state.get("outcome") in ("ok", *_FAILURES)
        and isinstance(state.get("aspect"), str)
        and state["aspect"] in VIDEO_SIZES
        and isinstance(state.get("prompt"), str)
    )


def _corrupt() -> PermanentProviderError:
    return PermanentProviderError("The local video operation is corrupt.", code="invalid_request")
