"""A slow peer (a thin link: a write drains slowly) is told from one that takes no data.

The tunnel: both ends run the real tunnel over the real WebSocket carrier on
loopback TCP, with small socket buffers so that a write waits on the peer
within a few hundred KiB.  The hub sends a 1.5 MiB answer; the connector takes
it either slowly (a read now and then) or not at all.  The bridge's HTTP
channel: the same, for a response written to an HTTP client.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import sys

import anyio
import anyio.abc
import pytest
import trustme
from anyio.streams.tls import TLSStream
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType

from radical_edge_bridge import HTTPLimits
from radical_edge_bridge._deadlines import Deadlines
from radical_edge_bridge._http import ClientGone, HTTPChannel
from radical_edge_bridge._listener import ConnectionGate, ConnectionServer
from radical_edge_bridge._metrics import ConnectionStats
from radical_edge_proto import Connection, ErrorCode, Limits, PeerRole, Side
from radical_edge_tunnel import (
    LargeReads,
    Tunnel,
    TunnelStream,
    WebSocketCarrier,
    accept_handshake,
    bytes_acknowledged,
    connect_handshake,
)

from .test_tunnel import handshaken

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the count of acknowledged bytes is Linux's"),
]

BODY = 1536 * 1024  # more than the connector's window: at least two writes, each far larger than the buffers
LIMITS = Limits(initial_window_size=1024 * 1024, connection_window_size=4 * 1024 * 1024, max_frame_size=256 * 1024)
BUFFER = 16 * 1024  # SO_SNDBUF / SO_RCVBUF on the sockets (the kernel doubles it)


def small_buffers(stream: anyio.abc.SocketStream) -> None:
    sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)


class PacedCarrier:
    """The connector's carrier on a thin link: each read of the socket waits ``pause`` first (None: the reads
    stop altogether once ``stop`` is set)."""

    def __init__(self, inner: WebSocketCarrier, pause: float) -> None:
        self.inner, self.pause = inner, pause
        self.stop = anyio.Event()
        self.reads = 0

    async def send(self, data: bytes) -> None:
        await self.inner.send(data)

    async def receive(self) -> bytes:
        if self.stop.is_set():
            await anyio.sleep_forever()
        await anyio.sleep(self.pause)
        self.reads += 1
        return await self.inner.receive()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def big_answer(stream: TunnelStream) -> None:
    await stream.respond(200)
    block = b"b" * (256 * 1024)
    for _ in range(BODY // len(block)):
        await stream.send(block)
    await stream.end()


async def connection_pair(
    ca: trustme.CA | None,
) -> tuple[anyio.abc.ByteStream, anyio.abc.ByteStream, anyio.abc.Listener]:
    """A loopback TCP connection with small buffers, each side read through :class:`LargeReads` as the bridge and
    its peers read a socket, and over TLS with ``ca``: (the accepting side, the dialling side, the listener)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    accepted: list[anyio.abc.SocketStream] = []

    async def take(stream: anyio.abc.SocketStream) -> None:
        accepted.append(stream)
        await anyio.sleep_forever()

    dialled = await anyio.connect_tcp("127.0.0.1", port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, take)
        while not accepted:
            await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    for stream in (accepted[0], dialled):
        small_buffers(stream)
    server: anyio.abc.ByteStream = LargeReads(accepted[0])
    client: anyio.abc.ByteStream = LargeReads(dialled)
    if ca is None:
        return server, client, listener
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    wrapped: list[anyio.abc.ByteStream] = []

    async def server_side() -> None:
        wrapped.append(await TLSStream.wrap(server, server_side=True, ssl_context=server_ctx))

    async with anyio.create_task_group() as tg:
        tg.start_soon(server_side)
        client = await TLSStream.wrap(client, hostname="localhost", ssl_context=client_ctx)
    return wrapped[0], client, listener


async def tcp_tunnels(
    pause: float, write_timeout: float, ca: trustme.CA | None = None
) -> tuple[Tunnel, Tunnel, PacedCarrier, anyio.abc.Listener]:
    """The hub's tunnel (answers with :func:`big_answer`, ``write_timeout`` for its writes) and the connector's,
    over one :func:`connection_pair` whose connector side reads through a :class:`PacedCarrier`; handshakes done."""
    hub_stream, client_stream, listener = await connection_pair(ca)
    hub_carrier = WebSocketCarrier(hub_stream, WSConnection(ConnectionType.SERVER))
    paced = PacedCarrier(WebSocketCarrier(client_stream, WSConnection(ConnectionType.CLIENT)), pause)

    async def accept(hello):
        return True, ErrorCode.NO_ERROR, "resume-1", 5.0

    client, hub = Connection(Side.CONNECTOR, LIMITS), Connection(Side.HUB, LIMITS)
    async with anyio.create_task_group() as tg:
        tg.start_soon(accept_handshake, hub, hub_carrier, accept)
        await connect_handshake(client, paced, role=PeerRole.EDGE, name="e1", credential="good")
    hub_tunnel = Tunnel(hub, hub_carrier, handler=big_answer, name="hub")
    hub_tunnel.write_timeout = write_timeout
    assert hub_carrier.watch_writes(write_timeout)  # what the tunnel asked for: it watches its writes itself
    return hub_tunnel, Tunnel(client, paced, name="connector"), paced, listener


async def test_the_tcp_carrier_counts_what_the_peer_has_taken() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with await anyio.connect_tcp("127.0.0.1", port) as client:
        sock = client.extra(anyio.abc.SocketAttribute.raw_socket)
        before = bytes_acknowledged(sock)
        assert before is not None
        await client.send(b"x" * 5000)
        with anyio.fail_after(5):
            while bytes_acknowledged(sock) != before + 5000:  # the peer's kernel takes it (no one reads yet)
                await anyio.sleep(0.01)
    await listener.aclose()
    assert bytes_acknowledged(None) is None
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with udp:
        assert bytes_acknowledged(udp) is None  # not TCP: cannot be known


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_a_slow_peer_is_waited_for_beyond_the_write_timeout(
    tls: bool, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    # the connector reads a socket's worth (~32 KiB) every 50 ms: well under a MiB per second, so one write of a
    # window (1 MiB) waits on it for seconds, ten times the hub's write timeout.  It takes data all along, so the
    # hub must not give it up; the whole answer arrives
    hub, client, paced, listener = await tcp_tunnels(pause=0.05, write_timeout=0.4, ca=ca if tls else None)
    got = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(hub.run)
        tg.start_soon(client.run)
        with anyio.fail_after(60):
            stream = await client.request("GET", "/big", end_stream=True)
            assert (await stream.wait_response()).status == 200
            started = anyio.current_time()
            while chunk := await stream.receive():
                got += len(chunk)
        took = anyio.current_time() - started
        assert hub.is_open
        assert client.is_open
        await client.aclose()
        await hub.aclose()
        tg.cancel_scope.cancel()
    await listener.aclose()
    assert got == BODY
    assert took > 4 * 0.4, f"the link was not slow enough to test anything ({took:.2f} s)"
    assert paced.reads > 20
    assert "taking none" not in caplog.text
    assert "took no data" not in caplog.text


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_a_peer_that_stops_taking_data_is_still_cut_after_the_write_timeout(
    tls: bool, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    # the same thin link, but the connector stops reading once the answer has started: the hub gives it up after
    # about write_timeout (half of it waiting, half watching the peer take nothing), as before
    caplog.set_level(logging.DEBUG, logger="radical_edge")
    hub, client, paced, listener = await tcp_tunnels(pause=0.05, write_timeout=0.6, ca=ca if tls else None)
    async with anyio.create_task_group() as tg:
        tg.start_soon(hub.run)
        tg.start_soon(client.run)
        stream = await client.request("GET", "/big", end_stream=True)
        with anyio.fail_after(10):
            assert (await stream.wait_response()).status == 200
            paced.stop.set()
            stopped = anyio.current_time()
            await hub.closed.wait()
        waited = anyio.current_time() - stopped
        tg.cancel_scope.cancel()
    await listener.aclose()
    assert 0.3 <= waited < 3
    assert "the peer taking none of it; closing" in caplog.text


def test_the_tcp_info_field_is_where_the_probe_reads_it() -> None:
    # tcpi_bytes_acked counts the SYN as one: a fresh connection says 1 and grows by exactly the bytes acknowledged
    srv = socket.create_server(("127.0.0.1", 0))
    with srv, socket.create_connection(srv.getsockname()) as c:
        conn, _ = srv.accept()
        with conn:
            raw = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
            assert struct.unpack_from("<Q", raw, 120)[0] == bytes_acknowledged(c) == 1


# ---------------------------------------------------------------- the bridge's HTTP responses


async def answer_big(channel: HTTPChannel, chunks: int) -> None:
    """Read the request, then answer it with ``chunks`` writes of 256 KiB."""
    assert await channel.next_request() is not None
    block = b"h" * (256 * 1024)
    await channel.start_response(200, [(b"content-length", str(chunks * len(block)).encode())])
    for _ in range(chunks):
        await channel.send_body(block)
    await channel.end_response()


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_a_slow_http_client_is_not_cut_while_it_takes_the_response(tls: bool, ca: trustme.CA) -> None:
    # 256 KiB writes to a client that reads ~32 KiB every 40 ms: each write waits about a second on it, more
    # than the write timeout, and the client takes bytes all the while: it gets the whole response
    server, client, listener = await connection_pair(ca if tls else None)
    deadlines = Deadlines(0.05)
    channel = HTTPChannel(server, HTTPLimits(write_timeout=0.4), deadlines)
    got, chunks = 0, 8
    async with anyio.create_task_group() as tg:
        tg.start_soon(deadlines.run)
        tg.start_soon(answer_big, channel, chunks)
        await client.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        started = anyio.current_time()
        with anyio.fail_after(60):
            while got < chunks * 256 * 1024:
                await anyio.sleep(0.04)
                got += len(await client.receive(32 * 1024))
        took = anyio.current_time() - started
        tg.cancel_scope.cancel()
    await channel.aclose()
    await anyio.aclose_forcefully(client)
    await listener.aclose()
    assert got > chunks * 256 * 1024  # the whole body (and the head)
    assert took > 4 * 0.4, f"the client was not slow enough to test anything ({took:.2f} s)"


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_an_http_client_that_stops_taking_the_response_is_cut_after_the_write_timeout(
    tls: bool, ca: trustme.CA
) -> None:
    server, client, listener = await connection_pair(ca if tls else None)
    deadlines = Deadlines(0.05)
    channel = HTTPChannel(server, HTTPLimits(write_timeout=0.4), deadlines)
    async with anyio.create_task_group() as tg:
        tg.start_soon(deadlines.run)
        await client.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        started = anyio.current_time()
        with anyio.fail_after(10), pytest.raises(ClientGone, match=r"client took no response bytes for 0\.2 s"):
            await answer_big(channel, 64)
        waited = anyio.current_time() - started
        tg.cancel_scope.cancel()
    await channel.aclose()
    await anyio.aclose_forcefully(client)
    await listener.aclose()
    assert 0.3 <= waited < 3


# ---------------------------------------------------------------- what the watch must not change


class TricklingCarrier:
    """A carrier over TCP (it watches its writes) whose peer takes a trickle: a write never ends, and is never
    given up by the watch either; ``aclose`` ends it."""

    def __init__(self) -> None:
        self.closed = anyio.Event()
        self.writes = 0

    def watch_writes(self, timeout: float) -> bool:
        return True

    async def send(self, data: bytes) -> None:
        self.writes += 1
        await self.closed.wait()

    async def receive(self) -> bytes:
        await self.closed.wait()
        return b""

    async def aclose(self) -> None:
        self.closed.set()


async def test_closing_a_tunnel_is_not_held_up_by_a_peer_that_trickles() -> None:
    # the close's own frames (GOAWAY) meet a write the watch will not give up (the peer takes a little all the
    # time): the close gives them 2 s, as it always did, and then closes the carrier
    client, _, a, b = await handshaken()
    carrier = TricklingCarrier()
    tunnel = Tunnel(client, carrier, name="closing")
    fired: list[bool] = []

    async def watchdog() -> None:  # a shielded write ignores the test's own timeouts: end it if the close hangs
        await anyio.sleep(8)
        fired.append(True)
        await carrier.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog)
        started = anyio.current_time()
        await tunnel.aclose()
        took = anyio.current_time() - started
        tg.cancel_scope.cancel()
    await a.aclose()
    await b.aclose()
    assert not fired, "the close waited for the trickling write"
    assert carrier.writes == 1
    assert 1.5 <= took < 5


async def test_a_bridge_without_tls_watches_its_writes_too() -> None:
    # --insecure-no-tls (a loopback test setup, or behind a proxy that ends TLS): the connections reach the bridge's
    # handler read through LargeReads as under TLS, so a tunnel on one watches its writes
    served: list[anyio.abc.ByteStream] = []

    async def handler(stream: anyio.abc.ByteStream) -> None:
        served.append(stream)
        await anyio.sleep(0.5)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    server = ConnectionServer(handler, ConnectionGate(10, 10, ConnectionStats()), ssl_context=None, handshake_timeout=5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, listener.listeners)
        async with await anyio.connect_tcp("127.0.0.1", port):
            with anyio.fail_after(5):
                while not served:
                    await anyio.sleep(0.01)
            assert isinstance(served[0], LargeReads)
            assert served[0].watch_writes(30.0)
        tg.cancel_scope.cancel()
    await listener.aclose()
