"""Per-user event streams: published to Redis after commit, served as Server-Sent Events.

- ``publish``: where events live in Redis and how one is appended and announced.
- ``hub``: each web process's one subscription, fanning events out to its open streams.
- ``views``: ``GET /api/events/``.
"""
