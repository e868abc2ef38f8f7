"""``python -m bench.chaos``: the chaos run (see bench/chaos/__init__.py and docs/chaos.md)."""

from __future__ import annotations

from bench.chaos.runner import main

main()
