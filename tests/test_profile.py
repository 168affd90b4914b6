"""The application profile (docs/protocol.md section 19) against radical_edge_proto.profile and the real sides.

Every ``profile-*`` vector of the document is rebuilt through the public API with
the profile's names and functions (the bytes must match), and decoded by a
receiving connection (the events must be what the section says).  Then the
profile's meanings are checked where they are used: the bridge adds exactly the
headers the section names, and a connector that is told STOP does not redial.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import anyio
import pytest

from radical_edge_proto import (
    ConnectionClosed,
    Data,
    ErrorCode,
    GoAway,
    Hello,
    Notification,
    PeerRole,
    RequestReceived,
    ResponseReceived,
    Subscribed,
    Subscription,
    profile,
)
from radical_edge_tunnel import Backoff, Redialer, Tunnel

from .helpers import ConnectionPair
from .test_edge_service import Hub
from .test_golden import VECTORS, _bytewise, _open_pair, _whole

Feed = Callable[..., list]

TOKEN = "s3cr3t-token"
EDGE = "login1"
STATE = {"endpoint": {"connected": True, "connected_since": 1764590400.0}, "plugins": {}}


def _edge_pair() -> ConnectionPair:
    """An edge (connector) and the bridge (hub), handshake done."""
    return _open_pair()


# ---------------------------------------------------------------- builders (the bytes of each example)


def build_edge_hello() -> bytes:
    pair = ConnectionPair(handshake=False)
    manifest = {"sysinfo": profile.manifest_entry("sysinfo", "0.1")}
    manifest = profile.check_manifest(manifest)
    pair.connector.send_hello(role=PeerRole.EDGE, name=EDGE, credential=TOKEN, manifest=manifest)
    return pair.connector.data_to_send()


#: what the caller sent to the bridge for ``GET /login1/sysinfo/homedir``
CALLER_HEADERS = [
    (b"host", b"bridge.example:8000"),
    (b"authorization", b"Bearer " + TOKEN.encode()),
    (b"accept", b"application/json"),
    (b"x-radical-caller", b"mallory"),
]


def build_forwarded_request() -> bytes:
    pair = _edge_pair()
    headers = profile.forwarded_request_headers(CALLER_HEADERS, caller="token", root_path=f"/{EDGE}")
    assert pair.hub.send_request("GET", "/sysinfo/homedir", headers, end_stream=True) == 2
    return pair.hub.data_to_send()


ERROR_DETAIL = f"no plugin 'psij' on edge '{EDGE}'"


def _request_received() -> ConnectionPair:
    pair = _edge_pair()
    pair.hub.send_request("GET", "/psij/jobs", [], end_stream=True)
    pair.deliver(pair.hub)
    return pair


def build_error_head() -> bytes:
    pair = _request_received()
    body = profile.error_body(404, ERROR_DETAIL)
    headers = [("content-type", profile.ERROR_CONTENT_TYPE), ("content-length", str(len(body)))]
    pair.connector.send_response(2, 404, headers)
    return pair.connector.data_to_send()


def build_error_body() -> bytes:
    pair = _request_received()
    pair.connector.send_response(2, 404, [])
    pair.connector.data_to_send()
    pair.connector.send_data(2, profile.error_body(404, ERROR_DETAIL), end_stream=True)
    return pair.connector.data_to_send()


NOTIFICATION = {"job_id": "42", "state": "RUNNING"}


def build_notification() -> bytes:
    pair = _edge_pair()
    pair.connector.send_event(EDGE, "psij", "job_status", 7, json.dumps(NOTIFICATION, separators=(",", ":")).encode())
    return pair.connector.data_to_send()


def build_client_subscribe() -> bytes:
    pair = _open_pair()
    pair.connector.subscribe(1, Subscription(), resume_after=41)
    return pair.connector.data_to_send()


def _bridge_event(topic: str, seq: int, payload: object) -> bytes:
    pair = _open_pair()
    pair.connector.subscribe(1, Subscription())
    pair.deliver(pair.connector)
    data = json.dumps(payload, separators=(",", ":")).encode()
    assert pair.hub.send_event(profile.BRIDGE_SOURCE, profile.BRIDGE_SOURCE, topic, seq, data)
    return pair.hub.data_to_send()


SNAPSHOT = {"bridge": {"url": "https://bridge.example:8000"}, "as_of": 42, "more": False, "edges": {EDGE: STATE}}
CHANGE = {"edge": EDGE, "change": "disconnected", "state": {**STATE, "endpoint": {"connected": False}}}
GAP = {"after": 41, "oldest": 100}


def build_topology_snapshot() -> bytes:
    return _bridge_event(profile.TOPIC_TOPOLOGY, profile.UNNUMBERED, SNAPSHOT)


def build_topology_change() -> bytes:
    return _bridge_event(profile.TOPIC_TOPOLOGY_CHANGE, 43, CHANGE)


def build_gap() -> bytes:
    return _bridge_event(profile.TOPIC_GAP, profile.UNNUMBERED, GAP)


STOP_REASON = "disconnected by the bridge operator"


def build_stop() -> bytes:
    pair = _edge_pair()
    pair.hub.close(profile.STOP_CODE, STOP_REASON)
    return pair.hub.data_to_send()


BUILDERS: dict[str, Callable[[], bytes]] = {
    "profile-edge-hello": build_edge_hello,
    "profile-forwarded-request": build_forwarded_request,
    "profile-error-head": build_error_head,
    "profile-error-body": build_error_body,
    "profile-notification": build_notification,
    "profile-client-subscribe": build_client_subscribe,
    "profile-topology-snapshot": build_topology_snapshot,
    "profile-topology-change": build_topology_change,
    "profile-gap": build_gap,
    "profile-stop": build_stop,
}

# ---------------------------------------------------------------- receivers (what each example means)


def recv_edge_hello(data: bytes, feed: Feed) -> None:
    pair = ConnectionPair(handshake=False)
    (hello,) = feed(pair.hub, data)
    assert isinstance(hello, Hello)
    assert hello.role is PeerRole.EDGE
    assert profile.edge_name_error(hello.name) is None
    assert hello.credential == TOKEN
    assert profile.check_manifest(hello.manifest)["sysinfo"]["enabled"] is True


def recv_forwarded_request(data: bytes, feed: Feed) -> None:
    pair = _edge_pair()
    (request,) = feed(pair.connector, data)
    assert isinstance(request, RequestReceived)
    assert (request.method, request.path, request.end_stream) == ("GET", "/sysinfo/homedir", True)
    headers = list(request.headers)
    names = [n for n, _ in headers]
    assert b"authorization" not in names  # the credential stays behind
    assert b"host" not in names  # and so does the hop
    assert names.count(profile.CALLER_HEADER) == 1  # the caller's forged copy was dropped
    assert profile.bridge_header(headers, profile.CALLER_HEADER) == b"token"
    assert profile.bridge_header(headers, profile.ROOT_PATH_HEADER) == f"/{EDGE}".encode()


def recv_error_head(data: bytes, feed: Feed) -> None:
    pair = _edge_pair()
    pair.hub.send_request("GET", "/psij/jobs", [], end_stream=True)
    pair.deliver(pair.hub)
    (response,) = feed(pair.hub, data)
    assert isinstance(response, ResponseReceived)
    assert response.status == 404
    assert dict(response.headers)[b"content-type"] == profile.ERROR_CONTENT_TYPE.encode()


def recv_error_body(data: bytes, feed: Feed) -> None:
    pair = _edge_pair()
    pair.hub.send_request("GET", "/psij/jobs", [], end_stream=True)
    pair.deliver(pair.hub)
    pair.connector.send_response(2, 404, [])
    pair.deliver(pair.connector)
    (body,) = feed(pair.hub, data)
    assert isinstance(body, Data)
    assert body.end_stream
    assert json.loads(body.data) == profile.error_envelope(404, ERROR_DETAIL)


def recv_notification(data: bytes, feed: Feed) -> None:
    pair = _edge_pair()
    (event,) = feed(pair.hub, data)
    assert isinstance(event, Notification)
    assert (event.source, event.plugin, event.topic, event.seq) == (EDGE, "psij", "job_status", 7)
    assert json.loads(event.payload) == NOTIFICATION


def recv_client_subscribe(data: bytes, feed: Feed) -> None:
    pair = _open_pair()
    (subscribed,) = feed(pair.hub, data)
    assert isinstance(subscribed, Subscribed)
    assert subscribed.subscription.matches(profile.BRIDGE_SOURCE, profile.BRIDGE_SOURCE, profile.TOPIC_GAP)
    assert subscribed.resume_after == 41


def _recv_bridge_event(data: bytes, feed: Feed) -> Notification:
    pair = _open_pair()
    pair.connector.subscribe(1, profile.BRIDGE_EVENTS)
    pair.deliver(pair.connector)
    (event,) = feed(pair.connector, data)
    assert isinstance(event, Notification)
    assert profile.is_bridge_event(event.source, event.plugin)
    return event


def recv_topology_snapshot(data: bytes, feed: Feed) -> None:
    event = _recv_bridge_event(data, feed)
    assert (event.topic, event.seq) == (profile.TOPIC_TOPOLOGY, profile.UNNUMBERED)
    assert json.loads(event.payload) == SNAPSHOT


def recv_topology_change(data: bytes, feed: Feed) -> None:
    event = _recv_bridge_event(data, feed)
    assert event.topic == profile.TOPIC_TOPOLOGY_CHANGE
    assert event.seq > profile.UNNUMBERED
    change = json.loads(event.payload)
    assert change == CHANGE
    assert change["change"] in profile.TOPOLOGY_CHANGES


def recv_gap(data: bytes, feed: Feed) -> None:
    event = _recv_bridge_event(data, feed)
    assert (event.topic, event.seq) == (profile.TOPIC_GAP, profile.UNNUMBERED)
    assert json.loads(event.payload) == GAP


def recv_stop(data: bytes, feed: Feed) -> None:
    pair = _edge_pair()
    events = feed(pair.connector, data)
    goaway = next(e for e in events if isinstance(e, GoAway))
    closed = next(e for e in events if isinstance(e, ConnectionClosed))
    assert goaway.error_code == closed.error_code == ErrorCode.STOP
    assert closed.reason == STOP_REASON
    assert not profile.should_reconnect(closed.error_code)


RECEIVERS: dict[str, Callable[[bytes, Feed], None]] = {
    "profile-edge-hello": recv_edge_hello,
    "profile-forwarded-request": recv_forwarded_request,
    "profile-error-head": recv_error_head,
    "profile-error-body": recv_error_body,
    "profile-notification": recv_notification,
    "profile-client-subscribe": recv_client_subscribe,
    "profile-topology-snapshot": recv_topology_snapshot,
    "profile-topology-change": recv_topology_change,
    "profile-gap": recv_gap,
    "profile-stop": recv_stop,
}

PROFILE_VECTORS = sorted(n for n in VECTORS if n.startswith("profile-"))


def test_every_profile_example_is_checked() -> None:
    assert set(PROFILE_VECTORS) == set(BUILDERS) == set(RECEIVERS)


@pytest.mark.parametrize("name", PROFILE_VECTORS)
def test_api_produces_example(name: str) -> None:
    assert BUILDERS[name]().hex() == VECTORS[name].data.hex()


@pytest.mark.parametrize("feed", [_whole, _bytewise], ids=["whole", "bytewise"])
@pytest.mark.parametrize("name", PROFILE_VECTORS)
def test_example_means_what_the_profile_says(name: str, feed: Feed) -> None:
    RECEIVERS[name](VECTORS[name].data, feed)


@pytest.mark.parametrize("name", [n for n in PROFILE_VECTORS if "payload" in VECTORS[n].fields])
def test_payload_text_is_exact(name: str) -> None:
    """The ``payload`` line of an example is the JSON text at the end of the frame, to the byte."""
    text = VECTORS[name].fields["payload"].encode()
    assert VECTORS[name].data.endswith(text)
    json.loads(text)


# ---------------------------------------------------------------- the meanings, where they are used


def test_reconnect_meanings() -> None:
    assert not profile.should_reconnect(ErrorCode.STOP)
    assert not profile.should_reconnect(ErrorCode.UNAUTHORIZED)
    assert not profile.should_reconnect(ErrorCode.UNSUPPORTED_VERSION)
    for code in (ErrorCode.NO_ERROR, ErrorCode.NAME_CONFLICT, ErrorCode.TIMEOUT, ErrorCode.CANCEL, 999):
        assert profile.should_reconnect(code)
    assert profile.endpoint_path(PeerRole.EDGE) == "/register"
    assert profile.endpoint_path(PeerRole.CLIENT) == "/connect"


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        ([], "JSON object"),
        ({"p": 1}, "not an object"),
        ({"p": {"version": "1", "enabled": True}}, "lacks 'type'"),
        ({"p": {"type": "p", "version": 1, "enabled": True}}, "'version' has the wrong type"),
        ({"p": {"type": "p", "version": "1", "enabled": 1}}, "'enabled' has the wrong type"),
        ({"p": {"type": "p", "version": "1", "enabled": False, "error": 3}}, "'error' has the wrong type"),
    ],
)
def test_a_bad_manifest_is_named(manifest: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        profile.check_manifest(manifest)


@pytest.mark.anyio
@pytest.mark.parametrize(("code", "redials"), [(ErrorCode.STOP, False), (ErrorCode.NO_ERROR, True)])
async def test_a_connector_told_stop_does_not_redial(code: ErrorCode, redials: bool) -> None:
    async with anyio.create_task_group() as tg:
        hub = Hub(tg)
        redialer = Redialer(
            role=PeerRole.EDGE,
            name=EDGE,
            connector=hub.connector,
            backoff=Backoff(initial=0.01, maximum=0.05, reachable_maximum=0.02),
            rng=random.Random(1),
        )
        returned = anyio.Event()

        async def serve(tunnel: Tunnel) -> None:
            await tunnel.run()

        async def run() -> None:
            await redialer.run(serve)
            returned.set()

        tg.start_soon(run)
        await hub.wait_for(lambda: len(hub.tunnels) == 1)
        await hub.live.aclose(code, "bye")
        if redials:
            await hub.wait_for(lambda: len(hub.tunnels) == 2)
            assert redialer.stopped_by_peer is None
            redialer.stop()
            await hub.live.aclose()  # run() returns once serve() does
        with anyio.fail_after(5):
            await returned.wait()
        tg.cancel_scope.cancel()
    if not redials:
        assert redialer.stopped_by_peer is not None
        assert redialer.stopped_by_peer.reason == "bye"
        assert len(hub.attempts) == 1
