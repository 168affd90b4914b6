"""Events: what :meth:`Connection.receive_data` and :meth:`Connection.handle_timer` report.

Every event is a frozen dataclass.  Events are produced by the connection
from frames it has already validated, so their fields can be trusted.
"""

from __future__ import annotations

import enum
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from ._errors import ErrorCode
from ._frames import MAX_WINDOW, Headers

#: Smallest ``max_frame_size`` a peer may announce; handshake frames must fit in it.
MIN_FRAME_SIZE = 16 * 1024
#: Largest ``max_frame_size`` a peer may announce.
MAX_FRAME_SIZE = 16 * 1024 * 1024


class Side(enum.Enum):
    """Which end of the tunnel a :class:`Connection` is."""

    #: Dials out, sends HELLO, opens odd stream ids (edges and SDK clients).
    CONNECTOR = "connector"
    #: Accepts, answers WELCOME or REJECT, opens even stream ids (the bridge).
    HUB = "hub"


class PeerRole(enum.StrEnum):
    """What a connector says it is in its HELLO."""

    EDGE = "edge"
    CLIENT = "client"


@dataclass(frozen=True)
class Limits:
    """What one side is willing to *receive*; the other side must respect it.

    Each side announces its own limits in the handshake (HELLO / WELCOME).
    """

    #: Largest frame payload this side accepts.
    max_frame_size: int = 64 * 1024
    #: How many streams the peer may have open towards this side at once.
    max_concurrent_streams: int = 128
    #: Per-stream receive window (credit the peer starts with on each stream).
    initial_window_size: int = 1024 * 1024
    #: Connection-wide receive window.
    connection_window_size: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        self.validate(ValueError)

    def validate(self, err: type[Exception]) -> None:
        if not MIN_FRAME_SIZE <= self.max_frame_size <= MAX_FRAME_SIZE:
            raise err(f"max_frame_size must be in [{MIN_FRAME_SIZE}, {MAX_FRAME_SIZE}]")
        if not 1 <= self.max_concurrent_streams <= 0xFFFF_FFFF:
            raise err("max_concurrent_streams must be in [1, 2**32-1]")
        for name in ("initial_window_size", "connection_window_size"):
            if not 1 <= getattr(self, name) <= MAX_WINDOW:
                raise err(f"{name} must be in [1, 2**31-1]")

    def to_json(self) -> dict[str, int]:
        return {
            "max_frame_size": self.max_frame_size,
            "max_concurrent_streams": self.max_concurrent_streams,
            "initial_window_size": self.initial_window_size,
            "connection_window_size": self.connection_window_size,
        }


@dataclass(frozen=True)
class Subscription:
    """Which notifications a connector wants: shell-style patterns (``*``, ``?``, ``[..]``)."""

    edge: str = "*"
    plugin: str = "*"
    topic: str = "*"

    def matches(self, source: str, plugin: str, topic: str) -> bool:
        return (
            fnmatch.fnmatchcase(source, self.edge)
            and fnmatch.fnmatchcase(plugin, self.plugin)
            and fnmatch.fnmatchcase(topic, self.topic)
        )


class Event:
    """Base class of every event."""

    __slots__ = ()


# ---------------------------------------------------------------- handshake


@dataclass(frozen=True)
class Hello(Event):
    """(hub) A connector introduced itself; answer with ``accept()`` or ``reject()``."""

    version: int
    role: PeerRole
    name: str
    credential: str
    resume_token: str | None
    manifest: dict[str, Any]
    limits: Limits


@dataclass(frozen=True)
class Welcome(Event):
    """(connector) The hub accepted us; streams may open now."""

    version: int
    limits: Limits
    heartbeat_interval: float
    resume_token: str
    #: as the hub sent it; ``None``: not sent, idle connections keep ``heartbeat_interval`` (section 12)
    idle_heartbeat_interval: float | None = None


@dataclass(frozen=True)
class ConnectionClosed(Event):
    """The connection is over: a REJECT, a fatal GOAWAY, a heartbeat timeout or a lost carrier.

    ``by_peer`` tells whether the peer ended it (``False``: this side did,
    e.g. it refused the peer's protocol version or the peer went silent).
    """

    error_code: ErrorCode | int
    reason: str
    by_peer: bool


# ---------------------------------------------------------------- streams


@dataclass(frozen=True)
class RequestReceived(Event):
    """The peer opened a stream."""

    stream_id: int
    method: str
    path: str
    headers: Headers
    end_stream: bool


@dataclass(frozen=True)
class ResponseReceived(Event):
    """The peer answered a stream this side opened."""

    stream_id: int
    status: int
    headers: Headers
    end_stream: bool


@dataclass(frozen=True)
class Data(Event):
    """Body bytes.  Call ``acknowledge_received_data(stream_id, len(data))`` once consumed."""

    stream_id: int
    data: bytes = field(repr=False)
    end_stream: bool


@dataclass(frozen=True)
class StreamReset(Event):
    """A stream ended abnormally.

    ``error_code`` ``REFUSED_STREAM`` means the peer never processed it
    (it was above a GOAWAY's last stream id): the request may be retried.
    ``CONNECTION_LOST`` means the carrier died under it.
    """

    stream_id: int
    error_code: ErrorCode | int
    by_peer: bool


@dataclass(frozen=True)
class WindowUpdated(Event):
    """The peer gave more send credit (``stream_id`` 0: the connection window)."""

    stream_id: int
    delta: int


# ---------------------------------------------------------------- connection level


@dataclass(frozen=True)
class PingReceived(Event):
    """The peer pinged; the PONG is already queued."""

    payload: bytes


@dataclass(frozen=True)
class PongReceived(Event):
    payload: bytes


@dataclass(frozen=True)
class GoAway(Event):
    """The peer is draining: no new streams; ours above ``last_stream_id`` were reset as REFUSED_STREAM."""

    last_stream_id: int
    error_code: ErrorCode | int
    reason: str


@dataclass(frozen=True)
class Notification(Event):
    """An EVENT frame: a plugin's notification, with the sequence number its sender gave it."""

    source: str
    plugin: str
    topic: str
    seq: int
    payload: bytes


@dataclass(frozen=True)
class Subscribed(Event):
    """(hub) The connector asked for notifications matching ``subscription``.

    ``resume_after`` is the last sequence number it saw, or ``None`` for new events only.
    """

    subscription_id: int
    subscription: Subscription
    resume_after: int | None


@dataclass(frozen=True)
class Unsubscribed(Event):
    subscription_id: int


@dataclass(frozen=True)
class ManifestUpdated(Event):
    """(hub) The connector's plugin manifest changed; this is the whole new manifest."""

    manifest: dict[str, Any]
