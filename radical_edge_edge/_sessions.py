"""The one session model of radical-edge plugins.

A session is created by ``POST register_session``, identified by a 128-bit
random id, owned by the caller that created it (the ``x-radical-caller``
header the bridge sets from the authenticated identity) and expires after a
time-to-live of inactivity.  Lookups answer 404 for an id never seen (or
closed), 410 for one that expired (a bounded set of tombstones remembers
them), 403 for another caller's session.

A store holds at most ``max_sessions`` sessions, and at most
``max_sessions_per_caller`` of one caller (429 beyond that), so one caller
cannot take every slot and lock the others out for the time-to-live.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

#: a session idle for longer than this expires (seconds)
DEFAULT_TTL = 3600.0
#: how many expired ids are remembered to answer 410 rather than 404
DEFAULT_TOMBSTONES = 10_000
#: most sessions one plugin holds at once
DEFAULT_MAX_SESSIONS = 10_000
#: most sessions one caller holds at once in one plugin
DEFAULT_MAX_SESSIONS_PER_CALLER = 100


class SessionError(Exception):
    """A session lookup failed; ``status`` is the HTTP status to answer (404, 410, 403, 429, 503)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Session:
    """One caller's session with one plugin.

    Subclass it to keep per-session state (set ``session_class`` on the
    plugin) and override :meth:`close` to release what the session holds
    (jobs, files, subprocesses); ``close`` is called on unregister, expiry
    and plugin shutdown, exactly once.
    """

    def __init__(self, sid: str, owner: str, *, ttl: float, now: float) -> None:
        self.sid = sid
        self.owner = owner
        self.ttl = ttl
        self.created = now
        self.last_used = now

    def expired(self, now: float) -> bool:
        return now - self.last_used > self.ttl

    def register_reply(self) -> dict[str, Any]:
        """Fields the ``register_session`` answer carries besides ``sid`` (e.g. a ``status``); none by default."""
        return {}

    async def close(self) -> None:
        """Release what the session holds; the default holds nothing."""


class SessionStore:
    """Sessions by id, with TTL, owner checks, quotas and tombstones for expired ids.

    ``clock`` is a monotonic clock in seconds (injectable for tests).
    ``max_sessions`` and ``max_sessions_per_caller`` may be changed at any time.
    """

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_sessions_per_caller: int = DEFAULT_MAX_SESSIONS_PER_CALLER,
        tombstones: int = DEFAULT_TOMBSTONES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.ttl = ttl
        self.max_sessions = max_sessions
        self.max_sessions_per_caller = max_sessions_per_caller
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._per_owner: dict[str, int] = {}
        self._tombstones: OrderedDict[str, None] = OrderedDict()
        self._max_tombstones = tombstones

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    @staticmethod
    def new_id() -> str:
        """A fresh 128-bit random session id (32 hex digits)."""
        return secrets.token_hex(16)

    def now(self) -> float:
        return self.clock()

    def add(self, session: Session) -> None:
        """Store a new session; :class:`SessionError` 429 if its owner has too many, 503 if the store is full."""
        if self._per_owner.get(session.owner, 0) >= self.max_sessions_per_caller:
            raise SessionError(
                429,
                f"too many sessions: a caller may hold {self.max_sessions_per_caller} in this plugin; "
                "unregister unused ones",
            )
        if len(self._sessions) >= self.max_sessions:
            raise SessionError(503, f"too many sessions ({self.max_sessions}); unregister unused ones")
        self._sessions[session.sid] = session
        self._per_owner[session.owner] = self._per_owner.get(session.owner, 0) + 1

    def _drop(self, session: Session) -> None:
        del self._sessions[session.sid]
        left = self._per_owner[session.owner] - 1
        if left:
            self._per_owner[session.owner] = left
        else:
            del self._per_owner[session.owner]

    def get(self, sid: str, caller: str) -> Session:
        """The live session ``sid`` of ``caller``, marked as used now; raises :class:`SessionError`."""
        session = self._sessions.get(sid)
        now = self.clock()
        if session is None:
            if sid in self._tombstones:
                raise SessionError(410, f"session {sid} expired")
            raise SessionError(404, f"unknown session {sid}")
        if session.owner != caller:
            raise SessionError(403, f"session {sid} belongs to another caller")
        if session.expired(now):
            # expired but not yet collected: it is gone all the same (the cleanup closes it)
            raise SessionError(410, f"session {sid} expired")
        session.last_used = now
        return session

    def remove(self, sid: str, caller: str) -> Session:
        """Take ``sid`` out of the store (for unregister); the caller closes it."""
        session = self.get(sid, caller)
        self._drop(session)
        return session

    def owned_by(self, caller: str) -> list[str]:
        now = self.clock()
        return [s.sid for s in self._sessions.values() if s.owner == caller and not s.expired(now)]

    def expire(self) -> list[Session]:
        """Take out every expired session (remembering its id); returns them to be closed."""
        now = self.clock()
        gone = [s for s in self._sessions.values() if s.expired(now)]
        for session in gone:
            self._drop(session)
            self._tombstones[session.sid] = None
        while len(self._tombstones) > self._max_tombstones:
            self._tombstones.popitem(last=False)
        return gone

    def clear(self) -> list[Session]:
        """Take out every session (plugin shutdown); returns them to be closed."""
        gone = list(self._sessions.values())
        self._sessions.clear()
        self._per_owner.clear()
        return gone
