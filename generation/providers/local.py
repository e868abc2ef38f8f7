"""A provider that draws real PNG images on this machine, so the whole system runs without any key."""

from __future__ import annotations

import hashlib
import io
import random
import textwrap
import time

from PIL import Image, ImageDraw, ImageFont

from generation.providers.base import GeneratedImage, ImageRequest, PermanentProviderError, TransientProviderError

ASPECT_RATIO_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "4:3": (1152, 864),
    "3:4": (864, 1152),
}
# Drawn at half the nominal size: quicker to make and store, with the same proportions.
_SCALE_DOWN = 2


class LocalImageProvider:
    """Draws a gradient coloured by a hash of the prompt with the prompt written on it, after a simulated delay."""

    def __init__(self, *, latency: float = 0.0, failure_rate: float = 0.0) -> None:
        self.latency = latency
        self.failure_rate = failure_rate

    def generate_image(self, request: ImageRequest) -> GeneratedImage:
        """Generate one image for ``request``, failing transiently with probability ``failure_rate``."""
        nominal = ASPECT_RATIO_SIZES.get(request.aspect_ratio)
        if nominal is None:
            raise PermanentProviderError(f"Unsupported aspect ratio {request.aspect_ratio!r}.", code="invalid_request")
        time.sleep(self.latency)
        if random.random() < self.failure_rate:
            raise TransientProviderError("The local provider simulated a failure.", code="local_simulated_failure")
        width, height = nominal
        return GeneratedImage(
            content=render_png(request.prompt, (width // _SCALE_DOWN, height // _SCALE_DOWN)), mime_type="image/png"
        )


def render_png(prompt: str, size: tuple[int, int]) -> bytes:
    """Draw the same picture for the same prompt: a two-colour gradient with the prompt wrapped across it."""
    width, height = size
    digest = hashlib.sha256(prompt.encode()).digest()
    mask = Image.linear_gradient("L").rotate(90 * (digest[6] % 4)).resize(size)
    image = Image.composite(
        Image.new("RGB", size, tuple(digest[0:3])), Image.new("RGB", size, tuple(digest[3:6])), mask
    )
    font_size = max(14, width // 24)
    # Keep the text inside the picture: roughly 0.55 em per character and 1.25 em per line.
    lines = textwrap.wrap(
        prompt,
        width=max(8, int(width * 0.85 / (font_size * 0.55))),
        max_lines=max(1, int(height * 0.8 / (font_size * 1.25))),
        placeholder=" …",
    )
    ImageDraw.Draw(image).multiline_text(
        (width / 2, height / 2),
        "\n".join(lines),
        font=ImageFont.load_default(size=font_size),
        fill="white",
        anchor="mm",
        align="center",
        stroke_width=max(1, font_size // 12),
        stroke_fill="black",
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
