"""A fake image provider that speaks the gateway and the OpenAI shapes over real HTTP, with scripted failures.

In a test: ``with FakeProviderServer() as server: server.script("cat", ["500", "ok"])`` and point a client at
``server.url``. As a process: ``python -m testing.fakes.provider --port 8765 '{"cat": ["500", "ok"]}'`` prints
its URL once it listens.
"""

from __future__ import annotations

import base64
import functools
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from testing.fakes.server import FakeServer, JsonHandler, argument_parser, delay, serve_in_foreground

GATEWAY_PATH = "/v1/chat/completions"
OPENAI_PATH = "/v1/images/generations"
_ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "429": (429, {"message": "Rate limit exceeded, slow down.", "type": "requests", "code": "rate_limit_exceeded"}),
    "500": (500, {"message": "The server had an error processing your request.", "type": "server_error"}),
    "400": (400, {"message": "Invalid value for 'size'.", "type": "invalid_request_error", "code": "invalid_value"}),
    "402": (402, {"message": "Not enough credits: add funds to your workspace.", "type": "payment_required"}),
    "content_policy": (
        400,
        {
            "message": "Your request was rejected as a result of our safety system.",
            "type": "image_generation_user_error",
            "code": "content_policy_violation",
        },
    ),
}
_SUCCESSES = {"ok", "text_only", "malformed"}
_SLOW = "slow:"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake server received it; ``received_at`` is ``time.time()`` on arrival."""

    path: str
    prompt: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    received_at: float


class _Handler(JsonHandler["FakeProviderServer"]):
    def do_POST(self) -> None:
        body = self.read_json()
        prompt = _prompt(self.path, body)
        self.fake._record(RecordedRequest(self.path, prompt, dict(self.headers.items()), body, time.time()))
        if self.path not in (GATEWAY_PATH, OPENAI_PATH):
            self._send_error(404, {"message": f"No route for {self.path}.", "type": "not_found"})
        elif self.headers.get("Authorization") != f"Bearer {self.fake.api_key}":
            self._send_error(401, {"message": "Incorrect API key provided.", "code": "invalid_api_key"})
        elif body is None:
            self._send_error(400, {"message": "The body must be a JSON object.", "type": "invalid_request_error"})
        else:
            self._answer(self.fake._next_behaviour(prompt), body)

    def _answer(self, behaviour: str, body: dict[str, Any]) -> None:
        seconds = delay(behaviour, _SLOW)
        if seconds is not None:
            time.sleep(seconds)
            behaviour = "ok"
        if behaviour in _ERRORS:
            status, error = _ERRORS[behaviour]
            self._send_error(status, error)
        elif behaviour == "malformed":
            self.send_body(200, b'{"choices": [{"message": ')
        elif self.path == GATEWAY_PATH:
            self.send_json(200, _chat_completion(body, with_image=behaviour == "ok"))
        else:
            count = body.get("n", 1)
            images = [{"b64_json": _png_base64()}] * (count if isinstance(count, int) else 1)
            self.send_json(200, {"created": int(time.time()), "data": images if behaviour == "ok" else []})

    def _send_error(self, status: int, error: dict[str, Any]) -> None:
        self.send_json(status, {"error": {"param": None, "code": None, **error}})


class FakeProviderServer(FakeServer):
    """A thread-safe fake image provider on 127.0.0.1 whose answers are scripted per prompt substring."""

    handler_class = _Handler
    base_path = "/v1"
    thread_name = "fake-provider"

    def __init__(self, *, api_key: str = "test-key", port: int = 0) -> None:
        super().__init__(api_key=api_key, port=port)
        self._received: list[RecordedRequest] = []

    def received(self, *, prompt_contains: str = "") -> list[RecordedRequest]:
        """Return a copy of the requests received so far whose prompt contains ``prompt_contains``."""
        with self._lock:
            return [request for request in self._received if prompt_contains in request.prompt]

    def _check_behaviour(self, behaviour: str) -> None:
        if behaviour not in _ERRORS and behaviour not in _SUCCESSES and delay(behaviour, _SLOW) is None:
            raise ValueError(f"Unknown fake provider behaviour {behaviour!r}.")

    def _forget(self) -> None:
        self._received.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._received.append(request)


def _prompt(path: str, body: dict[str, Any] | None) -> str:
    if body is None:
        return ""
    if path == OPENAI_PATH:
        return str(body.get("prompt", ""))
    messages = body.get("messages")
    contents = (
        [message.get("content") for message in messages if isinstance(message, dict)]
        if isinstance(messages, list)
        else []
    )
    return "\n".join(text for content in contents for text in _texts(content))


def _texts(content: object) -> list[str]:
    # A chat message's content is either a plain string or a list of typed parts.
    if isinstance(content, str):
        return [content]
    parts = content if isinstance(content, list) else []
    return [str(part.get("text", "")) for part in parts if isinstance(part, dict) and part.get("type") == "text"]


def _chat_completion(body: dict[str, Any], *, with_image: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "Here is your picture."}
    if with_image:
        message["images"] = [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{_png_base64()}"}}]
    else:
        message["content"] = "I can't draw that, but I can describe it in words."
    return {
        "id": "gen-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
    }


@functools.cache
def _png_base64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 80, 40)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fake provider in the foreground until interrupted."""
    args = argument_parser(__doc__).parse_args(argv)
    serve_in_foreground(FakeProviderServer(api_key=args.api_key, port=args.port), args.script)


if __name__ == "__main__":
    main()
