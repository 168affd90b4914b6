"""`with_buffered_tls`: one receive takes every TLS record already here, and loses or reorders nothing."""

from __future__ import annotations

import ssl

import anyio
import pytest
import trustme
from anyio.streams.tls import TLSListener

from radical_edge_tunnel import tls_object, with_buffered_tls

pytestmark = pytest.mark.anyio


async def test_takes_the_records_behind_the_first_and_keeps_the_byte_order() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    payload = bytes(range(256)) * 1024  # 256 KiB: 16 TLS records, small enough for the socket buffers
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = tcp.extra(anyio.abc.SocketAttribute.local_port)
    listener = TLSListener(tcp, server_ctx, standard_compatible=False)
    sent = anyio.Event()

    async def serve(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            await stream.send(payload)
            sent.set()
            await anyio.sleep(5)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        client = await anyio.connect_tcp(
            "127.0.0.1", port, tls=True, ssl_context=client_ctx, tls_standard_compatible=False
        )
        assert tls_object(client) is not None
        with anyio.fail_after(5):
            await sent.wait()
            await anyio.sleep(0.05)  # let the bytes reach our socket
            received = bytearray()
            first = await client.receive(1 << 20)
            batch = with_buffered_tls(tls_object(client), first, limit=128 * 1024)
            assert len(first) <= 16384 < len(batch) <= 128 * 1024 + 16384  # more than one record at once
            received += batch
            while len(received) < len(payload):
                received += with_buffered_tls(tls_object(client), await client.receive(1 << 20))
        assert bytes(received) == payload
        await anyio.aclose_forcefully(client)
        tg.cancel_scope.cancel()


async def test_a_plain_stream_is_left_alone() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def serve(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            await stream.send(b"hello")

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        client = await anyio.connect_tcp("127.0.0.1", port)
        assert tls_object(client) is None
        assert with_buffered_tls(None, b"abc") == b"abc"
        await client.aclose()
        tg.cancel_scope.cancel()
