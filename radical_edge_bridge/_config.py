"""Bridge configuration: one object, passed in, no globals."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from radical_edge_proto import Limits

from ._http import HTTPLimits


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
    heartbeat_interval: float = 15.0
    handshake_timeout: float = 10.0
    request_timeout: float = 60.0
    sse_keepalive: float = 15.0
    event_ring_size: int = 4096
    subscriber_queue: int = 1024
    #: plugins the bridge hosts itself, as the edge ``bridge`` (needs the edge extra)
    plugins: tuple[str, ...] = ()
    http: HTTPLimits = field(default_factory=HTTPLimits)
    tunnel: Limits = field(default_factory=Limits)
