"""One cache of scheduler answers for every session and client of an edge.

``await cache.get(key, fetch, ttl=...)`` answers from the cache while the value is younger than
``ttl``; otherwise one caller (the first) runs ``fetch()`` and everybody else asking for the same
key meanwhile awaits that same call: N clients asking at once cost one scheduler command.
``force=True`` skips the age check but still joins a call already running (its answer is as new
as any).  If the caller running the fetch is cancelled (its client went away), a waiting caller
takes over and fetches; an error is everybody's error, and nothing is cached for it.

``on_update(key, old, new)`` runs after every fetch that succeeded (``old`` is ``None`` the first
time): the plugin compares there and publishes what changed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

log = logging.getLogger("radical_edge.scheduler")

T = TypeVar("T")
UpdateListener = Callable[[str, Any, Any], None]


@dataclass(eq=False)
class _Flight:
    """One fetch in progress and what came of it."""

    done: anyio.Event = field(default_factory=anyio.Event)
    ok: bool = False
    value: Any = None
    error: BaseException | None = None


@dataclass(eq=False)
class _Entry:
    value: Any = None
    fetched_at: float | None = None
    flight: _Flight | None = None


class CoalescingCache:
    """A TTL cache whose concurrent callers of one key share one fetch (see the module docstring)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, on_update: UpdateListener | None = None) -> None:
        self.clock = clock
        self.on_update = on_update
        self._entries: dict[str, _Entry] = {}
        #: fetches run, per key (how many scheduler calls the cache let through)
        self.fetches: Counter[str] = Counter()

    def age(self, key: str) -> float | None:
        """Seconds since ``key`` was fetched, ``None`` if never."""
        entry = self._entries.get(key)
        if entry is None or entry.fetched_at is None:
            return None
        return self.clock() - entry.fetched_at

    def peek(self, key: str) -> Any:
        """The cached value of ``key`` however old (``None`` if there is none); fetches nothing."""
        entry = self._entries.get(key)
        return entry.value if entry is not None else None

    def invalidate(self, key: str | None = None) -> None:
        """Make ``key`` (or every key) stale: the next :meth:`get` fetches.  A fetch in flight is kept."""
        for k, entry in self._entries.items():
            if key is None or k == key:
                entry.fetched_at = None

    async def get(self, key: str, fetch: Callable[[], Awaitable[T]], *, ttl: float, force: bool = False) -> T:
        """The value of ``key``: cached if younger than ``ttl`` (and not ``force``), else fetched once for
        all concurrent callers."""
        while True:
            entry = self._entries.setdefault(key, _Entry())
            fresh = entry.fetched_at is not None and self.clock() - entry.fetched_at < ttl
            if fresh and not force and entry.flight is None:
                value: T = entry.value
                return value
            flight = entry.flight
            if flight is None:
                return await self._lead(key, entry, fetch)
            await flight.done.wait()
            if flight.ok:
                result: T = flight.value
                return result
            if flight.error is not None:
                raise flight.error
            # the caller fetching was cancelled before it had an answer: the next round fetches anew

    async def _lead(self, key: str, entry: _Entry, fetch: Callable[[], Awaitable[T]]) -> T:
        flight = entry.flight = _Flight()
        self.fetches[key] += 1
        try:
            value = await fetch()
        except anyio.get_cancelled_exc_class():
            raise  # not an answer: a waiting caller will fetch
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            old = entry.value  # kept through invalidate(): the listener compares with it
            entry.value, entry.fetched_at = value, self.clock()
            flight.ok, flight.value = True, value
            if self.on_update is not None:
                try:
                    self.on_update(key, old, value)
                except Exception:
                    log.exception("cache listener failed for %r", key)
            return value
        finally:
            entry.flight = None
            flight.done.set()


__all__ = ["CoalescingCache", "UpdateListener"]
