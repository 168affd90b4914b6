"""The golden vectors and tables of docs/protocol.md, checked against the implementation.

Every ```vector block of the specification is checked both ways:

* encode: the same frame, produced through the public :class:`Connection` API,
  must be byte-for-byte the vector's hex;
* decode: the vector's bytes, fed to a receiving connection in the right state
  (whole, and one byte at a time), must produce the expected events.

The frame type, error code, state and constant tables of the document are
compared with the code as well, so the document and the code cannot drift apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from radical_edge_proto import (
    CREDIT_DIVISOR,
    HEADER_SIZE,
    HEARTBEAT_MISSES,
    HUB_BUSY_PING_INTERVALS,
    HUB_PING_INTERVALS,
    MAX_FRAME_SIZE,
    MIN_FRAME_SIZE,
    PROTOCOL_VERSION,
    Connection,
    ConnectionClosed,
    ConnState,
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
)
from radical_edge_proto._connection import _SENT_ONLY_BY
from radical_edge_proto._frames import FRAME_RULES, MAX_PING_PAYLOAD, MAX_STREAM_ID, MAX_WINDOW, StreamRule
from radical_edge_proto._state import CONN_TRANSITIONS, HALF_TRANSITIONS, ConnInput, HalfInput, HalfState

from .helpers import ConnectionPair

DOC = Path(__file__).parents[1] / "docs" / "protocol.md"
TEXT = DOC.read_text(encoding="utf-8")

# ---------------------------------------------------------------- reading the document


@dataclass(frozen=True)
class Vector:
    name: str
    fields: dict[str, str]

    @property
    def data(self) -> bytes:
        return bytes.fromhex("".join(self.fields["hex"].split()))

    @property
    def frame(self) -> str:
        return self.fields["frame"]


def _parse_vectors(text: str) -> dict[str, Vector]:
    vectors: dict[str, Vector] = {}
    for block in re.findall(r"^```vector\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if not line.strip():
                continue
            if line[0].isspace():  # continuation of the previous field
                assert key is not None, f"continuation line without a field: {line!r}"
                fields[key] += " " + line.strip()
                continue
            key, sep, value = line.partition(":")
            assert sep, f"not a 'key: value' line: {line!r}"
            key = key.strip()
            assert key not in fields, f"field {key!r} given twice"
            fields[key] = value.strip()
        assert {"name", "frame", "hex"} <= fields.keys(), f"vector block lacks name, frame or hex: {block!r}"
        name = fields["name"]
        assert name not in vectors, f"vector {name!r} defined twice"
        vectors[name] = Vector(name, fields)
    return vectors


def _table_after(marker: str) -> list[list[str]]:
    """The body rows of the markdown table that follows ``<!-- table: marker -->``."""
    start = TEXT.index(f"<!-- table: {marker} -->")
    rows: list[list[str]] = []
    for line in TEXT[start:].splitlines()[1:]:
        if not line.strip():
            if rows:
                break
            continue
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`").strip() for cell in line.strip().strip("|").split("|")])
    _header_row, rule, *body = rows
    assert set(rule[0]) <= set(":-"), f"no table after marker {marker!r}"
    return body


def _names(cell: str) -> list[str]:
    return [part.strip().strip("`") for part in cell.split(",")]


VECTORS = _parse_vectors(TEXT)

# ---------------------------------------------------------------- building frames through the API

HEARTBEAT = 10.0


def _send_hello(connector: Connection) -> None:
    connector.send_hello(role=PeerRole.EDGE, name="edge1", credential="secret", manifest={"sysinfo": {}})


def _accept(hub: Connection) -> None:
    hub.accept(heartbeat_interval=HEARTBEAT, resume_token="tok")


def _fresh_pair() -> ConnectionPair:
    return ConnectionPair(handshake=False)


def _hello_received() -> ConnectionPair:
    """Connector in HELLO_SENT, hub in HELLO_RECEIVED."""
    pair = _fresh_pair()
    _send_hello(pair.connector)
    pair.deliver(pair.connector)
    return pair


def _open_pair(hub_limits: Limits | None = None) -> ConnectionPair:
    """Both sides OPEN, nothing queued; default limits unless given."""
    pair = ConnectionPair(None, hub_limits, handshake=False)
    _send_hello(pair.connector)
    (hello,) = pair.deliver(pair.connector)
    assert isinstance(hello, Hello)
    _accept(pair.hub)
    (welcome,) = pair.deliver(pair.hub)
    assert isinstance(welcome, Welcome)
    return pair


def _post_stream(hub_limits: Limits | None = None) -> ConnectionPair:
    """The connector opened stream 1 with a POST (body to follow); the hub has the request."""
    pair = _open_pair(hub_limits)
    assert pair.connector.send_request("POST", "/edge1/psij/jobs", [("content-type", "application/json")]) == 1
    pair.deliver(pair.connector)
    return pair


def _get_stream() -> ConnectionPair:
    """The connector sent GET on stream 1 (request complete); the hub has the request."""
    pair = _open_pair()
    headers = [("accept", "application/json")]
    assert pair.connector.send_request("GET", "/edge1/sysinfo/homedir", headers, end_stream=True) == 1
    pair.deliver(pair.connector)
    return pair


def build_hello() -> bytes:
    pair = _fresh_pair()
    _send_hello(pair.connector)
    return pair.connector.data_to_send()


def build_welcome() -> bytes:
    pair = _hello_received()
    _accept(pair.hub)
    return pair.hub.data_to_send()


def build_welcome_idle() -> bytes:
    pair = _hello_received()
    pair.hub.accept(heartbeat_interval=HEARTBEAT, resume_token="tok", idle_heartbeat_interval=30.0)
    return pair.hub.data_to_send()


def build_reject() -> bytes:
    pair = _hello_received()
    pair.hub.reject(ErrorCode.UNAUTHORIZED, "bad credential")
    return pair.hub.data_to_send()


def build_headers_request_end_stream() -> bytes:
    pair = _open_pair()
    pair.connector.send_request("GET", "/edge1/sysinfo/homedir", [("accept", "application/json")], end_stream=True)
    return pair.connector.data_to_send()


def build_headers_request() -> bytes:
    pair = _open_pair()
    pair.connector.send_request("POST", "/edge1/psij/jobs", [("content-type", "application/json")])
    return pair.connector.data_to_send()


def build_headers_response() -> bytes:
    pair = _get_stream()
    pair.hub.send_response(1, 200, [("content-type", "application/json")])
    return pair.hub.data_to_send()


def build_data() -> bytes:
    pair = _post_stream()
    pair.connector.send_data(1, b"hello")
    return pair.connector.data_to_send()


def build_data_end_stream() -> bytes:
    pair = _post_stream()
    pair.connector.end_stream(1)
    return pair.connector.data_to_send()


def build_reset() -> bytes:
    pair = _post_stream()
    pair.connector.reset_stream(1, ErrorCode.CANCEL)
    return pair.connector.data_to_send()


def build_window_update_stream() -> bytes:
    # default limits: the stream credit threshold is 1 MiB / 4 = 262144, the connection's 4 MiB / 4
    pair = _post_stream()
    pair.connector.send_data(1, bytes(262144))
    events = pair.deliver(pair.connector)
    assert sum(len(e.data) for e in events if isinstance(e, Data)) == 262144
    pair.hub.acknowledge_received_data(1, 262144)
    return pair.hub.data_to_send()


def build_window_update_connection() -> bytes:
    # the hub's connection window is 65536: its threshold (16384) is reached before the stream's
    pair = _post_stream(Limits(connection_window_size=65536))
    pair.connector.send_data(1, bytes(16384))
    pair.deliver(pair.connector)
    pair.hub.acknowledge_received_data(1, 16384)
    return pair.hub.data_to_send()


def build_ping() -> bytes:
    pair = _open_pair()
    pair.connector.ping(b"heartbeat")
    return pair.connector.data_to_send()


def build_pong() -> bytes:
    pair = _open_pair()
    pair.connector.ping(b"heartbeat")
    pair.deliver(pair.connector)  # the hub answers by itself
    return pair.hub.data_to_send()


def build_goaway() -> bytes:
    pair = _get_stream()
    pair.hub.send_goaway(ErrorCode.NO_ERROR, "shutting down")
    return pair.hub.data_to_send()


def build_goaway_timeout() -> bytes:
    pair = _open_pair()
    assert pair.hub.next_timer() == 0.0
    assert pair.hub.handle_timer(0.0) == []
    (closed,) = pair.hub.handle_timer(HEARTBEAT_MISSES * HEARTBEAT)
    assert isinstance(closed, ConnectionClosed)
    return pair.hub.data_to_send()


def build_event() -> bytes:
    pair = _open_pair()
    pair.connector.subscribe(1)
    pair.deliver(pair.connector)
    assert pair.hub.send_event("edge1", "sysinfo", "load", 42, b'{"load1":0.5}')
    return pair.hub.data_to_send()


def build_subscribe() -> bytes:
    pair = _open_pair()
    pair.connector.subscribe(1)
    return pair.connector.data_to_send()


def build_subscribe_resume() -> bytes:
    pair = _open_pair()
    pair.connector.subscribe(7, Subscription(edge="edge*", plugin="psij", topic="job.*"), resume_after=41)
    return pair.connector.data_to_send()


def build_unsubscribe() -> bytes:
    pair = _open_pair()
    pair.connector.unsubscribe(7)
    return pair.connector.data_to_send()


MANIFEST = {"sysinfo": {"version": "1.0"}, "psij": {"version": "0.9"}}


def build_manifest() -> bytes:
    pair = _open_pair()
    pair.connector.send_manifest(MANIFEST)
    return pair.connector.data_to_send()


BUILDERS: dict[str, Callable[[], bytes]] = {
    "hello": build_hello,
    "welcome": build_welcome,
    "welcome-idle": build_welcome_idle,
    "reject": build_reject,
    "headers-request-end-stream": build_headers_request_end_stream,
    "headers-request": build_headers_request,
    "headers-response": build_headers_response,
    "data": build_data,
    "data-end-stream": build_data_end_stream,
    "reset": build_reset,
    "window-update-stream": build_window_update_stream,
    "window-update-connection": build_window_update_connection,
    "ping": build_ping,
    "pong": build_pong,
    "goaway": build_goaway,
    "goaway-timeout": build_goaway_timeout,
    "event": build_event,
    "subscribe": build_subscribe,
    "subscribe-resume": build_subscribe_resume,
    "unsubscribe": build_unsubscribe,
    "manifest": build_manifest,
}

# ---------------------------------------------------------------- feeding the vectors to a receiver

Feed = Callable[[Connection, bytes], list[Event]]


def _whole(conn: Connection, data: bytes) -> list[Event]:
    return conn.receive_data(data)


def _bytewise(conn: Connection, data: bytes) -> list[Event]:
    events: list[Event] = []
    for i in range(len(data)):
        events += conn.receive_data(data[i : i + 1])
    return events


def recv_hello(data: bytes, feed: Feed) -> None:
    hub = Connection(Side.HUB)
    assert feed(hub, data) == [
        Hello(
            version=1,
            role=PeerRole.EDGE,
            name="edge1",
            credential="secret",
            resume_token=None,
            manifest={"sysinfo": {}},
            limits=Limits(),
        )
    ]
    assert hub.state is ConnState.HELLO_RECEIVED
    assert hub.data_to_send() == b""


def recv_welcome(data: bytes, feed: Feed) -> None:
    connector = Connection(Side.CONNECTOR)
    _send_hello(connector)
    connector.data_to_send()
    assert feed(connector, data) == [Welcome(version=1, limits=Limits(), heartbeat_interval=10.0, resume_token="tok")]
    assert connector.state is ConnState.OPEN
    assert connector.heartbeat_interval == 10.0
    assert connector.send_window(0) == Limits().connection_window_size


def recv_welcome_idle(data: bytes, feed: Feed) -> None:
    connector = Connection(Side.CONNECTOR)
    _send_hello(connector)
    connector.data_to_send()
    (welcome,) = feed(connector, data)
    assert welcome == Welcome(1, Limits(), 10.0, "tok", idle_heartbeat_interval=30.0)
    assert (connector.heartbeat_interval, connector.idle_heartbeat_interval) == (10.0, 30.0)


def recv_reject(data: bytes, feed: Feed) -> None:
    connector = Connection(Side.CONNECTOR)
    _send_hello(connector)
    connector.data_to_send()
    assert feed(connector, data) == [ConnectionClosed(ErrorCode.UNAUTHORIZED, "bad credential", by_peer=True)]
    assert connector.closed
    assert connector.data_to_send() == b""


def recv_headers_request_end_stream(data: bytes, feed: Feed) -> None:
    pair = _open_pair()
    assert feed(pair.hub, data) == [
        RequestReceived(1, "GET", "/edge1/sysinfo/homedir", ((b"accept", b"application/json"),), end_stream=True)
    ]
    assert pair.hub.open_streams == (1,)


def recv_headers_request(data: bytes, feed: Feed) -> None:
    pair = _open_pair()
    assert feed(pair.hub, data) == [
        RequestReceived(1, "POST", "/edge1/psij/jobs", ((b"content-type", b"application/json"),), end_stream=False)
    ]


def recv_headers_response(data: bytes, feed: Feed) -> None:
    pair = _get_stream()
    assert feed(pair.connector, data) == [ResponseReceived(1, 200, ((b"content-type", b"application/json"),), False)]


def recv_data(data: bytes, feed: Feed) -> None:
    pair = _post_stream()
    assert feed(pair.hub, data) == [Data(1, b"hello", end_stream=False)]
    assert pair.hub.receive_window(1) == Limits().initial_window_size - 5
    assert pair.hub.receive_window(0) == Limits().connection_window_size - 5


def recv_data_end_stream(data: bytes, feed: Feed) -> None:
    pair = _post_stream()
    assert feed(pair.hub, data) == [Data(1, b"", end_stream=True)]
    assert pair.hub.open_streams == (1,)  # the hub's half is still open


def recv_reset(data: bytes, feed: Feed) -> None:
    pair = _post_stream()
    assert feed(pair.hub, data) == [StreamReset(1, ErrorCode.CANCEL, by_peer=True)]
    assert pair.hub.open_streams == ()
    assert pair.hub.data_to_send() == b""  # a RESET is not answered


def recv_window_update_stream(data: bytes, feed: Feed) -> None:
    pair = _post_stream()
    before = pair.connector.send_window(1)
    assert feed(pair.connector, data) == [WindowUpdated(1, 262144)]
    assert pair.connector.send_window(1) == before + 262144


def recv_window_update_connection(data: bytes, feed: Feed) -> None:
    pair = _open_pair()
    before = pair.connector.send_window(0)
    assert feed(pair.connector, data) == [WindowUpdated(0, 16384)]
    assert pair.connector.send_window(0) == before + 16384


def recv_ping(data: bytes, feed: Feed) -> None:
    pair = _open_pair()
    assert feed(pair.hub, data) == [PingReceived(b"heartbeat")]
    assert pair.hub.data_to_send() == VECTORS["pong"].data  # answered at once, with the same payload


def recv_pong(data: bytes, feed: Feed) -> None:
    pair = _open_pair()
    assert feed(pair.connector, data) == [PongReceived(b"heartbeat")]
    assert pair.connector.data_to_send() == b""


def recv_goaway(data: bytes, feed: Feed) -> None:
    pair = _get_stream()  # stream 1 reached the hub
    assert pair.connector.send_request("GET", "/edge1/sysinfo/load") == 3  # stream 3 did not
    assert feed(pair.connector, data) == [
        GoAway(1, ErrorCode.NO_ERROR, "shutting down"),
        StreamReset(3, ErrorCode.REFUSED_STREAM, by_peer=True),
    ]
    assert pair.connector.state is ConnState.CLOSING_REMOTE
    assert pair.connector.open_streams == (1,)


def recv_goaway_timeout(data: bytes, feed: Feed) -> None:
    pair = _get_stream()
    reason = "no traffic from the peer for 30.0 s"
    assert feed(pair.connector, data) == [
        GoAway(0, ErrorCode.TIMEOUT, reason),
        ConnectionClosed(ErrorCode.TIMEOUT, reason, by_peer=True),
        StreamReset(1, ErrorCode.TIMEOUT, by_peer=True),
    ]
    assert pair.connector.closed
    assert pair.connector.data_to_send() == b""


def recv_event(data: bytes, feed: Feed) -> None:
    pair = _open_pair()
    assert feed(pair.connector, data) == [Notification("edge1", "sysinfo", "load", 42, b'{"load1":0.5}')]


def recv_subscribe(data: bytes, feed: Feed) -> None:
    pair = _open_pair()
    assert feed(pair.hub, data) == [Subscribed(1, Subscription("*", "*", "*"), resume_after=None)]
    assert pair.hub.subscriptions == {1: Subscription()}


def recv_subscribe_resume(data: bytes, feed: Feed) -> None:
    pair = _open_pair()
    sub = Subscription(edge="edge*", plugin="psij", topic="job.*")
    assert feed(pair.hub, data) == [Subscribed(7, sub, resume_after=41)]
    assert pair.hub.subscriptions == {7: sub}


def recv_unsubscribe(data: bytes, feed: Feed) -> None:
    pair = _open_pair()
    pair.connector.subscribe(7)
    pair.deliver(pair.connector)
    assert feed(pair.hub, data) == [Unsubscribed(7)]
    assert pair.hub.subscriptions == {}


def recv_manifest(data: bytes, feed: Feed) -> None:
    pair = _open_pair()
    assert feed(pair.hub, data) == [ManifestUpdated(MANIFEST)]


RECEIVERS: dict[str, Callable[[bytes, Feed], None]] = {
    "hello": recv_hello,
    "welcome": recv_welcome,
    "welcome-idle": recv_welcome_idle,
    "reject": recv_reject,
    "headers-request-end-stream": recv_headers_request_end_stream,
    "headers-request": recv_headers_request,
    "headers-response": recv_headers_response,
    "data": recv_data,
    "data-end-stream": recv_data_end_stream,
    "reset": recv_reset,
    "window-update-stream": recv_window_update_stream,
    "window-update-connection": recv_window_update_connection,
    "ping": recv_ping,
    "pong": recv_pong,
    "goaway": recv_goaway,
    "goaway-timeout": recv_goaway_timeout,
    "event": recv_event,
    "subscribe": recv_subscribe,
    "subscribe-resume": recv_subscribe_resume,
    "unsubscribe": recv_unsubscribe,
    "manifest": recv_manifest,
}

# ---------------------------------------------------------------- the vectors


def _header(data: bytes) -> tuple[int, int, int, int]:
    assert len(data) >= HEADER_SIZE
    return (
        int.from_bytes(data[0:4], "big"),
        data[4],
        data[5],
        int.from_bytes(data[6:10], "big"),
    )


def test_vectors_cover_every_frame_type() -> None:
    covered = {_header(v.data)[1] for v in VECTORS.values()}
    assert covered == {int(t) for t in FrameType}


def test_every_vector_is_checked() -> None:
    core = {name for name in VECTORS if not name.startswith("profile-")}  # (tests/test_profile.py checks those)
    assert core == set(BUILDERS) == set(RECEIVERS)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_frame_line_agrees_with_bytes(name: str) -> None:
    vector = VECTORS[name]
    length, ftype, flags, stream_id = _header(vector.data)
    assert length == len(vector.data) - HEADER_SIZE
    words = vector.frame.split()
    assert FrameType[words[0]] == ftype
    described = dict(w.split("=", 1) for w in words[1:3])
    assert set(described) == {"stream", "flags"}, "frame line must start: TYPE stream=N flags=F"
    assert int(described["stream"]) == stream_id
    expected_flags = 0 if described["flags"] == "0" else sum(Flags[f] for f in described["flags"].split("|"))
    assert expected_flags == flags


@pytest.mark.parametrize("name", sorted(n for n, v in VECTORS.items() if "json" in v.fields))
def test_json_text_is_exact(name: str) -> None:
    vector = VECTORS[name]
    payload = vector.data[HEADER_SIZE:]
    offset = 0 if vector.data[4] == FrameType.MANIFEST else 2  # HELLO and WELCOME start with the version
    assert payload[offset:].decode("utf-8") == vector.fields["json"]
    assert isinstance(json.loads(vector.fields["json"]), dict)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_api_produces_vector(name: str) -> None:
    assert BUILDERS[name]().hex() == VECTORS[name].data.hex()


@pytest.mark.parametrize("feed", [_whole, _bytewise], ids=["whole", "bytewise"])
@pytest.mark.parametrize("name", sorted(RECEIVERS))
def test_vector_decodes(name: str, feed: Feed) -> None:
    RECEIVERS[name](VECTORS[name].data, feed)


# ---------------------------------------------------------------- the tables


def test_frame_type_table() -> None:
    rule_names = {StreamRule.ZERO: "0", StreamRule.NONZERO: "non-zero", StreamRule.ANY: "any"}
    rows = _table_after("frame-types")
    seen = {}
    for number, name, flags, stream, sent_by, *_ in rows:
        ftype = FrameType[name]
        assert int(number, 16) == ftype
        allowed, rule = FRAME_RULES[ftype]
        doc_flags = 0 if flags == "—" else sum(Flags[f.split()[0]] for f in _names(flags))
        assert doc_flags == allowed, name
        assert stream == rule_names[rule], name
        only = _SENT_ONLY_BY.get(ftype)
        assert sent_by == (only.value if only else "both"), name
        seen[ftype] = name
    assert set(seen) == set(FrameType)


def test_flag_table() -> None:
    rows = _table_after("flags")
    assert {(int(bit, 16), name) for bit, name, *_ in rows} == {(int(f), f.name) for f in Flags}


def test_error_code_table() -> None:
    rows = _table_after("error-codes")
    assert [(int(code), name) for code, name, *_ in rows] == [(int(c), c.name) for c in ErrorCode]


def test_connection_state_table() -> None:
    table = {}
    for states, inputs, target, *_ in _table_after("connection-states"):
        for state in _names(states):
            for inp in _names(inputs):
                key = (ConnState[state], ConnInput[inp])
                assert key not in table, f"{key} listed twice"
                table[key] = ConnState[target]
    assert table == CONN_TRANSITIONS


def test_stream_state_table() -> None:
    table = {}
    for state, inp, target, *_ in _table_after("stream-states"):
        table[(HalfState[state], HalfInput[inp])] = HalfState[target]
    assert table == HALF_TRANSITIONS


def test_constant_table() -> None:
    values = {name: _number(value.replace("_", "").split()[0]) for name, value, *_ in _table_after("constants")}
    assert values == {
        "PROTOCOL_VERSION": PROTOCOL_VERSION,
        "HEADER_SIZE": HEADER_SIZE,
        "MIN_FRAME_SIZE": MIN_FRAME_SIZE,
        "MAX_FRAME_SIZE": MAX_FRAME_SIZE,
        "MAX_STREAM_ID": MAX_STREAM_ID,
        "MAX_WINDOW": MAX_WINDOW,
        "MAX_PING_PAYLOAD": MAX_PING_PAYLOAD,
        "CREDIT_DIVISOR": CREDIT_DIVISOR,
        "HEARTBEAT_MISSES": HEARTBEAT_MISSES,
        "HUB_PING_INTERVALS": HUB_PING_INTERVALS,
        "HUB_BUSY_PING_INTERVALS": HUB_BUSY_PING_INTERVALS,
    }


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text, 0)
