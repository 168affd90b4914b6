"""The notification queue: plugins put from any thread, the tunnel side takes in the event loop.

Bounded: when the bridge is away (or slow) and the queue is full, the oldest
notification is dropped, counted and logged; a producer never blocks and
never grows memory.  Waking the event loop from a foreign thread only
schedules a callback in the loop (asyncio's ``call_soon_threadsafe``): it
never waits for the loop, so a producer that holds a lock
the loop is waiting for cannot deadlock with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc

log = logging.getLogger("radical_edge.edge")

#: default bound of the queue (notifications, not bytes)
DEFAULT_QUEUE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification: JSON ``payload`` from ``plugin`` about ``topic``."""

    plugin: str
    topic: str
    payload: bytes


class NotificationQueue:
    """A bounded, thread-safe FIFO of :class:`Notice` with drop-oldest overflow."""

    def __init__(self, maxsize: int = DEFAULT_QUEUE_SIZE) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        #: notifications dropped since start (queue full, or too large to send)
        self.dropped = 0
        #: notifications accepted since start
        self.accepted = 0
        self._lock = threading.Lock()
        self._items: deque[Notice] = deque()
        self._event: anyio.Event | None = None
        #: schedules a callback in the event loop from any thread, without waiting (set while :meth:`run` runs)
        self._call_soon: Callable[[Callable[[], None]], object] | None = None
        self._loop_thread: int | None = None
        self._wake_pending = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    # ------------------------------------------------------------ producers (any thread)

    def put(self, plugin: str, topic: str, data: Any) -> None:
        """Queue ``data`` (anything JSON can encode) as a notification; never blocks.

        Raises ``TypeError``/``ValueError`` in the caller if ``data`` is not JSON-encodable.
        """
        payload = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        dropped = 0
        with self._lock:
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
                dropped = self.dropped
            self._items.append(Notice(plugin, topic, payload))
            self.accepted += 1
            wake = self._call_soon is not None and not self._wake_pending
            if wake:
                self._wake_pending = True
        if dropped:
            self._log_drop(dropped, "the queue is full (is the bridge reachable?)")
        if wake:
            self._wake()

    def count_drop(self, notice: Notice, why: str) -> None:
        """Record that ``notice`` could not be delivered (e.g. larger than a frame)."""
        with self._lock:
            self.dropped += 1
            dropped = self.dropped
        log.warning("notification %s/%s dropped: %s (%d dropped so far)", notice.plugin, notice.topic, why, dropped)

    def _log_drop(self, total: int, why: str) -> None:
        # the first drop, then one line per thousand: a stuck bridge must not flood the log
        if total == 1 or total % 1000 == 0:
            log.warning("notification dropped: %s (%d dropped so far)", why, total)

    def _wake(self) -> None:
        if threading.get_ident() == self._loop_thread:
            self._set()
            return
        call_soon = self._call_soon
        try:
            if call_soon is None:
                raise RuntimeError("not running")
            call_soon(self._set)
        except RuntimeError:
            # the loop is gone or stopping; the notice stays queued for the next run
            with self._lock:
                self._wake_pending = False

    def _set(self) -> None:
        if self._event is not None:
            self._event.set()

    # ------------------------------------------------------------ the consumer (event loop)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind the queue to the running event loop (so other threads can wake it) until cancelled."""
        call_soon = _thread_safe_scheduler()
        with self._lock:
            self._call_soon = call_soon
            self._loop_thread = threading.get_ident()
            self._wake_pending = False
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with self._lock:
                self._call_soon = None
                self._loop_thread = None

    async def get_batch(self, limit: int = 256) -> list[Notice]:
        """Wait for notifications and take up to ``limit`` of them, oldest first."""
        while True:
            with self._lock:
                self._wake_pending = False
                if self._items:
                    n = min(limit, len(self._items))
                    return [self._items.popleft() for _ in range(n)]
                event = self._event = anyio.Event()
            await event.wait()

    def requeue(self, notices: Iterable[Notice]) -> None:
        """Put back notices taken but not sent (in front, in their order); the bound still holds."""
        with self._lock:
            for notice in reversed(list(notices)):
                if len(self._items) >= self.maxsize:
                    self.dropped += 1
                    continue
                self._items.appendleft(notice)


def _thread_safe_scheduler() -> Callable[[Callable[[], None]], object]:
    """The running event loop's way to run a callback soon, callable from any thread without waiting
    (the edge runs on asyncio)."""
    return asyncio.get_running_loop().call_soon_threadsafe
