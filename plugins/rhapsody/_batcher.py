"""Batching task notifications: one event for many state changes.

A session makes thousands of state changes a second when it runs many short tasks; one event each
would flood the bridge and every subscriber.  The batcher collects them and flushes when the first
one has waited ``window`` seconds, or at once when ``size`` are waiting.  A flush of one change is
sent as ``task_status`` (``{sid, uid, state, ...}``), of several as ``task_status_batch``
(``{sid, tasks: [...]}``), each event at most ``size`` changes and about ``max_bytes`` of JSON (an
event must fit in one tunnel frame).

It lives on the event loop (``add`` and the flush run there); it needs no task of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ._spec import encoded_size

#: defaults of register_session's ``notify_batch_window`` (seconds) and ``notify_batch_size``
DEFAULT_WINDOW = 0.25
DEFAULT_SIZE = 1024
#: the most JSON one event carries (the bridge's default frame is 64 KiB)
DEFAULT_MAX_BYTES = 32 * 1024

Emit = Callable[[str, dict[str, Any]], None]


class NotifyBatcher:
    """Collects one session's task changes and emits them in batches (call everything on the loop)."""

    def __init__(
        self,
        sid: str,
        emit: Emit,
        *,
        window: float = DEFAULT_WINDOW,
        size: int = DEFAULT_SIZE,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if window < 0 or size < 1 or max_bytes < 1024:
            raise ValueError("window must be >= 0, size >= 1, max_bytes >= 1024")
        self.sid = sid
        self.window = window
        self.size = size
        self.max_bytes = max_bytes
        self.events = 0  # events emitted
        self._emit = emit
        self._items: list[dict[str, Any]] = []
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: dict[str, Any]) -> None:
        """Queue one task change (a small JSON object with ``uid`` and ``state``)."""
        self._items.append(item)
        if len(self._items) >= self.size:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window, self.flush)

    def flush(self) -> None:
        """Emit everything waiting now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._items = self._items, []
        batch: list[dict[str, Any]] = []
        used = 0
        for item in items:
            cost = encoded_size(item) + 1
            if batch and (len(batch) >= self.size or used + cost > self.max_bytes):
                self._send(batch)
                batch, used = [], 0
            batch.append(item)
            used += cost
        if batch:
            self._send(batch)

    def close(self) -> None:
        """Emit what is waiting and stop the timer."""
        self.flush()

    def _send(self, batch: list[dict[str, Any]]) -> None:
        self.events += 1
        if len(batch) == 1:
            self._emit("task_status", {"sid": self.sid, **batch[0]})
        else:
            self._emit("task_status_batch", {"sid": self.sid, "tasks": batch})


__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_SIZE", "DEFAULT_WINDOW", "NotifyBatcher"]
