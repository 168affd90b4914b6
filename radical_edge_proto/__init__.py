"""radical_edge_proto: the sans-IO protocol core of radical-edge.

Standard library only.  A :class:`Connection` turns received bytes into
:class:`Event` objects and method calls into bytes to send; the I/O layers
(bridge, edge, client) wire it to real carriers.  See ``docs/protocol.md``.
"""

from ._connection import (
    CREDIT_DIVISOR,
    HEARTBEAT_MISSES,
    HUB_PING_INTERVALS,
    PROTOCOL_VERSION,
    RTT_PROBES,
    TUNE_MIN_RTT,
    TUNE_SPAN,
    Connection,
)
from ._errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import (
    MAX_FRAME_SIZE,
    MIN_FRAME_SIZE,
    ConnectionClosed,
    Data,
    Event,
    GoAway,
    Hello,
    Limits,
    ManifestUpdated,
    Notification,
    PeerRole,
    PingReceived,
    PongReceived,
    RequestReceived,
    ResponseReceived,
    Side,
    StreamReset,
    Subscribed,
    Subscription,
    Unsubscribed,
    Welcome,
    WindowUpdated,
)
from ._frames import HEADER_SIZE, Flags, FrameDecoder, FrameType, RawFrame, encode_frame
from ._names import EDGE_NAME_MAX, RESERVED_EDGE_NAMES, check_edge_name, edge_name_error
from ._state import ConnState, HalfState

__all__ = [
    "CREDIT_DIVISOR",
    "RTT_PROBES",
    "TUNE_MIN_RTT",
    "TUNE_SPAN",
    "EDGE_NAME_MAX",
    "HEADER_SIZE",
    "HEARTBEAT_MISSES",
    "HUB_PING_INTERVALS",
    "MAX_FRAME_SIZE",
    "MIN_FRAME_SIZE",
    "PROTOCOL_VERSION",
    "RESERVED_EDGE_NAMES",
    "ConnState",
    "Connection",
    "ConnectionClosed",
    "Data",
    "ErrorCode",
    "Event",
    "Flags",
    "FrameDecoder",
    "FrameType",
    "GoAway",
    "HalfState",
    "Hello",
    "Limits",
    "LocalProtocolError",
    "ManifestUpdated",
    "Notification",
    "PeerRole",
    "PingReceived",
    "PongReceived",
    "ProtocolError",
    "RawFrame",
    "RemoteProtocolError",
    "RequestReceived",
    "ResponseReceived",
    "Side",
    "StreamReset",
    "Subscribed",
    "Subscription",
    "Unsubscribed",
    "Welcome",
    "WindowUpdated",
    "check_edge_name",
    "edge_name_error",
    "encode_frame",
]
