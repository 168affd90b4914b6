"""Flow control: send windows, receive windows, credit returned by acknowledgement and by resets."""

from __future__ import annotations

import struct

import pytest

from radical_edge_proto import (
    CREDIT_DIVISOR,
    Data,
    ErrorCode,
    FrameType,
    Limits,
    LocalProtocolError,
    StreamReset,
    WindowUpdated,
)
from radical_edge_proto._frames import MAX_WINDOW

from .helpers import ConnectionPair
from .wire_helpers import assert_remote_error, frames_of, open_stream, raw_data, raw_window_update

FCE = ErrorCode.FLOW_CONTROL_ERROR


def updates(data: bytes) -> list[tuple[int, int]]:
    """(stream id, increment) of every frame in ``data``, which must all be WINDOW_UPDATEs."""
    out = []
    for frame in frames_of(data):
        assert frame.type == FrameType.WINDOW_UPDATE
        out.append((frame.stream_id, struct.unpack("!I", frame.payload)[0]))
    return out


# ---------------------------------------------------------------- sending


def test_sending_beyond_the_stream_window():
    pair = ConnectionPair(hub_limits=Limits(initial_window_size=100))
    sid = open_stream(pair)
    assert pair.connector.send_window(sid) == 100
    with pytest.raises(LocalProtocolError) as info:
        pair.connector.send_data(sid, b"x" * 101)
    assert info.value.error_code == FCE
    assert pair.connector.data_to_send() == b""
    assert pair.connector.send_window(sid) == 100
    assert pair.connector.send_window(0) == Limits().connection_window_size
    # the failed call changed nothing: the whole window can still be used, and not a byte more
    pair.connector.send_data(sid, b"x" * 100)
    assert pair.connector.send_window(sid) == 0
    pair.connector.send_data(sid, b"")  # an empty frame needs no credit
    with pytest.raises(LocalProtocolError):
        pair.connector.send_data(sid, b"x", end_stream=True)
    pair.connector.end_stream(sid)  # the failed end_stream did not close the stream
    events = pair.deliver(pair.connector)
    assert [len(e.data) for e in events] == [100, 0, 0]
    assert events[-1].end_stream


def test_sending_beyond_the_connection_window():
    pair = ConnectionPair(hub_limits=Limits(connection_window_size=100, initial_window_size=1000))
    first = open_stream(pair)
    second = open_stream(pair)
    assert pair.connector.send_window(first) == 100  # the stream window is capped by the connection's
    pair.connector.send_data(first, b"a" * 60)
    assert pair.connector.send_window(0) == 40
    assert pair.connector.send_window(second) == 40
    pair.connector.data_to_send()
    with pytest.raises(LocalProtocolError) as info:
        pair.connector.send_data(second, b"b" * 41)
    assert info.value.error_code == FCE
    assert pair.connector.data_to_send() == b""
    assert pair.connector.send_window(0) == 40
    pair.connector.send_data(second, b"b" * 40)
    assert pair.connector.send_window(0) == 0


def test_send_window_of_streams_not_open_for_sending_is_zero():
    pair = ConnectionPair()
    assert pair.connector.send_window(1) == 0  # never opened
    sid = pair.connector.send_request("GET", "/", end_stream=True)
    assert pair.connector.send_window(sid) == 0  # our half is closed
    pair.deliver(pair.connector)
    assert pair.hub.send_window(sid) == 0  # no response headers yet
    pair.hub.send_response(sid, 200)
    assert pair.hub.send_window(sid) == Limits().initial_window_size


# ---------------------------------------------------------------- receiving


def test_peer_exceeding_the_stream_window():
    pair = ConnectionPair(hub_limits=Limits(initial_window_size=100))
    sid = open_stream(pair)
    (event,) = pair.hub.receive_data(raw_data(sid, b"a" * 60))
    assert event == Data(sid, b"a" * 60, False)
    assert pair.hub.receive_window(sid) == 40
    assert_remote_error(pair.hub, raw_data(sid, b"b" * 41), FCE)


def test_peer_using_exactly_the_stream_window_is_fine():
    pair = ConnectionPair(hub_limits=Limits(initial_window_size=100))
    sid = open_stream(pair)
    events = pair.hub.receive_data(raw_data(sid, b"a" * 60) + raw_data(sid, b"b" * 40))
    assert [len(e.data) for e in events] == [60, 40]
    assert pair.hub.receive_window(sid) == 0


def test_peer_exceeding_the_connection_window():
    pair = ConnectionPair(hub_limits=Limits(connection_window_size=100, initial_window_size=1000))
    first = open_stream(pair)
    second = open_stream(pair)
    pair.hub.receive_data(raw_data(first, b"a" * 60))
    assert pair.hub.receive_window(0) == 40
    assert_remote_error(pair.hub, raw_data(second, b"b" * 41), FCE)


def test_connection_window_is_checked_before_the_stream_id():
    """protocol.md 8.5: DATA beyond the connection window is FLOW_CONTROL_ERROR whatever its stream."""
    pair = ConnectionPair(hub_limits=Limits(connection_window_size=100))
    assert_remote_error(pair.hub, raw_data(99, b"x" * 101), FCE)


def test_data_on_a_reset_stream_still_counts_against_the_connection_window():
    pair = ConnectionPair(hub_limits=Limits(connection_window_size=100, initial_window_size=1000))
    sid = open_stream(pair)
    pair.hub.reset_stream(sid)
    assert_remote_error(pair.hub, raw_data(sid, b"x" * 101), FCE)


# ---------------------------------------------------------------- credit


def test_acknowledged_data_returns_credit_after_a_quarter_of_the_window():
    stream_window, conn_window = 1000, 4000
    pair = ConnectionPair(hub_limits=Limits(initial_window_size=stream_window, connection_window_size=conn_window))
    stream_step = stream_window // CREDIT_DIVISOR
    conn_step = conn_window // CREDIT_DIVISOR
    sid = open_stream(pair)

    pair.connector.send_data(sid, b"x" * (stream_step - 1))
    pair.deliver(pair.connector)
    pair.hub.acknowledge_received_data(sid, stream_step - 1)
    assert pair.hub.data_to_send() == b""  # below the threshold: nothing yet
    assert pair.hub.receive_window(sid) == stream_window - stream_step + 1

    pair.connector.send_data(sid, b"x")
    pair.deliver(pair.connector)
    pair.hub.acknowledge_received_data(sid, 1)
    wire = pair.hub.data_to_send()
    assert updates(wire) == [(sid, stream_step)]
    assert pair.hub.receive_window(sid) == stream_window
    assert pair.connector.receive_data(wire) == [WindowUpdated(sid, stream_step)]
    assert pair.connector.send_window(sid) == stream_window

    # keep going until a quarter of the connection window was consumed
    sent = stream_step
    while sent < conn_step:
        pair.connector.send_data(sid, b"y" * stream_step)
        pair.deliver(pair.connector)
        pair.hub.acknowledge_received_data(sid, stream_step)
        sent += stream_step
        expected = [(sid, stream_step)] + ([(0, conn_step)] if sent == conn_step else [])
        assert updates(pair.hub.data_to_send()) == expected
    assert pair.hub.receive_window(0) == conn_window


def test_acknowledgement_in_pieces_adds_up():
    pair = ConnectionPair(hub_limits=Limits(initial_window_size=400, connection_window_size=400))
    sid = open_stream(pair)
    pair.connector.send_data(sid, b"z" * 100)
    pair.deliver(pair.connector)
    for _ in range(4):
        pair.hub.acknowledge_received_data(sid, 25)
    assert updates(pair.hub.data_to_send()) == [(sid, 100), (0, 100)]


def test_no_stream_credit_once_the_peer_finished_sending():
    pair = ConnectionPair(hub_limits=Limits(initial_window_size=400, connection_window_size=1000))
    sid = open_stream(pair)
    pair.connector.send_data(sid, b"z" * 300, end_stream=True)
    pair.deliver(pair.connector)
    pair.hub.acknowledge_received_data(sid, 300)
    # no WINDOW_UPDATE for a stream the peer can no longer send on; the connection's is due
    assert updates(pair.hub.data_to_send()) == [(0, 300)]


def test_acknowledging_more_than_received_is_a_local_error():
    pair = ConnectionPair()
    sid = open_stream(pair)
    pair.connector.send_data(sid, b"abc")
    pair.deliver(pair.connector)
    for n in (4, -1):
        with pytest.raises(LocalProtocolError):
            pair.hub.acknowledge_received_data(sid, n)
    pair.hub.acknowledge_received_data(sid, 3)  # the failures changed nothing
    with pytest.raises(LocalProtocolError):
        pair.hub.acknowledge_received_data(sid, 1)


def test_acknowledging_after_the_connection_ended_is_harmless():
    pair = ConnectionPair()
    sid = open_stream(pair)
    pair.connector.send_data(sid, b"abc")
    pair.deliver(pair.connector)
    pair.hub.connection_lost()
    pair.hub.acknowledge_received_data(sid, 3)
    assert pair.hub.data_to_send() == b""


@pytest.mark.parametrize("by", ["this side", "the peer"])
def test_reset_returns_unacknowledged_connection_credit(by):
    pair = ConnectionPair(hub_limits=Limits(connection_window_size=400, initial_window_size=400))
    sid = open_stream(pair)
    pair.connector.send_data(sid, b"q" * 150)
    pair.deliver(pair.connector)
    pair.hub.acknowledge_received_data(sid, 50)  # below the threshold of 100: held back
    assert pair.hub.data_to_send() == b""
    assert pair.connector.send_window(0) == 250
    if by == "this side":
        pair.hub.reset_stream(sid)
        events = pair.deliver(pair.hub)
        assert events == [StreamReset(sid, ErrorCode.CANCEL, by_peer=True), WindowUpdated(0, 150)]
    else:
        pair.connector.reset_stream(sid)
        assert pair.deliver(pair.connector) == [StreamReset(sid, ErrorCode.CANCEL, by_peer=True)]
        assert pair.deliver(pair.hub) == [WindowUpdated(0, 150)]
    assert pair.hub.receive_window(0) == 400
    assert pair.connector.send_window(0) == 400
    assert pair.hub.receive_window(sid) == 0  # the stream is gone


def test_a_long_lived_tunnel_neither_leaks_streams_nor_runs_out_of_credit():
    limits = Limits(initial_window_size=500, connection_window_size=1000)
    pair = ConnectionPair(limits, limits)
    body = b"b" * 100
    for i in range(60):  # 6000 bytes each way through 1000-byte connection windows
        sid = pair.connector.send_request("POST", "/echo")
        pair.connector.send_data(sid, body, end_stream=True)
        _req, data = pair.deliver(pair.connector)
        pair.hub.acknowledge_received_data(sid, len(data.data))
        pair.hub.send_response(sid, 200)
        pair.hub.send_data(sid, body, end_stream=True)
        if i % 2:
            pair.hub.reset_stream(sid)  # a no-op: the hub's side of the stream is finished
        for event in pair.deliver(pair.hub):
            if isinstance(event, Data):
                pair.connector.acknowledge_received_data(sid, len(event.data))
        pair.deliver(pair.connector)  # WINDOW_UPDATEs
        assert pair.connector._streams == pair.hub._streams == {}
        assert pair.connector.open_streams == pair.hub.open_streams == ()
    assert pair.connector.send_window(0) > 0
    assert pair.hub.send_window(0) > 0


# ---------------------------------------------------------------- WINDOW_UPDATE from the peer


def test_window_update_raises_the_send_window():
    pair = ConnectionPair(hub_limits=Limits(initial_window_size=100, connection_window_size=100))
    sid = open_stream(pair)
    pair.connector.send_data(sid, b"x" * 100)
    assert pair.connector.send_window(sid) == 0
    assert pair.connector.receive_data(raw_window_update(sid, 10)) == [WindowUpdated(sid, 10)]
    assert pair.connector.send_window(sid) == 0  # the connection window is still empty
    assert pair.connector.receive_data(raw_window_update(0, 30)) == [WindowUpdated(0, 30)]
    assert pair.connector.send_window(sid) == 10
    assert pair.connector.send_window(0) == 30


def test_window_may_grow_to_exactly_the_maximum():
    pair = ConnectionPair()
    sid = open_stream(pair)
    conn_delta = MAX_WINDOW - Limits().connection_window_size
    stream_delta = MAX_WINDOW - Limits().initial_window_size
    assert pair.connector.receive_data(raw_window_update(0, conn_delta) + raw_window_update(sid, stream_delta)) == [
        WindowUpdated(0, conn_delta),
        WindowUpdated(sid, stream_delta),
    ]
    assert pair.connector.send_window(sid) == MAX_WINDOW


@pytest.mark.parametrize("stream", [0, 1], ids=["connection", "stream"])
def test_window_overflow_is_a_flow_control_error(stream):
    pair = ConnectionPair()
    open_stream(pair)
    assert_remote_error(pair.connector, raw_window_update(stream, MAX_WINDOW), FCE)


@pytest.mark.parametrize("stream", [0, 1], ids=["connection", "stream"])
@pytest.mark.parametrize("delta", [0, MAX_WINDOW + 1], ids=["zero", "too-big"])
def test_window_increment_out_of_range(stream, delta):
    pair = ConnectionPair()
    open_stream(pair)
    assert_remote_error(pair.connector, raw_window_update(stream, delta), ErrorCode.PROTOCOL_ERROR)


def test_window_update_on_a_stream_whose_sending_half_is_closed_is_accepted():
    pair = ConnectionPair()
    sid = pair.connector.send_request("GET", "/", end_stream=True)
    pair.deliver(pair.connector)
    assert pair.connector.receive_data(raw_window_update(sid, 5)) == [WindowUpdated(sid, 5)]
    assert pair.connector.send_window(sid) == 0  # nothing can be sent on it anyway


def test_window_update_for_a_forgotten_stream_is_ignored():
    pair = ConnectionPair()
    sid = open_stream(pair, end_stream=True)
    pair.hub.send_response(sid, 200, end_stream=True)
    pair.deliver(pair.hub)
    assert pair.connector.receive_data(raw_window_update(sid, 5)) == []
    assert pair.hub.receive_data(raw_window_update(sid, 5)) == []


@pytest.mark.parametrize("payload", [b"\x00\x00\x01", b"\x00\x00\x00\x01\x00"], ids=["short", "long"])
def test_window_update_payload_must_be_four_bytes(payload):
    pair = ConnectionPair()
    frame = struct.pack("!IBBI", len(payload), FrameType.WINDOW_UPDATE, 0, 0) + payload
    assert_remote_error(pair.connector, frame, ErrorCode.FRAME_SIZE_ERROR)
