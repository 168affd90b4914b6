"""The optional accelerators (the ``speedups`` extra): same bytes on the wire, both ways, as the pure path."""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.server import ServerProtocol
from websockets.uri import parse_uri
from wsproto import ConnectionType, WSConnection, frame_protocol
from wsproto.events import AcceptConnection, BytesMessage, Message, Request

from radical_edge_tunnel import connect_websocket, data_frame_builder, enable_speedups, websocket_masking

pytestmark = pytest.mark.anyio

PURE = frame_protocol.XorMaskerSimple
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def accelerated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Turn the accelerators on for one test; the pure masker is back afterwards."""
    monkeypatch.delenv("RADICAL_EDGE_PURE_PYTHON", raising=False)
    monkeypatch.setattr(frame_protocol, "XorMaskerSimple", PURE)  # restored after the test
    assert enable_speedups() == "C (websockets.speedups)"


def test_the_suite_runs_the_pure_path() -> None:
    assert websocket_masking() == "pure Python"
    assert enable_speedups() == "pure Python"  # the environment says so: nothing is installed


def test_pure_python_env_keeps_the_pure_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADICAL_EDGE_PURE_PYTHON", "1")
    monkeypatch.setattr(frame_protocol, "XorMaskerSimple", PURE)
    assert enable_speedups() == "pure Python"
    assert frame_protocol.XorMaskerSimple is PURE


@pytest.mark.usefixtures("accelerated")
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.binary(min_size=4, max_size=4),
    data=st.binary(max_size=4096),
    cuts=st.lists(st.integers(min_value=0, max_value=4096), max_size=6),
)
def test_accelerated_masker_matches_wsprotos_across_any_split(key: bytes, data: bytes, cuts: list[int]) -> None:
    fast = frame_protocol.XorMaskerSimple(bytearray(key))  # the class wsproto now makes its maskers from
    assert fast.__class__ is not PURE
    pieces, last = [], 0
    for cut in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
        pieces.append(fast.process(data[last:cut]))
        last = cut
    assert b"".join(pieces) == bytes(PURE(bytearray(key)).process(bytearray(data)))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def _echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


@pytest.fixture
async def echo_server(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[tuple[int, ssl.SSLContext]]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with serve(_echo, "localhost", 0, ssl=server_ctx, max_size=None) as server:
        yield next(iter(server.sockets)).getsockname()[1], client_ctx


@pytest.mark.usefixtures("accelerated")
async def test_accelerated_client_frames_are_valid_for_an_independent_server(
    echo_server: tuple[int, ssl.SSLContext],
) -> None:
    """Frames masked by the C routine are unmasked correctly by ``websockets``; its answers, by ours."""
    port, ctx = echo_server
    carrier = await connect_websocket(f"wss://localhost:{port}/register", ssl_context=ctx)
    try:
        for size in (1, 3, 125, 126, 65535, 65536, 1 << 20, (3 << 20) + 7):
            payload = os.urandom(size)
            await carrier.send(payload)
            got = bytearray()
            while len(got) < size:
                chunk = await carrier.receive()
                assert chunk, "the echo server went away"
                got += chunk
            assert bytes(got) == payload
    finally:
        await carrier.aclose()


@pytest.mark.usefixtures("accelerated")
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65536, (1 << 20) + 3])
def test_accelerated_server_unmasks_frames_of_an_independent_client(size: int) -> None:
    """The bridge's side: wsproto as a server, unmasking with the C routine what ``websockets``'
    sans-I/O client masked, in pieces of awkward sizes."""
    server = WSConnection(ConnectionType.SERVER)
    client = ClientProtocol(parse_uri("ws://localhost/register"), max_size=None)
    client.send_request(client.connect())
    server.receive_data(b"".join(client.data_to_send()))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    payload = os.urandom(size)
    client.send_binary(payload)
    wire = b"".join(client.data_to_send())
    got = bytearray()
    for start in range(0, len(wire), 4099):
        server.receive_data(wire[start : start + 4099])
        for event in server.events():
            assert isinstance(event, BytesMessage)
            got += event.data
    assert bytes(got) == payload


def test_a_process_with_the_extra_uses_it(tmp_path: Path) -> None:
    """Installed and not refused by the environment, the accelerator is what a new process uses."""
    env = {k: v for k, v in os.environ.items() if k != "RADICAL_EDGE_PURE_PYTHON"}
    env["HOME"] = str(tmp_path)
    script = "from radical_edge_tunnel import enable_speedups; print(enable_speedups())"
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "C (websockets.speedups)"


@pytest.mark.usefixtures("accelerated")
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, (1 << 20) + 3])
def test_the_accelerated_client_frames_are_read_by_wsproto_and_by_websockets(size: int) -> None:
    """A client carrier with the accelerators builds its data frames itself (fewer copies): a final,
    masked binary frame with a fresh key, which both wsproto and ``websockets`` (sans-I/O server) read back."""
    build = data_frame_builder(client=True)
    assert build is not None
    payload = os.urandom(size)
    frame, again = build(payload), build(payload)
    header = 2 if size < 126 else 4 if size < 1 << 16 else 10
    assert frame[header : header + 4] != again[header : header + 4]  # a fresh masking key each time

    server = WSConnection(ConnectionType.SERVER)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="x", target="/")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    server.receive_data(frame)
    got = b"".join(bytes(e.data) for e in server.events() if isinstance(e, BytesMessage))
    assert got == payload

    independent = ServerProtocol(max_size=None)
    independent.receive_data(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    (request,) = independent.events_received()
    independent.send_response(independent.accept(request))
    independent.receive_data(again)
    (message,) = independent.events_received()
    assert message.data == payload


@pytest.mark.usefixtures("accelerated")
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, (1 << 20) + 3])
def test_the_accelerated_server_frames_are_wsprotos_bytes_and_read_by_websockets(size: int) -> None:
    """A server carrier with the accelerators builds its data frames itself (one copy instead of wsproto's
    five): byte for byte what wsproto sends for the same message, and read back by ``websockets``' client."""
    build = data_frame_builder(client=False)
    assert build is not None
    payload = os.urandom(size)
    server = WSConnection(ConnectionType.SERVER)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="x", target="/")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert build(payload) == server.send(Message(data=payload))
    assert build(memoryview(payload)) == build(bytearray(payload)) == build(payload)

    independent = ClientProtocol(parse_uri("ws://x/"), max_size=None)
    request = independent.connect()
    independent.send_request(request)
    independent.data_to_send()
    key = request.headers["Sec-WebSocket-Key"]
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    independent.receive_data(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    independent.receive_data(build(payload))
    events = independent.events_received()
    assert events[-1].data == payload


def test_without_the_accelerators_the_carrier_uses_wsprotos_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADICAL_EDGE_PURE_PYTHON", "1")
    monkeypatch.setattr(frame_protocol, "XorMaskerSimple", PURE)
    assert data_frame_builder(client=True) is None
    assert data_frame_builder(client=False) is None
