"""Every SDK exception, provoked for real against a live bridge and edge (or a misbehaving fake one)."""

from __future__ import annotations

import pickle
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from websockets.asyncio.server import ServerConnection, serve

from radical_edge_client import (
    AsyncBridgeClient,
    AuthError,
    BridgeProtocolError,
    BridgeUnavailable,
    EdgeNotFound,
    EdgeUnavailable,
    HTTPError,
    NotFound,
    PluginNotFound,
    RadicalEdgeError,
    RequestTimeout,
    SessionExpired,
    SessionNotFound,
    TLSVerificationError,
)
from radical_edge_proto import ErrorCode

from .client_helpers import TOKEN, Live, TLSFiles, example_plugin, live, live_system, tls, wait_for

pytestmark = pytest.mark.anyio
__all__ = ["example_plugin", "live", "tls"]  # fixtures, imported for pytest


async def test_wrong_or_missing_token_is_an_auth_error(live: Live, tmp_path: Path) -> None:
    with pytest.raises(AuthError) as info:
        async with live.client(token="not-the-token"):
            pass
    assert info.value.status == 401
    assert "token" in str(info.value.detail)
    with pytest.raises(AuthError) as info:
        async with live.client(token=None, token_file=tmp_path / "absent.token"):
            pass
    assert info.value.status == 401


async def test_untrusted_certificate_and_unreachable_bridge(live: Live) -> None:
    with pytest.raises(TLSVerificationError) as tls_info:
        async with live.client(cert=live.tls.other_ca):
            pass
    assert isinstance(tls_info.value, BridgeUnavailable)
    assert "not trusted" in str(tls_info.value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(BridgeUnavailable) as info:
        async with live.client(url=f"https://127.0.0.1:{free}"):
            pass
    assert info.value.status is None
    assert f"127.0.0.1:{free}" in str(info.value)
    with pytest.raises(ValueError, match="does not exist"):
        live.client(cert=live.tls.ca.parent / "missing-ca.pem")
    with pytest.raises(ValueError, match="looks like a CA file"):  # radical.edge's BridgeClient(url, cert)
        AsyncBridgeClient(live.url, str(live.tls.ca))


async def test_unknown_edge(live: Live) -> None:
    async with live.client() as bridge:
        with pytest.raises(EdgeNotFound) as info:
            await bridge.get_edge_client("ghost")
        assert info.value.status == 404
        assert "ghost" in info.value.detail
        with pytest.raises(EdgeNotFound) as info:
            await bridge.request("GET", "/ghost/sysinfo/homedir")
        assert info.value.status == 404
        assert info.value.detail == "GET /ghost/sysinfo/homedir: unknown edge 'ghost'"
        assert isinstance(info.value, NotFound)
        with pytest.raises(EdgeNotFound):
            await bridge.disconnect_edge("ghost")


async def test_unknown_plugin(live: Live) -> None:
    async with live.client() as bridge:
        edge = await bridge.get_edge_client("e1")
        with pytest.raises(PluginNotFound) as info:
            await edge.get_plugin("nope")
        assert info.value.status == 404
        assert "sysinfo" in info.value.detail  # says what there is
        with pytest.raises(PluginNotFound) as info:
            await edge.request("GET", "nope/version")
        assert info.value.status == 404
        assert "no plugin 'nope' on edge 'e1'" in info.value.detail
        with pytest.raises(NotFound) as route:
            await edge.request("GET", "probe/no/such/route")
        assert type(route.value) is NotFound


async def test_edge_disconnected(live: Live) -> None:
    async with live.client() as bridge:
        edge = await bridge.get_edge_client("e1")
        probe = await edge.get_plugin("probe", session=False)
        # the edge drops while a request is in flight: 503 at once, not after a timeout
        async with anyio.create_task_group() as tg:
            errors: list[BaseException] = []

            async def slow() -> None:
                try:
                    await probe.request("GET", "slow", params={"seconds": 30})
                except RadicalEdgeError as exc:
                    errors.append(exc)

            tg.start_soon(slow)
            await wait_for(lambda: live.service.tunnel.open_stream_count > 0 if live.service.tunnel else False)
            assert live.service.tunnel is not None
            with anyio.fail_after(5):
                await live.service.tunnel.carrier.aclose()
        (error,) = errors
        assert isinstance(error, EdgeUnavailable)
        assert error.status == 503
        # the edge stops: requests and get_plugin say it is not connected
        live.service.stop()
        await live.wait_edge("stopped")
        with pytest.raises(EdgeUnavailable) as info:
            await probe.request("GET", "version")
        assert info.value.status == 503
        assert "not connected" in info.value.detail
        with pytest.raises(EdgeUnavailable):
            await edge.get_plugin("sysinfo")
        assert await bridge.list_edges() == []
        assert (await bridge.edges())[0]["connected"] is False


async def test_expired_and_unknown_sessions(live: Live) -> None:
    async with live.client() as bridge:
        edge = await bridge.get_edge_client("e1")
        hello = await edge.get_plugin("hello", ttl=0.3)
        assert (await hello.get_json(hello.session_path("greet")))["count"] == 1
        await anyio.sleep(0.6)
        with pytest.raises(SessionExpired) as expired:
            await hello.get_json(hello.session_path("greet"))
        assert expired.value.status == 410
        assert "expired" in expired.value.detail
        # a new session works again
        await hello.register_session()
        assert (await hello.get_json(hello.session_path("greet")))["count"] == 1
        sid = hello.sid
        await hello.unregister_session()
        with pytest.raises(SessionNotFound) as unknown:
            await hello.get_json(f"greet/{sid}")
        assert unknown.value.status == 404


async def test_client_timeout_cancels_the_work_on_the_edge(live: Live) -> None:
    async with live.client() as bridge:
        edge = await bridge.get_edge_client("e1")
        probe = await edge.get_plugin("probe", session=False)
        with anyio.fail_after(5), pytest.raises(RequestTimeout) as info:
            await probe.request("GET", "slow", params={"seconds": 30}, timeout=0.3)
        assert info.value.status is None
        assert "0.3 s" in str(info.value)
        await wait_for(lambda: live.probe.cancelled == 1)
        # the connection is fine afterwards
        assert (await probe.get_json("slow", params={"seconds": 0})) == {"slept": 0}


async def test_bridge_timeout_is_a_request_timeout(tls: TLSFiles, example_plugin: str) -> None:
    async with live_system(tls, request_timeout=0.3) as system, system.client() as bridge:
        edge = await bridge.get_edge_client("e1")
        probe = await edge.get_plugin("probe", session=False)
        with anyio.fail_after(5), pytest.raises(RequestTimeout) as info:
            await probe.request("GET", "slow", params={"seconds": 30})
        assert info.value.status == 504


async def test_unreadable_answers_and_other_statuses(live: Live) -> None:
    async with live.client() as bridge:
        edge = await bridge.get_edge_client("e1")
        probe = await edge.get_plugin("probe", session=False)
        answer = await probe.request("GET", "text")
        assert answer.text == "this is not JSON"
        with pytest.raises(BridgeProtocolError) as info:
            answer.json()
        assert info.value.status == 200
        with pytest.raises(HTTPError) as boom:
            await probe.request("GET", "boom")
        assert boom.value.status == 500
        assert "the probe exploded" in boom.value.detail
        hello = await edge.get_plugin("hello")
        with pytest.raises(HTTPError) as invalid:
            await hello.post_json(f"shout/{hello.sid}", json={"wrong": 1})
        assert invalid.value.status == 422
        assert isinstance(invalid.value.detail, list)  # FastAPI's list of problems
        assert "HTTP 422" in str(invalid.value)


async def test_a_peer_that_breaks_the_protocol(tls: TLSFiles) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(tls.cert), str(tls.key))

    async def garbage(ws: ServerConnection) -> None:
        await ws.recv()  # the HELLO
        await ws.send(b"\xff" * 64)  # not a frame
        await ws.wait_closed()

    async with serve(garbage, "127.0.0.1", 0, ssl=ctx) as server:
        port = server.sockets[0].getsockname()[1]
        with anyio.fail_after(10), pytest.raises(BridgeProtocolError) as info:
            async with AsyncBridgeClient(f"https://127.0.0.1:{port}", token=TOKEN, cert=tls.ca):
                pass
        assert info.value.status is None
        assert info.value.code in (ErrorCode.PROTOCOL_ERROR, ErrorCode.FRAME_SIZE_ERROR)


async def test_errors_carry_status_and_detail_and_pickle() -> None:
    exc = SessionExpired("session abc expired", 410)
    assert (exc.status, exc.detail) == (410, "session abc expired")
    assert str(exc) == "session abc expired (HTTP 410)"
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is SessionExpired
    assert (back.status, back.detail) == (410, "session abc expired")
    assert issubclass(TLSVerificationError, BridgeUnavailable)
    for cls in (
        AuthError,
        EdgeNotFound,
        EdgeUnavailable,
        PluginNotFound,
        SessionExpired,
        RequestTimeout,
        BridgeProtocolError,
    ):
        assert issubclass(cls, RadicalEdgeError)


async def test_a_token_change_on_restart_is_final(live: Live) -> None:
    async with live.client(connect_timeout=2) as bridge:
        edge = await bridge.get_edge_client("e1")
        live.service.stop()  # the edge would be refused too: keep it out of this
        await live.wait_edge("stopped")
        await live.stop_bridge()
        live.config = replace(live.config, token="a-new-token")
        await live.start_bridge()
        await wait_for(lambda: bridge.state == "failed")
        with pytest.raises(AuthError) as info:
            await edge.list_plugins()
        assert info.value.status == 401
        with pytest.raises(AuthError):  # every call, not just the first
            await bridge.list_edges()


async def test_calls_during_an_outage_and_after_close(live: Live) -> None:
    async with live.client(connect_timeout=0.5) as bridge:
        edge = await bridge.get_edge_client("e1")
        probe = await edge.get_plugin("probe", session=False)
        errors: list[BaseException] = []

        async def slow() -> None:
            try:
                await probe.request("GET", "slow", params={"seconds": 30})
            except RadicalEdgeError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow)
            await wait_for(lambda: live.probe.cancelled == 0 and bool(live.bridge.metrics.in_flight))
            await live.stop_bridge()
        (lost,) = errors
        assert isinstance(lost, BridgeUnavailable)
        assert "lost during the request" in str(lost)
        with anyio.fail_after(5), pytest.raises(BridgeUnavailable) as waited:
            await probe.request("GET", "version")
        assert "not connected to the bridge (waited 0.5 s)" in str(waited.value)
        await live.start_bridge()
        await live.wait_edge("connected")
        await wait_for(lambda: bridge.connected)
        errors.clear()
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow)
            await wait_for(lambda: bool(live.bridge.metrics.in_flight))
            await bridge.close()  # from the task that opened it, while a call is in flight
        (closed,) = errors
        assert isinstance(closed, BridgeUnavailable)
        assert "closed" in str(closed)
    with pytest.raises(BridgeUnavailable, match="closed"):
        await probe.request("GET", "version")
    with pytest.raises(BridgeUnavailable, match="closed"):
        await bridge.connect()


async def test_a_failing_upload_source_fails_the_call(live: Live) -> None:
    class Broken(Exception):
        pass

    async def source() -> AsyncIterator[bytes]:
        yield b"x" * 2_000_000
        raise Broken("the disk went away")

    async with live.client() as bridge:
        edge = await bridge.get_edge_client("e1")
        probe = await edge.get_plugin("probe", session=False)
        with anyio.fail_after(10), pytest.raises(Broken):
            await probe.upload("count", source())
        with pytest.raises(TypeError, match="json="):
            await probe.request("POST", "count", data={"a": 1})  # type: ignore[arg-type]
        assert (await probe.get_json("version")) == {"version": "1.2.3"}
