"""Fakes and helpers shared by tests/ and bench/: fake provider servers, the live stack, waits on state."""
