"""Counters for ``GET /metrics`` (Prometheus text exposition format)."""

from __future__ import annotations

import bisect
from collections import Counter

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.requests_by_status: Counter[int] = Counter()
        self.bytes_in = 0
        self.bytes_out = 0
        self.in_flight = 0
        self._latency_counts = [0] * (len(_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._latency_n = 0

    def observe(self, status: int, seconds: float) -> None:
        self.requests_by_status[status] += 1
        self._latency_counts[bisect.bisect_left(_BUCKETS, seconds)] += 1
        self._latency_sum += seconds
        self._latency_n += 1

    def render(self, *, edges_connected: int, subscribers: int) -> bytes:
        lines = [
            "# HELP radical_edge_edges_connected Edges with a live tunnel.",
            "# TYPE radical_edge_edges_connected gauge",
            f"radical_edge_edges_connected {edges_connected}",
            "# HELP radical_edge_requests_total Forwarded requests by response status.",
            "# TYPE radical_edge_requests_total counter",
        ]
        by_status = sorted(self.requests_by_status.items())
        lines += [f'radical_edge_requests_total{{status="{s}"}} {n}' for s, n in by_status]
        lines += [
            "# HELP radical_edge_streams_in_flight Requests being forwarded now.",
            "# TYPE radical_edge_streams_in_flight gauge",
            f"radical_edge_streams_in_flight {self.in_flight}",
            "# HELP radical_edge_body_bytes_total Body bytes forwarded, by direction.",
            "# TYPE radical_edge_body_bytes_total counter",
            f'radical_edge_body_bytes_total{{direction="in"}} {self.bytes_in}',
            f'radical_edge_body_bytes_total{{direction="out"}} {self.bytes_out}',
            "# HELP radical_edge_event_subscribers Event stream subscribers.",
            "# TYPE radical_edge_event_subscribers gauge",
            f"radical_edge_event_subscribers {subscribers}",
            "# HELP radical_edge_request_seconds Time to the response head of forwarded requests.",
            "# TYPE radical_edge_request_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip((*_BUCKETS, float("inf")), self._latency_counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'radical_edge_request_seconds_bucket{{le="{le}"}} {cumulative}')
        lines.append(f"radical_edge_request_seconds_sum {self._latency_sum}")
        lines.append(f"radical_edge_request_seconds_count {self._latency_n}")
        return ("\n".join(lines) + "\n").encode()
