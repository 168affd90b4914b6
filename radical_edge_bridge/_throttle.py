"""Wrong credentials, counted per peer address: a guesser is slowed down, everyone else is not.

A request that *carries* a credential (a bearer token, the portal's cookie, a
token posted to ``/auth``) and gets it wrong counts as one failure of its peer
address.  After ``max_failures`` failures within ``window`` seconds, that
address gets ``429 Too Many Requests`` (with ``Retry-After``) for any request
that carries a credential, until the window has passed; a request with the
right token from that address is refused too, so that a guess that happens to
be right is not confirmed.  Requests without a credential (the public routes, a
401 for a missing token) do not count.

The table is bounded (``max_peers`` addresses, the oldest forgotten first), so
a flood of addresses costs a fixed amount of memory; one forgotten that way
simply starts counting again.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Failures:
    started: float
    count: int


class AuthThrottle:
    def __init__(
        self,
        max_failures: int = 10,
        window: float = 60.0,
        max_peers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_peers = max_peers
        self._clock = clock
        self._peers: OrderedDict[str, _Failures] = OrderedDict()

    def retry_after(self, peer: str) -> int | None:
        """Seconds until ``peer`` may try a credential again; None if it may now."""
        entry = self._current(peer)
        if entry is None or entry.count < self.max_failures:
            return None
        return max(1, math.ceil(entry.started + self.window - self._clock()))

    def failed(self, peer: str) -> None:
        """Count one wrong credential from ``peer``."""
        entry = self._current(peer)
        if entry is None:
            entry = self._peers[peer] = _Failures(self._clock(), 0)
            while len(self._peers) > self.max_peers:
                self._peers.popitem(last=False)
        entry.count += 1

    def __len__(self) -> int:
        return len(self._peers)

    def _current(self, peer: str) -> _Failures | None:
        entry = self._peers.get(peer)
        if entry is not None and self._clock() - entry.started >= self.window:
            del self._peers[peer]
            return None
        return entry
