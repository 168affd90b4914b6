"""HELLO / WELCOME / REJECT: what opens a connection, and everything that may not happen before."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

import pytest

from radical_edge_proto import (
    MIN_FRAME_SIZE,
    PROTOCOL_VERSION,
    Connection,
    ConnectionClosed,
    ConnState,
    ErrorCode,
    FrameType,
    Hello,
    Limits,
    LocalProtocolError,
    PeerRole,
    Side,
    Subscription,
    Welcome,
    encode_frame,
)

from .helpers import ConnectionPair
from .wire_helpers import (
    assert_remote_error,
    frames_of,
    raw_data,
    raw_goaway,
    raw_headers,
    raw_reset,
    raw_window_update,
    request_payload,
    response_payload,
)

GOOD_LIMITS = Limits().to_json()


def hello_frame(body: dict | bytes, version: int = PROTOCOL_VERSION) -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return encode_frame(FrameType.HELLO, 0, 0, struct.pack("!H", version) + raw)


def welcome_frame(body: dict | bytes, version: int = PROTOCOL_VERSION) -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return encode_frame(FrameType.WELCOME, 0, 0, struct.pack("!H", version) + raw)


def good_hello(**changes) -> dict:
    body = {
        "role": "edge",
        "name": "e1",
        "credential": "c",
        "resume_token": None,
        "manifest": {},
        "limits": dict(GOOD_LIMITS),
    }
    body.update(changes)
    return body


def good_welcome(**changes) -> dict:
    body = {"limits": dict(GOOD_LIMITS), "heartbeat_interval": 10, "resume_token": "tok"}
    body.update(changes)
    return body


def hello_sent() -> Connection:
    conn = Connection(Side.CONNECTOR)
    conn.send_hello(role="edge", name="e1")
    conn.data_to_send()
    return conn


# ---------------------------------------------------------------- the happy path


def test_hello_and_welcome_fields_arrive_intact():
    c_limits = Limits(max_frame_size=MIN_FRAME_SIZE, max_concurrent_streams=2, initial_window_size=10)
    h_limits = Limits(max_frame_size=1 << 20, max_concurrent_streams=1000, connection_window_size=1 << 30)
    pair = ConnectionPair(c_limits, h_limits, handshake=False)
    assert pair.connector.state is ConnState.IDLE
    assert pair.hub.state is ConnState.AWAIT_HELLO
    assert pair.connector.max_outbound_frame_size == MIN_FRAME_SIZE  # nothing known about the peer yet

    pair.connector.send_hello(role="client", name="sdk", manifest={"sysinfo": {"v": [1, 2]}})
    assert pair.connector.state is ConnState.HELLO_SENT
    (hello,) = pair.deliver(pair.connector)
    assert hello == Hello(PROTOCOL_VERSION, PeerRole.CLIENT, "sdk", "", None, {"sysinfo": {"v": [1, 2]}}, c_limits)
    assert pair.hub.state is ConnState.HELLO_RECEIVED
    assert pair.hub.peer_limits == c_limits
    assert pair.hub.version == PROTOCOL_VERSION

    pair.hub.accept(heartbeat_interval=2.5, resume_token="resume-me")
    assert pair.hub.state is ConnState.OPEN
    assert pair.hub.heartbeat_interval == 2.5
    (welcome,) = pair.deliver(pair.hub)
    assert welcome == Welcome(PROTOCOL_VERSION, h_limits, 2.5, "resume-me")
    assert pair.connector.state is ConnState.OPEN
    assert pair.connector.peer_limits == h_limits
    assert pair.connector.heartbeat_interval == 2.5
    assert pair.connector.version == PROTOCOL_VERSION
    # each side now sends what the other accepts, and starts with the other's connection window
    assert pair.connector.max_outbound_frame_size == 1 << 20
    assert pair.hub.max_outbound_frame_size == MIN_FRAME_SIZE
    assert pair.connector.send_window() == 1 << 30
    assert pair.hub.send_window() == c_limits.connection_window_size


def test_hello_resume_token_and_credential_are_carried():
    pair = ConnectionPair(handshake=False)
    pair.connector.send_hello(role=PeerRole.EDGE, name="edge-9", credential="s3cret", resume_token="old-session")
    (hello,) = pair.deliver(pair.connector)
    assert (hello.name, hello.credential, hello.resume_token, hello.manifest) == (
        "edge-9",
        "s3cret",
        "old-session",
        {},
    )


def test_hub_rejecting_a_bad_credential_closes_the_connector():
    pair = ConnectionPair(handshake=False)
    pair.connector.send_hello(role="edge", name="e", credential="wrong")
    (hello,) = pair.deliver(pair.connector)
    assert hello.credential == "wrong"
    pair.hub.reject(ErrorCode.UNAUTHORIZED, "bad credential")
    assert pair.hub.closed
    events = pair.deliver(pair.hub)
    assert events == [ConnectionClosed(ErrorCode.UNAUTHORIZED, "bad credential", by_peer=True)]
    assert pair.connector.state is ConnState.CLOSED
    assert pair.connector.next_timer() is None
    with pytest.raises(LocalProtocolError):
        pair.connector.send_request("GET", "/")


def test_reject_reason_is_clipped_to_fit_a_minimum_frame():
    pair = ConnectionPair(Limits(max_frame_size=MIN_FRAME_SIZE), handshake=False)
    pair.connector.send_hello(role="edge", name="e")
    pair.deliver(pair.connector)
    pair.hub.reject(ErrorCode.NAME_CONFLICT, "é" * MIN_FRAME_SIZE)  # 2 bytes per character: twice too long
    (event,) = pair.deliver(pair.hub)
    assert event.error_code == ErrorCode.NAME_CONFLICT
    assert event.reason == "é" * ((MIN_FRAME_SIZE - 2) // 2)


def test_reject_with_an_unknown_error_code_keeps_the_number():
    conn = hello_sent()
    events = conn.receive_data(encode_frame(FrameType.REJECT, 0, 0, struct.pack("!H", 999) + b"why"))
    assert events == [ConnectionClosed(999, "why", by_peer=True)]
    assert conn.closed


# ---------------------------------------------------------------- versions


def test_unsupported_hello_version_is_rejected_automatically():
    hub = Connection(Side.HUB)
    events = hub.receive_data(encode_frame(FrameType.HELLO, 0, 0, struct.pack("!H", 99) + b"garbage-not-json"))
    (closed,) = events
    assert closed.error_code == ErrorCode.UNSUPPORTED_VERSION
    assert not closed.by_peer
    assert "99" in closed.reason
    assert str(PROTOCOL_VERSION) in closed.reason
    assert hub.state is ConnState.CLOSED
    (reject,) = frames_of(hub.data_to_send())
    assert reject.type == FrameType.REJECT
    assert reject.payload == struct.pack("!H", ErrorCode.UNSUPPORTED_VERSION) + closed.reason.encode()
    # the connector learns why
    connector = hello_sent()
    assert connector.receive_data(encode_frame(FrameType.REJECT, 0, 0, reject.payload)) == [
        ConnectionClosed(ErrorCode.UNSUPPORTED_VERSION, closed.reason, by_peer=True)
    ]


def test_connector_speaking_only_a_newer_version_is_rejected():
    connector = Connection(Side.CONNECTOR, versions=(2,))
    hub = Connection(Side.HUB, versions=(1,))
    connector.send_hello(role="edge", name="e")
    (closed,) = hub.receive_data(connector.data_to_send())
    assert closed.error_code == ErrorCode.UNSUPPORTED_VERSION
    (event,) = connector.receive_data(hub.data_to_send())
    assert event == ConnectionClosed(ErrorCode.UNSUPPORTED_VERSION, closed.reason, by_peer=True)
    assert "[1]" in event.reason


def test_hub_answers_with_the_version_the_connector_offered():
    connector = Connection(Side.CONNECTOR, versions=(1,))
    hub = Connection(Side.HUB, versions=(1, 2))
    connector.send_hello(role="edge", name="e")
    (hello,) = hub.receive_data(connector.data_to_send())
    assert hello.version == 1
    hub.accept(heartbeat_interval=1, resume_token="t")
    (welcome,) = connector.receive_data(hub.data_to_send())
    assert welcome.version == 1
    assert connector.version == hub.version == 1


def test_welcome_with_a_version_the_connector_does_not_speak():
    conn = hello_sent()
    assert_remote_error(
        conn, welcome_frame(good_welcome(), version=2), ErrorCode.UNSUPPORTED_VERSION, goodbye_type=None
    )


# ---------------------------------------------------------------- nothing before WELCOME

LOCAL_ACTIONS: dict[str, Callable[[Connection], object]] = {
    "send_request": lambda c: c.send_request("GET", "/"),
    "send_response": lambda c: c.send_response(1, 200),
    "send_data": lambda c: c.send_data(1, b"x"),
    "end_stream": lambda c: c.end_stream(1),
    "reset_stream": lambda c: c.reset_stream(1),
    "ping": lambda c: c.ping(b"p"),
    "send_goaway": lambda c: c.send_goaway(),
    "send_event": lambda c: c.send_event("e", "p", "t", 1, b""),
    "subscribe": lambda c: c.subscribe(1),
    "unsubscribe": lambda c: c.unsubscribe(1),
    "send_manifest": lambda c: c.send_manifest({}),
}


def _idle_connector() -> Connection:
    return Connection(Side.CONNECTOR)


def _hub_awaiting_hello() -> Connection:
    return Connection(Side.HUB)


def _hub_with_hello() -> Connection:
    pair = ConnectionPair(handshake=False)
    pair.connector.send_hello(role="edge", name="e")
    pair.deliver(pair.connector)
    return pair.hub


PRE_OPEN = {
    "connector-idle": _idle_connector,
    "connector-hello-sent": hello_sent,
    "hub-await-hello": _hub_awaiting_hello,
    "hub-hello-received": _hub_with_hello,
}


@pytest.mark.parametrize("action", LOCAL_ACTIONS, ids=str)
@pytest.mark.parametrize("make", PRE_OPEN.values(), ids=PRE_OPEN.keys())
def test_nothing_may_be_sent_before_the_connection_is_open(make, action):
    conn = make()
    state = conn.state
    with pytest.raises(LocalProtocolError):
        LOCAL_ACTIONS[action](conn)
    assert conn.data_to_send() == b""
    assert conn.state is state
    assert conn.open_streams == ()


def test_connector_may_not_send_hello_twice():
    conn = hello_sent()
    with pytest.raises(LocalProtocolError):
        conn.send_hello(role="edge", name="again")
    assert conn.data_to_send() == b""


def test_hub_may_not_accept_or_reject_without_a_hello():
    hub = Connection(Side.HUB)
    with pytest.raises(LocalProtocolError):
        hub.accept(heartbeat_interval=1, resume_token="t")
    assert hub.state is ConnState.AWAIT_HELLO
    assert hub.data_to_send() == b""


def test_hub_may_not_accept_twice():
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError):
        pair.hub.accept(heartbeat_interval=1, resume_token="t")
    with pytest.raises(LocalProtocolError):
        pair.hub.reject(ErrorCode.UNAUTHORIZED, "too late")
    assert pair.hub.data_to_send() == b""


@pytest.mark.parametrize("interval", [0, -1.0, float("nan")])
def test_accept_needs_a_positive_heartbeat_interval(interval):
    hub = _hub_with_hello()
    with pytest.raises(LocalProtocolError):
        hub.accept(heartbeat_interval=interval, resume_token="t")
    assert hub.state is ConnState.HELLO_RECEIVED
    assert hub.data_to_send() == b""


def test_connector_may_not_accept_or_reject():
    conn = hello_sent()
    with pytest.raises(LocalProtocolError):
        conn.accept(heartbeat_interval=1, resume_token="t")
    with pytest.raises(LocalProtocolError):
        conn.reject(ErrorCode.UNAUTHORIZED, "no")
    assert conn.state is ConnState.HELLO_SENT


# frames an open peer could send, arriving before the handshake finished
EARLY_FRAMES = {
    "HEADERS-request-1": raw_headers(1, request_payload(b"GET", b"/")),
    "HEADERS-request-2": raw_headers(2, request_payload(b"GET", b"/")),
    "HEADERS-response-1": raw_headers(1, response_payload(200)),
    "DATA": raw_data(1, b"x"),
    "RESET": raw_reset(1),
    "WINDOW_UPDATE": raw_window_update(0, 10),
    "PING": encode_frame(FrameType.PING, 0, 0, b""),
    "PONG": encode_frame(FrameType.PONG, 0, 0, b""),
    "GOAWAY": raw_goaway(0),
    "EVENT": encode_frame(FrameType.EVENT, 0, 0, bytes(8) + bytes(6)),
}
HUB_EARLY_FRAMES = {
    **EARLY_FRAMES,
    "SUBSCRIBE": encode_frame(FrameType.SUBSCRIBE, 0, 0, bytes(12) + bytes(6)),
    "UNSUBSCRIBE": encode_frame(FrameType.UNSUBSCRIBE, 0, 0, bytes(4)),
    "MANIFEST": encode_frame(FrameType.MANIFEST, 0, 0, b"{}"),
}


@pytest.mark.parametrize("frame", HUB_EARLY_FRAMES.values(), ids=HUB_EARLY_FRAMES.keys())
@pytest.mark.parametrize("make", [_hub_awaiting_hello, _hub_with_hello], ids=["await-hello", "hello-received"])
def test_hub_refuses_frames_before_the_handshake(make, frame):
    hub = make()
    # refused with a REJECT carrying the error code
    assert_remote_error(hub, frame, ErrorCode.PROTOCOL_ERROR, goodbye_type=FrameType.REJECT)


@pytest.mark.parametrize("frame", EARLY_FRAMES.values(), ids=EARLY_FRAMES.keys())
def test_connector_refuses_frames_before_welcome(frame):
    assert_remote_error(hello_sent(), frame, ErrorCode.PROTOCOL_ERROR, goodbye_type=None)


def test_connector_refuses_a_welcome_it_did_not_ask_for():
    conn = Connection(Side.CONNECTOR)
    assert_remote_error(conn, welcome_frame(good_welcome()), ErrorCode.PROTOCOL_ERROR, goodbye_type=None)


def test_second_hello_before_accept_is_refused():
    hub = _hub_with_hello()
    other = Connection(Side.CONNECTOR)
    other.send_hello(role="edge", name="e")
    assert_remote_error(hub, other.data_to_send(), ErrorCode.PROTOCOL_ERROR, goodbye_type=FrameType.REJECT)


def test_second_hello_after_accept_is_refused():
    pair = ConnectionPair()
    other = Connection(Side.CONNECTOR)
    other.send_hello(role="edge", name="e")
    assert_remote_error(pair.hub, other.data_to_send(), ErrorCode.PROTOCOL_ERROR)


def test_second_welcome_is_refused():
    pair = ConnectionPair()
    assert_remote_error(pair.connector, welcome_frame(good_welcome()), ErrorCode.PROTOCOL_ERROR)


# ---------------------------------------------------------------- frames only the other side sends

WRONG_SIDE_TO_HUB = {
    "WELCOME": welcome_frame(good_welcome()),
    "REJECT": encode_frame(FrameType.REJECT, 0, 0, struct.pack("!H", 9)),
}
WRONG_SIDE_TO_CONNECTOR = {
    "HELLO": hello_frame(good_hello()),
    "SUBSCRIBE": encode_frame(FrameType.SUBSCRIBE, 0, 0, bytes(12) + bytes(6)),
    "UNSUBSCRIBE": encode_frame(FrameType.UNSUBSCRIBE, 0, 0, bytes(4)),
    "MANIFEST": encode_frame(FrameType.MANIFEST, 0, 0, b"{}"),
}


@pytest.mark.parametrize("frame", WRONG_SIDE_TO_HUB.values(), ids=WRONG_SIDE_TO_HUB.keys())
def test_hub_refuses_frames_only_a_hub_sends(frame):
    assert_remote_error(ConnectionPair().hub, frame, ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize("frame", WRONG_SIDE_TO_CONNECTOR.values(), ids=WRONG_SIDE_TO_CONNECTOR.keys())
def test_connector_refuses_frames_only_a_connector_sends(frame):
    assert_remote_error(ConnectionPair().connector, frame, ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "action",
    [
        lambda c: c.subscribe(1),
        lambda c: c.subscribe(1, Subscription(), resume_after=3),
        lambda c: c.unsubscribe(1),
        lambda c: c.send_manifest({"a": 1}),
        lambda c: c.send_hello(role="edge", name="hub"),
    ],
    ids=["subscribe", "subscribe-resume", "unsubscribe", "send_manifest", "send_hello"],
)
def test_hub_may_not_send_connector_frames(action):
    hub = ConnectionPair().hub
    with pytest.raises(LocalProtocolError):
        action(hub)
    assert hub.data_to_send() == b""
    assert hub.state is ConnState.OPEN


# ---------------------------------------------------------------- malformed HELLO / WELCOME


def _limits_with(**changes) -> dict:
    return {**GOOD_LIMITS, **changes}


def _limits_without(key: str) -> dict:
    return {k: v for k, v in GOOD_LIMITS.items() if k != key}


FS = ErrorCode.FRAME_SIZE_ERROR
PE = ErrorCode.PROTOCOL_ERROR
BAD_HELLOS = {
    "no-version": (encode_frame(FrameType.HELLO, 0, 0, b"\x00"), FS),
    "oversized": (struct.pack("!IBBI", Limits().max_frame_size + 1, FrameType.HELLO, 0, 0), FS),
    "nan-in-limits": (hello_frame(good_hello(limits=_limits_with(max_frame_size=float("nan")))), PE),
    "not-json": (hello_frame(b"{nope"), PE),
    "not-utf8": (hello_frame(b'{"role": "\xff"}'), PE),
    "json-array": (hello_frame(b"[1, 2]"), PE),
    "too-deep": (hello_frame(b"[" * 10_000 + b"]" * 10_000), PE),
    "unknown-role": (hello_frame(good_hello(role="admin")), PE),
    "no-role": (hello_frame({k: v for k, v in good_hello().items() if k != "role"}), PE),
    "name-not-string": (hello_frame(good_hello(name=5)), PE),
    "no-name": (hello_frame({k: v for k, v in good_hello().items() if k != "name"}), PE),
    "credential-not-string": (hello_frame(good_hello(credential=None)), PE),
    "resume-token-not-string": (hello_frame(good_hello(resume_token=5)), PE),
    "manifest-not-object": (hello_frame(good_hello(manifest=[1])), PE),
    "no-limits": (hello_frame({k: v for k, v in good_hello().items() if k != "limits"}), PE),
    "limits-not-object": (hello_frame(good_hello(limits=[1])), PE),
    "limit-missing": (hello_frame(good_hello(limits=_limits_without("initial_window_size"))), PE),
    "limit-bool": (hello_frame(good_hello(limits=_limits_with(max_concurrent_streams=True))), PE),
    "limit-float": (hello_frame(good_hello(limits=_limits_with(max_frame_size=65536.0))), PE),
    "limit-string": (hello_frame(good_hello(limits=_limits_with(connection_window_size="1"))), PE),
    "frame-size-too-small": (hello_frame(good_hello(limits=_limits_with(max_frame_size=MIN_FRAME_SIZE - 1))), PE),
    "frame-size-too-big": (hello_frame(good_hello(limits=_limits_with(max_frame_size=(16 << 20) + 1))), PE),
    "zero-streams": (hello_frame(good_hello(limits=_limits_with(max_concurrent_streams=0))), PE),
    "zero-window": (hello_frame(good_hello(limits=_limits_with(initial_window_size=0))), PE),
    "window-too-big": (hello_frame(good_hello(limits=_limits_with(connection_window_size=2**31))), PE),
}


@pytest.mark.parametrize(("frame", "code"), BAD_HELLOS.values(), ids=BAD_HELLOS.keys())
def test_malformed_hello_is_refused_with_a_reject(frame, code):
    hub = Connection(Side.HUB)
    assert_remote_error(hub, frame, code, goodbye_type=FrameType.REJECT)


def test_hello_with_a_valid_body_is_accepted_by_the_same_builder():
    # the table above only changes one field of this body: prove the body itself is fine
    hub = Connection(Side.HUB)
    (hello,) = hub.receive_data(hello_frame(good_hello()))
    assert hello.name == "e1"
    assert hello.limits == Limits()


BAD_WELCOMES = {
    "no-version": (encode_frame(FrameType.WELCOME, 0, 0, b"\x01"), FS),
    "not-json": (welcome_frame(b"nope"), PE),
    "json-string": (welcome_frame(b'"x"'), PE),
    "no-interval": (welcome_frame({k: v for k, v in good_welcome().items() if k != "heartbeat_interval"}), PE),
    "zero-interval": (welcome_frame(good_welcome(heartbeat_interval=0)), PE),
    "negative-interval": (welcome_frame(good_welcome(heartbeat_interval=-3.5)), PE),
    "bool-interval": (welcome_frame(good_welcome(heartbeat_interval=True)), PE),
    "string-interval": (welcome_frame(good_welcome(heartbeat_interval="10")), PE),
    "nan-interval": (welcome_frame(good_welcome(heartbeat_interval=float("nan"))), PE),
    "infinite-interval": (welcome_frame(good_welcome(heartbeat_interval=float("inf"))), PE),
    "no-resume-token": (welcome_frame({k: v for k, v in good_welcome().items() if k != "resume_token"}), PE),
    "no-limits": (welcome_frame({k: v for k, v in good_welcome().items() if k != "limits"}), PE),
    "bad-limits": (welcome_frame(good_welcome(limits=_limits_with(max_frame_size=1))), PE),
}


@pytest.mark.parametrize(("frame", "code"), BAD_WELCOMES.values(), ids=BAD_WELCOMES.keys())
def test_malformed_welcome_is_a_remote_protocol_error(frame, code):
    conn = hello_sent()
    assert_remote_error(conn, frame, code, goodbye_type=None)
    assert conn.peer_limits is None
    assert conn.next_timer() is None


def test_welcome_with_a_valid_body_is_accepted_by_the_same_builder():
    conn = hello_sent()
    (welcome,) = conn.receive_data(welcome_frame(good_welcome(heartbeat_interval=0.25)))
    assert welcome == Welcome(PROTOCOL_VERSION, Limits(), 0.25, "tok")


def test_connector_failing_the_handshake_sends_nothing():
    """protocol.md 6.2 / 14.1: a connector before WELCOME has no frame for an error; it just closes."""
    pair = ConnectionPair(handshake=False)
    pair.connector.send_hello(role="edge", name="e")
    pair.deliver(pair.connector)
    assert_remote_error(pair.connector, welcome_frame(good_welcome(heartbeat_interval=0)), PE, goodbye_type=None)


def test_reject_after_welcome_is_a_protocol_error():
    pair = ConnectionPair()
    assert_remote_error(pair.connector, encode_frame(FrameType.REJECT, 0, 0, struct.pack("!H", 9)), PE)


def test_unknown_json_keys_are_ignored_and_optional_keys_default():
    hub = Connection(Side.HUB)
    body = good_hello(future_key={"x": 1}, limits={**GOOD_LIMITS, "max_header_list_size": 5})
    del body["resume_token"], body["manifest"]
    (hello,) = hub.receive_data(hello_frame(body))
    assert (hello.resume_token, hello.manifest, hello.limits) == (None, {}, Limits())
    conn = hello_sent()
    (welcome,) = conn.receive_data(welcome_frame(good_welcome(extra=[1, 2], heartbeat_interval=3)))
    assert welcome == Welcome(PROTOCOL_VERSION, Limits(), 3.0, "tok")


def test_bad_reject_payload():
    conn = hello_sent()
    assert_remote_error(conn, encode_frame(FrameType.REJECT, 0, 0, b"\x00"), FS, goodbye_type=None)
    conn = hello_sent()
    assert_remote_error(
        conn, encode_frame(FrameType.REJECT, 0, 0, struct.pack("!H", 9) + b"\xff\xfe"), PE, goodbye_type=None
    )


def test_send_hello_refuses_what_it_cannot_encode():
    conn = Connection(Side.CONNECTOR)
    with pytest.raises(LocalProtocolError):
        conn.send_hello(role="edge", name="e", manifest={"x": object()})
    with pytest.raises(LocalProtocolError) as info:
        conn.send_hello(role="edge", name="e", manifest={"x": "y" * MIN_FRAME_SIZE})
    assert info.value.error_code == ErrorCode.FRAME_SIZE_ERROR
    assert conn.state is ConnState.IDLE
    assert conn.data_to_send() == b""
    conn.send_hello(role="edge", name="e")  # nothing was changed by the failures
    assert conn.state is ConnState.HELLO_SENT


def test_send_hello_with_an_unknown_role_is_a_local_protocol_error():
    """Every send_* method either queues bytes or raises LocalProtocolError (Connection docstring)."""
    conn = Connection(Side.CONNECTOR)
    with pytest.raises(LocalProtocolError):
        conn.send_hello(role="admin", name="e")
    assert conn.state is ConnState.IDLE
    assert conn.data_to_send() == b""


def test_close_during_the_handshake():
    hub = _hub_with_hello()
    assert hub.close(ErrorCode.INTERNAL_ERROR, "shutting down") == []
    (reject,) = frames_of(hub.data_to_send())
    assert reject.type == FrameType.REJECT
    assert reject.payload == struct.pack("!H", ErrorCode.INTERNAL_ERROR) + b"shutting down"
    assert hub.closed
    assert hub.close() == []  # idempotent

    conn = hello_sent()
    assert conn.close() == []
    assert conn.closed
    assert conn.data_to_send() == b""  # a connector cannot REJECT, and the hub reads no GOAWAY before WELCOME
