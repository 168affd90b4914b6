"""Which edges exist, which are connected, and who may use a name."""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from radical_edge_tunnel import Tunnel

#: the edge name of the plugins hosted inside the bridge
BRIDGE_EDGE = "bridge"
RESERVED_NAMES = frozenset({BRIDGE_EDGE})


@dataclass(eq=False)
class EdgeEntry:
    name: str
    resume_token: str
    manifest: dict[str, Any] = field(default_factory=dict)
    tunnel: Tunnel | None = None
    connected_since: float = 0.0

    @property
    def connected(self) -> bool:
        return self.tunnel is not None and not self.tunnel.conn.closed


class NameTaken(Exception):
    """Another live connection holds this edge name and the resume token does not match."""


class EdgeRegistry:
    def __init__(self) -> None:
        self._edges: dict[str, EdgeEntry] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._edges

    def get(self, name: str) -> EdgeEntry | None:
        return self._edges.get(name)

    def entries(self) -> list[EdgeEntry]:
        return sorted(self._edges.values(), key=lambda e: e.name)

    def claim(self, name: str, resume_token: str | None) -> tuple[EdgeEntry, Tunnel | None]:
        """Reserve ``name`` for a new connection; returns the entry and a stale tunnel to replace.

        A connected name is only taken over with the resume token it was given.
        """
        entry = self._edges.get(name)
        if entry is None:
            entry = EdgeEntry(name, secrets.token_urlsafe(24))
            self._edges[name] = entry
            return entry, None
        if entry.connected:
            if resume_token is None or not hmac.compare_digest(resume_token.encode(), entry.resume_token.encode()):
                raise NameTaken(f"edge name {name!r} is in use by another connection")
            return entry, entry.tunnel
        return entry, None

    def attach(self, entry: EdgeEntry, tunnel: Tunnel, manifest: dict[str, Any]) -> None:
        entry.tunnel = tunnel
        entry.manifest = manifest
        entry.connected_since = time.time()

    def detach(self, entry: EdgeEntry, tunnel: Tunnel) -> bool:
        """Forget ``tunnel`` if it is still the edge's; False if a newer one replaced it."""
        if entry.tunnel is tunnel:
            entry.tunnel = None
            return True
        return False

    def remove(self, name: str) -> None:
        self._edges.pop(name, None)
