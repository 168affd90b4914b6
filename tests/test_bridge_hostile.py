"""Attacks on the bridge's HTTP front door and its forwarding, each reproduced from a hostile review.

Every test also checks that the bridge keeps serving other clients afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time

import anyio
import httpx
import pytest

from radical_edge_bridge import Bridge, BridgeConfig, HTTPLimits
from radical_edge_bridge._cli import build_parser, config_from_args
from radical_edge_proto import Connection, PeerRole, Side
from radical_edge_tunnel import HandshakeError, TunnelStream, connect_handshake, tunnel_limits

from .conftest import TOKEN, running_bridge
from .test_bridge import WebsocketsCarrier, echo, http, raw_exchange, start_client, start_edge, ws_connect, wss

pytestmark = pytest.mark.anyio
AUTH = f"Authorization: Bearer {TOKEN}\r\n"


async def healthy(b: Bridge, client_ssl) -> None:
    """The bridge still answers a normal client."""
    async with http(b, client_ssl) as client:
        r = await client.get("/healthz")
    assert r.status_code == 200


async def headers_echo(stream: TunnelStream) -> None:
    """Answer with the request's method, path and header *list* (duplicates kept)."""
    req = stream.request
    assert req is not None
    async for _ in stream:
        pass
    info = {"method": req.method, "path": req.path, "headers": [[k.decode(), v.decode()] for k, v in req.headers]}
    body = json.dumps(info).encode()
    await stream.respond(200, [("content-type", "application/json"), ("content-length", str(len(body)))])
    await stream.send(body, end_stream=True)


class running_edge:
    """``async with running_edge(bridge, ssl, handler) as tunnel``: an edge served for the block."""

    def __init__(self, b: Bridge, client_ssl, handler, name: str = "e1") -> None:
        self.args = (b, client_ssl, handler)
        self.name = name

    async def __aenter__(self):
        self.tunnel, self.ws = await start_edge(*self.args, name=self.name)
        self.tg = anyio.create_task_group()
        await self.tg.__aenter__()
        await self.tg.start(self.tunnel.run)
        return self.tunnel

    async def __aexit__(self, *exc):
        await self.tunnel.aclose()
        self.tg.cancel_scope.cancel()
        await self.tg.__aexit__(None, None, None)
        await self.ws.close()


# ---------------------------------------------------------------- public routes and edge names


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        ("POST /plugins/sysinfo.js", 401),  # a portal module is public for GET only
        ("GET /plugins/sysinfo/x.js", 401),  # not the exact module route
        ("POST /e1/echo/x.js", 401),  # a forwarded path ending in .js is not public
        ("POST /healthz", 401),  # public routes are public for their method only
        ("GET /plugins/sysinfo.js", 200),
        ("HEAD /plugins/sysinfo.js", 200),
        ("GET /healthz", 200),
    ],
)
async def test_public_routes_are_decided_by_method_and_exact_route(bridge, client_ssl, request_line, status):
    async with running_edge(bridge, client_ssl, headers_echo):
        request = f"{request_line} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        reply = await raw_exchange(bridge, client_ssl, request.encode())
    assert reply.startswith(f"HTTP/1.1 {status}".encode()), reply[:200]


@pytest.mark.parametrize(
    "name",
    ["plugins", "healthz", "auth", "events", "edge", "edges", "metrics", "bridge", "Plugins", "register", "connect"],
)
async def test_edge_names_that_clash_with_bridge_routes_are_refused(bridge, client_ssl, name):
    with pytest.raises(HandshakeError) as info:
        await start_edge(bridge, client_ssl, echo, name=name)
    assert "reserved" in str(info.value)
    assert name not in bridge.registry
    await healthy(bridge, client_ssl)


@pytest.mark.parametrize(
    "name",
    ["..", ".", "a\x00b", "a b", "evil\n2026-12-01 00:00:00 INFO forged line", "x" * 10_000, "a/b", "-a", "a..b", "é"],
    ids=["dotdot", "dot", "nul", "space", "newline", "10k", "slash", "dash", "empty-label", "non-ascii"],
)
async def test_bad_edge_names_are_refused_at_the_handshake_and_never_logged_raw(bridge, client_ssl, name, caplog):
    caplog.set_level(logging.DEBUG, logger="radical_edge")
    with pytest.raises(HandshakeError) as info:
        await start_edge(bridge, client_ssl, echo, name=name)
    assert "not allowed" in str(info.value) or "at most" in str(info.value)
    assert name not in bridge.registry
    for record in caplog.records:
        message = record.getMessage()
        assert "\n" not in message
        assert "\x00" not in message
        assert len(message) < 1000
    await healthy(bridge, client_ssl)


async def test_dotted_child_names_stay_valid(bridge, client_ssl):
    async with running_edge(bridge, client_ssl, headers_echo, name="login1.batch-7"), http(bridge, client_ssl) as c:
        r = await c.get("/login1.batch-7/echo/x")
    assert r.status_code == 200
    assert r.json()["path"] == "/echo/x"


# ---------------------------------------------------------------- forwarded headers


async def test_client_cannot_forge_the_bridge_headers(bridge, client_ssl):
    forged = {
        "X-Radical-Caller": "alice",
        "X-Radical-Root-Path": "/evil",
        "X-Radical-Anything": "yes",
        "X-Custom": "kept",
    }
    async with running_edge(bridge, client_ssl, headers_echo), http(bridge, client_ssl) as client:
        r = await client.get("/e1/echo/x", headers=forged)
    headers = r.json()["headers"]
    radical = [[k, v] for k, v in headers if k.startswith("x-radical-")]
    assert radical == [["x-radical-caller", "token"], ["x-radical-root-path", "/e1"]]
    assert ["x-custom", "kept"] in headers


async def test_sdk_stream_cannot_forge_the_bridge_headers(bridge, client_ssl):
    async with running_edge(bridge, client_ssl, headers_echo):
        client, ws = await start_client(bridge, client_ssl)
        async with anyio.create_task_group() as tg:
            await tg.start(client.run)
            stream = await client.request(
                "GET", "/e1/echo/x", [("x-radical-caller", "alice"), ("x-radical-root-path", "/evil")], end_stream=True
            )
            await stream.wait_response()
            body = b"".join([chunk async for chunk in stream])
            await client.aclose()
            tg.cancel_scope.cancel()
        await ws.close()
    radical = [[k, v] for k, v in json.loads(body)["headers"] if k.startswith("x-radical-")]
    assert radical == [["x-radical-caller", "token"], ["x-radical-root-path", "/e1"]]


# ---------------------------------------------------------------- request framing


async def test_content_length_with_chunked_is_refused_and_the_connection_closed(bridge, client_ssl):
    seen: list[str] = []

    async def record(stream: TunnelStream) -> None:
        seen.append(stream.request.path)
        await headers_echo(stream)

    smuggle = (
        f"POST /e1/echo/a HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\n"
        f"GET /e1/echo/smuggled HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n"
    ).encode()
    async with running_edge(bridge, client_ssl, record):
        reply = await raw_exchange(bridge, client_ssl, smuggle)
    assert reply.startswith(b"HTTP/1.1 400")
    assert reply.count(b"HTTP/1.1") == 1  # the pipelined request is not served
    assert seen == []
    await healthy(bridge, client_ssl)


async def test_absolute_form_target_reaches_the_edge_as_a_path(bridge, client_ssl):
    host = f"https://127.0.0.1:{bridge.port}"
    async with running_edge(bridge, client_ssl, headers_echo):
        reply = await raw_exchange(
            bridge,
            client_ssl,
            f"GET {host}/e1/echo/x?y=1 HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n"
            f"GET {host}/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
        )
    assert reply.count(b"HTTP/1.1 200") == 2
    assert b'"path": "/echo/x?y=1"' in reply


@pytest.mark.parametrize("target", ["*", "example.com:443", "ftp://x/e1/echo", "e1/echo"])
async def test_other_request_target_forms_get_400(bridge, client_ssl, target, caplog):
    caplog.set_level(logging.DEBUG, logger="radical_edge")
    reply = await raw_exchange(bridge, client_ssl, f"GET {target} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 400")
    assert not any(r.exc_info for r in caplog.records)
    await healthy(bridge, client_ssl)


async def test_head_gets_the_head_of_the_get_answer(bridge, client_ssl):
    async with running_edge(bridge, client_ssl, headers_echo):
        reply = await raw_exchange(
            bridge,
            client_ssl,
            f"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            f"HEAD /edges HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n"
            f"HEAD /e1/echo/x HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n"
            f"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
        )
    responses = reply.split(b"HTTP/1.1 ")[1:]
    assert [r[:3] for r in responses] == [b"200"] * 4, reply
    for head in responses[:3]:
        lines = head.split(b"\r\n\r\n", 1)
        assert b"content-length: " in lines[0].lower()
        assert lines[1] == b""  # no body after a HEAD answer
    assert b'"status": "ok"' in responses[3]


async def test_expect_100_continue_is_answered(bridge, client_ssl):
    async with running_edge(bridge, client_ssl, headers_echo):
        stream = await anyio.connect_tcp(
            "127.0.0.1", bridge.port, tls=True, ssl_context=client_ssl, tls_standard_compatible=False
        )
        async with stream:
            head = f"POST /e1/echo/up HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            await stream.send(head.encode())
            with anyio.fail_after(0.5):  # curl waits 1 s for it before sending anyway
                interim = await stream.receive()
            assert interim.startswith(b"HTTP/1.1 100 ")
            await stream.send(b"hello")
            data = b""
            with anyio.fail_after(5):
                while b"/echo/up" not in data:
                    data += await stream.receive()
            assert data.startswith(b"HTTP/1.1 200")


async def test_deeply_nested_json_is_400_with_one_log_line(bridge, client_ssl, caplog):
    caplog.set_level(logging.DEBUG, logger="radical_edge")
    body = b"[" * 30_000 + b"]" * 30_000
    async with http(bridge, client_ssl, token=None) as anon:
        r = await anon.post("/auth", content=body)
    assert r.status_code == 400
    assert r.json()["status_code"] == 400
    assert not any(rec.exc_info for rec in caplog.records)
    await healthy(bridge, client_ssl)


# ---------------------------------------------------------------- timeouts


@pytest.fixture
async def quick_bridge(tls_files):
    cert, key = tls_files
    limits = HTTPLimits(write_timeout=1.0)
    async with running_bridge(
        BridgeConfig(port=0, cert=cert, key=key, token=TOKEN, request_timeout=1.0, http=limits)
    ) as b:
        yield b


async def test_a_slow_upload_is_not_cut_by_the_answer_timeout(quick_bridge, client_ssl):
    """The answer timeout counts silence, not the total: 3 s of steady upload with a 1 s timeout."""

    async def body():
        for _ in range(15):
            yield b"x" * 1000
            await anyio.sleep(0.2)

    async with running_edge(quick_bridge, client_ssl, headers_echo), http(quick_bridge, client_ssl) as client:
        started = time.monotonic()
        r = await client.post("/e1/echo/up", content=body(), timeout=30)
        assert time.monotonic() - started > 2.5
    assert r.status_code == 200


async def test_a_silent_edge_still_times_out(quick_bridge, client_ssl):
    async def silent(stream: TunnelStream) -> None:
        async for _ in stream:
            pass
        await anyio.sleep_forever()

    async with running_edge(quick_bridge, client_ssl, silent), http(quick_bridge, client_ssl) as client:
        started = time.monotonic()
        r = await client.post("/e1/echo/up", content=b"x" * 1000)
        assert time.monotonic() - started < 3
    assert r.status_code == 504


def endless_download(ended: anyio.Event):
    """An edge handler that sends 64 KiB chunks until its stream is reset; then it sets ``ended``."""

    async def endless(stream: TunnelStream) -> None:
        await stream.respond(200, [("content-type", "application/octet-stream")])
        try:
            while True:
                await stream.send(b"z" * 65536)
                await anyio.sleep(0)
        finally:  # reset: the edge's tunnel cancels the handler (or its send raises)
            ended.set()

    return endless


async def test_a_client_that_stops_reading_is_cut_after_the_write_timeout(quick_bridge, client_ssl):
    reset = anyio.Event()
    async with running_edge(quick_bridge, client_ssl, endless_download(reset)):
        sock = await anyio.connect_tcp(
            "127.0.0.1", quick_bridge.port, tls=True, ssl_context=client_ssl, tls_standard_compatible=False
        )
        async with sock:
            await sock.send(f"GET /e1/echo/big HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode())
            # ... and never reads: the bridge must give up on it and stop the edge's work
            with anyio.fail_after(10):
                await reset.wait()
        await healthy(quick_bridge, client_ssl)


async def test_a_client_leaving_mid_download_is_499_and_one_quiet_line(bridge, client_ssl, caplog):
    caplog.set_level(logging.DEBUG, logger="radical_edge")
    reset = anyio.Event()
    async with running_edge(bridge, client_ssl, endless_download(reset)), http(bridge, client_ssl) as client:
        async with client.stream("GET", "/e1/echo/big") as response:
            got = 0
            async for chunk in response.aiter_raw():
                got += len(chunk)
                if got > 1_000_000:
                    break
        with anyio.fail_after(5):
            await reset.wait()
        await anyio.sleep(0.2)
        metrics = (await client.get("/metrics")).text
    assert 'radical_edge_requests_total{status="499"} 1' in metrics
    assert 'status="502"' not in metrics
    assert not any(r.levelno >= logging.ERROR or r.exc_info for r in caplog.records)


@pytest.mark.parametrize("wait", [0.01, 0.5], ids=["within-the-quick-answer-wait", "after-it"])
async def test_a_client_leaving_before_a_slow_answer_stops_the_edges_work(bridge, client_ssl, wait):
    """A bodiless request whose answer takes long: the caller hanging up is noticed (499) and the edge's
    handler is cancelled, whether the caller leaves in the bridge's first, unwatched 50 ms or later."""
    cancelled = anyio.Event()

    async def slow(stream: TunnelStream) -> None:
        try:
            await anyio.sleep(30)
            await stream.respond(200, [], end_stream=True)
        finally:
            cancelled.set()

    async with running_edge(bridge, client_ssl, slow):
        sock = await anyio.connect_tcp(
            "127.0.0.1", bridge.port, tls=True, ssl_context=client_ssl, tls_standard_compatible=False
        )
        await sock.send(f"GET /e1/echo/slow HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode())
        await anyio.sleep(wait)
        await anyio.aclose_forcefully(sock)
        with anyio.fail_after(5):
            await cancelled.wait()
        with anyio.fail_after(5):
            while 'radical_edge_requests_total{status="499"} 1' not in (metrics := await _metrics(bridge, client_ssl)):
                await anyio.sleep(0.05)
    assert 'status="200"' not in metrics.split("radical_edge_requests_total", 1)[1].split("\n# ", 1)[0]


async def _metrics(b: Bridge, client_ssl) -> str:
    async with http(b, client_ssl) as client:
        return (await client.get("/metrics")).text


async def test_an_early_answer_to_an_upload_frees_the_edge_at_once(bridge, client_ssl):
    """The edge answers (409, say) before reading a big body: the bridge relays the answer and resets the
    edge's stream, so the edge does not wait for (or discard) a body that will never come."""
    reset = anyio.Event()

    async def refuse_early(stream: TunnelStream) -> None:
        await stream.respond(409, [("content-type", "application/json")])
        await stream.send(b'{"detail": "exists"}', end_stream=True)
        with anyio.fail_after(20):
            await stream.wait_reset()
        reset.set()

    async def body():
        for _ in range(400):  # 100 MiB, far more than the windows hold
            yield b"u" * 262144
            await anyio.sleep(0.001)

    async with running_edge(bridge, client_ssl, refuse_early), http(bridge, client_ssl) as client:
        started = time.monotonic()
        with contextlib.suppress(httpx.HTTPError):  # the bridge may close the connection after the answer
            r = await client.post("/e1/echo/up", content=body())
            assert r.status_code == 409
        with anyio.fail_after(5):
            await reset.wait()
        assert time.monotonic() - started < 5
        await healthy(bridge, client_ssl)


async def test_an_sdk_client_leaving_a_download_early_is_not_an_error(bridge, client_ssl, caplog):
    caplog.set_level(logging.DEBUG, logger="radical_edge")
    ended = anyio.Event()
    async with running_edge(bridge, client_ssl, endless_download(ended)):
        client, ws = await start_client(bridge, client_ssl)
        async with anyio.create_task_group() as tg:
            await tg.start(client.run)
            stream = await client.request("GET", "/e1/echo/big", [], end_stream=True)
            await stream.wait_response()
            got = 0
            async for chunk in stream:
                got += len(chunk)
                if got > 1_000_000:
                    break
            await stream.reset()  # the SDK leaves the download
            with anyio.fail_after(5):
                await ended.wait()
            await anyio.sleep(0.2)
            await client.aclose()
            tg.cancel_scope.cancel()
        await ws.close()
    assert not any(r.levelno >= logging.ERROR or r.exc_info for r in caplog.records), [
        r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
    ]


@pytest.mark.parametrize(
    ("given", "window"),
    [([], 512 * 1024), (["--stream-window", "256"], 256 * 1024), (["--stream-window", "8192"], 8 * 1024 * 1024)],
)
def test_the_stream_window_is_a_bridge_option(tmp_path, given, window):
    """``--stream-window``: how much of one answer an edge may send ahead of the caller (the bridge's receive
    window per stream, announced in WELCOME); the frames stay 256 KiB."""
    token = tmp_path / "token"
    token.write_text("tok\n")
    token.chmod(0o600)
    args = build_parser().parse_args(["--insecure-no-tls", "--token-file", str(token), *given])
    config = config_from_args(args)
    assert config.tunnel.initial_window_size == window
    assert config.tunnel.max_frame_size == 256 * 1024
    assert config.tunnel.connection_window_size >= max(2 * window, 4 * 1024 * 1024)  # two such streams fit


@pytest.mark.parametrize(("given", "most"), [([], 16 * 1024 * 1024), (["--max-stream-window", "512"], 512 * 1024)])
def test_how_far_the_stream_window_grows_is_a_bridge_option(tmp_path, given, most):
    """``--max-stream-window``: the cap of a stream window grown on a long path (at the starting window or
    below: no growth)."""
    token = tmp_path / "token"
    token.write_text("tok\n")
    token.chmod(0o600)
    config = config_from_args(build_parser().parse_args(["--insecure-no-tls", "--token-file", str(token), *given]))
    assert config.max_stream_window == most
    # what an edge tunnel gets: that cap, and a connection window holding two such streams (4 MiB at least)
    assert config.edge_window_caps == (most, max(2 * most, 4 * 1024 * 1024))


@pytest.mark.parametrize("option", ["--stream-window", "--max-stream-window"])
@pytest.mark.parametrize("bad", ["0", "15", "2097152", "x"])
def test_a_stream_window_out_of_range_is_refused(bad, option, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([option, bad])
    assert option in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "busy", "idle"),
    [
        ([], 5.0, 30.0),
        (["--heartbeat-interval", "2", "--idle-heartbeat-interval", "60"], 2.0, 60.0),
        (["--heartbeat-interval", "10", "--idle-heartbeat-interval", "3"], 10.0, 10.0),  # raised to the busy one
    ],
)
def test_the_edge_heartbeat_intervals_are_bridge_options(tmp_path, given, busy, idle):
    token = tmp_path / "token"
    token.write_text("tok\n")
    token.chmod(0o600)
    config = config_from_args(build_parser().parse_args(["--insecure-no-tls", "--token-file", str(token), *given]))
    assert config.heartbeat_interval == busy
    assert config.edge_idle_heartbeat_interval == idle


@pytest.mark.parametrize("name", ["heartbeat_interval", "idle_heartbeat_interval", "client_heartbeat_interval"])
@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "30"])
def test_a_heartbeat_interval_that_is_not_a_finite_positive_number_is_refused(name, bad):
    """A config built in code is checked as the command line is: a NaN would otherwise fail every edge's
    handshake, later and far from the cause."""
    with pytest.raises(ValueError, match=name):
        BridgeConfig(**{name: bad})


async def test_an_edge_learns_both_heartbeat_intervals_in_the_welcome(bridge, client_ssl):
    ws = await ws_connect(wss(bridge), ssl=client_ssl, additional_headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        conn = Connection(Side.CONNECTOR)
        manifest = {"echo": {"type": "echo", "version": "1.0", "enabled": True, "ui_config": {}}}
        welcome = await connect_handshake(
            conn, WebsocketsCarrier(ws), role=PeerRole.EDGE, name="e1", credential=TOKEN, manifest=manifest
        )
        assert welcome.heartbeat_interval == bridge.config.heartbeat_interval
        assert welcome.idle_heartbeat_interval == BridgeConfig.idle_heartbeat_interval == 30.0
        assert conn.idle_heartbeat_interval == 30.0
    finally:
        await ws.close()


async def test_an_edge_sends_no_more_than_the_stream_window_ahead_of_a_caller(tls_files, client_ssl):
    """A caller that reads nothing: the edge's handler can send one window (and the transport's buffers)
    ahead, then waits; with a 64 KiB window it has sent far less than with the default 1 MiB."""
    sent = {}
    for window in (64 * 1024, 1024 * 1024):
        config_limits = dataclasses.replace(tunnel_limits(), initial_window_size=window)
        cert, key = tls_files
        config = BridgeConfig(port=0, cert=cert, key=key, token=TOKEN, request_timeout=10, tunnel=config_limits)
        async with running_bridge(config) as b:
            count = [0]
            stalled = anyio.Event()

            async def producer(stream: TunnelStream, count=count, stalled=stalled) -> None:
                await stream.respond(200, [("content-type", "application/octet-stream")])
                while True:
                    with anyio.move_on_after(1) as waited:
                        await stream.send(b"p" * 16384)
                    if waited.cancelled_caught:
                        stalled.set()
                        await anyio.sleep_forever()
                    count[0] += 16384

            async with running_edge(b, client_ssl, producer):
                sock = await anyio.connect_tcp(
                    "127.0.0.1", b.port, tls=True, ssl_context=client_ssl, tls_standard_compatible=False
                )
                async with sock:
                    await sock.send(f"GET /e1/echo/big HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode())
                    with anyio.fail_after(20):
                        await stalled.wait()  # the caller reads nothing: the edge must stop
                sent[window] = count[0]
    assert sent[64 * 1024] < sent[1024 * 1024] - 512 * 1024


async def test_every_forwarded_answer_is_sandboxed_for_browsers(bridge, client_ssl):
    """An edge's page, opened in a browser through the bridge, gets no script and no access to the bridge's
    origin (where the portal's cookie works): the bridge adds CSP sandbox and nosniff to every forwarded
    answer, on top of the edge's own headers."""

    async def html(stream: TunnelStream) -> None:
        async for _ in stream:
            pass
        body = b"<script>alert(1)</script>"
        head = [("content-type", "text/html"), ("content-length", str(len(body)))]
        await stream.respond(200, [*head, ("content-security-policy", "img-src *")])
        await stream.send(body, end_stream=True)

    async with running_edge(bridge, client_ssl, html), http(bridge, client_ssl) as client:
        r = await client.get("/e1/echo/page.html")
    assert r.status_code == 200
    assert r.headers.get_list("content-security-policy") == ["img-src *", "sandbox"]
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/connect", "/register"])
async def test_a_websocket_upgrade_needs_the_bearer_token_not_the_cookie(bridge, client_ssl, path):
    """A page on any site can open a WebSocket to the bridge and the browser may attach the portal's cookie:
    the cookie is no credential for an upgrade (cross-site WebSocket hijacking); the bearer token is."""
    upgrade = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Origin: https://evil.example\r\n"
    )
    cookie = f"Cookie: radical_edge_token={TOKEN}\r\n"
    with_cookie = await raw_exchange(bridge, client_ssl, (upgrade + cookie + "\r\n").encode(), head_only=True)
    assert with_cookie.startswith(b"HTTP/1.1 401 ")
    with_bearer = await raw_exchange(bridge, client_ssl, (upgrade + AUTH + "\r\n").encode(), head_only=True)
    assert with_bearer.startswith(b"HTTP/1.1 101 ")


@pytest.mark.parametrize("name", ["..", ".", "a/b", "-x", "a.b", "", "x" * 65, "<img src=x>", "ok%2F"])
async def test_an_edge_cannot_announce_a_plugin_name_a_url_would_fold(bridge, client_ssl, name):
    """Plugin names are one plain URL segment (the profile's PLUGIN_NAME): a hostile edge announcing ``..``
    (which a browser folds into the bridge's own routes) is refused at the handshake."""
    entry = {"type": "x", "version": "1", "enabled": True, "ui_config": {}, "error": None}
    with pytest.raises(HandshakeError) as refused:
        await start_edge(bridge, client_ssl, echo, manifest={name: entry})
    assert "invalid plugin name" in str(refused.value)
