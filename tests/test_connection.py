"""Every frame type, produced through the public API and received however the bytes are cut.

Each row builds a fresh scenario, takes the bytes of exactly one frame from
the sender and feeds them to the peer three ways: whole, one byte at a time,
and with the first bytes of a following frame appended (that partial frame
must be held and completed by the next call).  All three must yield the same
events, equal to the row's expectation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from radical_edge_proto import (
    HEADER_SIZE,
    PROTOCOL_VERSION,
    Connection,
    ConnectionClosed,
    Data,
    ErrorCode,
    Event,
    Flags,
    FrameType,
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
    encode_frame,
)

from .helpers import ConnectionPair
from .wire_helpers import frames_of, open_stream

CONNECTOR_LIMITS = Limits(
    max_frame_size=20_000, max_concurrent_streams=3, initial_window_size=5_000, connection_window_size=9_000
)
HUB_LIMITS = Limits(
    max_frame_size=40_000, max_concurrent_streams=7, initial_window_size=6_000, connection_window_size=12_000
)

TRAILER_PAYLOAD = b"trailer!"
TRAILER = encode_frame(FrameType.PING, 0, 0, TRAILER_PAYLOAD)


@dataclass
class Case:
    receiver: Connection
    data: bytes
    #: run between the two receive_data calls of the trailing-bytes mode
    between: Callable[[], None] | None = None
    #: whether the receiver is still open to take the trailing PING
    live_after: bool = True


@dataclass(frozen=True)
class Row:
    id: str
    ftype: FrameType
    flags: int
    build: Callable[[], Case]
    expected: list[Event] = field(default_factory=list)


def _hello() -> Case:
    pair = ConnectionPair(CONNECTOR_LIMITS, handshake=False)
    pair.connector.send_hello(
        role="client", name="sdk-7", credential="pw", resume_token="rt-1", manifest={"a": [1, 2], "b": None}
    )
    return Case(
        pair.hub, pair.connector.data_to_send(), lambda: pair.hub.accept(heartbeat_interval=5, resume_token="t")
    )


def _welcome() -> Case:
    pair = ConnectionPair(hub_limits=HUB_LIMITS, handshake=False)
    pair.connector.send_hello(role=PeerRole.EDGE, name="e")
    pair.deliver(pair.connector)
    pair.hub.accept(heartbeat_interval=7.5, resume_token="resume-9")
    return Case(pair.connector, pair.hub.data_to_send())


def _reject() -> Case:
    pair = ConnectionPair(handshake=False)
    pair.connector.send_hello(role=PeerRole.EDGE, name="e", credential="wrong")
    pair.deliver(pair.connector)
    pair.hub.reject(ErrorCode.UNAUTHORIZED, "bad credential")
    return Case(pair.connector, pair.hub.data_to_send(), live_after=False)


def _request(*, end_stream: bool) -> Callable[[], Case]:
    def build() -> Case:
        pair = ConnectionPair()
        pair.connector.send_request(
            "POST", "/plugin/x?y=1", [("X-Trace", "abc"), (b"accept", b"*/*")], end_stream=end_stream
        )
        return Case(pair.hub, pair.connector.data_to_send())

    return build


def _response() -> Case:
    pair = ConnectionPair()
    sid = open_stream(pair)
    pair.hub.send_response(sid, 404, [("Content-Type", "text/plain")])
    return Case(pair.connector, pair.hub.data_to_send())


def _data(*, end_stream: bool) -> Callable[[], Case]:
    def build() -> Case:
        pair = ConnectionPair()
        sid = open_stream(pair)
        pair.connector.send_data(sid, b"body\x00bytes", end_stream=end_stream)
        return Case(pair.hub, pair.connector.data_to_send())

    return build


def _reset() -> Case:
    pair = ConnectionPair()
    sid = open_stream(pair)
    pair.connector.reset_stream(sid, ErrorCode.CANCEL)
    return Case(pair.hub, pair.connector.data_to_send())


def _window_update(hub_limits: Limits) -> Callable[[], Case]:
    def build() -> Case:
        pair = ConnectionPair(hub_limits=hub_limits)
        sid = open_stream(pair)
        pair.connector.send_data(sid, b"x" * 16)
        pair.deliver(pair.connector)
        pair.hub.acknowledge_received_data(sid, 16)
        return Case(pair.connector, pair.hub.data_to_send())

    return build


def _ping() -> Case:
    pair = ConnectionPair()
    pair.connector.ping(b"\x00\x01abc")
    return Case(pair.hub, pair.connector.data_to_send())


def _pong() -> Case:
    pair = ConnectionPair()
    pair.connector.ping(b"\x00\x01abc")
    pair.deliver(pair.connector)
    return Case(pair.connector, pair.hub.data_to_send())


def _goaway() -> Case:
    pair = ConnectionPair()
    open_stream(pair)
    pair.hub.send_goaway(ErrorCode.NO_ERROR, "maintenance")
    return Case(pair.connector, pair.hub.data_to_send())


def _event_from_connector() -> Case:
    pair = ConnectionPair()
    pair.connector.send_event("edge1", "sysinfo", "load", 12, b'\x00{"load": 0.5}')
    return Case(pair.hub, pair.connector.data_to_send())


def _event_from_hub() -> Case:
    pair = ConnectionPair()
    pair.connector.subscribe(1, Subscription(edge="edge*"))
    pair.deliver(pair.connector)
    assert pair.hub.send_event("edge2", "psij", "job.done", 2**64 - 1, b"")
    return Case(pair.connector, pair.hub.data_to_send())


def _subscribe(resume_after: int | None) -> Callable[[], Case]:
    def build() -> Case:
        pair = ConnectionPair()
        pair.connector.subscribe(7, Subscription("edge-*", "sysinfo", "cpu.?"), resume_after=resume_after)
        return Case(pair.hub, pair.connector.data_to_send())

    return build


def _unsubscribe() -> Case:
    pair = ConnectionPair()
    pair.connector.unsubscribe(7)
    return Case(pair.hub, pair.connector.data_to_send())


def _manifest() -> Case:
    pair = ConnectionPair()
    pair.connector.send_manifest({"sysinfo": {"version": "1.0"}, "psij": {}, "ünï": "çødé"})
    return Case(pair.hub, pair.connector.data_to_send())


END = int(Flags.END_STREAM)
ROWS = [
    Row(
        "HELLO",
        FrameType.HELLO,
        0,
        _hello,
        [Hello(PROTOCOL_VERSION, PeerRole.CLIENT, "sdk-7", "pw", "rt-1", {"a": [1, 2], "b": None}, CONNECTOR_LIMITS)],
    ),
    Row("WELCOME", FrameType.WELCOME, 0, _welcome, [Welcome(PROTOCOL_VERSION, HUB_LIMITS, 7.5, "resume-9")]),
    Row(
        "REJECT",
        FrameType.REJECT,
        0,
        _reject,
        [ConnectionClosed(ErrorCode.UNAUTHORIZED, "bad credential", by_peer=True)],
    ),
    Row(
        "HEADERS-request",
        FrameType.HEADERS,
        0,
        _request(end_stream=False),
        [RequestReceived(1, "POST", "/plugin/x?y=1", ((b"x-trace", b"abc"), (b"accept", b"*/*")), False)],
    ),
    Row(
        "HEADERS-request-END_STREAM",
        FrameType.HEADERS,
        END,
        _request(end_stream=True),
        [RequestReceived(1, "POST", "/plugin/x?y=1", ((b"x-trace", b"abc"), (b"accept", b"*/*")), True)],
    ),
    Row(
        "HEADERS-response",
        FrameType.HEADERS,
        0,
        _response,
        [ResponseReceived(1, 404, ((b"content-type", b"text/plain"),), False)],
    ),
    Row("DATA", FrameType.DATA, 0, _data(end_stream=False), [Data(1, b"body\x00bytes", False)]),
    Row("DATA-END_STREAM", FrameType.DATA, END, _data(end_stream=True), [Data(1, b"body\x00bytes", True)]),
    Row("RESET", FrameType.RESET, 0, _reset, [StreamReset(1, ErrorCode.CANCEL, by_peer=True)]),
    Row(
        "WINDOW_UPDATE-stream",
        FrameType.WINDOW_UPDATE,
        0,
        _window_update(Limits(initial_window_size=64)),
        [WindowUpdated(1, 16)],
    ),
    Row(
        "WINDOW_UPDATE-connection",
        FrameType.WINDOW_UPDATE,
        0,
        _window_update(Limits(connection_window_size=64)),
        [WindowUpdated(0, 16)],
    ),
    Row("PING", FrameType.PING, 0, _ping, [PingReceived(b"\x00\x01abc")]),
    Row("PONG", FrameType.PONG, 0, _pong, [PongReceived(b"\x00\x01abc")]),
    Row("GOAWAY", FrameType.GOAWAY, 0, _goaway, [GoAway(1, ErrorCode.NO_ERROR, "maintenance")]),
    Row(
        "EVENT-from-connector",
        FrameType.EVENT,
        0,
        _event_from_connector,
        [Notification("edge1", "sysinfo", "load", 12, b'\x00{"load": 0.5}')],
    ),
    Row(
        "EVENT-from-hub",
        FrameType.EVENT,
        0,
        _event_from_hub,
        [Notification("edge2", "psij", "job.done", 2**64 - 1, b"")],
    ),
    Row(
        "SUBSCRIBE",
        FrameType.SUBSCRIBE,
        0,
        _subscribe(None),
        [Subscribed(7, Subscription("edge-*", "sysinfo", "cpu.?"), None)],
    ),
    Row(
        "SUBSCRIBE-RESUME-0",
        FrameType.SUBSCRIBE,
        int(Flags.RESUME),
        _subscribe(0),
        [Subscribed(7, Subscription("edge-*", "sysinfo", "cpu.?"), 0)],
    ),
    Row(
        "SUBSCRIBE-RESUME-42",
        FrameType.SUBSCRIBE,
        int(Flags.RESUME),
        _subscribe(42),
        [Subscribed(7, Subscription("edge-*", "sysinfo", "cpu.?"), 42)],
    ),
    Row("UNSUBSCRIBE", FrameType.UNSUBSCRIBE, 0, _unsubscribe, [Unsubscribed(7)]),
    Row(
        "MANIFEST",
        FrameType.MANIFEST,
        0,
        _manifest,
        [ManifestUpdated({"sysinfo": {"version": "1.0"}, "psij": {}, "ünï": "çødé"})],
    ),
]

# where the trailing frame is cut: inside its header, right after it, inside its payload
TRAILER_CUTS = (1, HEADER_SIZE, HEADER_SIZE + 3)


def test_trailer_is_what_ping_sends():
    conn = ConnectionPair().connector
    conn.ping(TRAILER_PAYLOAD)
    assert conn.data_to_send() == TRAILER


def test_every_frame_type_has_a_row():
    assert {row.ftype for row in ROWS} == set(FrameType)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.id)
def test_frame_received_whole_bytewise_and_with_trailing_bytes(row: Row):
    case = row.build()
    (frame,) = frames_of(case.data)
    assert (frame.type, frame.flags) == (row.ftype, row.flags)
    results: dict[str, list[Event]] = {"whole": case.receiver.receive_data(case.data)}

    case = row.build()
    bytewise: list[Event] = []
    for i in range(len(case.data)):
        bytewise += case.receiver.receive_data(case.data[i : i + 1])
    results["one byte at a time"] = bytewise

    for cut in TRAILER_CUTS:
        case = row.build()
        results[f"with {cut} trailing bytes"] = case.receiver.receive_data(case.data + TRAILER[:cut])
        if case.between is not None:
            case.between()
        rest = case.receiver.receive_data(TRAILER[cut:])
        # the held partial frame is completed by the next call (or dropped if the frame closed the connection)
        assert rest == ([PingReceived(TRAILER_PAYLOAD)] if case.live_after else []), cut

    for mode, events in results.items():
        assert events == row.expected, mode


@pytest.mark.parametrize("side", list(Side))
def test_fresh_connection_state(side: Side):
    conn = Connection(side)
    assert conn.local_limits == Limits()
    assert conn.peer_limits is None
    assert conn.open_streams == ()
    assert conn.data_to_send() == b""
    assert conn.next_timer() is None
    assert conn.handle_timer(100.0) == []
    assert not conn.closed
    assert not conn.drained
    assert conn.receive_data(b"") == []


def test_bytes_queued_is_what_data_to_send_would_return():
    pair = ConnectionPair()
    conn = pair.connector
    assert conn.bytes_queued == 0
    sid = conn.send_request("POST", "/echo/x", [("x-a", "1")])
    conn.send_data(sid, memoryview(b"z" * 1000))  # a view is counted by its length too
    conn.ping(b"12345678")
    queued = conn.bytes_queued
    assert conn.frames_queued >= 3
    data = conn.data_to_send()
    assert queued == len(data) > 1000
    assert conn.bytes_queued == conn.frames_queued == 0
