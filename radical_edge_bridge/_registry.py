"""Which edges exist, which are connected, and who may use a name.

A disconnected edge is remembered (listed as disconnected, its manifest kept)
for ``ttl`` seconds, and at most ``max_disconnected`` of them at once, the
longest-disconnected forgotten first: so names that come and go cannot grow
the bridge's memory.  :meth:`EdgeRegistry.expire` does the forgetting; the
bridge calls it after every disconnect and from a periodic task.

Every claim of a name issues a fresh resume token.  Only the holder of the
token of the connection that has the name can replace that connection (the
same edge reconnecting before the bridge noticed it was gone); whoever takes a
name never learns a token an earlier holder was given.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from radical_edge_tunnel import Tunnel

#: the edge name of the plugins hosted inside the bridge
BRIDGE_EDGE = "bridge"
RESERVED_NAMES = frozenset({BRIDGE_EDGE})


@dataclass(eq=False)
class EdgeEntry:
    name: str
    #: the token of the connection that has (or last had) the name
    resume_token: str
    manifest: dict[str, Any] = field(default_factory=dict)
    tunnel: Tunnel | None = None
    connected_since: float = 0.0

    @property
    def connected(self) -> bool:
        return self.tunnel is not None and not self.tunnel.is_closed


@dataclass(frozen=True)
class Claim:
    """A connection's claim on a name: what to tell it in WELCOME, and the stale connection it replaces."""

    entry: EdgeEntry
    #: the fresh token for this connection; it becomes the entry's when the connection is attached
    resume_token: str
    stale: Tunnel | None = None


class NameTaken(Exception):
    """Another live connection holds this edge name and the resume token does not match."""


def new_resume_token() -> str:
    return secrets.token_urlsafe(24)


class EdgeRegistry:
    def __init__(
        self,
        ttl: float = 3600.0,
        max_disconnected: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_disconnected = max_disconnected
        self._clock = clock
        self._edges: dict[str, EdgeEntry] = {}
        #: names of the entries without a connection, the longest-disconnected first, with the time they lost it
        self._idle: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, name: str) -> bool:
        return name in self._edges

    def __len__(self) -> int:
        return len(self._edges)

    def get(self, name: str) -> EdgeEntry | None:
        return self._edges.get(name)

    def entries(self) -> list[EdgeEntry]:
        return sorted(self._edges.values(), key=lambda e: e.name)

    @property
    def disconnected(self) -> int:
        """How many entries are remembered without a connection."""
        return len(self._idle)

    def claim(self, name: str, resume_token: str | None) -> Claim:
        """Reserve ``name`` for a new connection, with a fresh resume token.

        A connected name is only taken over with the resume token its
        connection was given; that connection is then the stale one to close.
        """
        entry = self._edges.get(name)
        if entry is None:
            # listed as disconnected until attached: a handshake that fails after this expires like one
            entry = EdgeEntry(name, new_resume_token())
            self._edges[name] = entry
            self._idle[name] = self._clock()
            return Claim(entry, entry.resume_token)
        if entry.connected:
            if resume_token is None or not hmac.compare_digest(resume_token.encode(), entry.resume_token.encode()):
                raise NameTaken(f"edge name {name!r} is in use by another connection")
            return Claim(entry, new_resume_token(), entry.tunnel)
        return Claim(entry, new_resume_token())

    def attach(self, claim: Claim, tunnel: Tunnel, manifest: dict[str, Any]) -> None:
        """Give the claimed name to ``tunnel``; from now on only its token replaces it."""
        entry = claim.entry
        entry.tunnel = tunnel
        entry.manifest = manifest
        entry.resume_token = claim.resume_token
        entry.connected_since = time.time()
        self._idle.pop(entry.name, None)
        # it may have expired during the handshake: it is back (unless a newer claim holds the name)
        self._edges.setdefault(entry.name, entry)

    def detach(self, entry: EdgeEntry, tunnel: Tunnel) -> bool:
        """Forget ``tunnel`` if it is still the edge's; False if a newer one replaced it."""
        if entry.tunnel is not tunnel:
            return False
        entry.tunnel = None
        if self._edges.get(entry.name) is entry:
            self._idle[entry.name] = self._clock()
            self._idle.move_to_end(entry.name)
        return True

    def expire(self) -> list[EdgeEntry]:
        """Forget disconnected edges older than the TTL or beyond the cap; returns the forgotten ones."""
        gone: list[EdgeEntry] = []
        deadline = self._clock() - self.ttl
        while self._idle:
            name, since = next(iter(self._idle.items()))
            if since > deadline and len(self._idle) <= self.max_disconnected:
                break
            del self._idle[name]
            entry = self._edges.get(name)
            if entry is not None and not entry.connected:
                del self._edges[name]
                gone.append(entry)
        return gone

    def next_expiry(self) -> float | None:
        """Seconds until the longest-disconnected edge expires (0 if due); None if none is disconnected."""
        if not self._idle:
            return None
        since = next(iter(self._idle.values()))
        return max(0.0, since + self.ttl - self._clock())

    def remove(self, name: str) -> None:
        self._edges.pop(name, None)
        self._idle.pop(name, None)
