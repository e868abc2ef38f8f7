"""The image provider clients, run for real over HTTP against the fake provider server."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time

import pytest
import requests
from django.core.exceptions import ImproperlyConfigured
from PIL import Image
from pytest_django import Settings

from generation.providers import (
    ImageProvider,
    ImageRequest,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    get_image_provider,
)
from generation.providers.gateway import GatewayImageProvider
from generation.providers.local import ASPECT_RATIO_SIZES, LocalImageProvider
from generation.providers.openai import OpenAIImageProvider
from testing.fakes.frames import FakeFrameServer
from testing.fakes.provider import GATEWAY_PATH, OPENAI_PATH, FakeProviderServer
from testing.live import BASE_DIR

GATEWAY_MODEL = "google/gemini-2.5-flash-image-preview"
OPENAI_MODEL = "gpt-image-1"
PROVIDER_KINDS = ["gateway", "openai"]


def remote_client(kind: str, base_url: str, *, api_key: str = "test-key", timeout: float = 5.0) -> ImageProvider:
    if kind == "gateway":
        return GatewayImageProvider(base_url=base_url, api_key=api_key, model=GATEWAY_MODEL, timeout=timeout)
    return OpenAIImageProvider(base_url=base_url, api_key=api_key, model=OPENAI_MODEL, timeout=timeout)


def open_image(content: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(content))
    image.load()
    return image


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize("kind", PROVIDER_KINDS)
def test_remote_provider_returns_the_png_it_received(provider: FakeProviderServer, kind: str) -> None:
    image = remote_client(kind, provider.url).generate_image(ImageRequest("a red cat", "1:1"))

    assert image.mime_type == "image/png"
    assert open_image(image.content).format == "PNG"


def test_gateway_sends_model_prompt_aspect_ratio_references_and_bearer_key(provider: FakeProviderServer) -> None:
    request = ImageRequest("a red cat", "16:9", ("https://example.com/a.png", "https://example.com/b.png"))

    remote_client("gateway", provider.url).generate_image(request)

    [received] = provider.received()
    assert received.path == GATEWAY_PATH
    assert received.headers["Authorization"] == "Bearer test-key"
    assert received.body == {
        "model": GATEWAY_MODEL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a red cat\n\nAspect ratio: 16:9."},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}},
                ],
            }
        ],
        "modalities": ["image", "text"],
    }


def test_openai_sends_model_prompt_n_size_and_bearer_key_without_references(
    provider: FakeProviderServer,
) -> None:
    remote_client("openai", provider.url).generate_image(
        ImageRequest("a red cat", "16:9", ("https://example.com/a.png",))
    )

    [received] = provider.received()
    assert received.path == OPENAI_PATH
    assert received.headers["Authorization"] == "Bearer test-key"
    assert received.body == {"model": OPENAI_MODEL, "prompt": "a red cat", "n": 1, "size": "1536x1024"}


@pytest.mark.parametrize(
    ("aspect_ratio", "size"),
    [("1:1", "1024x1024"), ("16:9", "1536x1024"), ("4:3", "1536x1024"), ("9:16", "1024x1536"), ("3:4", "1024x1536")],
)
def test_openai_asks_for_the_size_with_the_aspect_ratios_orientation(
    provider: FakeProviderServer, aspect_ratio: str, size: str
) -> None:
    remote_client("openai", provider.url).generate_image(ImageRequest("a cat", aspect_ratio))

    [received] = provider.received()
    assert received.body is not None
    assert received.body["size"] == size


@pytest.mark.parametrize("kind", PROVIDER_KINDS)
@pytest.mark.parametrize(
    ("behaviour", "error_type", "code"),
    [
        ("429", TransientProviderError, "rate_limited"),
        ("500", TransientProviderError, "provider_unavailable"),
        ("malformed", TransientProviderError, "malformed_response"),
        ("400", PermanentProviderError, "invalid_request"),
        ("402", PermanentProviderError, "provider_out_of_funds"),
        ("content_policy", PermanentProviderError, "content_refused"),
        ("text_only", PermanentProviderError, "no_image"),
    ],
)
def test_remote_provider_maps_scripted_failure_to_typed_error(
    provider: FakeProviderServer, kind: str, behaviour: str, error_type: type[ProviderError], code: str
) -> None:
    provider.script("cat", [behaviour])

    with pytest.raises(error_type) as raised:
        remote_client(kind, provider.url).generate_image(ImageRequest("a cat", "1:1"))

    assert raised.value.code == code


@pytest.mark.parametrize("kind", PROVIDER_KINDS)
def test_remote_provider_includes_the_providers_message_in_the_error(provider: FakeProviderServer, kind: str) -> None:
    provider.script("cat", ["400"])

    with pytest.raises(PermanentProviderError, match=r"HTTP 400.*Invalid value for 'size'"):
        remote_client(kind, provider.url).generate_image(ImageRequest("a cat", "1:1"))


@pytest.mark.parametrize("kind", PROVIDER_KINDS)
def test_remote_provider_maps_wrong_key_to_permanent_auth_error(provider: FakeProviderServer, kind: str) -> None:
    with pytest.raises(PermanentProviderError) as raised:
        remote_client(kind, provider.url, api_key="wrong-key").generate_image(ImageRequest("a cat", "1:1"))

    assert raised.value.code == "provider_auth"
    assert "wrong-key" not in str(raised.value)


@pytest.mark.parametrize("kind", PROVIDER_KINDS)
def test_remote_provider_maps_answer_slower_than_timeout_to_transient_timeout(
    provider: FakeProviderServer, kind: str
) -> None:
    provider.script("cat", ["slow:3"])
    started = time.monotonic()

    with pytest.raises(TransientProviderError) as raised:
        remote_client(kind, provider.url, timeout=0.3).generate_image(ImageRequest("a cat", "1:1"))

    assert raised.value.code == "provider_timeout"
    # Before the 3 s answer: the client gave up at its timeout rather than waiting (with room for a loaded machine).
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("kind", PROVIDER_KINDS)
@pytest.mark.parametrize("behaviour", ["drip_headers", "endless_slow_body"])
def test_remote_provider_gives_up_on_a_dripping_answer_at_its_total_deadline(kind: str, behaviour: str) -> None:
    with FakeFrameServer(drip_seconds=0.2) as dripping:
        started = time.monotonic()

        with pytest.raises(TransientProviderError) as raised:
            remote_client(kind, dripping.url(behaviour), timeout=1.0).generate_image(ImageRequest("a cat", "1:1"))

        elapsed = time.monotonic() - started
    # Each byte comes well within the timeout, so only a deadline on the whole call stops it: a body cut short
    # there is a timeout, not a malformed answer.
    assert raised.value.code == "provider_timeout"
    assert elapsed < 1.0 + 2


@pytest.mark.parametrize("kind", PROVIDER_KINDS)
def test_remote_provider_maps_refused_connection_to_transient_unreachable(kind: str) -> None:
    with pytest.raises(TransientProviderError) as raised:
        remote_client(kind, closed_port_url()).generate_image(ImageRequest("a cat", "1:1"))

    assert raised.value.code == "provider_unreachable"


def test_fake_provider_fails_as_scripted_then_repeats_the_last_behaviour(provider: FakeProviderServer) -> None:
    provider.script("cat", ["500", "500", "ok"])
    client = remote_client("gateway", provider.url)

    outcomes = []
    for _ in range(4):
        try:
            client.generate_image(ImageRequest("a cat", "1:1"))
            outcomes.append("ok")
        except TransientProviderError as error:
            outcomes.append(error.code)
    client.generate_image(ImageRequest("a dog", "1:1"))

    assert outcomes == ["provider_unavailable", "provider_unavailable", "ok", "ok"]
    assert len(provider.received(prompt_contains="cat")) == 4
    assert len(provider.received()) == 5


def test_fake_provider_runs_as_a_separate_process() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "testing.fakes.provider", "--api-key", "k", '{"cat": ["429"]}'],
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        payload = {"model": OPENAI_MODEL, "prompt": "a cat", "n": 1, "size": "1024x1024"}
        response = requests.post(f"{url}/images/generations", json=payload, headers={"Authorization": "Bearer k"})
    finally:
        process.terminate()
        process.wait(timeout=5)

    assert response.status_code == 429


@pytest.mark.parametrize("aspect_ratio", sorted(ASPECT_RATIO_SIZES))
def test_local_provider_draws_a_png_with_the_aspect_ratios_proportions(aspect_ratio: str) -> None:
    image = LocalImageProvider().generate_image(ImageRequest("a lighthouse at dusk, " * 20, aspect_ratio))

    picture = open_image(image.content)
    width, height = ASPECT_RATIO_SIZES[aspect_ratio]
    assert image.mime_type == "image/png"
    assert picture.format == "PNG"
    assert picture.size == (width // 2, height // 2)


def test_local_provider_draws_the_same_picture_for_the_same_prompt() -> None:
    provider = LocalImageProvider()

    first, again, other = (provider.generate_image(ImageRequest(prompt, "1:1")) for prompt in ("cat", "cat", "dog"))

    assert first.content == again.content
    assert first.content != other.content


def test_local_provider_waits_the_configured_latency() -> None:
    started = time.monotonic()

    LocalImageProvider(latency=0.2).generate_image(ImageRequest("a cat", "1:1"))

    assert time.monotonic() - started >= 0.2


def test_local_provider_always_fails_transiently_at_failure_rate_one() -> None:
    provider = LocalImageProvider(failure_rate=1)

    for _ in range(10):
        with pytest.raises(TransientProviderError) as raised:
            provider.generate_image(ImageRequest("a cat", "1:1"))
        assert raised.value.code == "local_simulated_failure"


def test_local_provider_never_fails_at_failure_rate_zero() -> None:
    provider = LocalImageProvider(failure_rate=0)

    images = [provider.generate_image(ImageRequest(f"cat {index}", "1:1")) for index in range(10)]

    assert len(images) == 10
    assert {image.mime_type for image in images} == {"image/png"}
    assert all(open_image(image.content).format == "PNG" for image in images)
    # Ten prompts, ten different pictures: each call drew its own, none was a cached or empty answer.
    assert len({image.content for image in images}) == 10


def test_local_provider_refuses_an_unsupported_aspect_ratio() -> None:
    with pytest.raises(PermanentProviderError) as raised:
        LocalImageProvider().generate_image(ImageRequest("a cat", "2:1"))

    assert raised.value.code == "invalid_request"


@pytest.mark.parametrize(
    ("name", "provider_class"),
    [("local", LocalImageProvider), ("gateway", GatewayImageProvider), ("openai", OpenAIImageProvider)],
)
def test_get_image_provider_builds_the_provider_the_settings_name(
    settings: Settings, name: str, provider_class: type
) -> None:
    settings.IMAGE_PROVIDER = name
    settings.AI_GATEWAY_API_KEY = "gateway-key"
    settings.OPENAI_API_KEY = "openai-key"

    assert isinstance(get_image_provider(), provider_class)


def test_get_image_provider_passes_settings_to_the_client(settings: Settings) -> None:
    settings.IMAGE_PROVIDER = "gateway"
    settings.AI_GATEWAY_URL = "https://gateway.example/v1/"
    settings.AI_GATEWAY_API_KEY = "gateway-key"
    settings.AI_GATEWAY_IMAGE_MODEL = "some/model"
    settings.PROVIDER_TIMEOUT = 7.5

    provider = get_image_provider()

    assert isinstance(provider, GatewayImageProvider)
    assert provider.endpoint.url == "https://gateway.example/v1/chat/completions"
    assert provider.model == "some/model"
    assert provider.endpoint.timeout == 7.5
    assert provider.endpoint.session.headers["Authorization"] == "Bearer gateway-key"


@pytest.mark.parametrize(("name", "key_setting"), [("gateway", "AI_GATEWAY_API_KEY"), ("openai", "OPENAI_API_KEY")])
def test_get_image_provider_refuses_a_remote_provider_without_a_key(
    settings: Settings, name: str, key_setting: str
) -> None:
    settings.IMAGE_PROVIDER = name
    setattr(settings, key_setting, "")

    with pytest.raises(ImproperlyConfigured, match=key_setting):
        get_image_provider()


def test_get_image_provider_refuses_an_unknown_provider_name(settings: Settings) -> None:
    settings.IMAGE_PROVIDER = "dall-e-by-fax"

    with pytest.raises(ImproperlyConfigured, match="dall-e-by-fax"):
        get_image_provider()
