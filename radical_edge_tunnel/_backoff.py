"""Reconnect delays, shared by the edge service and the SDK (the two sides that dial a bridge).

The policy: delays grow exponentially (``initial * factor**attempt``, jittered
to [50 %, 100 %]) up to ``maximum`` while the bridge cannot be reached at all.
Once a connection has completed the handshake the bridge is known to be
there: the delays are capped at the small ``reachable_maximum`` (a bridge
restart, or a refusal of a stale duplicate of this connection, is over in
seconds) until a dial fails to reach the bridge; from then on they climb to
``maximum`` again.  They start again from ``initial`` after a connection that
stayed up for ``healthy_after`` seconds; after a shorter one they start from
about ``reachable_maximum``, so a bridge that accepts and drops at once is
redialled every second or two, not in a tight loop, and a second quick
restart still costs only seconds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``initial * factor**attempt`` capped at ``maximum`` (``reachable_maximum`` while
    the bridge is known to be reachable), jittered to [50 %, 100 %]."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    reachable_maximum: float = 2.0
    #: a connection up this long was healthy: the next delays start again from ``initial``
    healthy_after: float = 5.0

    def delay(self, attempt: int, rng: random.Random, *, reachable: bool = False) -> float:
        top = min(self.maximum, self.reachable_maximum) if reachable else self.maximum
        cap = min(top, self.initial * self.factor ** min(attempt, 64))
        return rng.uniform(cap / 2, cap)


class Redial:
    """The reconnect delays of one dialling loop, following the module's policy.

    Call :meth:`connection_ended` after a connection that completed the handshake
    ended (with how long it was up), :meth:`unreachable` after a dial that did not reach the bridge
    (refused, unresolvable, timed out, TLS failure, an HTTP error instead of
    the upgrade), nothing after a refused handshake, then :meth:`next_delay`.
    """

    def __init__(self, backoff: Backoff, rng: random.Random) -> None:
        self.backoff = backoff
        self.rng = rng
        self.attempt = 0
        #: a connection completed the handshake and no dial failed to reach the bridge since
        self.reachable = False

    def connection_ended(self, lasted: float) -> None:
        if lasted >= self.backoff.healthy_after:
            self.attempt = 0
        else:  # no higher than the attempt whose delay is about reachable_maximum
            self.attempt = min(self.attempt, self._reachable_attempt())
        self.reachable = True

    def _reachable_attempt(self) -> int:
        b = self.backoff
        if b.initial <= 0 or b.factor <= 1 or b.reachable_maximum <= b.initial:
            return 0
        return int(math.log(b.reachable_maximum / b.initial, b.factor))

    def unreachable(self) -> None:
        self.reachable = False

    def next_delay(self) -> float:
        delay = self.backoff.delay(self.attempt, self.rng, reachable=self.reachable)
        self.attempt += 1
        return delay
