"""Google Veo through the Gemini API: start a long-running operation, poll it, download the video it names.

Every call sends the key in the ``x-goog-api-key`` header and ends within the client's ``timeout`` as a whole:
connecting, the answer, its body and a download's redirects together. Failures map to provider errors as follows:

==========================================================  =========  ================================
answer                                                      kind       code
==========================================================  =========  ================================
429 ``RESOURCE_EXHAUSTED`` (``retry_after`` from RetryInfo)  transient  ``rate_limited``
408, 5xx                                                    transient  ``provider_timeout`` /
                                                                       ``provider_unavailable``
the call's deadline passing                                 transient  ``provider_timeout``
no connection made (refused, unresolved, connect timeout)   transient  ``provider_unreachable``
a connection reset or closed after the request went out     transient  ``provider_connection_lost``
2xx that is not the documented shape                        transient  ``malformed_response``
401, 403 ``PERMISSION_DENIED``, 400 ``API_KEY_INVALID``     permanent  ``provider_auth``
400 ``FAILED_PRECONDITION`` (billing, region, account)      permanent  ``provider_precondition_failed``
400 whose message speaks of safety or policy                permanent  ``content_refused``
any other 4xx, such as 400 ``INVALID_ARGUMENT``             permanent  ``invalid_request``
a video larger than ``max_video_bytes``                     permanent  ``video_too_large``
==========================================================  =========  ================================

A finished operation is not an exception: it comes back as a ``VideoOperation`` with ``error_code``
``operation_failed`` (the operation holds an error) or ``safety_filtered`` (it holds no video).
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import urlsplit

import requests

from generation.providers.base import PermanentProviderError, ProviderError
from generation.providers.http import (
    bounded_call,
    error_for_status,
    json_or_none,
    malformed_response,
    provider_message,
    read_limited,
    shorten,
    status_detail,
)
from generation.providers.video import GeneratedVideo, VideoFrame, VideoOperation, VideoRequest

KEY_HEADER = "x-goog-api-key"
MAX_VIDEO_BYTES = 200 * 1024 * 1024
# Veo answers 400 INVALID_ARGUMENT for a prompt its Responsible AI filters refuse; only the wording tells.
_REFUSAL_WORDING = re.compile(r"safety|responsible ai|usage guidelines|polic(?:y|ies)|sensitive", re.IGNORECASE)
_RETRY_DELAY = re.compile(r"(\d+(?:\.\d+)?)s")


class VeoVideoProvider:
    """Starts Veo generations with ``predictLongRunning``, polls their operations and downloads the videos."""

    def __init__(
        self, *, base_url: str, api_key: str, model: str, timeout: float, max_video_bytes: int = MAX_VIDEO_BYTES
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_video_bytes = max_video_bytes
        # Holds the headers every call sends; each call runs on a bounded session of its own.
        self.session = requests.Session()
        # requests drops Authorization on a redirect to another host but keeps custom headers, so the key also
        # goes wherever Google redirects a download; those targets are Google's own, which is acceptable.
        self.session.headers[KEY_HEADER] = api_key

    def start(self, request: VideoRequest) -> str:
        """Start a generation for ``request`` and return its operation name."""
        payload = {"instances": [_instance(request)], "parameters": _parameters(request)}
        with bounded_call(self.session, self.timeout) as session:
            response = session.post(
                f"{self.base_url}/models/{request.model or self.model}:predictLongRunning",
                json=payload,
                timeout=self.timeout,
            )
        name = _json_object(response).get("name")
        if not isinstance(name, str) or not name:
            raise malformed_response("the operation name is missing")
        return name

    def poll(self, operation_name: str) -> VideoOperation:
        """Ask where the operation stands; a failed or filtered generation is a finished operation, not an error."""
        with bounded_call(self.session, self.timeout) as session:
            response = session.get(f"{self.base_url}/{operation_name.lstrip('/')}", timeout=self.timeout)
        return operation_state(_json_object(response))

    def cancel(self, operation_name: str) -> None:
        """Ask Google to stop the generation (google.longrunning's ``:cancel``); the answer changes nothing here."""
        with bounded_call(self.session, self.timeout) as session:
            response = session.post(f"{self.base_url}/{operation_name.lstrip('/')}:cancel", timeout=self.timeout)
        if not response.ok:
            raise google_error(response.status_code, json_or_none(response))

    def download(self, video_uri: str) -> GeneratedVideo:
        """Download the finished video, following redirects, refusing one larger than ``max_video_bytes``."""
        if urlsplit(video_uri).scheme not in ("http", "https"):
            raise PermanentProviderError(
                f"The video URI {video_uri[:100]!r} is not a web address.", code="invalid_request"
            )
        with (
            bounded_call(self.session, self.timeout) as session,
            session.get(video_uri, stream=True, timeout=self.timeout) as response,
        ):
            if not response.ok:
                raise google_error(response.status_code, json_or_none(response))
            content = read_limited(response, self.max_video_bytes)
        if content is None:
            raise PermanentProviderError(
                f"The video is larger than {self.max_video_bytes} bytes.", code="video_too_large"
            )
        # A storage redirect may answer application/octet-stream; Veo only makes MP4.
        mime_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        return GeneratedVideo(content=content, mime_type=mime_type if mime_type.startswith("video/") else "video/mp4")


def operation_state(body: dict[str, Any]) -> VideoOperation:
    """Read a Gemini long-running operation: still running, done with a video, failed, or filtered out."""
    # Google leaves ``done`` out while it is false.
    done = body.get("done", False)
    if done is False:
        return VideoOperation(done=False)
    if done is not True:
        raise malformed_response("done is not a boolean")
    error = body.get("error")
    if isinstance(error, dict):
        message = provider_message(body) or f"The provider reported the generation failed ({error.get('status')})."
        return VideoOperation(done=True, error_code="operation_failed", error_message=message)
    response = body.get("response")
    if not isinstance(response, dict):
        raise malformed_response("a finished operation holds neither a response nor an error")
    generated = response.get("generateVideoResponse") or {}
    samples = generated.get("generatedSamples") if isinstance(generated, dict) else None
    if not samples:
        return VideoOperation(done=True, error_code="safety_filtered", error_message=_filtered_message(generated))
    try:
        uri = samples[0]["video"]["uri"]
    except (KeyError, IndexError, TypeError) as error:
        raise malformed_response("generatedSamples[0].video.uri is missing") from error
    if not isinstance(uri, str) or not uri:
        raise malformed_response("generatedSamples[0].video.uri is not a string")
    return VideoOperation(done=True, video_uri=uri)


def google_error(status: int, body: object) -> ProviderError:
    """Map a failed Gemini API answer, in Google's ``{"error": {"code", "status", "message", "details"}}`` shape."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    details = [detail for detail in error.get("details") or [] if isinstance(detail, dict)]
    if status == 400:
        suffix = status_detail(status, body)
        if any(detail.get("reason") == "API_KEY_INVALID" for detail in details):
            return PermanentProviderError(f"The provider rejected the credentials{suffix}", code="provider_auth")
        if error.get("status") == "FAILED_PRECONDITION":
            return PermanentProviderError(
                f"The provider account cannot make this call{suffix}", code="provider_precondition_failed"
            )
        if _REFUSAL_WORDING.search(provider_message(body)):
            return PermanentProviderError(f"The provider refused the content{suffix}", code="content_refused")
    return error_for_status(status, body, retry_after=_retry_delay(details))


def _instance(request: VideoRequest) -> dict[str, Any]:
    instance: dict[str, Any] = {"prompt": request.prompt}
    if request.start_frame is not None:
        instance["image"] = _image(request.start_frame)
    if request.end_frame is not None:
        instance["lastFrame"] = _image(request.end_frame)
    return instance


def _image(frame: VideoFrame) -> dict[str, str]:
    return {"bytesBase64Encoded": base64.b64encode(frame.content).decode(), "mimeType": frame.mime_type}


def _parameters(request: VideoRequest) -> dict[str, Any]:
    parameters: dict[str, Any] = {"aspectRatio": request.aspect_ratio, "durationSeconds": request.duration_seconds}
    if request.resolution:
        parameters["resolution"] = request.resolution
    if request.negative_prompt:
        parameters["negativePrompt"] = request.negative_prompt
    return parameters


def _json_object(response: requests.Response) -> dict[str, Any]:
    body = json_or_none(response)
    if not response.ok:
        raise google_error(response.status_code, body)
    if not isinstance(body, dict):
        raise malformed_response("the body is not a JSON object")
    return body


def _filtered_message(generated: object) -> str:
    reasons = generated.get("raiMediaFilteredReasons") if isinstance(generated, dict) else None
    if isinstance(reasons, list) and reasons:
        return shorten(" ".join(str(reason) for reason in reasons))
    return "The provider returned no video: it was filtered out by the provider's safety checks."


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    # A google.protobuf.Duration in JSON is a decimal number of seconds followed by "s", such as "12s" or "1.5s".
    for detail in details:
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _RETRY_DELAY.fullmatch(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None
