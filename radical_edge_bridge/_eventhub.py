"""Topology and notification events: a bounded replay ring and bounded subscriber queues.

Every event gets a bridge-wide sequence number.  A subscriber that cannot keep
up (its queue is full) is dropped, never buffered without bound; it learns
so and can resume from the last id it saw, within the ring.
"""

from __future__ import annotations

import fnmatch
import itertools
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream


@dataclass(frozen=True)
class BridgeEvent:
    seq: int
    topic: str  # "topology" or "notification"
    data: dict[str, Any]

    def matches(self, edge: str, plugin: str, topic: str) -> bool:
        if self.topic != "notification":
            return True  # topology goes to every subscriber
        return (
            fnmatchcase_or_any(str(self.data.get("edge", "")), edge)
            and fnmatchcase_or_any(str(self.data.get("plugin", "")), plugin)
            and fnmatchcase_or_any(str(self.data.get("topic", "")), topic)
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
    def __init__(self, ring_size: int = 4096, queue_size: int = 1024) -> None:
        self._ring: deque[BridgeEvent] = deque(maxlen=ring_size)
        self._seq = itertools.count(1)
        self._subscribers: set[Subscriber] = set()
        self._queue_size = queue_size
        self.last_seq = 0
        #: names this numbering: a new hub (a restarted bridge) numbers from 1 again under a new epoch,
        #: so a client resuming after a sequence number of another epoch must start over instead
        self.epoch = secrets.token_hex(8)
        self.dropped_subscribers = 0

    def __len__(self) -> int:
        return len(self._subscribers)

    def publish(self, topic: str, data: dict[str, Any]) -> BridgeEvent:
        event = BridgeEvent(next(self._seq), topic, data)
        self.last_seq = event.seq
        self._ring.append(event)
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
