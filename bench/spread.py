"""How the load generator's connections are spread over the web server's processes, read from /proc."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from bench.cpu import process_tree

_ESTABLISHED = "01"


def _established_sockets(port: int) -> set[str]:
    """The inodes of established TCP sockets whose local port is ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == _ESTABLISHED and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def connections_per_process(root: int, port: int) -> list[int]:
    """Established connections on ``port`` held by each process of the tree under ``root``, most first."""
    sockets = _established_sockets(port)
    counts = []
    for pid in process_tree(root):
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        held = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in sockets)
        if held:
            counts.append(held)
    return sorted(counts, reverse=True)


class SpreadSampler:
    """Reads the spread once, a given time after ``start()``, from a thread of its own."""

    def __init__(self, root: int, port: int, after: float) -> None:
        self.spread: list[int] = []
        self._timer = threading.Timer(after, self._sample, args=(root, port))

    def _sample(self, root: int, port: int) -> None:
        self.spread = connections_per_process(root, port)

    def start(self) -> SpreadSampler:
        self._timer.start()
        return self

    def stop(self) -> list[int]:
        self._timer.cancel()
        return self.spread
