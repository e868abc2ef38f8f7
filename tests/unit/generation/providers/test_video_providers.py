"""The video provider clients, run for real: Veo over HTTP against the fake Gemini API, the local one in process."""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
import pytest
import requests
from django.core.exceptions import ImproperlyConfigured
from pytest_django import Settings

from generation.models import Job
from generation.providers import (
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    VideoFrame,
    VideoOperation,
    VideoRequest,
    get_video_provider,
)
from generation.providers.local_video import OPERATION_PREFIX, VIDEO_SIZES, LocalVideoProvider
from generation.providers.veo import MAX_VIDEO_BYTES, VeoVideoProvider, google_error, operation_state
from testing.fakes.frames import FakeFrameServer
from testing.fakes.server import closed_port_url
from testing.fakes.veo import FILTERED_REASON, FakeVeoServer
from testing.live import BASE_DIR
from testing.waits import wait_for

MODEL = "veo-3.0-generate-001"
START_FRAME = VideoFrame(content=b"\x89PNG\r\n\x1a\nstart", mime_type="image/png")
END_FRAME = VideoFrame(content=b"\xff\xd8\xffend", mime_type="image/jpeg")
A_CAT = VideoRequest(prompt="a cat on a skateboard", aspect_ratio="16:9", duration_seconds=8)


def veo_client(
    veo: FakeVeoServer, *, api_key: str | None = None, timeout: float = 5.0, max_video_bytes: int = MAX_VIDEO_BYTES
) -> VeoVideoProvider:
    """A client of the fake, with the fake's key unless told otherwise."""
    return VeoVideoProvider(
        base_url=veo.url,
        api_key=veo.api_key if api_key is None else api_key,
        model=MODEL,
        timeout=timeout,
        max_video_bytes=max_video_bytes,
    )


def finished(client: VeoVideoProvider, veo: FakeVeoServer, request: VideoRequest = A_CAT) -> VideoOperation:
    """Start a generation, end it at once and poll it."""
    name = client.start(request)
    veo.finish_all()
    return client.poll(name)


def first_frame_size(content: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(content), "r") as container:
        frame = next(container.decode(video=0))
        return frame.width, frame.height


def test_veo_start_sends_prompt_frames_parameters_and_the_key_header(veo: FakeVeoServer) -> None:
    request = VideoRequest(
        prompt="a cat on a skateboard",
        aspect_ratio="16:9",
        duration_seconds=6,
        negative_prompt="blurry, text",
        start_frame=START_FRAME,
        end_frame=END_FRAME,
    )

    name = veo_client(veo).start(request)

    [start] = veo.starts
    assert name == start.operation_name
    assert name.startswith(f"models/{MODEL}/operations/")
    assert start.headers["x-goog-api-key"] == veo.api_key
    assert "Authorization" not in start.headers
    assert start.body == {
        "instances": [
            {
                "prompt": "a cat on a skateboard",
                "image": {
                    "bytesBase64Encoded": base64.b64encode(START_FRAME.content).decode(),
                    "mimeType": "image/png",
                },
                "lastFrame": {
                    "bytesBase64Encoded": base64.b64encode(END_FRAME.content).decode(),
                    "mimeType": "image/jpeg",
                },
            }
        ],
        "parameters": {"aspectRatio": "16:9", "durationSeconds": 6, "negativePrompt": "blurry, text"},
    }


def test_veo_start_leaves_out_frames_and_negative_prompt_not_given(veo: FakeVeoServer) -> None:
    veo_client(veo).start(VideoRequest(prompt="a dog", aspect_ratio="9:16", duration_seconds=4))

    [start] = veo.starts
    assert start.body == {
        "instances": [{"prompt": "a dog"}],
        "parameters": {"aspectRatio": "9:16", "durationSeconds": 4},
    }


def test_veo_poll_reports_a_running_generation_as_not_done(veo: FakeVeoServer) -> None:
    client = veo_client(veo)
    name = client.start(A_CAT)

    operation = client.poll(name)

    assert operation == VideoOperation(done=False)
    assert veo.polls(name) == 1


@pytest.mark.parametrize(
    ("behaviour", "error_code", "error_message"),
    [
        ("ok", "", ""),
        ("hang", "", ""),
        ("op_error", "operation_failed", "Internal error while generating"),
        ("filtered", "safety_filtered", FILTERED_REASON),
    ],
)
def test_veo_poll_reads_how_a_finished_generation_ended(
    veo: FakeVeoServer, behaviour: str, error_code: str, error_message: str
) -> None:
    veo.script("cat", [behaviour])

    operation = finished(veo_client(veo), veo)

    assert operation.done
    assert operation.error_code == error_code
    assert operation.error_message == error_message
    assert bool(operation.video_uri) == (not error_code)


def test_veo_poll_finishes_once_the_generation_time_has_passed(veo: FakeVeoServer) -> None:
    # Long enough that the first poll surely comes before the end, on a loaded machine too.
    veo.generation_seconds = 1.0
    client = veo_client(veo)
    name = client.start(A_CAT)

    before = client.poll(name)
    time.sleep(max(0.0, veo.ended_at(name) - time.time()) + 0.01)
    after = client.poll(name)

    assert not before.done
    assert after.done
    assert after.video_uri.endswith(":download?alt=media")


def test_veo_poll_maps_an_operation_unknown_to_google_to_permanent_error(veo: FakeVeoServer) -> None:
    with pytest.raises(PermanentProviderError) as raised:
        veo_client(veo).poll(f"models/{MODEL}/operations/0123abcd")

    assert raised.value.code == "invalid_request"


def test_veo_download_follows_the_redirect_with_the_key_and_returns_the_video(veo: FakeVeoServer) -> None:
    client = veo_client(veo)
    operation = finished(client, veo)

    video = client.download(operation.video_uri)

    assert video.mime_type == "video/webm"
    assert first_frame_size(video.content) == VIDEO_SIZES["16:9"]
    assert veo.downloads == [veo.starts[0].operation_name]


def test_veo_download_refuses_a_video_larger_than_the_limit(veo: FakeVeoServer) -> None:
    client = veo_client(veo, max_video_bytes=100)
    operation = finished(client, veo)

    with pytest.raises(PermanentProviderError) as raised:
        client.download(operation.video_uri)

    assert raised.value.code == "video_too_large"


def test_veo_download_refuses_a_uri_that_is_not_a_web_address(veo: FakeVeoServer) -> None:
    with pytest.raises(PermanentProviderError) as raised:
        veo_client(veo).download("file:///etc/passwd")

    assert raised.value.code == "invalid_request"


@pytest.mark.parametrize(
    ("behaviour", "error_type", "code", "retry_after"),
    [
        ("429", TransientProviderError, "rate_limited", 1.0),
        ("500", TransientProviderError, "provider_unavailable", None),
        ("400", PermanentProviderError, "invalid_request", None),
    ],
)
def test_veo_start_maps_scripted_failure_to_typed_error(
    veo: FakeVeoServer, behaviour: str, error_type: type[ProviderError], code: str, retry_after: float | None
) -> None:
    veo.script("cat", [behaviour])

    with pytest.raises(error_type) as raised:
        veo_client(veo).start(A_CAT)

    assert raised.value.code == code
    assert getattr(raised.value, "retry_after", None) == retry_after
    assert veo.starts == []


def test_veo_start_includes_googles_message_in_the_error(veo: FakeVeoServer) -> None:
    veo.script("cat", ["400"])

    with pytest.raises(PermanentProviderError, match=r"HTTP 400.*durationSeconds"):
        veo_client(veo).start(A_CAT)


@pytest.mark.parametrize(
    "call",
    [
        lambda client, name: client.start(A_CAT),
        lambda client, name: client.poll(name),
        lambda client, name: client.download(f"{client.base_url}/files/{name.rsplit('/', 1)[1]}:download?alt=media"),
    ],
    ids=["start", "poll", "download"],
)
def test_veo_maps_a_wrong_key_to_permanent_auth_error_without_showing_the_key(
    veo: FakeVeoServer, call: Callable[[VeoVideoProvider, str], Any]
) -> None:
    finished(veo_client(veo), veo)
    name = veo.starts[0].operation_name

    with pytest.raises(PermanentProviderError) as raised:
        call(veo_client(veo, api_key="wrong-key"), name)

    assert raised.value.code == "provider_auth"
    assert "wrong-key" not in str(raised.value)


def test_veo_maps_an_answer_slower_than_the_timeout_to_transient_timeout(veo: FakeVeoServer) -> None:
    veo.script("cat", ["slow_start:3"])
    started = time.monotonic()

    with pytest.raises(TransientProviderError) as raised:
        veo_client(veo, timeout=0.3).start(A_CAT)

    assert raised.value.code == "provider_timeout"
    # Before the 3 s answer: the client gave up at its timeout rather than waiting (with room for a loaded machine).
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(
    "call",
    [
        lambda client: client.start(A_CAT),
        lambda client: client.poll(f"models/{MODEL}/operations/abc"),
        lambda client: client.cancel(f"models/{MODEL}/operations/abc"),
        lambda client: client.download(f"{client.base_url}/files/abc:download?alt=media"),
    ],
    ids=["start", "poll", "cancel", "download"],
)
@pytest.mark.parametrize("behaviour", ["drip_headers", "endless_slow_body"])
def test_veo_gives_up_on_a_dripping_answer_at_its_total_deadline(
    call: Callable[[VeoVideoProvider], Any], behaviour: str
) -> None:
    with FakeFrameServer(drip_seconds=0.2) as dripping:
        client = VeoVideoProvider(base_url=dripping.url(behaviour), api_key="key", model=MODEL, timeout=1.0)
        started = time.monotonic()

        with pytest.raises(TransientProviderError) as raised:
            call(client)

        elapsed = time.monotonic() - started
        [(_, path)] = dripping.requests
    # Each byte comes well within the timeout, so only a deadline on the whole call stops it.
    assert raised.value.code == "provider_timeout"
    assert elapsed < 1.0 + 2
    assert path.startswith(f"/{behaviour}/")


@pytest.mark.parametrize(
    "call",
    [
        lambda client: client.start(A_CAT),
        lambda client: client.poll(f"models/{MODEL}/operations/abc"),
        lambda client: client.download(f"{client.base_url}/files/abc:download?alt=media"),
    ],
    ids=["start", "poll", "download"],
)
def test_veo_maps_a_refused_connection_to_transient_unreachable(call: Callable[[VeoVideoProvider], Any]) -> None:
    with pytest.raises(TransientProviderError) as raised:
        call(VeoVideoProvider(base_url=closed_port_url("/v1beta"), api_key="key", model=MODEL, timeout=5))

    assert raised.value.code == "provider_unreachable"


@pytest.mark.parametrize(
    ("status", "error", "error_type", "code"),
    [
        (
            400,
            {
                "status": "INVALID_ARGUMENT",
                "message": "API key not valid. Please pass a valid API key.",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
            },
            PermanentProviderError,
            "provider_auth",
        ),
        (
            401,
            {"status": "UNAUTHENTICATED", "message": "Request had invalid credentials."},
            PermanentProviderError,
            "provider_auth",
        ),
        (
            400,
            {"status": "FAILED_PRECONDITION", "message": "User location is not supported for the API use."},
            PermanentProviderError,
            "provider_precondition_failed",
        ),
        (
            400,
            {"status": "INVALID_ARGUMENT", "message": "The prompt violates Google's Responsible AI practices."},
            PermanentProviderError,
            "content_refused",
        ),
        (
            404,
            {"status": "NOT_FOUND", "message": "models/veo-9 is not found."},
            PermanentProviderError,
            "invalid_request",
        ),
        (
            503,
            {"status": "UNAVAILABLE", "message": "The model is overloaded."},
            TransientProviderError,
            "provider_unavailable",
        ),
        (
            504,
            {"status": "DEADLINE_EXCEEDED", "message": "Deadline exceeded."},
            TransientProviderError,
            "provider_unavailable",
        ),
    ],
)
def test_google_error_maps_googles_statuses_to_typed_errors(
    status: int, error: dict[str, Any], error_type: type[ProviderError], code: str
) -> None:
    mapped = google_error(status, {"error": {"code": status, **error}})

    assert type(mapped) is error_type
    assert mapped.code == code


@pytest.mark.parametrize(
    ("details", "retry_after"),
    [
        ([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}], 12.0),
        ([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}], 1.5),
        ([{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []}], None),
        ([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "soon"}], None),
        ([], None),
    ],
)
def test_google_error_reads_the_retry_delay_of_a_rate_limit(
    details: list[dict[str, Any]], retry_after: float | None
) -> None:
    error = {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded.", "details": details}

    mapped = google_error(429, {"error": error})

    assert isinstance(mapped, TransientProviderError)
    assert mapped.code == "rate_limited"
    assert mapped.retry_after == retry_after


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"name": "operations/x"}, VideoOperation(done=False)),
        (
            {"done": True, "error": {"code": 13, "status": "INTERNAL"}},
            VideoOperation(
                done=True,
                error_code="operation_failed",
                error_message="The provider reported the generation failed (INTERNAL).",
            ),
        ),
        (
            {"done": True, "response": {"generateVideoResponse": {"raiMediaFilteredCount": 1}}},
            VideoOperation(
                done=True,
                error_code="safety_filtered",
                error_message="The provider returned no video: it was filtered out by the provider's safety checks.",
            ),
        ),
    ],
)
def test_operation_state_reads_operations_the_fake_does_not_send(
    body: dict[str, Any], expected: VideoOperation
) -> None:
    assert operation_state(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        {"done": "yes"},
        {"done": True},
        {"done": True, "response": {"generateVideoResponse": {"generatedSamples": [{"video": {}}]}}},
    ],
)
def test_operation_state_maps_an_unexpected_shape_to_transient_malformed(body: dict[str, Any]) -> None:
    with pytest.raises(TransientProviderError) as raised:
        operation_state(body)

    assert raised.value.code == "malformed_response"


def test_fake_veo_counts_overlapping_generations_as_concurrent(veo: FakeVeoServer) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        names = list(pool.map(lambda _: veo_client(veo).start(A_CAT), range(3)))

    assert len(set(names)) == 3
    assert veo.max_concurrency == 3
    assert veo.running_at(max(start.started_at for start in veo.starts)) == 3


def test_fake_veo_counts_generations_one_after_another_as_one_at_a_time(veo: FakeVeoServer) -> None:
    veo.generation_seconds = 0.05
    client = veo_client(veo)

    for _ in range(3):
        client.start(A_CAT)
        time.sleep(0.1)

    assert veo.max_concurrency == 1
    assert [veo.running_at(start.started_at) for start in veo.starts] == [1, 1, 1]


def test_fake_veo_keeps_a_hanging_generation_running_until_finish_all(veo: FakeVeoServer) -> None:
    veo.script("cat", ["hang"])
    veo.generation_seconds = 0
    client = veo_client(veo)
    name = client.start(A_CAT)

    assert not client.poll(name).done
    assert veo.running_at(time.time()) == 1
    veo.finish_all()
    assert client.poll(name).done
    assert veo.running_at(time.time()) == 0


def test_fake_veo_follows_its_script_then_repeats_the_last_behaviour(veo: FakeVeoServer) -> None:
    veo.script("cat", ["429", "500", "ok"])
    client = veo_client(veo)

    outcomes = []
    for _ in range(4):
        try:
            client.start(A_CAT)
            outcomes.append("ok")
        except TransientProviderError as error:
            outcomes.append(error.code)

    assert outcomes == ["rate_limited", "provider_unavailable", "ok", "ok"]
    assert veo.start_attempts == 4
    assert len(veo.starts) == 2


def test_fake_veo_forgets_everything_on_reset(veo: FakeVeoServer) -> None:
    veo.script("cat", ["429"])
    veo_client(veo).start(VideoRequest(prompt="a dog", aspect_ratio="16:9", duration_seconds=4))

    veo.reset()

    assert (veo.starts, veo.start_attempts, veo.max_concurrency, veo.downloads) == ([], 0, 0, [])
    veo_client(veo).start(A_CAT)


@pytest.mark.parametrize(
    ("behaviour", "error_code"),
    [("500_after_create", "provider_unavailable"), ("reset_after_create", "provider_connection_lost")],
)
def test_fake_veo_runs_the_generation_of_a_start_it_answered_with_a_failure(veo, behaviour, error_code):
    veo.script("cat", [behaviour])
    with pytest.raises(TransientProviderError) as raised:
        veo_client(veo).start(A_CAT)
    assert raised.value.code == error_code
    [start] = veo.starts
    assert veo.running_at(start.started_at) == 1
    assert veo.max_concurrency == 1
    assert veo.ended_at(start.operation_name) == pytest.approx(start.started_at + veo.generation_seconds, abs=0.01)


def test_fake_veo_resets_the_connection_rather_than_closing_it(veo):
    veo.script("cat", ["reset_after_create"])
    body = b'{"instances": [{"prompt": "a cat"}]}'
    request = (
        f"POST /v1beta/models/veo:predictLongRunning HTTP/1.1\r\nHost: fake\r\nx-goog-api-key: {veo.api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    port = int(veo.url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request + body)
        with pytest.raises(ConnectionResetError):
            connection.recv(1024)
    assert len(veo.starts) == 1


def test_fake_veo_ends_a_canceled_generation_a_moment_later(veo):
    veo.generation_seconds = 30
    # A moment long enough that the poll right after the cancel surely comes before it, on a loaded machine too.
    veo.cancel_delay = 1.0
    client = veo_client(veo)
    name = client.start(A_CAT)
    client.cancel(name)
    canceled_at = veo.canceled_at(name)
    assert canceled_at is not None
    assert veo.ended_at(name) == pytest.approx(canceled_at + veo.cancel_delay, abs=0.01)
    assert not client.poll(name).done
    wait_for(lambda: client.poll(name).done, timeout=5, message="the canceled generation ended")
    assert client.poll(name).error_code == "operation_failed"


def test_fake_veo_runs_as_a_separate_process() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "testing.fakes.veo", "--api-key", "k", "--seconds", "0", '{"cat": ["filtered"]}'],
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        headers = {"x-goog-api-key": "k"}
        body = {"instances": [{"prompt": "a cat"}], "parameters": {"aspectRatio": "16:9", "durationSeconds": 4}}
        name = requests.post(f"{url}/models/{MODEL}:predictLongRunning", json=body, headers=headers).json()["name"]
        operation = requests.get(f"{url}/{name}", headers=headers).json()
    finally:
        process.terminate()
        process.wait(timeout=5)

    assert operation["done"] is True
    assert "generatedSamples" not in operation["response"]["generateVideoResponse"]


def test_local_provider_runs_for_the_configured_seconds() -> None:
    provider = LocalVideoProvider(seconds=60, failure_rate=0)

    operation = provider.poll(provider.start(A_CAT))

    assert operation == VideoOperation(done=False)


@pytest.mark.parametrize("aspect_ratio", sorted(VIDEO_SIZES))
def test_local_provider_delivers_a_webm_of_the_aspect_ratios_size(aspect_ratio: str) -> None:
    provider = LocalVideoProvider(seconds=0, failure_rate=0)
    operation = provider.poll(provider.start(VideoRequest("a lighthouse at dusk, " * 10, aspect_ratio, 8)))

    video = provider.download(operation.video_uri)

    assert operation.done
    assert not operation.error_code
    assert video.mime_type == "video/webm"
    assert video.extension == "webm"
    assert first_frame_size(video.content) == VIDEO_SIZES[aspect_ratio]


def test_local_provider_keeps_no_state_between_instances() -> None:
    name = LocalVideoProvider(seconds=0, failure_rate=0).start(A_CAT)

    operation = LocalVideoProvider(seconds=60, failure_rate=1).poll(name)

    assert operation.done
    assert operation.video_uri


def test_local_provider_fails_or_filters_every_generation_at_failure_rate_one() -> None:
    provider = LocalVideoProvider(seconds=0, failure_rate=1)

    operations = [provider.poll(provider.start(A_CAT)) for _ in range(40)]

    assert {operation.error_code for operation in operations} == {"operation_failed", "safety_filtered"}
    assert all(operation.done and operation.error_message and not operation.video_uri for operation in operations)


@pytest.mark.parametrize("prompt", ["a cat " * 100, "é" * 300, '"' * 300, "\\" * 300, "\x01" * 300, "😀" * 300])
def test_local_provider_operation_name_fits_the_jobs_column_whatever_the_prompt(prompt: str) -> None:
    name = LocalVideoProvider(seconds=0.30000000000000004, failure_rate=1).start(VideoRequest(prompt, "16:9", 8))

    column = Job._meta.get_field("operation_name")
    assert column.max_length is not None
    assert len(name) <= column.max_length


def test_local_provider_refuses_an_unsupported_aspect_ratio() -> None:
    with pytest.raises(PermanentProviderError) as raised:
        LocalVideoProvider(seconds=0, failure_rate=0).start(VideoRequest("a cat", "1:1", 4))

    assert raised.value.code == "invalid_request"


def _encoded(state: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode()


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        ("poll", "models/veo/operations/123"),
        ("poll", f"{OPERATION_PREFIX}!!not base64!!"),
        ("poll", OPERATION_PREFIX + _encoded(["a", "list"])),
        ("poll", OPERATION_PREFIX + _encoded({"started": 0, "seconds": 0, "outcome": "ok"})),
        (
            "poll",
            OPERATION_PREFIX
            + _encoded({"started": 0, "seconds": 0, "outcome": "maybe", "aspect": "16:9", "prompt": ""}),
        ),
        ("download", "https://example.com/video.mp4"),
        (
            "download",
            "local:" + _encoded({"started": 0, "seconds": 0, "outcome": "error", "aspect": "16:9", "prompt": ""}),
        ),
    ],
)
def test_local_provider_refuses_a_garbled_operation_name_or_uri(call: str, argument: str) -> None:
    provider = LocalVideoProvider(seconds=0, failure_rate=0)

    with pytest.raises(PermanentProviderError) as raised:
        getattr(provider, call)(argument)

    assert raised.value.code == "invalid_request"


@pytest.mark.parametrize(("name", "provider_class"), [("local", LocalVideoProvider), ("veo", VeoVideoProvider)])
def test_get_video_provider_builds_the_provider_the_settings_name(
    settings: Settings, name: str, provider_class: type
) -> None:
    settings.VIDEO_PROVIDER = name
    settings.GEMINI_API_KEY = "gemini-key"

    assert isinstance(get_video_provider(), provider_class)


def test_get_video_provider_passes_settings_to_the_clients(settings: Settings) -> None:
    settings.VIDEO_PROVIDER = "veo"
    settings.GEMINI_API_BASE = "https://gemini.example/v1beta/"
    settings.GEMINI_API_KEY = "gemini-key"
    settings.VEO_MODEL = "veo-3.0-fast-generate-001"
    settings.PROVIDER_TIMEOUT = 7.5
    settings.LOCAL_VIDEO_SECONDS = 3
    settings.LOCAL_VIDEO_FAILURE_RATE = 0.25

    veo = get_video_provider()
    settings.VIDEO_PROVIDER = "local"
    local = get_video_provider()

    assert isinstance(veo, VeoVideoProvider)
    assert (veo.base_url, veo.model, veo.timeout) == ("https://gemini.example/v1beta", "veo-3.0-fast-generate-001", 7.5)
    assert veo.session.headers["x-goog-api-key"] == "gemini-key"
    assert isinstance(local, LocalVideoProvider)
    assert (local.seconds, local.failure_rate) == (3, 0.25)


def test_get_video_provider_refuses_veo_without_a_key(settings: Settings) -> None:
    settings.VIDEO_PROVIDER = "veo"
    settings.GEMINI_API_KEY = ""

    with pytest.raises(ImproperlyConfigured, match="GEMINI_API_KEY must be set when VIDEO_PROVIDER=veo"):
        get_video_provider()


def test_get_video_provider_refuses_an_unknown_provider_name(settings: Settings) -> None:
    settings.VIDEO_PROVIDER = "sora-by-post"

    with pytest.raises(ImproperlyConfigured, match="sora-by-post"):
        get_video_provider()
