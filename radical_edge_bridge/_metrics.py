"""Counters for ``GET /metrics`` (Prometheus text exposition format)."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class ConnectionStats:
    """What the listener did with TCP connections; the listener writes, ``/metrics`` reads."""

    #: connections accepted and not yet closed (the total the connection cap counts)
    open: int = 0
    #: connections closed right after accept, by the cap that refused them (``total`` or ``per_peer``)
    refused: Counter[str] = field(default_factory=Counter)
    #: accept() failures from resource exhaustion (EMFILE, ENFILE, ENOBUFS, ENOMEM)
    accept_errors: int = 0
    #: TLS handshakes that failed or timed out (plain TCP on the TLS port, scanners, slow clients)
    tls_handshake_failures: int = 0

    def render(self) -> list[str]:
        return [
            "# HELP radical_edge_connections_open Client TCP connections open now.",
            "# TYPE radical_edge_connections_open gauge",
            f"radical_edge_connections_open {self.open}",
            "# HELP radical_edge_connections_refused_total Connections closed at accept: a connection cap was full.",
            "# TYPE radical_edge_connections_refused_total counter",
            *(
                f'radical_edge_connections_refused_total{{reason="{r}"}} {self.refused[r]}'
                for r in ("total", "per_peer")
            ),
            "# HELP radical_edge_accept_errors_total Failed accepts: out of file descriptors or memory.",
            "# TYPE radical_edge_accept_errors_total counter",
            f"radical_edge_accept_errors_total {self.accept_errors}",
            "# HELP radical_edge_tls_handshake_failures_total TLS handshakes that failed or timed out.",
            "# TYPE radical_edge_tls_handshake_failures_total counter",
            f"radical_edge_tls_handshake_failures_total {self.tls_handshake_failures}",
        ]


class Metrics:
    def __init__(self) -> None:
        self.connections = ConnectionStats()
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

    def render(
        self, *, edges_connected: int, edges_known: int, subscribers: int, ring_events: int, ring_bytes: int
    ) -> bytes:
        lines = [
            "# HELP radical_edge_edges_connected Edges with a live tunnel.",
            "# TYPE radical_edge_edges_connected gauge",
            f"radical_edge_edges_connected {edges_connected}",
            "# HELP radical_edge_edges_known Edges in the registry, connected or remembered after a disconnect.",
            "# TYPE radical_edge_edges_known gauge",
            f"radical_edge_edges_known {edges_known}",
            "# HELP radical_edge_event_ring_events Events held for replay.",
            "# TYPE radical_edge_event_ring_events gauge",
            f"radical_edge_event_ring_events {ring_events}",
            "# HELP radical_edge_event_ring_bytes Bytes of the events held for replay.",
            "# TYPE radical_edge_event_ring_bytes gauge",
            f"radical_edge_event_ring_bytes {ring_bytes}",
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
        lines += self.connections.render()
        return ("\n".join(lines) + "\n").encode()
