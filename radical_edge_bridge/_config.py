"""Bridge configuration: one object, passed in, no globals."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from radical_edge_proto import MAX_WINDOW, Limits
from radical_edge_tunnel import MAX_STREAM_WINDOW, tunnel_limits

from ._http import HTTPLimits

#: the bridge's starting window per stream: how much of an edge's answer may be under way before the caller
#: takes it.  Smaller than the tunnel default (1 MiB): on a short path 512 KiB keeps a download as fast
#: (measured on loopback) while half as much of it queues ahead of a small answer from the same edge; on a
#: long path the window grows anyway (``Connection.tune_windows``).  Uploads keep the edge's 1 MiB: there
#: the bridge sends, and waiting on credit more often cost it 10 % of an upload's speed.
BRIDGE_STREAM_WINDOW = 512 * 1024


def bridge_tunnel_limits(stream_window: int = BRIDGE_STREAM_WINDOW) -> Limits:
    """The tunnel limits the bridge announces: this starting window per stream, and a connection window
    that holds at least two such streams."""
    limits = tunnel_limits()
    connection = _holds_two(stream_window, limits.connection_window_size)
    return dataclasses.replace(limits, initial_window_size=stream_window, connection_window_size=connection)


def _holds_two(stream_window: int, floor: int) -> int:
    """A connection window that holds two streams of ``stream_window`` (and at least ``floor``), within the
    protocol's 2**31-1."""
    return min(max(floor, 2 * stream_window), MAX_WINDOW)


@dataclass(frozen=True)
class BridgeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    cert: Path | None = None
    key: Path | None = None
    #: the bearer token; None only with auth switched off (``--no-auth``)
    token: str | None = None
    #: plain HTTP, only for a loopback test setup (``--insecure-no-tls``)
    insecure_no_tls: bool = False
    #: the heartbeat interval of edge connections with a request in flight (sent in WELCOME): an edge pings
    #: after this much silence (the bridge after 1.5 times that), and one silent for ``HEARTBEAT_MISSES`` (3)
    #: intervals is dropped and its requests answered 503.  5 s: a frozen edge's requests are answered
    #: within 15 s, while an edge whose loop stalls for a few seconds (a busy plugin) stays.
    heartbeat_interval: float = 5.0
    #: the same while an edge has no request in flight (raised to ``heartbeat_interval`` if below it): one
    #: PING/PONG per idle edge per interval, and an idle edge that froze or lost its network leaves the
    #: listing after 3 of them (90 s), or 10-15 s after a request is sent to it (asked with a PING at once if
    #: it has been silent for ``heartbeat_interval``).  An idle edge gives up on a bridge that went silent
    #: (no reset: a lost network) after 90 s too.  30 s stays under the idle timeouts of common proxies and
    #: firewalls (60 s and up).
    idle_heartbeat_interval: float = 30.0
    #: the same for SDK connections (``/connect``): nothing waits on a client's liveness (a gone client's
    #: TCP connection usually ends at once), so its heartbeat only finds half-open connections, and 1,000
    #: idle clients cost the bridge a sixth of what 1,000 idle edges do
    client_heartbeat_interval: float = 30.0
    handshake_timeout: float = 10.0
    request_timeout: float = 60.0
    sse_keepalive: float = 15.0
    event_ring_size: int = 4096
    subscriber_queue: int = 1024
    #: plugins the bridge hosts itself, as the edge ``bridge`` (needs the edge extra)
    plugins: tuple[str, ...] = ()
    http: HTTPLimits = field(default_factory=HTTPLimits)
    #: what the bridge announces it receives on edge tunnels, where answers come in (``--stream-window``: its
    #: streams' starting window, see :func:`bridge_tunnel_limits`)
    tunnel: Limits = field(default_factory=bridge_tunnel_limits)
    #: how far an edge tunnel's stream window may grow on a long path (``--max-stream-window``; the connection
    #: window up to twice that).  The starting window or less: windows never grow.
    max_stream_window: int = MAX_STREAM_WINDOW
    #: what it announces on SDK connections (``/connect``), where request bodies come in: the tunnel default,
    #: as the edges have for the same bodies (a 512 KiB window measured 6 % slower for a staging upload)
    client_tunnel: Limits = field(default_factory=tunnel_limits)
    #: most client connections held at once (each is an fd and ~tens of KiB); past it new ones are
    #: closed at accept.  4096 leaves room for edges, SSE readers and API clients on a busy site while
    #: keeping a flood's memory bounded; above the usual fd limit of 1024 the EMFILE back-off takes over.
    max_connections: int = 4096
    #: most connections from one IP address, so one host cannot take every slot.  256 is well above
    #: what one user, one edge host or a 64-connection benchmark from loopback uses; behind a reverse
    #: proxy (every client is the proxy's address) set it to ``max_connections``.
    max_connections_per_peer: int = 256
    #: seconds a new connection gets to complete its TLS handshake before it is dropped (a slot held by
    #: a silent client is freed after this); generous for a slow network, short for a slowloris.
    tls_handshake_timeout: float = 10.0
    #: most TLS handshakes in progress at once, and most of them for one peer address (a connection asks for
    #: a slot once its first bytes arrived; it waits for one within ``tls_handshake_timeout``).  A reconnect
    #: storm (a restarted bridge's edges and clients, all within a second) is then served a batch at a time
    #: in arrival order, instead of every handshake finishing late together and all their memory taken at
    #: once; 64 keeps the bridge's cores busy on loopback and on a LAN, 32 per address keeps one from holding all.
    tls_handshake_concurrency: int = 64
    tls_handshake_concurrency_per_peer: int = 32
    #: seconds a disconnected edge stays listed (as disconnected) before the bridge forgets it.  One hour,
    #: like a plugin session's idle TTL: an edge restarted for maintenance or cut off by a network outage
    #: is still listed, while a name used once (the edge of a finished batch job) goes away.
    edge_ttl: float = 3600.0
    #: most disconnected edges remembered at once; past it the longest-disconnected are forgotten first, so a
    #: flood of names cannot grow memory within the TTL (each entry holds its manifest, at most a frame).
    max_disconnected_edges: int = 10_000
    #: wrong credentials (token, cookie, POST /auth) one peer address may send per window before it gets 429
    #: for the rest of that window (see ``_throttle.py``): a guesser gets 10 tries a minute
    auth_max_failures: int = 10
    auth_failure_window: float = 60.0
    #: bytes of encoded events the replay ring holds at most (besides ``event_ring_size`` events); the
    #: oldest go first, and a replay from before them reports a gap.  16 MiB: thousands of ordinary events.
    event_ring_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("heartbeat_interval", "idle_heartbeat_interval", "client_heartbeat_interval"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a finite positive number of seconds, not {value!r}")

    @property
    def edge_idle_heartbeat_interval(self) -> float:
        """What an edge's WELCOME says for an idle connection: ``idle_heartbeat_interval``, raised to
        ``heartbeat_interval`` if below it."""
        return max(self.idle_heartbeat_interval, self.heartbeat_interval)

    @property
    def edge_window_caps(self) -> tuple[int, int]:
        """How far an edge tunnel's stream and connection windows may grow: ``max_stream_window`` (never
        below the starting window) and a connection window that holds two such streams."""
        stream = min(max(self.max_stream_window, self.tunnel.initial_window_size), MAX_WINDOW)
        return stream, _holds_two(stream, self.tunnel.connection_window_size)
