"""The bridge end to end over real TLS: an independent `websockets` peer plays the edge."""

from __future__ import annotations

import contextlib
import json
import time

import anyio
import httpx
import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect

from radical_edge_bridge import Bridge, BridgeConfig, HTTPLimits
from radical_edge_proto import Connection, ErrorCode, Notification, PeerRole, Side, Subscription
from radical_edge_tunnel import HandshakeError, Tunnel, TunnelStream, connect_handshake

from .conftest import TOKEN

pytestmark = pytest.mark.anyio


class WebsocketsCarrier:
    """Our carrier interface over the independent `websockets` library."""

    def __init__(self, ws) -> None:
        self.ws = ws

    async def send(self, data: bytes) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.ws.send(data)

    async def receive(self) -> bytes:
        try:
            return await self.ws.recv()
        except websockets.ConnectionClosed:
            return b""

    async def aclose(self) -> None:
        await self.ws.close()


def wss(bridge: Bridge) -> str:
    return f"wss://127.0.0.1:{bridge.port}/register"


async def start_edge(bridge, client_ssl, handler, *, name="e1", credential=TOKEN, manifest=None):
    ws = await ws_connect(wss(bridge), ssl=client_ssl, additional_headers={"Authorization": f"Bearer {TOKEN}"})
    carrier = WebsocketsCarrier(ws)
    conn = Connection(Side.CONNECTOR)
    try:
        await connect_handshake(
            conn,
            carrier,
            role=PeerRole.EDGE,
            name=name,
            credential=credential,
            manifest=manifest or {"echo": {"type": "echo", "version": "1.0", "enabled": True, "ui_config": {}}},
        )
    except BaseException:
        await ws.close()
        raise
    return Tunnel(conn, carrier, handler=handler, name=name), ws


async def echo(stream: TunnelStream) -> None:
    req = stream.request
    body = bytearray()
    async for chunk in stream:
        body += chunk
    info = {
        "method": req.method,
        "path": req.path,
        "headers": {k.decode(): v.decode() for k, v in req.headers},
        "body_len": len(body),
    }
    await stream.respond(200, [("content-type", "application/json")])
    await stream.send(json.dumps(info).encode(), end_stream=True)


def http(bridge, client_ssl, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=f"https://127.0.0.1:{bridge.port}", verify=client_ssl, headers=headers)


async def test_public_routes_and_auth_matrix(bridge, client_ssl):
    async with http(bridge, client_ssl, token=None) as anon:
        assert (await anon.get("/healthz")).json()["status"] == "ok"
        r = await anon.get("/edges")
        assert r.status_code == 401
        assert r.json() == {"error": True, "status_code": 401, "detail": "missing or wrong bearer token"}
        assert (await anon.get("/edges", headers={"Authorization": "Bearer wrong"})).status_code == 401
        r = await anon.post("/auth", json={"token": "wrong"})
        assert r.status_code == 401
        r = await anon.post("/auth", json={"token": TOKEN})
        assert r.status_code == 200
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Secure" in cookie
        assert (await anon.get("/edges")).status_code == 200  # the cookie jar now carries it
    async with http(bridge, client_ssl) as client:
        assert (await client.get("/edges")).json() == {"edges": [], "total": 0}


async def test_request_through_tunnel(bridge, client_ssl):
    tunnel, ws = await start_edge(bridge, client_ssl, echo)
    async with anyio.create_task_group() as tg, http(bridge, client_ssl) as client:
        await tg.start(tunnel.run)
        edges = (await client.get("/edges")).json()
        assert edges == {
            "edges": [{"name": "e1", "plugins": ["echo"], "connected": True, "plugin_count": 1}],
            "total": 1,
        }
        listing = (await client.post("/edge/list")).json()["data"]
        assert listing["edges"]["e1"]["plugins"]["echo"]["namespace"] == "/e1/echo"
        r = await client.post("/e1/echo/run?x=1", content=b"a" * 100_000, headers={"X-Custom": "yes"})
        assert r.status_code == 200
        info = r.json()
        assert info["method"] == "POST"
        assert info["path"] == "/echo/run?x=1"
        assert info["body_len"] == 100_000
        assert info["headers"]["x-custom"] == "yes"
        assert "authorization" not in info["headers"]  # the token never reaches an edge
        assert info["headers"]["x-radical-root-path"] == "/e1"
        r = await client.get("/nope/echo/x")
        assert r.status_code == 404
        assert r.json()["error"] is True
        await tunnel.aclose()
        tg.cancel_scope.cancel()
    await ws.close()


async def test_wrong_edge_credential_is_rejected(bridge, client_ssl):
    with pytest.raises(HandshakeError) as info:
        await start_edge(bridge, client_ssl, echo, credential="nope")
    assert info.value.code == ErrorCode.UNAUTHORIZED
    # and without a token on the upgrade, the WebSocket is refused with 401
    with pytest.raises(websockets.InvalidStatus) as status:
        await ws_connect(wss(bridge), ssl=client_ssl)
    assert status.value.response.status_code == 401


async def test_edge_name_cannot_be_squatted(bridge, client_ssl):
    tunnel, ws = await start_edge(bridge, client_ssl, echo)
    async with anyio.create_task_group() as tg:
        await tg.start(tunnel.run)
        with pytest.raises(HandshakeError) as info:
            await start_edge(bridge, client_ssl, echo)  # same name, no resume token
        assert info.value.code == ErrorCode.NAME_CONFLICT
        await tunnel.aclose()
        tg.cancel_scope.cancel()
    await ws.close()


async def test_edge_killed_with_requests_in_flight_all_get_503_fast(bridge, client_ssl):
    arrived = 0
    all_in = anyio.Event()

    async def stall(stream: TunnelStream) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 20:
            all_in.set()
        await anyio.sleep_forever()

    tunnel, ws = await start_edge(bridge, client_ssl, stall)
    results: list[tuple[int, float]] = []
    async with anyio.create_task_group() as tg, http(bridge, client_ssl) as client:
        await tg.start(tunnel.run)

        async def call(i: int) -> None:
            r = await client.get(f"/e1/echo/slow/{i}")
            results.append((r.status_code, time.monotonic()))

        async with anyio.create_task_group() as calls:
            for i in range(20):
                calls.start_soon(call, i)
            with anyio.fail_after(5):
                await all_in.wait()
            killed = time.monotonic()
            ws.transport.abort()  # the edge dies: no close handshake, no GOAWAY
        tg.cancel_scope.cancel()
    assert len(results) == 20
    assert {status for status, _ in results} == {503}
    assert max(t for _, t in results) - killed < 1.0


async def raw_exchange(bridge, client_ssl, request: bytes, *, head_only: bool = False) -> bytes:
    """Send ``request`` as written; return what comes back until the bridge closes (or, with ``head_only``,
    the answer's head: for a connection that stays open)."""
    stream = await anyio.connect_tcp(
        "127.0.0.1", bridge.port, tls=True, ssl_context=client_ssl, tls_standard_compatible=False
    )
    async with stream:
        await stream.send(request)
        data = b""
        with anyio.fail_after(5):
            try:
                while not (head_only and b"\r\n\r\n" in data):
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    return data


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
        (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
    ],
    ids=["headers-too-large", "request-line-too-long", "malformed"],
)
async def test_bad_http_gets_a_clear_status(bridge, client_ssl, request_bytes, status):
    reply = await raw_exchange(bridge, client_ssl, request_bytes)
    assert reply.startswith(b"HTTP/1.1 " + status)
    assert b'"error": true' in reply
    # the server is unharmed: the next client is served
    ok = await raw_exchange(bridge, client_ssl, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200")


async def test_failed_tls_handshake_does_not_disturb_the_server(bridge, client_ssl):
    stream = await anyio.connect_tcp("127.0.0.1", bridge.port)
    async with stream:
        await stream.send(b"this is not a TLS client hello\r\n\r\n")
    async with http(bridge, client_ssl) as client:
        assert (await client.get("/healthz")).status_code == 200


async def read_sse(lines, count: int) -> list[tuple[str | None, dict]]:
    events: list[tuple[str | None, dict]] = []
    event_id = None
    async for line in lines:
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            events.append((event_id, json.loads(line[6:])))
            event_id = None
            if len(events) == count:
                break
    return events


async def test_event_stream_snapshot_notifications_and_replay(bridge, client_ssl):
    tunnel, ws = await start_edge(bridge, client_ssl, echo)
    async with anyio.create_task_group() as tg, http(bridge, client_ssl) as client:
        await tg.start(tunnel.run)
        async with client.stream("GET", "/events", params={"topic": "tick"}) as response:
            assert response.headers["content-type"] == "text/event-stream"
            lines = response.aiter_lines()
            (first,) = await read_sse(lines, 1)
            assert first[1]["topic"] == "topology"
            assert "e1" in first[1]["data"]["edges"]
            for n in range(3):
                tunnel.queue_event("e1", "echo", "tick", n + 1, json.dumps({"n": n}).encode())
                tunnel.queue_event("e1", "echo", "other", n + 1, b"{}")  # filtered out
            await tunnel.flush()
            ticks = await read_sse(lines, 3)
        assert [e[1]["data"] for e in ticks] == [
            {"edge": "e1", "plugin": "echo", "topic": "tick", "data": {"n": n}} for n in range(3)
        ]
        ids = [int(e[0]) for e in ticks]
        assert ids == sorted(ids)
        # reconnect with Last-Event-ID: the events after it are replayed, none twice
        headers = {"Last-Event-ID": str(ids[0])}
        async with client.stream("GET", "/events", params={"topic": "tick"}, headers=headers) as response:
            replayed = await read_sse(response.aiter_lines(), 3)
        assert [e[1]["data"]["data"] for e in replayed[:2]] == [{"n": 1}, {"n": 2}]
        assert replayed[2][1]["topic"] == "topology"
        await tunnel.aclose()
        tg.cancel_scope.cancel()
    await ws.close()


async def start_client(bridge, client_ssl, *, credential=TOKEN, on_event=None):
    ws = await ws_connect(
        f"wss://127.0.0.1:{bridge.port}/connect",
        ssl=client_ssl,
        additional_headers={"Authorization": f"Bearer {TOKEN}"},
    )
    carrier = WebsocketsCarrier(ws)
    conn = Connection(Side.CONNECTOR)
    try:
        await connect_handshake(conn, carrier, role=PeerRole.CLIENT, name="sdk", credential=credential)
    except BaseException:
        await ws.close()
        raise
    return Tunnel(conn, carrier, on_event=on_event, name="sdk"), ws


async def call(tunnel: Tunnel, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    stream = await tunnel.request(method, path, [("content-type", "application/json")], end_stream=not body)
    if body:
        await stream.send(body, end_stream=True)
    response = await stream.wait_response()
    data = bytearray()
    async for chunk in stream:
        data += chunk
    return response.status, bytes(data)


async def test_sdk_client_endpoint_routes_streams_and_pushes_events(bridge, client_ssl):
    edge, edge_ws = await start_edge(bridge, client_ssl, echo)
    received: list[Notification] = []
    got = anyio.Event()

    def on_event(event):
        if isinstance(event, Notification):
            received.append(event)
            if sum(1 for e in received if e.topic == "tick") == 2:
                got.set()

    client, client_ws = await start_client(bridge, client_ssl, on_event=on_event)
    async with anyio.create_task_group() as tg:
        await tg.start(edge.run)
        await tg.start(client.run)
        # management routes and forwarding over the same multiplexed connection
        status, body = await call(client, "GET", "/edges")
        assert status == 200
        assert json.loads(body)["edges"][0]["name"] == "e1"
        status, body = await call(client, "POST", "/e1/echo/upload", b"x" * 300_000)
        assert status == 200
        info = json.loads(body)
        assert info["body_len"] == 300_000
        assert info["path"] == "/echo/upload"
        status, body = await call(client, "GET", "/ghost/echo/x")
        assert status == 404
        assert json.loads(body)["error"] is True
        # events: only what the subscription asks for
        await client.subscribe(1, Subscription(edge="e1", plugin="echo", topic="tick"))
        await anyio.sleep(0.05)
        edge.queue_event("e1", "echo", "other", 1, b"{}")
        edge.queue_event("e1", "echo", "tick", 2, b'{"n": 1}')
        edge.queue_event("e1", "echo", "tick", 3, b'{"n": 2}')
        await edge.flush()
        with anyio.fail_after(5):
            await got.wait()
        assert [(e.source, e.topic, json.loads(e.payload)) for e in received] == [
            ("e1", "tick", {"n": 1}),
            ("e1", "tick", {"n": 2}),
        ]
        first_seq = received[0].seq
        # a second client resumes after the first event: it gets the second one replayed
        replayed: list[Notification] = []
        done = anyio.Event()

        def on_replay(event):
            if isinstance(event, Notification) and event.topic == "tick":
                replayed.append(event)
                done.set()

        late, late_ws = await start_client(bridge, client_ssl, on_event=on_replay)
        await tg.start(late.run)
        await late.subscribe(7, Subscription(topic="tick"), resume_after=first_seq)
        with anyio.fail_after(5):
            await done.wait()
        assert [json.loads(e.payload) for e in replayed] == [{"n": 2}]
        assert replayed[0].seq == received[1].seq
        for t in (late, client, edge):
            await t.aclose()
        tg.cancel_scope.cancel()
    for w in (late_ws, client_ws, edge_ws):
        await w.close()


async def test_client_endpoint_refuses_edges_and_bad_credentials(bridge, client_ssl):
    with pytest.raises(HandshakeError) as info:
        await start_client(bridge, client_ssl, credential="wrong")
    assert info.value.code == ErrorCode.UNAUTHORIZED


async def test_bridge_hosts_its_own_plugins_as_the_edge_bridge(tls_files, client_ssl):
    cert, key = tls_files
    b = Bridge(BridgeConfig(port=0, cert=cert, key=key, token=TOKEN, plugins=("sysinfo",)))
    async with anyio.create_task_group() as tg:
        await tg.start(b.serve)
        async with http(b, client_ssl) as client:
            with anyio.fail_after(10):
                while not (await client.get("/edges")).json()["edges"]:
                    await anyio.sleep(0.05)
            (edge,) = (await client.get("/edges")).json()["edges"]
            assert edge["name"] == "bridge"
            assert "sysinfo" in edge["plugins"]
            r = await client.get("/bridge/sysinfo/homedir")
            assert r.status_code == 200
            assert "homedir" in r.json()
            assert (await client.post("/edge/disconnect/bridge")).status_code == 400
        # an outside edge cannot take the reserved name
        with pytest.raises(HandshakeError) as info:
            await start_edge(b, client_ssl, echo, name="bridge")
        assert info.value.code == ErrorCode.NAME_CONFLICT
        b.stop()


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/plugins/sysinfo.js", 200),
        ("/plugins/nosuch.js", 404),
        # escapes do not match the exact module route: not public, and never a file
        ("/plugins/..%2F..%2Fetc%2Fpasswd.js", 401),
        ("/plugins/../radical_edge_portal/__init__.js", 401),
        ("/plugins/sysinfo", 401),  # not a module path, so not public
    ],
)
async def test_portal_modules_are_public_and_cannot_escape(bridge, client_ssl, path, status):
    reply = await raw_exchange(
        bridge, client_ssl, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert reply.startswith(f"HTTP/1.1 {status}".encode())
    if status == 200:
        assert b"text/javascript" in reply
        assert b"export async function render" in reply


async def test_timeout_is_504_and_cancels_the_work_on_the_edge(tls_files, client_ssl):
    cert, key = tls_files
    b = Bridge(BridgeConfig(port=0, cert=cert, key=key, token=TOKEN, request_timeout=0.3))
    cancelled = anyio.Event()

    async def slow(stream: TunnelStream) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    async with anyio.create_task_group() as tg:
        await tg.start(b.serve)
        tunnel, ws = await start_edge(b, client_ssl, slow)
        await tg.start(tunnel.run)
        async with http(b, client_ssl) as client:
            r = await client.get("/e1/echo/slow")
        assert r.status_code == 504
        assert r.json()["status_code"] == 504
        with anyio.fail_after(2):
            await cancelled.wait()  # unlike upstream, the work does not go on running
        await tunnel.aclose()
        await ws.close()
        b.stop()


async def test_client_disconnect_resets_the_edge_stream(bridge, client_ssl):
    started, cancelled = anyio.Event(), anyio.Event()

    async def slow(stream: TunnelStream) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    tunnel, ws = await start_edge(bridge, client_ssl, slow)
    async with anyio.create_task_group() as tg:
        await tg.start(tunnel.run)
        stream = await anyio.connect_tcp(
            "127.0.0.1", bridge.port, tls=True, ssl_context=client_ssl, tls_standard_compatible=False
        )
        await stream.send(f"GET /e1/echo/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        with anyio.fail_after(2):
            await started.wait()
        await stream.aclose()  # the HTTP client goes away mid-request
        with anyio.fail_after(2):
            await cancelled.wait()
        await tunnel.aclose()
        tg.cancel_scope.cancel()
    await ws.close()


async def test_same_edge_with_its_resume_token_replaces_its_stale_connection(bridge, client_ssl):
    first, ws1 = await start_edge(bridge, client_ssl, echo)
    async with anyio.create_task_group() as tg:
        await tg.start(first.run)
        # the same edge process reconnects (e.g. after a network blip) with the token WELCOME gave it
        ws2 = await ws_connect(wss(bridge), ssl=client_ssl, additional_headers={"Authorization": f"Bearer {TOKEN}"})
        conn = Connection(Side.CONNECTOR)
        carrier = WebsocketsCarrier(ws2)
        welcome_token = bridge.registry.get("e1").resume_token
        await connect_handshake(
            conn, carrier, role=PeerRole.EDGE, name="e1", credential=TOKEN, resume_token=welcome_token
        )
        second = Tunnel(conn, carrier, handler=echo, name="e1-new")
        await tg.start(second.run)
        with anyio.fail_after(2):
            await first.closed.wait()  # the stale one was replaced, not the new one refused
        async with http(bridge, client_ssl) as client:
            r = await client.get("/e1/echo/again")
        assert r.status_code == 200
        await second.aclose()
        tg.cancel_scope.cancel()
    await ws1.close()
    await ws2.close()


async def test_small_body_routes_refuse_large_bodies_with_413(bridge, client_ssl):
    async with http(bridge, client_ssl, token=None) as anon:
        r = await anon.post("/auth", content=b"x" * 200_000)
    assert r.status_code == 413
    assert r.json()["status_code"] == 413


async def test_slow_head_gets_408_and_idle_connection_is_closed(tls_files, client_ssl):
    cert, key = tls_files
    limits = HTTPLimits(head_timeout=0.3, idle_timeout=0.5)
    b = Bridge(BridgeConfig(port=0, cert=cert, key=key, token=TOKEN, http=limits))
    async with anyio.create_task_group() as tg:
        await tg.start(b.serve)
        with anyio.fail_after(5):
            reply = await raw_exchange(b, client_ssl, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        assert reply.startswith(b"HTTP/1.1 408")
        with anyio.fail_after(5):
            idle = await raw_exchange(b, client_ssl, b"")  # says nothing at all
        assert idle == b""
        b.stop()


async def test_sse_gap_keepalive_and_slow_subscriber(tls_files, client_ssl):
    cert, key = tls_files
    b = Bridge(
        BridgeConfig(port=0, cert=cert, key=key, token=TOKEN, event_ring_size=4, subscriber_queue=2, sse_keepalive=0.2)
    )
    async with anyio.create_task_group() as tg:
        await tg.start(b.serve)
        for n in range(10):
            b.events.publish("notification", {"edge": "e", "plugin": "p", "topic": "t", "data": n})
        async with http(b, client_ssl) as client:
            async with client.stream("GET", "/events", headers={"Last-Event-ID": "1"}) as response:
                lines = response.aiter_lines()
                gap, *rest = await read_sse(lines, 6)
                assert gap[1]["topic"] == "gap"
                assert gap[1]["data"]["oldest_available"] == 7
                assert [e[1]["data"]["data"] for e in rest[:4]] == [6, 7, 8, 9]
                # with nothing to send, comments keep the connection alive
                with anyio.fail_after(3):
                    async for line in lines:
                        if line.startswith(": keep-alive"):
                            break
            # a subscriber that does not read is dropped, not buffered without bound
            sub = b.events.subscribe()
            for n in range(5):
                b.events.publish("notification", {"edge": "e", "plugin": "p", "topic": "t", "data": n})
            assert sub.dropped
            assert b.events.dropped_subscribers >= 1  # (the SSE one above may be dropped too)
            b.events.unsubscribe(sub)
        b.stop()


async def test_keep_alive_serves_several_requests_on_one_connection(bridge, client_ssl):
    tunnel, ws = await start_edge(bridge, client_ssl, echo)
    async with anyio.create_task_group() as tg:
        await tg.start(tunnel.run)
        auth = f"Authorization: Bearer {TOKEN}\r\n"
        requests = (
            f"GET /e1/echo/one HTTP/1.1\r\nHost: x\r\n{auth}\r\n"
            f"POST /e1/echo/two HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\n\r\n"
            f"GET /edges HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        ).encode()
        reply = await raw_exchange(bridge, client_ssl, requests)
        await tunnel.aclose()
        tg.cancel_scope.cancel()
    await ws.close()
    assert reply.count(b"HTTP/1.1 200 OK") == 3
    assert b'"path": "/echo/one"' in reply
    assert b'"path": "/echo/two"' in reply
