"""Streams: requests and responses, half-close, resets, concurrency and frame-size limits."""

from __future__ import annotations

import struct

import pytest

from radical_edge_proto import (
    MIN_FRAME_SIZE,
    ConnState,
    Data,
    ErrorCode,
    Flags,
    FrameType,
    Limits,
    LocalProtocolError,
    RequestReceived,
    ResponseReceived,
    StreamReset,
    Subscription,
    encode_frame,
)
from radical_edge_proto._frames import MAX_STREAM_ID

from .helpers import ConnectionPair
from .wire_helpers import (
    assert_remote_error,
    frames_of,
    open_stream,
    raw_data,
    raw_headers,
    raw_reset,
    raw_window_update,
    request_payload,
    response_payload,
)

PE = ErrorCode.PROTOCOL_ERROR
SC = ErrorCode.STREAM_CLOSED


def assert_forgotten(*conns) -> None:
    for conn in conns:
        assert conn.open_streams == ()
        assert conn._streams == {}  # nothing kept for finished streams: no leak on long-lived tunnels


# ---------------------------------------------------------------- request / response


def test_request_and_response_without_bodies():
    pair = ConnectionPair()
    sid = pair.connector.send_request("DELETE", "/jobs/17", end_stream=True)
    assert sid == 1
    assert pair.connector.open_streams == (1,)
    assert pair.deliver(pair.connector) == [RequestReceived(1, "DELETE", "/jobs/17", (), True)]
    pair.hub.send_response(sid, 204, end_stream=True)
    assert_forgotten(pair.hub)
    assert pair.deliver(pair.hub) == [ResponseReceived(1, 204, (), True)]
    assert_forgotten(pair.connector)


def test_request_and_response_with_bodies():
    pair = ConnectionPair()
    sid = pair.connector.send_request("PUT", "/files/a", [("content-length", "6")])
    pair.connector.send_data(sid, b"abc")
    pair.connector.send_data(sid, b"def")
    pair.connector.end_stream(sid)
    events = pair.deliver(pair.connector)
    assert events == [
        RequestReceived(sid, "PUT", "/files/a", ((b"content-length", b"6"),), False),
        Data(sid, b"abc", False),
        Data(sid, b"def", False),
        Data(sid, b"", True),
    ]
    pair.hub.acknowledge_received_data(sid, 6)
    pair.hub.send_response(sid, 200)
    pair.hub.send_data(sid, b"stored", end_stream=True)
    assert_forgotten(pair.hub)
    assert pair.deliver(pair.hub) == [ResponseReceived(sid, 200, (), False), Data(sid, b"stored", True)]
    assert pair.connector.open_streams == ()
    assert sid in pair.connector._streams  # kept until the body is acknowledged
    pair.connector.acknowledge_received_data(sid, 6)
    assert_forgotten(pair.connector)


def test_stream_ids_are_odd_for_the_connector_and_even_for_the_hub():
    pair = ConnectionPair()
    assert [pair.connector.send_request("GET", "/", end_stream=True) for _ in range(3)] == [1, 3, 5]
    assert [pair.hub.send_request("GET", "/", end_stream=True) for _ in range(3)] == [2, 4, 6]
    hub_events = pair.deliver(pair.connector)
    connector_events = pair.deliver(pair.hub)
    assert [e.stream_id for e in hub_events] == [1, 3, 5]
    assert [e.stream_id for e in connector_events] == [2, 4, 6]
    assert all(isinstance(e, RequestReceived) for e in hub_events + connector_events)


def test_hub_opened_stream():
    pair = ConnectionPair()
    sid = pair.hub.send_request("GET", "/edge/health", [("x-id", "1")], end_stream=True)
    assert pair.deliver(pair.hub) == [RequestReceived(sid, "GET", "/edge/health", ((b"x-id", b"1"),), True)]
    pair.connector.send_response(sid, 200, end_stream=True)
    assert pair.deliver(pair.connector) == [ResponseReceived(sid, 200, (), True)]
    assert_forgotten(pair.connector, pair.hub)


@pytest.mark.parametrize("first", ["requester", "responder"])
def test_either_side_may_end_first(first):
    pair = ConnectionPair()
    sid = open_stream(pair)
    pair.hub.send_response(sid, 200)
    pair.deliver(pair.hub)
    ender, other = (pair.connector, pair.hub) if first == "requester" else (pair.hub, pair.connector)

    ender.send_data(sid, b"last", end_stream=True)
    assert pair.deliver(ender) == [Data(sid, b"last", True)]
    other.acknowledge_received_data(sid, 4)
    # half-closed: the other direction still flows
    assert ender.open_streams == other.open_streams == (sid,)
    with pytest.raises(LocalProtocolError) as info:
        ender.send_data(sid, b"more")
    assert info.value.error_code == SC
    assert ender.send_window(sid) == 0
    assert other.send_window(sid) > 0
    other.send_data(sid, b"reply")
    assert pair.deliver(other) == [Data(sid, b"reply", False)]
    other.end_stream(sid)
    assert pair.deliver(other) == [Data(sid, b"", True)]
    ender.acknowledge_received_data(sid, 5)
    assert_forgotten(pair.connector, pair.hub)


# ---------------------------------------------------------------- HEADERS rules


def test_second_response_is_refused_locally():
    pair = ConnectionPair()
    sid = open_stream(pair)
    pair.hub.send_response(sid, 200)
    with pytest.raises(LocalProtocolError):
        pair.hub.send_response(sid, 500)
    pair.hub.send_data(sid, b"", end_stream=True)
    with pytest.raises(LocalProtocolError) as info:
        pair.hub.send_response(sid, 500)
    assert info.value.error_code == SC
    assert len(frames_of(pair.hub.data_to_send())) == 2


def test_requester_may_not_send_a_response():
    pair = ConnectionPair()
    sid = open_stream(pair)
    with pytest.raises(LocalProtocolError):
        pair.connector.send_response(sid, 200)
    assert pair.connector.data_to_send() == b""


def test_second_request_headers_is_refused():
    pair = ConnectionPair()
    sid = open_stream(pair)
    assert_remote_error(pair.hub, raw_headers(sid, request_payload(b"GET", b"/")), PE)


def test_request_headers_after_end_stream_is_stream_closed():
    pair = ConnectionPair()
    sid = open_stream(pair, end_stream=True)
    assert_remote_error(pair.hub, raw_headers(sid, request_payload(b"GET", b"/")), SC)


def test_second_response_headers_is_refused():
    pair = ConnectionPair()
    sid = open_stream(pair)
    pair.hub.send_response(sid, 200)
    pair.deliver(pair.hub)
    assert_remote_error(pair.connector, raw_headers(sid, response_payload(200)), PE)


def test_response_headers_after_end_stream_is_stream_closed():
    pair = ConnectionPair()
    sid = open_stream(pair)
    pair.hub.send_response(sid, 200, end_stream=True)
    pair.deliver(pair.hub)
    assert_remote_error(pair.connector, raw_headers(sid, response_payload(200)), SC)


def test_request_headers_on_an_old_stream_id_is_stream_closed():
    pair = ConnectionPair()
    sid = open_stream(pair, end_stream=True)
    pair.hub.send_response(sid, 200, end_stream=True)  # finished and forgotten on the hub
    pair.deliver(pair.hub)
    assert_remote_error(pair.hub, raw_headers(sid, request_payload(b"GET", b"/")), SC)


def test_stream_ids_must_increase():
    pair = ConnectionPair()
    pair.hub.receive_data(raw_headers(5, request_payload(b"GET", b"/")))
    assert_remote_error(pair.hub, raw_headers(3, request_payload(b"GET", b"/")), SC)


# ---------------------------------------------------------------- DATA rules


def test_data_after_end_stream_towards_the_hub():
    pair = ConnectionPair()
    sid = open_stream(pair, end_stream=True)
    assert_remote_error(pair.hub, raw_data(sid, b"late"), SC)


def test_data_after_end_stream_towards_the_connector():
    pair = ConnectionPair()
    sid = open_stream(pair)
    pair.hub.send_response(sid, 200)
    pair.hub.send_data(sid, b"all", end_stream=True)
    pair.deliver(pair.hub)
    assert_remote_error(pair.connector, raw_data(sid, b"late"), SC)


def test_data_before_the_response_is_refused():
    pair = ConnectionPair()
    sid = open_stream(pair)
    assert_remote_error(pair.connector, raw_data(sid, b"early"), PE)


def test_local_data_after_end_stream():
    pair = ConnectionPair()
    sid = pair.connector.send_request("GET", "/", end_stream=True)
    pair.connector.data_to_send()
    for action in (lambda: pair.connector.send_data(sid, b"x"), lambda: pair.connector.end_stream(sid)):
        with pytest.raises(LocalProtocolError) as info:
            action()
        assert info.value.error_code == SC
    assert pair.connector.data_to_send() == b""


def test_local_data_before_the_response():
    pair = ConnectionPair()
    sid = open_stream(pair)
    with pytest.raises(LocalProtocolError):
        pair.hub.send_data(sid, b"body before headers")
    assert pair.hub.data_to_send() == b""


# ---------------------------------------------------------------- never-opened streams

NEVER_OPENED_AT_HUB = {
    "DATA-remote-id": raw_data(9, b"x"),
    "DATA-own-id": raw_data(2, b"x"),
    "HEADERS-own-id": raw_headers(2, response_payload(200)),
    "RESET-remote-id": raw_reset(9),
    "RESET-own-id": raw_reset(4),
    "WINDOW_UPDATE-remote-id": raw_window_update(9, 1),
    "WINDOW_UPDATE-own-id": raw_window_update(2, 1),
}


@pytest.mark.parametrize("frame", NEVER_OPENED_AT_HUB.values(), ids=NEVER_OPENED_AT_HUB.keys())
def test_frames_on_never_opened_streams_are_refused(frame):
    pair = ConnectionPair()
    open_stream(pair)  # stream 1 exists, so only the id makes these wrong
    assert_remote_error(pair.hub, frame, PE)


@pytest.mark.parametrize(
    "action",
    [
        lambda c: c.send_data(3, b"x"),
        lambda c: c.end_stream(3),
        lambda c: c.send_response(2, 200),
        lambda c: c.reset_stream(3),
        lambda c: c.reset_stream(2),
        lambda c: c.acknowledge_received_data(3, 0),
        lambda c: c.acknowledge_received_data(2, 0),
    ],
    ids=["send_data", "end_stream", "send_response", "reset-own-id", "reset-peer-id", "ack-own-id", "ack-peer-id"],
)
def test_local_actions_on_never_opened_streams_are_refused(action):
    pair = ConnectionPair()
    open_stream(pair)
    pair.connector.data_to_send()
    with pytest.raises(LocalProtocolError):
        action(pair.connector)
    assert pair.connector.data_to_send() == b""
    assert pair.connector.open_streams == (1,)


def test_local_actions_on_a_finished_stream_say_closed():
    pair = ConnectionPair()
    sid = open_stream(pair, end_stream=True)
    pair.hub.send_response(sid, 200, end_stream=True)
    pair.deliver(pair.hub)
    with pytest.raises(LocalProtocolError) as info:
        pair.hub.send_data(sid, b"x")
    assert info.value.error_code == SC
    assert "closed" in str(info.value)


# ---------------------------------------------------------------- resets


def test_requester_resets():
    pair = ConnectionPair()
    sid = open_stream(pair)
    pair.connector.reset_stream(sid)  # CANCEL by default
    assert_forgotten(pair.connector)
    assert pair.deliver(pair.connector) == [StreamReset(sid, ErrorCode.CANCEL, by_peer=True)]
    assert_forgotten(pair.hub)
    with pytest.raises(LocalProtocolError):
        pair.hub.send_response(sid, 200)


def test_responder_resets():
    pair = ConnectionPair()
    sid = open_stream(pair)
    pair.hub.send_response(sid, 200)
    pair.hub.reset_stream(sid, ErrorCode.INTERNAL_ERROR)
    assert pair.deliver(pair.hub) == [
        ResponseReceived(sid, 200, (), False),
        StreamReset(sid, ErrorCode.INTERNAL_ERROR, by_peer=True),
    ]
    assert_forgotten(pair.connector, pair.hub)
    with pytest.raises(LocalProtocolError) as info:
        pair.connector.send_data(sid, b"x")
    assert info.value.error_code == SC


def test_reset_with_an_unknown_error_code_keeps_the_number():
    pair = ConnectionPair()
    sid = open_stream(pair)
    assert pair.hub.receive_data(raw_reset(sid, 4242)) == [StreamReset(sid, 4242, by_peer=True)]


def test_crossing_resets_produce_no_error():
    pair = ConnectionPair()
    sid = open_stream(pair)
    pair.connector.reset_stream(sid, ErrorCode.CANCEL)
    pair.hub.reset_stream(sid, ErrorCode.INTERNAL_ERROR)
    assert pair.deliver(pair.connector) == []
    assert pair.deliver(pair.hub) == []
    assert pair.connector.state is pair.hub.state is ConnState.OPEN
    assert_forgotten(pair.connector, pair.hub)


def test_frames_for_a_stream_this_side_reset_are_tolerated():
    # the connector's own stream: the hub answers before it learns of the reset
    pair = ConnectionPair(Limits(connection_window_size=400), Limits(initial_window_size=64))
    sid = open_stream(pair)
    pair.connector.send_data(sid, b"x" * 16)
    pair.deliver(pair.connector)
    pair.connector.reset_stream(sid)
    in_flight_reset = pair.connector.data_to_send()

    pair.hub.acknowledge_received_data(sid, 16)  # WINDOW_UPDATE on the stream
    pair.hub.send_response(sid, 200)  # HEADERS
    pair.hub.send_data(sid, b"y" * 100)  # DATA
    pair.hub.reset_stream(sid, ErrorCode.INTERNAL_ERROR)  # RESET
    hub_bytes = pair.hub.data_to_send()
    kinds = [f.type for f in frames_of(hub_bytes)]
    assert kinds == [FrameType.WINDOW_UPDATE, FrameType.HEADERS, FrameType.DATA, FrameType.RESET]

    assert pair.connector.receive_data(hub_bytes) == []
    assert pair.connector.state is ConnState.OPEN
    # the DATA's connection credit went back (a quarter of the 400-byte window was used)
    (update,) = frames_of(pair.connector.data_to_send())
    assert (update.type, update.stream_id, update.payload) == (FrameType.WINDOW_UPDATE, 0, struct.pack("!I", 100))
    assert pair.connector.receive_window(0) == 400
    assert pair.hub.receive_data(in_flight_reset) == []
    assert_forgotten(pair.connector, pair.hub)


def test_frames_for_a_peer_stream_this_side_reset_are_tolerated():
    pair = ConnectionPair(Limits(initial_window_size=64), Limits(connection_window_size=400))
    sid = open_stream(pair)
    pair.hub.send_response(sid, 200)
    pair.hub.send_data(sid, b"z" * 16)
    pair.deliver(pair.hub)
    pair.hub.reset_stream(sid)
    in_flight_reset = pair.hub.data_to_send()

    pair.connector.acknowledge_received_data(sid, 16)  # WINDOW_UPDATE
    pair.connector.send_data(sid, b"w" * 100)  # DATA
    pair.connector.end_stream(sid)  # DATA + END_STREAM
    pair.connector.reset_stream(sid)  # RESET
    assert pair.deliver(pair.connector) == []
    (update,) = frames_of(pair.hub.data_to_send())
    assert (update.type, update.stream_id, update.payload) == (FrameType.WINDOW_UPDATE, 0, struct.pack("!I", 100))
    assert pair.hub.receive_window(0) == 400
    assert pair.hub.state is ConnState.OPEN
    assert pair.connector.receive_data(in_flight_reset) == []
    assert_forgotten(pair.connector, pair.hub)


def test_reset_of_a_finished_stream_is_a_no_op():
    pair = ConnectionPair()
    sid = open_stream(pair, end_stream=True)
    pair.hub.send_response(sid, 200, end_stream=True)
    pair.deliver(pair.hub)
    pair.connector.reset_stream(sid)
    pair.hub.reset_stream(sid)
    assert pair.connector.data_to_send() == b""
    assert pair.hub.data_to_send() == b""


def test_reset_of_a_finished_but_unacknowledged_stream_sends_nothing():
    pair = ConnectionPair()
    sid = open_stream(pair, end_stream=True)
    pair.hub.send_response(sid, 200)
    pair.hub.send_data(sid, b"body", end_stream=True)
    pair.deliver(pair.hub)
    # the peer's late RESET changes nothing either
    assert pair.connector.receive_data(raw_reset(sid)) == []
    pair.connector.reset_stream(sid)
    assert pair.connector.data_to_send() == b""
    assert_forgotten(pair.connector)
    pair.connector.acknowledge_received_data(sid, 4)  # late acknowledgement of a dropped stream: fine
    assert pair.connector.data_to_send() == b""


# ---------------------------------------------------------------- concurrency


def test_max_concurrent_streams_is_enforced_locally():
    pair = ConnectionPair(hub_limits=Limits(max_concurrent_streams=2))
    first = pair.connector.send_request("GET", "/", end_stream=True)
    second = pair.connector.send_request("GET", "/")
    pair.deliver(pair.connector)
    with pytest.raises(LocalProtocolError) as info:
        pair.connector.send_request("GET", "/")
    assert info.value.error_code == ErrorCode.REFUSED_STREAM
    assert pair.connector.data_to_send() == b""
    # a finished stream frees its slot ...
    pair.hub.send_response(first, 200, end_stream=True)
    pair.deliver(pair.hub)
    third = pair.connector.send_request("GET", "/")
    assert third == 5
    with pytest.raises(LocalProtocolError):
        pair.connector.send_request("GET", "/")
    # ... and so does a reset one
    pair.connector.reset_stream(second)
    assert pair.connector.send_request("GET", "/") == 7


def test_half_closed_streams_still_count():
    pair = ConnectionPair(hub_limits=Limits(max_concurrent_streams=1))
    sid = pair.connector.send_request("GET", "/", end_stream=True)
    with pytest.raises(LocalProtocolError):
        pair.connector.send_request("GET", "/")
    pair.deliver(pair.connector)
    pair.hub.send_response(sid, 200)
    pair.deliver(pair.hub)
    with pytest.raises(LocalProtocolError):
        pair.connector.send_request("GET", "/")


def test_max_concurrent_streams_is_enforced_remotely():
    pair = ConnectionPair(hub_limits=Limits(max_concurrent_streams=2))
    first = open_stream(pair, end_stream=True)
    open_stream(pair)
    # a peer ignoring the limit: the excess stream is refused, not reported
    assert pair.hub.receive_data(raw_headers(5, request_payload(b"GET", b"/"))) == []
    (reset,) = frames_of(pair.hub.data_to_send())
    assert (reset.type, reset.stream_id, reset.payload) == (
        FrameType.RESET,
        5,
        struct.pack("!H", ErrorCode.REFUSED_STREAM),
    )
    assert pair.hub.open_streams == (1, 3)
    # its body, sent before the RESET arrived, is tolerated
    assert pair.hub.receive_data(raw_data(5, b"body", end_stream=True)) == []
    # once a slot is free a new stream is accepted
    pair.hub.send_response(first, 200, end_stream=True)
    (req,) = pair.hub.receive_data(raw_headers(7, request_payload(b"GET", b"/")))
    assert req == RequestReceived(7, "GET", "/", (), False)


def test_an_opener_following_the_limit_is_never_refused():
    """protocol.md 8.6: on an ordered carrier, counting as the reference does never triggers a refusal."""
    pair = ConnectionPair(hub_limits=Limits(max_concurrent_streams=1))
    c, h = pair.connector, pair.hub
    endings = [
        "request-then-response",
        "response-then-request",
        "requester-resets",
        "responder-resets",
        "response-only",
    ]
    for ending in endings * 3:
        sid = c.send_request("POST", "/")
        events = pair.deliver(c)  # possibly the previous stream's END_STREAM or RESET first
        assert events[-1] == RequestReceived(sid, "POST", "/", (), False), ending
        h.send_response(sid, 200)
        pair.deliver(h)
        if ending == "request-then-response":
            c.end_stream(sid)
            pair.deliver(c)
            h.end_stream(sid)
            pair.deliver(h)
        elif ending == "response-then-request":
            h.end_stream(sid)
            pair.deliver(h)
            c.end_stream(sid)
        elif ending == "requester-resets":
            c.reset_stream(sid)
        elif ending == "responder-resets":
            h.reset_stream(sid)
            pair.deliver(h)
        else:
            h.end_stream(sid)
            pair.deliver(h)
            c.reset_stream(sid)  # the requester gives up on its own body
        assert c.open_streams == ()
    # nothing the hub sent was a refusal
    assert h.data_to_send() == b""


def test_skipped_peer_ids_count_as_closed():
    """protocol.md 18: a skipped id of the peer's parity is tolerated like a stream this side reset."""
    pair = ConnectionPair()
    (req,) = pair.hub.receive_data(raw_headers(7, request_payload(b"GET", b"/")))
    assert req.stream_id == 7
    assert pair.hub.receive_data(raw_data(3, b"late") + raw_reset(1) + raw_window_update(5, 9)) == []
    assert pair.hub.state is ConnState.OPEN
    assert pair.hub.open_streams == (7,)


def test_stream_ids_exhausted():
    pair = ConnectionPair()
    pair.connector._next_local_id = MAX_STREAM_ID + 2  # as after 2**30 streams
    with pytest.raises(LocalProtocolError) as info:
        pair.connector.send_request("GET", "/")
    assert info.value.error_code == ErrorCode.REFUSED_STREAM
    assert pair.connector.data_to_send() == b""
    assert pair.connector.open_streams == ()


# ---------------------------------------------------------------- frame size


def test_send_data_splits_into_frames_of_the_peers_max_size():
    pair = ConnectionPair(hub_limits=Limits(max_frame_size=MIN_FRAME_SIZE))
    sid = open_stream(pair)
    body = bytes(range(256)) * 160  # 40960 bytes: 16384 + 16384 + 8192
    pair.connector.send_data(sid, body, end_stream=True)
    wire = pair.connector.data_to_send()
    frames = frames_of(wire)
    assert [(f.type, len(f.payload), f.flags) for f in frames] == [
        (FrameType.DATA, MIN_FRAME_SIZE, 0),
        (FrameType.DATA, MIN_FRAME_SIZE, 0),
        (FrameType.DATA, 8192, int(Flags.END_STREAM)),
    ]
    events = pair.hub.receive_data(wire)
    assert b"".join(e.data for e in events) == body
    assert [e.end_stream for e in events] == [False, False, True]
    # the other direction uses the connector's own (default, larger) limit
    pair.hub.send_response(sid, 200)
    pair.hub.send_data(sid, body)
    assert len(frames_of(pair.hub.data_to_send())) == 2


def test_send_data_of_an_exact_multiple_adds_no_empty_frame():
    pair = ConnectionPair(hub_limits=Limits(max_frame_size=MIN_FRAME_SIZE))
    sid = open_stream(pair)
    pair.connector.send_data(sid, b"a" * 2 * MIN_FRAME_SIZE, end_stream=True)
    frames = frames_of(pair.connector.data_to_send())
    assert [(len(f.payload), f.flags) for f in frames] == [(MIN_FRAME_SIZE, 0), (MIN_FRAME_SIZE, 1)]


def test_send_data_accepts_memoryview_and_bytearray():
    pair = ConnectionPair()
    sid = open_stream(pair)
    pair.connector.send_data(sid, memoryview(b"view"))
    pair.connector.send_data(sid, bytearray(b"array"), end_stream=True)
    assert pair.deliver(pair.connector) == [Data(sid, b"view", False), Data(sid, b"array", True)]


def test_received_oversized_header_is_refused_before_its_payload():
    pair = ConnectionPair(hub_limits=Limits(max_frame_size=MIN_FRAME_SIZE))
    sid = open_stream(pair)
    header_only = struct.pack("!IBBI", MIN_FRAME_SIZE + 1, FrameType.DATA, 0, sid)
    assert_remote_error(pair.hub, header_only, ErrorCode.FRAME_SIZE_ERROR)


def test_received_frame_of_exactly_the_max_size_is_accepted():
    pair = ConnectionPair(hub_limits=Limits(max_frame_size=MIN_FRAME_SIZE))
    sid = open_stream(pair)
    (event,) = pair.hub.receive_data(raw_data(sid, b"m" * MIN_FRAME_SIZE))
    assert len(event.data) == MIN_FRAME_SIZE


def _small_peer_pair() -> ConnectionPair:
    return ConnectionPair(Limits(max_frame_size=MIN_FRAME_SIZE), Limits(max_frame_size=MIN_FRAME_SIZE))


TOO_BIG = "v" * MIN_FRAME_SIZE


@pytest.mark.parametrize(
    "action",
    [
        lambda p: p.connector.send_request("GET", "/", [("x-big", TOO_BIG)]),
        lambda p: p.connector.send_request("GET", "/" + "p" * MIN_FRAME_SIZE),
        lambda p: p.hub.send_response(1, 200, [("x-big", TOO_BIG)]),
        lambda p: p.connector.send_event("e", "p", "t", 1, TOO_BIG.encode()),
        lambda p: p.hub.send_event("e", "p", "t", 1, TOO_BIG.encode()),
        lambda p: p.connector.send_manifest({"big": TOO_BIG}),
        lambda p: p.connector.subscribe(1, Subscription(edge="e" * 6000, plugin="p" * 6000, topic="t" * 6000)),
    ],
    ids=["request", "request-path", "response", "event", "hub-event", "manifest", "subscribe"],
)
def test_sending_a_frame_larger_than_the_peer_accepts(action):
    pair = _small_peer_pair()
    sid = open_stream(pair)
    pair.connector.subscribe(5)
    pair.deliver(pair.connector)
    with pytest.raises(LocalProtocolError) as info:
        action(pair)
    assert info.value.error_code == ErrorCode.FRAME_SIZE_ERROR
    assert pair.connector.data_to_send() == b""
    assert pair.hub.data_to_send() == b""
    # nothing changed: the stream still takes its response, the next request gets the next id
    pair.hub.send_response(sid, 200)
    assert pair.connector.send_request("GET", "/") == sid + 2


# ---------------------------------------------------------------- argument validation


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("", "/", ()),
        ("GE T", "/", ()),
        ("M" * 33, "/", ()),
        ("GÉT", "/", ()),
        ("GET", "", ()),
        ("GET", "relative", ()),
        ("GET", "/a b", ()),
        ("GET", "/tab\t", ()),
        ("GET", "/del\x7f", ()),
        ("GET", "/" + "a" * 0xFFFF, ()),
        ("GET", "/", [("", "v")]),
        ("GET", "/", [("bad name", "v")]),
        ("GET", "/", [("colon:", "v")]),
        ("GET", "/", [("x", "a\r\nb")]),
        ("GET", "/", [("x", "nul\0")]),
        ("GET", "/", [("x", "v" * 0x10000)]),
        ("GET", "/", [("a", "b")] * 0x10000),
    ],
    ids=[
        "empty-method",
        "space-in-method",
        "long-method",
        "non-ascii-method",
        "empty-path",
        "relative-path",
        "space-in-path",
        "tab-in-path",
        "del-in-path",
        "path-over-64k",
        "empty-header-name",
        "space-in-header-name",
        "colon-in-header-name",
        "crlf-in-header-value",
        "nul-in-header-value",
        "header-value-over-64k",
        "too-many-headers",
    ],
)
def test_invalid_requests_are_refused_locally(method, path, headers):
    pair = ConnectionPair(hub_limits=Limits(max_frame_size=1 << 20))
    with pytest.raises(LocalProtocolError):
        pair.connector.send_request(method, path, headers)
    assert pair.connector.data_to_send() == b""
    assert pair.connector.open_streams == ()


def test_non_ascii_path_is_refused_not_mangled():
    """A path the wire cannot carry must be refused, not silently rewritten ("/café" became "/caf?")."""
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError):
        pair.connector.send_request("GET", "/caf\u00e9")
    assert pair.connector.data_to_send() == b""


def test_header_value_outside_latin1_is_a_local_protocol_error():
    """Every send_* method either queues bytes or raises LocalProtocolError (Connection docstring)."""
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError):
        pair.connector.send_request("GET", "/", [("x-price", "10 \u20ac")])
    assert pair.connector.data_to_send() == b""


def test_header_names_are_lowercased_and_bytes_or_str_accepted():
    pair = ConnectionPair()
    pair.connector.send_request("GET", "/", [("X-Str", "v1"), (b"X-Bytes", b"v\xff"), ("x-mixed", b"v3")])
    (req,) = pair.deliver(pair.connector)
    assert req.headers == ((b"x-str", b"v1"), (b"x-bytes", b"v\xff"), (b"x-mixed", b"v3"))


def test_repeated_headers_keep_their_order():
    pair = ConnectionPair()
    headers = [("set-cookie", "a=1"), ("x", ""), ("Set-Cookie", "b=2"), ("x-latin", "caf\u00e9")]
    pair.connector.send_request("GET", "/?q=1&r=%20", headers)
    (req,) = pair.deliver(pair.connector)
    assert req.path == "/?q=1&r=%20"
    assert req.headers == ((b"set-cookie", b"a=1"), (b"x", b""), (b"set-cookie", b"b=2"), (b"x-latin", b"caf\xe9"))


@pytest.mark.parametrize("status", [0, 99, 1000, -200])
def test_invalid_status_is_refused_locally(status):
    pair = ConnectionPair()
    sid = open_stream(pair)
    with pytest.raises(LocalProtocolError):
        pair.hub.send_response(sid, status)
    assert pair.hub.data_to_send() == b""
    pair.hub.send_response(sid, 999)  # the stream is untouched; 100..999 are valid


# ---------------------------------------------------------------- malformed HEADERS from the peer

BAD_REQUEST_PAYLOADS = {
    "response-kind-opening-a-stream": (response_payload(200), PE),
    "empty": (b"", ErrorCode.FRAME_SIZE_ERROR),
    "bad-method": (request_payload(b"GE T", b"/"), PE),
    "empty-method": (request_payload(b"", b"/"), PE),
    "bad-path": (request_payload(b"GET", b"nope"), PE),
    "bad-header-name": (request_payload(b"GET", b"/", ((b"a b", b"v"),)), PE),
    "cr-in-header-value": (request_payload(b"GET", b"/", ((b"x", b"a\rb"),)), PE),
    "uppercase-header-name": (request_payload(b"GET", b"/", ((b"X-Trace", b"1"),)), PE),
    "lowercase-method-is-fine-but-space-in-path-is-not": (request_payload(b"get", b"/a b"), PE),
    "trailing-bytes": (request_payload(b"GET", b"/") + b"!", ErrorCode.FRAME_SIZE_ERROR),
    "truncated-headers": (request_payload(b"GET", b"/", ((b"x", b"v"),))[:-1], ErrorCode.FRAME_SIZE_ERROR),
}
# cut at every byte of the header block: in its count, a length, a name, a value
_FULL = request_payload(b"GET", b"/", ((b"name", b"value"), (b"x", b"")))
_BLOCK_START = len(request_payload(b"GET", b"/")) - 2
BAD_REQUEST_PAYLOADS.update(
    {f"header-block-cut-at-{n}": (_FULL[:n], ErrorCode.FRAME_SIZE_ERROR) for n in range(_BLOCK_START, len(_FULL))}
)


@pytest.mark.parametrize(("payload", "code"), BAD_REQUEST_PAYLOADS.values(), ids=BAD_REQUEST_PAYLOADS.keys())
def test_malformed_request_headers(payload, code):
    pair = ConnectionPair()
    assert_remote_error(pair.hub, raw_headers(1, payload), code)


BAD_RESPONSE_PAYLOADS = {
    "request-kind-answering": (request_payload(b"GET", b"/"), PE),
    "status-99": (response_payload(99), PE),
    "status-1000": (response_payload(1000), PE),
    "truncated": (b"\x01\x00", ErrorCode.FRAME_SIZE_ERROR),
    "bad-header-value": (response_payload(200, ((b"x", b"\0"),)), PE),
}


@pytest.mark.parametrize(("payload", "code"), BAD_RESPONSE_PAYLOADS.values(), ids=BAD_RESPONSE_PAYLOADS.keys())
def test_malformed_response_headers(payload, code):
    pair = ConnectionPair()
    sid = open_stream(pair)
    assert_remote_error(pair.connector, raw_headers(sid, payload), code)


def test_well_formed_raw_request_is_accepted():
    # the builders used by the tables above produce valid frames when given valid fields
    pair = ConnectionPair()
    frame = raw_headers(1, request_payload(b"GET", b"/p", ((b"x", b"v"),)), end_stream=True)
    assert pair.hub.receive_data(frame) == [RequestReceived(1, "GET", "/p", ((b"x", b"v"),), True)]
    assert encode_frame(FrameType.HEADERS, 1, 1, request_payload(b"GET", b"/p", ((b"x", b"v"),))) == frame
    pair.hub.send_response(1, 200, [("x", "v")])
    (resp,) = frames_of(pair.hub.data_to_send())
    assert resp.payload == response_payload(200, ((b"x", b"v"),))
