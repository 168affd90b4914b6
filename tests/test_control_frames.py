"""Connection-level frames: GOAWAY and closing, heartbeat PING/PONG, events and subscriptions,
malformed frames, and the frame decoder itself."""

from __future__ import annotations

import struct

import pytest

from radical_edge_proto import (
    HEADER_SIZE,
    HEARTBEAT_MISSES,
    HUB_PING_INTERVALS,
    MAX_FRAME_SIZE,
    MIN_FRAME_SIZE,
    ConnectionClosed,
    ConnState,
    Data,
    ErrorCode,
    FrameDecoder,
    FrameType,
    GoAway,
    Limits,
    LocalProtocolError,
    ManifestUpdated,
    Notification,
    PingReceived,
    PongReceived,
    ProtocolError,
    RawFrame,
    RemoteProtocolError,
    RequestReceived,
    ResponseReceived,
    StreamReset,
    Subscribed,
    Subscription,
    Unsubscribed,
    encode_frame,
)

from .helpers import ConnectionPair
from .wire_helpers import (
    assert_remote_error,
    frames_of,
    goodbye,
    open_stream,
    raw_data,
    raw_goaway,
    raw_headers,
    request_payload,
)

PE = ErrorCode.PROTOCOL_ERROR
FS = ErrorCode.FRAME_SIZE_ERROR


def goaway_fields(data: bytes) -> tuple[int, int, bytes]:
    (frame,) = frames_of(data)
    assert frame.type == FrameType.GOAWAY
    last, code = struct.unpack_from("!IH", frame.payload)
    return last, code, frame.payload[6:]


# ---------------------------------------------------------------- GOAWAY


def test_goaway_refuses_streams_above_last_id_which_may_be_retried():
    pair = ConnectionPair()
    kept = open_stream(pair, path="/kept")
    pair.hub.send_goaway(ErrorCode.NO_ERROR, "maintenance")
    assert pair.hub.state is ConnState.CLOSING_LOCAL
    goaway = pair.hub.data_to_send()
    assert goaway_fields(goaway) == (kept, ErrorCode.NO_ERROR, b"maintenance")

    # the connector has not seen the GOAWAY yet and opens another stream
    raced = pair.connector.send_request("POST", "/raced")
    pair.connector.send_data(raced, b"body", end_stream=True)
    # the hub drops it silently: no event, no RESET, no error
    assert pair.deliver(pair.connector) == []
    assert pair.hub.data_to_send() == b""
    assert pair.hub.open_streams == (kept,)

    assert pair.connector.receive_data(goaway) == [
        GoAway(kept, ErrorCode.NO_ERROR, "maintenance"),
        StreamReset(raced, ErrorCode.REFUSED_STREAM, by_peer=True),
    ]
    assert pair.connector.state is ConnState.CLOSING_REMOTE
    assert pair.connector.open_streams == (kept,)

    # REFUSED_STREAM means never processed: retry on a new connection
    fresh = ConnectionPair()
    retried = fresh.connector.send_request("POST", "/raced", end_stream=True)
    assert fresh.deliver(fresh.connector) == [RequestReceived(retried, "POST", "/raced", (), True)]

    # the stream below the last id finishes normally
    pair.connector.end_stream(kept)
    pair.deliver(pair.connector)
    pair.hub.send_response(kept, 200, end_stream=True)
    assert pair.deliver(pair.hub) == [ResponseReceived(kept, 200, (), True)]
    assert pair.connector.drained
    assert pair.hub.drained


def test_no_new_local_streams_after_goaway_sent_or_received():
    pair = ConnectionPair()
    sid = open_stream(pair)
    pair.hub.send_goaway()
    with pytest.raises(LocalProtocolError):
        pair.hub.send_request("GET", "/")
    pair.deliver(pair.hub)
    with pytest.raises(LocalProtocolError):
        pair.connector.send_request("GET", "/")
    assert pair.connector.data_to_send() == b""
    # everything else keeps working while draining
    pair.connector.send_data(sid, b"still", end_stream=True)
    pair.connector.ping(b"p")
    pair.connector.send_event("e", "p", "t", 1, b"")
    events = pair.deliver(pair.connector)
    assert [type(e) for e in events] == [Data, PingReceived, Notification]


def test_peer_may_not_open_streams_after_its_goaway():
    pair = ConnectionPair()
    pair.hub.send_goaway()
    pair.deliver(pair.hub)
    assert_remote_error(pair.connector, raw_headers(2, request_payload(b"GET", b"/")), PE)


def test_no_streams_at_all_once_both_sent_goaway():
    pair = ConnectionPair()
    pair.hub.send_goaway()
    pair.connector.send_goaway()
    pair.deliver(pair.hub)
    pair.deliver(pair.connector)
    assert pair.hub.state is pair.connector.state is ConnState.CLOSING_BOTH
    assert pair.hub.drained
    assert pair.connector.drained
    assert_remote_error(pair.hub, raw_headers(1, request_payload(b"GET", b"/")), PE)


def test_drained():
    pair = ConnectionPair()
    sid = open_stream(pair, end_stream=True)
    assert not pair.hub.drained  # not draining at all
    pair.hub.send_goaway()
    pair.deliver(pair.hub)
    assert not pair.hub.drained  # a stream is still open
    assert not pair.connector.drained
    pair.hub.send_response(sid, 200, end_stream=True)
    assert pair.hub.drained
    pair.deliver(pair.hub)
    assert pair.connector.drained
    pair.connector.close()
    assert not pair.connector.drained  # closed, not draining


def test_goaway_can_be_sent_again_and_received_again():
    pair = ConnectionPair()
    sids = [pair.connector.send_request("GET", "/") for _ in range(3)]  # 1, 3, 5
    pair.deliver(pair.connector)
    pair.hub.send_goaway()
    pair.hub.send_goaway()
    assert [f.type for f in frames_of(pair.hub.data_to_send())] == [FrameType.GOAWAY] * 2
    events = pair.connector.receive_data(raw_goaway(5) + raw_goaway(1))
    assert events == [
        GoAway(5, ErrorCode.NO_ERROR, ""),
        GoAway(1, ErrorCode.NO_ERROR, ""),
        StreamReset(3, ErrorCode.REFUSED_STREAM, by_peer=True),
        StreamReset(5, ErrorCode.REFUSED_STREAM, by_peer=True),
    ]
    assert pair.connector.open_streams == (sids[0],)


def test_goaway_last_id_and_reason_clipping():
    pair = ConnectionPair()
    open_stream(pair)
    open_stream(pair)
    pair.connector.send_goaway(ErrorCode.NO_ERROR, "x" * 10_000)
    assert pair.connector.data_to_send()[:HEADER_SIZE] == struct.pack("!IBBI", 6 + 4096, FrameType.GOAWAY, 0, 0)
    pair.hub.send_goaway(ErrorCode.NO_ERROR, "ok")
    assert goaway_fields(pair.hub.data_to_send()) == (3, ErrorCode.NO_ERROR, b"ok")


def test_repeated_goaway_never_raises_the_last_stream_id():
    pair = ConnectionPair()
    first = open_stream(pair)
    pair.hub.send_goaway(ErrorCode.NO_ERROR, "one")
    pair.connector.send_request("GET", "/raced")
    assert pair.deliver(pair.connector) == []  # ignored: it raced the GOAWAY
    pair.hub.send_goaway(ErrorCode.NO_ERROR, "two")
    frames = frames_of(pair.hub.data_to_send())
    assert [struct.unpack_from("!I", f.payload)[0] for f in frames] == [first, first]


def test_a_draining_goaway_carries_no_error():
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError):
        pair.hub.send_goaway(ErrorCode.INTERNAL_ERROR, "use close()")
    assert pair.hub.state is ConnState.OPEN
    assert pair.hub.data_to_send() == b""


def test_goaway_with_an_error_code_closes_the_connection():
    pair = ConnectionPair()
    sid = open_stream(pair)
    assert pair.hub.close(ErrorCode.INTERNAL_ERROR, "crashed") == [
        StreamReset(sid, ErrorCode.INTERNAL_ERROR, by_peer=False)
    ]
    assert pair.hub.closed
    assert pair.deliver(pair.hub) == [
        GoAway(sid, ErrorCode.INTERNAL_ERROR, "crashed"),
        ConnectionClosed(ErrorCode.INTERNAL_ERROR, "crashed", by_peer=True),
        StreamReset(sid, ErrorCode.INTERNAL_ERROR, by_peer=True),
    ]
    assert pair.connector.closed
    assert pair.connector.data_to_send() == b""  # the receiver of a fatal GOAWAY sends nothing
    assert pair.connector.open_streams == ()
    assert pair.connector.next_timer() is None


def test_goaway_with_an_unknown_error_code():
    pair = ConnectionPair()
    events = pair.connector.receive_data(raw_goaway(0, 777, b"later version"))
    assert events == [GoAway(0, 777, "later version"), ConnectionClosed(777, "later version", by_peer=True)]
    assert pair.connector.closed


def test_close_returns_resets_for_open_streams_only():
    pair = ConnectionPair()
    done = open_stream(pair, end_stream=True)
    pair.hub.send_response(done, 200, end_stream=True)
    pair.deliver(pair.hub)
    a = open_stream(pair)
    b = pair.connector.send_request("GET", "/", end_stream=True)  # half-closed: still open
    assert pair.connector.close() == [
        StreamReset(a, ErrorCode.NO_ERROR, by_peer=False),
        StreamReset(b, ErrorCode.NO_ERROR, by_peer=False),
    ]
    assert goodbye(pair.connector) == (FrameType.GOAWAY, ErrorCode.NO_ERROR)
    assert pair.connector.close() == []
    assert pair.connector.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        pair.connector.send_data(a, b"x")
    with pytest.raises(LocalProtocolError):
        pair.connector.ping()
    assert pair.connector.receive_data(raw_data(a, b"ignored")) == []


def test_connection_lost_resets_every_open_stream():
    pair = ConnectionPair()
    a = open_stream(pair)
    b = open_stream(pair)
    assert pair.connector.connection_lost() == [
        ConnectionClosed(ErrorCode.CONNECTION_LOST, "connection lost", by_peer=False),
        StreamReset(a, ErrorCode.CONNECTION_LOST, by_peer=False),
        StreamReset(b, ErrorCode.CONNECTION_LOST, by_peer=False),
    ]
    assert pair.connector.data_to_send() == b""  # nothing can be sent on a dead carrier
    assert pair.connector.closed
    assert pair.connector._streams == {}
    assert pair.connector.connection_lost() == []
    # the hub, whose carrier died too, reports the same from its side
    events = pair.hub.connection_lost()
    assert events[0] == ConnectionClosed(ErrorCode.CONNECTION_LOST, "connection lost", by_peer=False)
    assert {e.stream_id for e in events[1:]} == {a, b}


def test_connection_lost_during_the_handshake():
    pair = ConnectionPair(handshake=False)
    pair.connector.send_hello(role="edge", name="e")
    assert pair.connector.connection_lost() == [
        ConnectionClosed(ErrorCode.CONNECTION_LOST, "connection lost", by_peer=False)
    ]
    assert pair.connector.closed


BAD_GOAWAYS = {
    "truncated": (encode_frame(FrameType.GOAWAY, 0, 0, b"\x00\x00\x00\x00\x00"), FS),
    "last-id-reserved-bit": (raw_goaway(0x8000_0000), PE),
    "reason-not-utf8": (raw_goaway(0, 0, b"\xc3\x28"), PE),
}


@pytest.mark.parametrize(("frame", "code"), BAD_GOAWAYS.values(), ids=BAD_GOAWAYS.keys())
def test_malformed_goaway(frame, code):
    assert_remote_error(ConnectionPair().connector, frame, code)


# ---------------------------------------------------------------- PING / PONG


def test_ping_is_answered_automatically_with_the_same_payload():
    pair = ConnectionPair()
    payload = bytes(range(64))
    pair.connector.ping(payload)
    assert pair.deliver(pair.connector) == [PingReceived(payload)]
    (pong,) = frames_of(pair.hub.data_to_send())
    assert pong == RawFrame(FrameType.PONG, 0, 0, payload)
    assert pair.connector.receive_data(encode_frame(*pong)) == [PongReceived(payload)]
    assert pair.connector.data_to_send() == b""  # a PONG is not answered


def test_unsolicited_pong_is_accepted():
    pair = ConnectionPair()
    assert pair.connector.receive_data(encode_frame(FrameType.PONG, 0, 0, b"")) == [PongReceived(b"")]
    assert pair.connector.data_to_send() == b""


def test_ping_payload_is_limited():
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError):
        pair.connector.ping(b"x" * 65)
    assert pair.connector.data_to_send() == b""


@pytest.mark.parametrize("ftype", [FrameType.PING, FrameType.PONG])
def test_received_ping_or_pong_payload_is_limited(ftype):
    assert_remote_error(ConnectionPair().hub, encode_frame(ftype, 0, 0, b"x" * 65), FS)


# ---------------------------------------------------------------- heartbeat


def test_heartbeat_pings_after_silence_and_gives_up_after_misses():
    interval = 10.0
    pair = ConnectionPair(heartbeat_interval=interval)
    conn = pair.connector
    sid = open_stream(pair)
    pair.hub.data_to_send()
    assert conn.next_timer() == 0.0  # start the clock
    assert conn.handle_timer(100.0) == []
    assert conn.next_timer() == 100.0 + interval
    assert conn.handle_timer(109.9) == []
    assert conn.data_to_send() == b""
    assert conn.handle_timer(110.0) == []
    assert frames_of(conn.data_to_send()) == [RawFrame(FrameType.PING, 0, 0, b"heartbeat")]
    assert conn.next_timer() == 120.0
    assert conn.handle_timer(115.0) == []
    assert conn.data_to_send() == b""  # one PING per interval
    conn.handle_timer(120.0)
    assert [f.type for f in frames_of(conn.data_to_send())] == [FrameType.PING]
    assert conn.next_timer() == 100.0 + HEARTBEAT_MISSES * interval
    assert conn.handle_timer(129.9) == []
    events = conn.handle_timer(130.0)
    assert len(events) == 2
    closed, reset = events
    assert isinstance(closed, ConnectionClosed)
    assert (closed.error_code, closed.by_peer) == (ErrorCode.TIMEOUT, False)
    assert "30.0" in closed.reason
    assert reset == StreamReset(sid, ErrorCode.TIMEOUT, by_peer=False)
    assert goodbye(conn) == (FrameType.GOAWAY, ErrorCode.TIMEOUT)
    assert conn.closed
    assert conn.next_timer() is None
    assert conn.handle_timer(200.0) == []


def test_any_received_bytes_count_as_life():
    pair = ConnectionPair(heartbeat_interval=10.0)
    conn = pair.connector
    conn.handle_timer(0.0)
    conn.handle_timer(10.0)
    conn.data_to_send()
    # half a frame is still a sign of life
    assert conn.receive_data(encode_frame(FrameType.EVENT, 0, 0, bytes(14))[:3]) == []
    assert conn.handle_timer(25.0) == []
    assert conn.next_timer() == 35.0
    assert conn.handle_timer(34.0) == []
    assert conn.data_to_send() == b""  # no PING: the peer spoke at 25
    conn.handle_timer(35.0)
    assert [f.type for f in frames_of(conn.data_to_send())] == [FrameType.PING]
    assert conn.handle_timer(54.9) == []
    assert not conn.closed
    assert conn.handle_timer(55.0)[0].error_code == ErrorCode.TIMEOUT


def test_bytes_received_with_their_time_count_from_exactly_then():
    """With the arrival time, the deadline is HEARTBEAT_MISSES intervals after the last bytes, not up to one later."""
    pair = ConnectionPair(heartbeat_interval=5.0)
    conn = pair.connector
    conn.handle_timer(0.0)
    assert conn.next_timer() == 5.0
    assert conn.receive_data(encode_frame(FrameType.EVENT, 0, 0, bytes(14))[:3], 1.0) == []
    assert conn.next_timer() == 6.0  # the silence starts at 1.0, not at the next timer call
    assert conn.handle_timer(5.0) == []
    assert conn.data_to_send() == b""  # silent for 4 s only: no PING yet
    conn.handle_timer(6.0)
    assert [f.type for f in frames_of(conn.data_to_send())] == [FrameType.PING]
    assert conn.next_timer() == 11.0
    conn.handle_timer(11.0)
    conn.data_to_send()
    assert conn.next_timer() == 1.0 + HEARTBEAT_MISSES * 5.0
    assert conn.handle_timer(15.9) == []
    (closed,) = conn.handle_timer(16.0)
    assert isinstance(closed, ConnectionClosed)
    assert closed.error_code == ErrorCode.TIMEOUT
    assert "15.0" in closed.reason


def test_heartbeat_round_trip_keeps_both_sides_alive():
    pair = ConnectionPair(heartbeat_interval=5.0)
    now = 0.0
    for conn in (pair.connector, pair.hub):
        conn.handle_timer(now)
    for _ in range(20):  # 100 s, far past the 15 s deadline, with only heartbeats flowing
        now += 5.0
        for conn in (pair.connector, pair.hub):
            assert conn.handle_timer(now) == []
            events = pair.deliver(conn)  # PING
            assert all(isinstance(e, PingReceived) for e in events)
            pair.deliver(pair.peer(conn))  # PONG
    assert pair.connector.state is pair.hub.state is ConnState.OPEN


def test_heartbeat_runs_while_draining():
    pair = ConnectionPair(heartbeat_interval=1.0)
    open_stream(pair)
    pair.hub.send_goaway()
    pair.deliver(pair.hub)
    conn = pair.connector
    assert conn.state is ConnState.CLOSING_REMOTE
    conn.handle_timer(0.0)
    conn.handle_timer(1.0)
    assert [f.type for f in frames_of(conn.data_to_send())] == [FrameType.PING]
    (closed, reset) = conn.handle_timer(3.0)
    assert closed.error_code == reset.error_code == ErrorCode.TIMEOUT


def test_no_heartbeat_before_the_handshake():
    pair = ConnectionPair(handshake=False)
    pair.connector.send_hello(role="edge", name="e")
    pair.deliver(pair.connector)
    for conn in (pair.connector, pair.hub):
        assert conn.next_timer() is None
        assert conn.handle_timer(1000.0) == []
    assert pair.connector.data_to_send() == b""


# ---------------------------------------------------------------- events and subscriptions


def subscribed_pair(*subs: tuple[int, Subscription]) -> ConnectionPair:
    pair = ConnectionPair()
    for sub_id, sub in subs:
        pair.connector.subscribe(sub_id, sub)
    pair.deliver(pair.connector)
    return pair


@pytest.mark.parametrize(
    ("source", "plugin", "topic", "sent"),
    [
        ("edge-1", "sysinfo", "cpu.load", True),
        ("edge-12", "sysinfo", "cpu.", True),
        ("edge-1", "sysinfo", "mem.free", False),
        ("edge-1", "psij", "cpu.load", False),
        ("hpc-1", "sysinfo", "cpu.load", False),
        ("EDGE-1", "sysinfo", "cpu.load", False),  # patterns are case-sensitive
    ],
)
def test_hub_sends_an_event_only_when_a_subscription_matches(source, plugin, topic, sent):
    pair = subscribed_pair((1, Subscription(edge="edge-*", plugin="sysinfo", topic="cpu.*")))
    assert pair.hub.send_event(source, plugin, topic, 5, b"{}") is sent
    events = pair.deliver(pair.hub)
    assert events == ([Notification(source, plugin, topic, 5, b"{}")] if sent else [])


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("*", "a/b.c", True),
        ("*", "", True),
        ("", "", True),
        ("", "x", False),
        ("job.*", "job.", True),
        ("job.*", "jobs", False),
        ("?", "\u00e9", True),
        ("?", "ab", False),
        ("[ab]x", "bx", True),
        ("[!ab]x", "bx", False),
        ("[a-c]", "c", True),
        ("[]]", "]", True),
        ("[*]", "*", True),
        ("[*]", "x", False),
        ("[x", "[x", True),
        ("cpu", "CPU", False),
    ],
)
def test_subscription_patterns(pattern, topic, matches):
    """protocol.md 13.2: shell-style, whole-string, case-sensitive."""
    pair = subscribed_pair((1, Subscription(topic=pattern)))
    assert pair.hub.send_event("e", "p", topic, 1, b"") is matches


def test_hub_sends_nothing_without_subscriptions():
    pair = ConnectionPair()
    assert pair.hub.send_event("e", "p", "t", 1, b"x") is False
    assert pair.hub.data_to_send() == b""


def test_any_matching_subscription_is_enough_and_the_event_goes_once():
    pair = subscribed_pair((1, Subscription(edge="a?")), (2, Subscription(topic="[xy]")), (3, Subscription()))
    assert pair.hub.send_event("ab", "p", "x", 1, b"")
    assert len(frames_of(pair.hub.data_to_send())) == 1


def test_unsubscribe_stops_delivery():
    pair = subscribed_pair((1, Subscription(plugin="sysinfo")), (2, Subscription(plugin="psij")))
    assert pair.hub.subscriptions == {1: Subscription(plugin="sysinfo"), 2: Subscription(plugin="psij")}
    pair.connector.unsubscribe(1)
    assert pair.deliver(pair.connector) == [Unsubscribed(1)]
    assert pair.hub.subscriptions == {2: Subscription(plugin="psij")}
    assert pair.hub.send_event("e", "sysinfo", "t", 1, b"") is False
    assert pair.hub.send_event("e", "psij", "t", 2, b"") is True
    pair.connector.unsubscribe(2)
    pair.connector.unsubscribe(99)  # unknown: harmless
    assert pair.deliver(pair.connector) == [Unsubscribed(2), Unsubscribed(99)]
    assert pair.hub.subscriptions == {}


def test_resubscribing_with_the_same_id_replaces_the_subscription():
    pair = subscribed_pair((1, Subscription(plugin="a")), (1, Subscription(plugin="b")))
    assert pair.hub.subscriptions == {1: Subscription(plugin="b")}
    assert pair.hub.send_event("e", "a", "t", 1, b"") is False


def test_subscriptions_property_is_a_copy():
    pair = subscribed_pair((1, Subscription()))
    pair.hub.subscriptions.clear()
    assert pair.hub.send_event("e", "p", "t", 1, b"")


def test_subscriptions_end_with_the_connection():
    pair = subscribed_pair((1, Subscription()))
    pair.hub.close()
    assert pair.hub.subscriptions == {}


@pytest.mark.parametrize(("resume_after", "expected"), [(None, None), (0, 0), (17, 17), (2**64 - 1, 2**64 - 1)])
def test_resume_after_is_carried(resume_after, expected):
    pair = ConnectionPair()
    pair.connector.subscribe(3, resume_after=resume_after)
    assert pair.deliver(pair.connector) == [Subscribed(3, Subscription(), expected)]


@pytest.mark.parametrize(
    "action",
    [
        lambda c: c.subscribe(-1),
        lambda c: c.subscribe(2**32),
        lambda c: c.subscribe(1, resume_after=-1),
        lambda c: c.subscribe(1, resume_after=2**64),
        lambda c: c.unsubscribe(-1),
        lambda c: c.unsubscribe(2**32),
        lambda c: c.send_event("e", "p", "t", -1, b""),
        lambda c: c.send_event("e", "p", "t", 2**64, b""),
        lambda c: c.send_event("e" * 0x10000, "p", "t", 1, b""),
        lambda c: c.send_manifest({"x": {1, 2}}),
        lambda c: c.send_manifest({"x": float("nan")}),
    ],
    ids=[
        "sub-id-negative",
        "sub-id-too-big",
        "resume-negative",
        "resume-too-big",
        "unsub-id-negative",
        "unsub-id-too-big",
        "seq-negative",
        "seq-too-big",
        "source-too-long",
        "manifest-not-json",
        "manifest-nan",
    ],
)
def test_invalid_event_arguments_are_refused_locally(action):
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError):
        action(pair.connector)
    assert pair.connector.data_to_send() == b""


def test_connector_always_sends_events():
    pair = ConnectionPair()
    assert pair.connector.send_event("edge1", "psij", "job.state", 0, b"RUNNING") is True
    assert pair.deliver(pair.connector) == [Notification("edge1", "psij", "job.state", 0, b"RUNNING")]


def test_manifest_updates_arrive_whole():
    pair = ConnectionPair()
    pair.connector.send_manifest({"sysinfo": {"endpoints": ["/cpu"]}})
    pair.connector.send_manifest({})
    assert pair.deliver(pair.connector) == [ManifestUpdated({"sysinfo": {"endpoints": ["/cpu"]}}), ManifestUpdated({})]


# ---------------------------------------------------------------- malformed frames after the handshake

TO_HUB = "hub"
TO_CONNECTOR = "connector"
BAD_FRAMES = {
    "unknown-type": (TO_HUB, struct.pack("!IBBI", 0, 0x7F, 0, 0), PE),
    "type-zero": (TO_CONNECTOR, struct.pack("!IBBI", 0, 0x00, 0, 0), PE),
    "HEADERS-on-stream-0": (TO_HUB, encode_frame(FrameType.HEADERS, 0, 0, request_payload(b"GET", b"/")), PE),
    "DATA-on-stream-0": (TO_HUB, encode_frame(FrameType.DATA, 0, 0, b"x"), PE),
    "RESET-on-stream-0": (TO_HUB, encode_frame(FrameType.RESET, 0, 0, b"\x00\x07"), PE),
    "PING-on-stream-1": (TO_HUB, encode_frame(FrameType.PING, 0, 1, b""), PE),
    "EVENT-on-stream-1": (TO_CONNECTOR, encode_frame(FrameType.EVENT, 0, 1, bytes(14)), PE),
    "DATA-with-RESUME-flag": (TO_HUB, encode_frame(FrameType.DATA, 0x02, 1, b""), PE),
    "PING-with-END_STREAM-flag": (TO_HUB, encode_frame(FrameType.PING, 0x01, 0, b""), PE),
    "SUBSCRIBE-with-unknown-flag": (TO_HUB, encode_frame(FrameType.SUBSCRIBE, 0x80, 0, bytes(18)), PE),
    "reserved-stream-bit": (TO_HUB, encode_frame(FrameType.DATA, 0, 0x8000_0001, b""), PE),
    "RESET-short": (TO_HUB, encode_frame(FrameType.RESET, 0, 1, b"\x07"), FS),
    "RESET-long": (TO_HUB, encode_frame(FrameType.RESET, 0, 1, b"\x00\x07\x00"), FS),
    "EVENT-truncated": (TO_HUB, encode_frame(FrameType.EVENT, 0, 0, bytes(7)), FS),
    "EVENT-text-truncated": (TO_HUB, encode_frame(FrameType.EVENT, 0, 0, bytes(8) + b"\x00\x05abc"), FS),
    "EVENT-source-not-utf8": (TO_HUB, encode_frame(FrameType.EVENT, 0, 0, bytes(8) + b"\x00\x01\xff" + bytes(4)), PE),
    "SUBSCRIBE-after-without-RESUME": (
        TO_HUB,
        encode_frame(FrameType.SUBSCRIBE, 0, 0, struct.pack("!IQ", 1, 5) + bytes(6)),
        PE,
    ),
    "SUBSCRIBE-trailing": (TO_HUB, encode_frame(FrameType.SUBSCRIBE, 0, 0, bytes(18) + b"!"), FS),
    "SUBSCRIBE-truncated": (TO_HUB, encode_frame(FrameType.SUBSCRIBE, 0, 0, bytes(16)), FS),
    "UNSUBSCRIBE-short": (TO_HUB, encode_frame(FrameType.UNSUBSCRIBE, 0, 0, bytes(3)), FS),
    "UNSUBSCRIBE-long": (TO_HUB, encode_frame(FrameType.UNSUBSCRIBE, 0, 0, bytes(5)), FS),
    "MANIFEST-not-json": (TO_HUB, encode_frame(FrameType.MANIFEST, 0, 0, b"{"), PE),
    "MANIFEST-array": (TO_HUB, encode_frame(FrameType.MANIFEST, 0, 0, b"[]"), PE),
    "MANIFEST-not-utf8": (TO_HUB, encode_frame(FrameType.MANIFEST, 0, 0, b'{"\xff": 1}'), PE),
}


@pytest.mark.parametrize(("to", "frame", "code"), BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_malformed_frames_close_the_connection(to, frame, code):
    pair = ConnectionPair()
    open_stream(pair)
    pair.hub.send_response(1, 200)
    pair.deliver(pair.hub)
    conn = pair.hub if to == TO_HUB else pair.connector
    err = assert_remote_error(conn, frame, code)
    assert repr(err) == f"RemoteProtocolError({str(err)!r}, {code.name})"


def test_remote_error_goaway_carries_the_last_processed_stream():
    pair = ConnectionPair()
    open_stream(pair)
    open_stream(pair)
    pair.hub.data_to_send()
    with pytest.raises(RemoteProtocolError):
        pair.hub.receive_data(encode_frame(FrameType.PING, 0, 0, b"x" * 65))
    assert goaway_fields(pair.hub.data_to_send())[:2] == (3, FS)


def test_events_decoded_before_garbage_are_kept_with_why_the_connection_ended():
    """One receive_data call: an EVENT, a request, then a bad frame header.  The error carries the
    events decoded before it, then the ConnectionClosed and the stream resets the error caused."""
    pair = ConnectionPair()
    pair.connector.send_event("edge1", "sysinfo", "load", 7, b'{"load": 1}')
    sid = pair.connector.send_request("GET", "/x", end_stream=True)
    garbage = struct.pack("!IBBI", 0, 0xEE, 0, 0)  # an unknown frame type
    with pytest.raises(RemoteProtocolError) as info:
        pair.hub.receive_data(pair.connector.data_to_send() + garbage)
    err = info.value
    assert err.error_code == PE
    notification, request, closed, reset = err.events
    assert notification == Notification("edge1", "sysinfo", "load", 7, b'{"load": 1}')
    assert isinstance(request, RequestReceived)
    assert (request.stream_id, request.path) == (sid, "/x")
    assert closed == ConnectionClosed(PE, str(err), by_peer=False)
    assert "unknown frame type" in closed.reason
    assert reset == StreamReset(sid, PE, by_peer=False)
    assert pair.hub.closed
    assert goodbye(pair.hub) == (FrameType.GOAWAY, PE)


def test_events_decoded_before_a_bad_payload_are_kept_with_why_the_connection_ended():
    """The same when the error is in a frame's payload: the DATA before it is not lost."""
    pair = ConnectionPair()
    sid = open_stream(pair)
    bad_ping = encode_frame(FrameType.PING, 0, 0, b"x" * 65)
    with pytest.raises(RemoteProtocolError) as info:
        pair.hub.receive_data(raw_data(sid, b"body") + bad_ping)
    err = info.value
    assert err.events == [
        Data(sid, b"body", False),
        ConnectionClosed(FS, str(err), by_peer=False),
        StreamReset(sid, FS, by_peer=False),
    ]


def test_a_remote_error_made_by_hand_carries_no_events():
    assert RemoteProtocolError("made up").events == []


# ---------------------------------------------------------------- the frame decoder


def test_decoder_cuts_frames_however_the_bytes_are_split():
    frames = [
        RawFrame(FrameType.PING, 0, 0, b"one"),
        RawFrame(FrameType.DATA, 1, 7, b"two" * 100),
        RawFrame(FrameType.WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x01"),
        RawFrame(FrameType.PONG, 0, 0, b""),
    ]
    wire = b"".join(encode_frame(*f) for f in frames)
    for step in (1, 3, HEADER_SIZE, 11, 64, len(wire)):
        decoder = FrameDecoder(MIN_FRAME_SIZE)
        out: list[RawFrame] = []
        for i in range(0, len(wire), step):
            chunk = wire[i : i + step]
            out += decoder.feed(chunk if step % 2 else bytearray(chunk) if step % 3 else memoryview(chunk))
        assert out == frames, step
        assert decoder.buffered == 0
        assert all(type(f.payload) is bytes for f in out)


def test_decoder_holds_a_partial_frame():
    decoder = FrameDecoder(MIN_FRAME_SIZE)
    frame = encode_frame(FrameType.PING, 0, 0, b"12345678")
    assert decoder.feed(frame + frame[:12]) == [RawFrame(FrameType.PING, 0, 0, b"12345678")]
    assert decoder.buffered == 12
    assert decoder.feed(b"") == []
    assert decoder.buffered == 12
    assert decoder.feed(frame[12:]) == [RawFrame(FrameType.PING, 0, 0, b"12345678")]
    assert decoder.buffered == 0


def test_decoder_refuses_an_oversized_header_without_its_payload():
    decoder = FrameDecoder(MIN_FRAME_SIZE)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(struct.pack("!IBBI", MIN_FRAME_SIZE + 1, FrameType.DATA, 0, 1))
    assert info.value.error_code == FS
    decoder = FrameDecoder(MAX_FRAME_SIZE)
    decoder.feed(struct.pack("!IBBI", MAX_FRAME_SIZE, FrameType.DATA, 0, 1))  # allowed: waits for the payload
    assert decoder.buffered == HEADER_SIZE


# ---------------------------------------------------------------- small public types


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_frame_size": MIN_FRAME_SIZE - 1},
        {"max_frame_size": MAX_FRAME_SIZE + 1},
        {"max_concurrent_streams": 0},
        {"max_concurrent_streams": 2**32},
        {"initial_window_size": 0},
        {"connection_window_size": 2**31},
    ],
)
def test_limits_are_validated(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Limits(**kwargs)


def test_limits_round_trip_through_json():
    limits = Limits(max_frame_size=MAX_FRAME_SIZE, max_concurrent_streams=2**32 - 1, initial_window_size=1)
    assert Limits(**limits.to_json()) == limits


def test_error_code_from_wire():
    assert ErrorCode.from_wire(6) is ErrorCode.REFUSED_STREAM
    assert ErrorCode.from_wire(0xFFFF) == 0xFFFF
    assert not isinstance(ErrorCode.from_wire(0xFFFF), ErrorCode)


def test_protocol_error_carries_its_code():
    err = LocalProtocolError("nope", ErrorCode.CANCEL)
    assert isinstance(err, ProtocolError)
    assert err.error_code is ErrorCode.CANCEL
    assert repr(err) == "LocalProtocolError('nope', CANCEL)"
    assert RemoteProtocolError("x").error_code is ErrorCode.PROTOCOL_ERROR


def test_subscription_defaults_match_everything():
    assert Subscription().matches("any", "thing", "at.all")
    assert not Subscription(topic="a.*").matches("e", "p", "b.c")


@pytest.mark.parametrize(
    "action",
    [
        lambda c: c.send_event("edge-\udcff", "p", "t", 1, b""),
        lambda c: c.send_event("e", "p", "t\udcff", 1, b""),
        lambda c: c.subscribe(1, Subscription(topic="\udcff*")),
    ],
    ids=["send_event-source", "send_event-topic", "subscribe-pattern"],
)
def test_text_that_cannot_be_utf8_encoded_is_a_local_protocol_error(action):
    """Every send_* method either queues bytes or raises LocalProtocolError (Connection docstring).

    Lone surrogates are what ``os.fsdecode`` makes of undecodable file names.
    """
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError):
        action(pair.connector)
    assert pair.connector.data_to_send() == b""
    assert pair.connector.state is ConnState.OPEN


def test_close_with_an_unencodable_reason_still_closes():
    """close() ends the connection now (its docstring), whatever the reason text.

    Reasons are for humans (protocol.md 6.3, 6.9) and are often built from an
    exception, e.g. an OSError naming a file whose name os.fsdecode gave surrogates.
    """
    pair = ConnectionPair()
    sid = open_stream(pair)
    assert pair.connector.close(ErrorCode.INTERNAL_ERROR, "cannot read /data/\udcff") == [
        StreamReset(sid, ErrorCode.INTERNAL_ERROR, by_peer=False)
    ]
    assert pair.connector.closed
    assert goodbye(pair.connector) == (FrameType.GOAWAY, ErrorCode.INTERNAL_ERROR)


def test_manifest_with_a_number_too_large_for_a_float_is_refused():
    pair = ConnectionPair()
    frame = encode_frame(FrameType.MANIFEST, 0, 0, b'{"x": 1e999}')
    with pytest.raises(RemoteProtocolError) as info:
        pair.hub.receive_data(frame)
    assert info.value.error_code is ErrorCode.PROTOCOL_ERROR
    assert pair.hub.closed


def test_the_hub_pings_only_after_two_intervals_of_silence():
    """The connector keeps an idle connection alive; the hub pings a silent connector later, and still gives
    up after HEARTBEAT_MISSES intervals."""
    pair = ConnectionPair(heartbeat_interval=5.0)
    hub = pair.hub
    hub.handle_timer(0.0)
    hub.data_to_send()
    assert hub.next_timer() == 5.0 * HUB_PING_INTERVALS
    hub.handle_timer(5.0)
    assert hub.data_to_send() == b""  # a connector pings after one interval: the hub waits for it
    hub.handle_timer(10.0)
    assert [f.type for f in frames_of(hub.data_to_send())] == [FrameType.PING]
    assert hub.next_timer() == 15.0
    (closed, *_) = hub.handle_timer(15.0)
    assert isinstance(closed, ConnectionClosed)
    assert closed.error_code == ErrorCode.TIMEOUT


def test_an_idle_connection_carries_one_ping_and_one_pong_per_interval():
    pair = ConnectionPair(heartbeat_interval=5.0)
    sent = {"connector": [], "hub": []}
    now = 0.0
    while now <= 100.0:
        for name, conn, peer in (("connector", pair.connector, pair.hub), ("hub", pair.hub, pair.connector)):
            conn.handle_timer(now)
            data = conn.data_to_send()
            if data:
                sent[name] += [f.type for f in frames_of(data)]
                peer.receive_data(data, now)
                answer = peer.data_to_send()
                if answer:
                    sent["hub" if name == "connector" else "connector"] += [f.type for f in frames_of(answer)]
                    conn.receive_data(answer, now)
        now += 0.5
    assert not pair.connector.closed
    assert not pair.hub.closed
    assert set(sent["connector"]) == {FrameType.PING}
    assert set(sent["hub"]) == {FrameType.PONG}
    assert 19 <= len(sent["connector"]) <= 21  # one per interval over 100 s
