"""The WebSocket dial helper against the independent ``websockets`` server, with real TLS (trustme)."""

from __future__ import annotations

import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path

import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from radical_edge_tunnel import (
    ConnectError,
    TLSVerificationError,
    UpgradeRejectedError,
    client_ssl_context,
    connect_websocket,
    websocket_url,
)

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def server_ssl(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(ctx)
    return ctx


async def echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


def check_token(ws: ServerConnection, request: Request) -> Response | None:
    seen.append(request.headers)
    if request.path != "/register":
        return ws.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        response = ws.respond(HTTPStatus.UNAUTHORIZED, '{"error": true, "status_code": 401, "detail": "wrong token"}')
        response.headers["Content-Type"] = "application/json"
        return response
    return None


seen: list[Headers] = []


@asynccontextmanager
async def ws_server(ssl_context: ssl.SSLContext | None) -> AsyncIterator[int]:
    async with serve(echo, "localhost", 0, ssl=ssl_context, process_request=check_token) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield port


async def test_verified_tls_round_trip(server_ssl: ssl.SSLContext, ca_file: Path) -> None:
    seen.clear()
    async with ws_server(server_ssl) as port:
        carrier = await connect_websocket(
            f"wss://localhost:{port}/register", token=TOKEN, ssl_context=client_ssl_context(ca_file)
        )
        try:
            # over TLS as over plain TCP, the carrier can watch its writes (a slow peer is waited for): Tunnel.flush
            assert carrier.watch_writes(30.0) is sys.platform.startswith("linux")
            for size in (1, 1000, 300_000):
                payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
                await carrier.send(payload)
                got = b""
                while len(got) < len(payload):
                    got += await carrier.receive()
                assert got == payload
        finally:
            await carrier.aclose()
    assert seen[-1]["Authorization"] == f"Bearer {TOKEN}"
    assert seen[-1]["Host"] == f"localhost:{port}"


async def test_plain_ws_round_trip() -> None:
    async with ws_server(None) as port:
        carrier = await connect_websocket(f"ws://localhost:{port}/register", token=TOKEN)
        try:
            assert carrier.watch_writes(30.0) is sys.platform.startswith("linux")  # plain TCP too
            await carrier.send(b"ping")
            assert await carrier.receive() == b"ping"
        finally:
            await carrier.aclose()


async def test_wrong_ca_is_refused_clearly(server_ssl: ssl.SSLContext, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with ws_server(server_ssl) as port:
        with pytest.raises(TLSVerificationError) as info:
            await connect_websocket(
                f"wss://localhost:{port}/register", token=TOKEN, ssl_context=client_ssl_context(other)
            )
    assert "not trusted" in str(info.value)
    assert "--cert" in str(info.value)


async def test_system_store_does_not_trust_a_private_ca(server_ssl: ssl.SSLContext) -> None:
    async with ws_server(server_ssl) as port:
        with pytest.raises(TLSVerificationError):
            await connect_websocket(f"wss://localhost:{port}/register", token=TOKEN)


async def test_host_name_mismatch_is_refused(server_ssl: ssl.SSLContext, ca_file: Path) -> None:
    async with ws_server(server_ssl) as port:
        with pytest.raises(TLSVerificationError, match="not trusted"):
            await connect_websocket(
                f"wss://127.0.0.1:{port}/register", token=TOKEN, ssl_context=client_ssl_context(ca_file)
            )


async def test_insecure_mode_connects_but_says_so(server_ssl: ssl.SSLContext, caplog: pytest.LogCaptureFixture) -> None:
    async with ws_server(server_ssl) as port:
        ctx = client_ssl_context(insecure_skip_tls_verify=True)
        carrier = await connect_websocket(f"wss://127.0.0.1:{port}/register", token=TOKEN, ssl_context=ctx)
        await carrier.aclose()
    assert any("TLS VERIFICATION IS OFF" in r.message for r in caplog.records)


async def test_http_rejection_of_the_upgrade(server_ssl: ssl.SSLContext, ca_file: Path) -> None:
    ctx = client_ssl_context(ca_file)
    async with ws_server(server_ssl) as port:
        with pytest.raises(UpgradeRejectedError) as info:
            await connect_websocket(f"wss://localhost:{port}/register", token="wrong", ssl_context=ctx)
        assert info.value.status == 401
        assert info.value.detail == "wrong token"
        assert "HTTP 401" in str(info.value)
        assert "--token" in str(info.value)

        with pytest.raises(UpgradeRejectedError) as info:
            await connect_websocket(f"wss://localhost:{port}/elsewhere", token=TOKEN, ssl_context=ctx)
        assert info.value.status == 404


async def test_unreachable_and_bad_urls(tmp_path: Path) -> None:
    async with ws_server(None) as port:
        pass  # the port is free again
    with pytest.raises(ConnectError, match="cannot connect"):
        await connect_websocket(f"ws://localhost:{port}/register")
    with pytest.raises(ConnectError, match="not a WebSocket URL"):
        await connect_websocket("https://localhost/register")
    with pytest.raises(ConnectError, match="does not exist"):
        client_ssl_context(tmp_path / "missing.pem")
    for token in ("bad\r\nx-injected: 1", "jeton-\u00e9t\u00e9"):
        with pytest.raises(ConnectError, match="malformed"):
            await connect_websocket(f"ws://localhost:{port}/register", token=token)


def test_websocket_url() -> None:
    assert websocket_url("https://bridge.example.org:8000", "/register") == "wss://bridge.example.org:8000/register"
    assert websocket_url("http://h:1/", "/register") == "ws://h:1/register"
    assert websocket_url("wss://h/register", "/register") == "wss://h/register"
    assert websocket_url("https://h/prefix/", "/register") == "wss://h/prefix/register"
    assert websocket_url("HTTPS://[::1]:9/", "/connect") == "wss://[::1]:9/connect"
    with pytest.raises(ValueError, match="scheme"):
        websocket_url("ftp://h", "/register")
    with pytest.raises(ValueError, match="no host"):
        websocket_url("https://", "/register")
