"""Benchmarks of the deployed stack (not tests): run ``python -m project.embedded run -- python -m bench.images``."""
