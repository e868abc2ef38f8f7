"""A cross-check of the closed-loop figures with wrk, when it is installed (``apt-get install wrk``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.loadgen import LOCALHOST

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
# Each request goes out as the next user in turn, as the Python load generator's clients do.
_SCRIPT = """
local tokens = {TOKENS}
local counter = 0
request = function()
  counter = counter + 1
  local headers = {["Authorization"] = "Token " .. tokens[counter % #tokens + 1]}
  if {BODY} then headers["Content-Type"] = "application/json" end
  return wrk.format({METHOD}, nil, headers, {BODY})
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def _milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return round(float(number) * _UNITS[unit], 2)


def _lua(value: str | None) -> str:
    return "nil" if value is None else json.dumps(value)


def wrk_run(
    path: str, *, port: int, tokens: list[str], clients: int, duration: float, body: str | None = None
) -> dict[str, Any]:
    """Run wrk with ``clients`` connections on two threads; return requests/s, p50/p99 in ms and non-2xx count."""
    script = _SCRIPT.replace("{TOKENS}", "{" + ", ".join(_lua(token) for token in tokens) + "}")
    script = script.replace("{BODY}", _lua(body)).replace("{METHOD}", _lua("GET" if body is None else "POST"))
    with tempfile.TemporaryDirectory() as folder:
        script_path = Path(folder) / "requests.lua"
        script_path.write_text(script)
        command = ["wrk", "-t", "2", "-c", str(clients), "-d", f"{max(1, round(duration))}s", "--latency"]
        command += ["-s", str(script_path), f"http://{LOCALHOST}:{port}{path}"]
        output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)$", output, re.MULTILINE)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        "latency_ms": {f"p{key}": _milliseconds(value) for key, value in percentiles.items()},
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }
