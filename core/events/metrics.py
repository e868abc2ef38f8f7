"""The event streams' metrics: each web process reports its open streams to Redis (see ``core.events.hub``)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from core.connections import redis_client
from core.events.publish import streams_count_key, streams_dropped_key


def stream_metrics() -> Iterator[Metric]:
    # Each web process reports its own count, which expires with the process.
    client = redis_client()
    keys = sorted(client.scan_iter(match=streams_count_key(), count=1000))
    prefix = streams_count_key("")
    streams = GaugeMetricFamily(
        "genservice_event_streams_open", "Server-Sent Events streams open, by web process.", labels=["process"]
    )
    for key, count in zip(keys, client.mget(keys) if keys else [], strict=True):
        if count is not None:
            streams.add_metric([key.decode().removeprefix(prefix)], int(count))
    yield streams
    yield CounterMetricFamily(
        "genservice_event_streams_dropped",
        "Event streams dropped because their client read too slowly.",
        value=int(client.get(streams_dropped_key()) or 0),
    )
