"""Events pushed by the bridge, and the dispatcher that hands them to callbacks.

The tunnel's reader only queues events (it never waits for a callback); one
dispatcher task takes them in order and calls the callbacks: plain functions
in a worker thread (one at a time, so they see events in order and a slow one
cannot stall the tunnel, its heartbeats or other requests), coroutine
functions awaited in the event loop.  The queue is bounded: if callbacks fall
so far behind that it fills, further events are dropped until it drains, and
the callbacks are then told so with an :class:`EventGap` of kind ``overflow``
(never silently).
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import anyio
import anyio.abc
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from radical_edge_proto import profile

log = logging.getLogger("radical_edge.client")

#: ``callback(edge, plugin, topic, data)``: a plain function or a coroutine function
NotificationCallback: TypeAlias = Callable[[str, str, str, Any], Any]
#: ``callback(edges)``: ``edges`` maps each edge name to ``{"endpoint": {...}, "plugins": {...}}``
TopologyCallback: TypeAlias = Callable[[dict[str, Any]], Any]
#: ``on_gap(gap)``
GapCallback: TypeAlias = Callable[["EventGap"], Any]

#: the (edge, plugin, topic) a gap is reported under to a callback without ``on_gap``
GAP_SOURCE = (profile.BRIDGE_SOURCE, profile.BRIDGE_SOURCE, profile.TOPIC_GAP)


@dataclass(frozen=True)
class EventGap:
    """Events may have been missed: the callback should re-read the state it tracks.

    ``kind`` says why:

    * ``"ring"``: the client was away longer than the bridge's replay window;
      events after ``after`` and before ``oldest`` (sequence numbers) are gone.
    * ``"restart"``: the bridge restarted; events it had received but not yet
      delivered when it went down are gone (there may be none).  The numbering
      starts again, ``after`` is the last number of the old bridge.
    * ``"overflow"``: the callbacks were too slow and this client's own queue
      filled up; ``missed`` events were dropped here.
    """

    kind: Literal["ring", "restart", "overflow"]
    after: int | None = None
    oldest: int | None = None
    missed: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Notification:
    """One notification from a plugin, as the bridge numbered it."""

    edge: str
    plugin: str
    topic: str
    data: Any
    seq: int


@dataclass(frozen=True)
class TopologyChange:
    """Edges connected, disconnected, changed plugins or were forgotten; ``topology`` is the whole view
    after it (``{"bridge", "edges"}``), as the client keeps it from the bridge's snapshots and changes.

    ``edge`` and ``change`` (``connected``, ``disconnected``, ``updated``, ``removed``) name the one
    edge that changed; both are None when a snapshot showed several changes at once (after a gap).
    """

    topology: dict[str, Any]
    seq: int
    edge: str | None = None
    change: str | None = None

    @property
    def edges(self) -> dict[str, Any]:
        edges = self.topology.get("edges", {})
        return edges if isinstance(edges, dict) else {}


Item: TypeAlias = Notification | TopologyChange | EventGap


@dataclass(eq=False)
class _Registration:
    edge: str | None
    plugin: str | None
    topic: str | None
    callback: NotificationCallback
    on_gap: GapCallback | None = None

    def matches(self, edge: str, plugin: str, topic: str) -> bool:
        return (
            (self.edge is None or self.edge == edge)
            and (self.plugin is None or self.plugin == plugin)
            and (self.topic is None or self.topic == topic)
        )


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` gives a coroutine (coroutine functions, partials of them, async ``__call__``)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


@dataclass
class Dispatcher:
    """The callback registry and the bounded queue in front of it."""

    max_pending: int = 10_000
    #: events handed to at least one callback, dropped for overflow, and callbacks that raised
    delivered: int = 0
    overflowed: int = 0
    callback_errors: int = 0
    _registrations: list[_Registration] = field(default_factory=list)
    _topology: list[TopologyCallback] = field(default_factory=list)
    _dropping: int = 0
    _send: MemoryObjectSendStream[Item] | None = None
    _recv: MemoryObjectReceiveStream[Item] | None = None
    _limiter: anyio.CapacityLimiter | None = None

    def __post_init__(self) -> None:
        if self.max_pending < 1:
            raise ValueError("max_pending must be at least 1")

    # ------------------------------------------------------------ registry

    @property
    def wants_events(self) -> bool:
        return bool(self._registrations or self._topology)

    def add(
        self,
        edge: str | None,
        plugin: str | None,
        topic: str | None,
        callback: NotificationCallback,
        on_gap: GapCallback | None = None,
    ) -> None:
        if not callable(callback):
            raise TypeError("callback must be callable: callback(edge, plugin, topic, data)")
        if on_gap is not None and not callable(on_gap):
            raise TypeError("on_gap must be callable: on_gap(gap)")
        self._registrations.append(_Registration(edge, plugin, topic, callback, on_gap))

    def remove(self, edge: str | None, plugin: str | None, topic: str | None, callback: NotificationCallback) -> bool:
        for reg in self._registrations:
            if (reg.edge, reg.plugin, reg.topic) == (edge, plugin, topic) and reg.callback == callback:
                self._registrations.remove(reg)
                return True
        return False

    def add_topology(self, callback: TopologyCallback) -> None:
        if not callable(callback):
            raise TypeError("callback must be callable: callback(edges)")
        self._topology.append(callback)

    def remove_topology(self, callback: TopologyCallback) -> bool:
        if callback in self._topology:
            self._topology.remove(callback)
            return True
        return False

    # ------------------------------------------------------------ intake (event loop, never blocks)

    def put(self, item: Item) -> None:
        """Queue an item for the callbacks; drops (and counts) while the queue is full."""
        if self._send is None or not self.wants_events:
            return
        if self._dropping:
            self._dropping += 1
            return
        try:
            self._send.send_nowait(item)
        except anyio.WouldBlock:
            self._dropping = 1
            log.warning(
                "event callbacks are %d events behind: dropping events until they catch up "
                "(they will get an EventGap of kind 'overflow')",
                self.max_pending,
            )
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    # ------------------------------------------------------------ delivery (one task)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver queued items until cancelled."""
        send, recv = anyio.create_memory_object_stream[Item](self.max_pending)
        self._send, self._recv = send, recv
        self._limiter = anyio.CapacityLimiter(1)
        task_status.started()
        try:
            while True:
                if self._dropping and recv.statistics().current_buffer_used == 0:
                    missed, self._dropping = self._dropping, 0
                    self.overflowed += missed
                    gap = EventGap(
                        "overflow", missed=missed, detail=f"{missed} events dropped: the callbacks were too slow"
                    )
                    await self._deliver(gap)
                    continue
                item = await recv.receive()
                await self._deliver(item)
        finally:
            self._send = self._recv = None
            send.close()
            recv.close()

    async def _deliver(self, item: Item) -> None:
        if isinstance(item, Notification):
            regs = [r for r in self._registrations if r.matches(item.edge, item.plugin, item.topic)]
            if regs:
                self.delivered += 1
            for reg in regs:
                await self._call(reg.callback, item.edge, item.plugin, item.topic, item.data)
        elif isinstance(item, TopologyChange):
            if not self._topology:
                return
            self.delivered += 1
            edges = copy.deepcopy(item.edges)  # the callbacks' own: changing it changes nothing else
            for cb in list(self._topology):
                await self._call(cb, edges)
        else:
            log.warning("events may have been missed (%s): %s", item.kind, item.detail)
            for reg in list(self._registrations):
                if reg.on_gap is not None:
                    await self._call(reg.on_gap, item)
                else:
                    await self._call(reg.callback, *GAP_SOURCE, item)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            if is_async_callable(fn):
                result: Awaitable[Any] = fn(*args)
                await result
            else:
                await anyio.to_thread.run_sync(
                    functools.partial(fn, *args), limiter=self._limiter, abandon_on_cancel=True
                )
        except Exception:
            self.callback_errors += 1
            log.exception("event callback %r failed", fn)
