"""Topology and notification events: a bounded replay ring and bounded subscriber queues.

Every event gets a bridge-wide sequence number and is encoded (JSON) once,
when it is published; SSE frames and WebSocket pushes reuse those bytes.  The
replay ring holds at most ``ring_size`` events and ``ring_bytes`` bytes of
them, the oldest going first.  A subscriber that cannot keep up (its queue is
full) is dropped, never buffered without bound; it learns so and can resume
from the last id it saw, within the ring.

Topics (``BridgeEvent.topic``):

* ``notification``: a plugin's notification; :attr:`BridgeEvent.source` is
  (edge, plugin, topic) and the payload is the notification's data;
* ``topology_change``: one edge changed; the payload is
  ``{"edge": NAME, "change": "connected" | "disconnected" | "updated" | "removed",
  "state": ENTRY | null}`` where ``ENTRY`` is that edge as in
  ``topology()["edges"][NAME]`` (``null`` once removed).  The whole topology is
  never an event: a new subscriber gets it as a snapshot (see :attr:`EventHub.snapshot`).
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

#: what an event costs in the ring besides its encoded payload and names (the object, its small
#: fields): an estimate, and at least what an SSE frame adds around the payload
EVENT_OVERHEAD = 256


def encode(data: Any) -> bytes:
    """The JSON an event carries (the bridge's one encoding: SSE ``data:`` lines have no raw newline)."""
    return json.dumps(data).encode()


@dataclass(frozen=True, slots=True)
class BridgeEvent:
    seq: int
    #: "notification" or "topology_change"
    topic: str
    #: JSON: a notification's data, or a bridge event's whole data
    payload: bytes
    #: a notification's (edge, plugin, topic); None for the bridge's own events
    source: tuple[str, str, str] | None = None

    @property
    def size(self) -> int:
        """What this event counts against the ring's byte bound."""
        names = sum(len(s) for s in self.source) if self.source is not None else len(self.topic)
        return len(self.payload) + names + EVENT_OVERHEAD

    @property
    def data(self) -> Any:
        """The event's data as JSON values (decoded again: for tests and the odd reader, not the hot path)."""
        value = json.loads(self.payload)
        if self.source is None:
            return value
        edge, plugin, topic = self.source
        return {"edge": edge, "plugin": plugin, "topic": topic, "data": value}

    def sse_json(self) -> bytes:
        """``{"topic": ..., "data": ...}``, the JSON of this event's SSE ``data:`` line, around the stored bytes."""
        if self.source is None:
            return b'{"topic": ' + encode(self.topic) + b', "data": ' + self.payload + b"}"
        edge, plugin, topic = self.source
        head = encode({"edge": edge, "plugin": plugin, "topic": topic})[:-1]
        return b'{"topic": "notification", "data": ' + head + b', "data": ' + self.payload + b"}}"

    def matches(self, edge: str, plugin: str, topic: str) -> bool:
        if self.source is None:
            return True  # topology goes to every subscriber
        return (
            fnmatchcase_or_any(self.source[0], edge)
            and fnmatchcase_or_any(self.source[1], plugin)
            and fnmatchcase_or_any(self.source[2], topic)
        )


def fnmatchcase_or_any(value: str, pattern: str) -> bool:
    return pattern == "*" or fnmatch.fnmatchcase(value, pattern)


@dataclass(eq=False)
class Subscriber:
    edge: str = "*"
    plugin: str = "*"
    topic: str = "*"
    send: MemoryObjectSendStream[BridgeEvent] | None = None
    receive: MemoryObjectReceiveStream[BridgeEvent] | None = None
    dropped: bool = False


@dataclass(frozen=True)
class Replay:
    events: list[BridgeEvent]
    #: True when events after the requested id fell out of the ring: the subscriber missed some
    gap: bool
    oldest: int


class EventHub:
    def __init__(
        self,
        ring_size: int = 4096,
        queue_size: int = 1024,
        ring_bytes: int = 16 * 1024 * 1024,
        snapshot: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._ring: deque[BridgeEvent] = deque()
        self._ring_size = ring_size
        self._ring_bytes_max = ring_bytes
        self._ring_bytes = 0
        self._seq = itertools.count(1)
        self._subscribers: set[Subscriber] = set()
        self._queue_size = queue_size
        self.last_seq = 0
        #: the whole topology now: what a new subscriber gets first (the bridge's ``topology()``)
        self.snapshot: Callable[[], dict[str, Any]] = snapshot or dict
        #: names this numbering: a new hub (a restarted bridge) numbers from 1 again under a new epoch,
        #: so a client resuming after a sequence number of another epoch must start over instead
        self.epoch = secrets.token_hex(8)
        self.dropped_subscribers = 0

    def __len__(self) -> int:
        return len(self._subscribers)

    @property
    def ring_events(self) -> int:
        """Events the replay ring holds now."""
        return len(self._ring)

    @property
    def ring_bytes(self) -> int:
        """Bytes the replay ring holds now (:attr:`BridgeEvent.size` of each event)."""
        return self._ring_bytes

    def publish(self, topic: str, data: dict[str, Any]) -> BridgeEvent:
        """Number, encode, keep and deliver one event.

        A notification's ``data`` is ``{"edge", "plugin", "topic", "data"}``; any
        other topic's ``data`` is the payload itself.
        """
        if topic == "notification":
            source = (str(data["edge"]), str(data["plugin"]), str(data["topic"]))
            event = BridgeEvent(next(self._seq), topic, encode(data.get("data")), source)
        else:
            event = BridgeEvent(next(self._seq), topic, encode(data))
        self.last_seq = event.seq
        self._keep(event)
        for sub in list(self._subscribers):
            if not event.matches(sub.edge, sub.plugin, sub.topic):
                continue
            assert sub.send is not None
            try:
                sub.send.send_nowait(event)
            except anyio.WouldBlock:
                self._drop(sub)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.discard(sub)
        return event

    def _keep(self, event: BridgeEvent) -> None:
        self._ring.append(event)
        self._ring_bytes += event.size
        while self._ring and (len(self._ring) > self._ring_size or self._ring_bytes > self._ring_bytes_max):
            self._ring_bytes -= self._ring.popleft().size

    def _drop(self, sub: Subscriber) -> None:
        sub.dropped = True
        self.dropped_subscribers += 1
        self._subscribers.discard(sub)
        assert sub.send is not None
        sub.send.close()

    def replay(self, after: int, edge: str = "*", plugin: str = "*", topic: str = "*") -> Replay:
        oldest = self._ring[0].seq if self._ring else self.last_seq + 1
        gap = after + 1 < oldest and after < self.last_seq
        events = [e for e in self._ring if e.seq > after and e.matches(edge, plugin, topic)]
        return Replay(events, gap, oldest)

    def subscribe(self, edge: str = "*", plugin: str = "*", topic: str = "*") -> Subscriber:
        send, receive = anyio.create_memory_object_stream[BridgeEvent](self._queue_size)
        sub = Subscriber(edge, plugin, topic, send, receive)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        if sub.send is not None:
            sub.send.close()
        if sub.receive is not None:
            sub.receive.close()
