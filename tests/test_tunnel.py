"""The anyio tunnel over in-memory carriers: streams, backpressure, resets, loss."""

from __future__ import annotations

import anyio
import pytest

from radical_edge_proto import Connection, ErrorCode, Limits, PeerRole, Side
from radical_edge_tunnel import (
    HandshakeError,
    StreamResetError,
    Tunnel,
    TunnelStream,
    accept_handshake,
    connect_handshake,
    memory_carrier_pair,
)

pytestmark = pytest.mark.anyio


SMALL = Limits(initial_window_size=64 * 1024, connection_window_size=128 * 1024, max_frame_size=16 * 1024)


async def echo(stream: TunnelStream) -> None:
    assert stream.request is not None
    await stream.respond(200, [("x-path", stream.request.path)])
    async for chunk in stream:
        await stream.send(chunk)
    await stream.end()


async def _accept(hello):
    if hello.credential != "good":
        return False, ErrorCode.UNAUTHORIZED, "bad credential", 0.0
    return True, ErrorCode.NO_ERROR, "resume-1", 5.0


async def open_pair(handler=echo, limits=SMALL, credential="good"):
    a, b = memory_carrier_pair()
    client = Connection(Side.CONNECTOR, limits)
    hub = Connection(Side.HUB, limits)
    hub_errors: list[HandshakeError] = []

    async def hub_side():
        try:
            await accept_handshake(hub, b, _accept)
        except HandshakeError as exc:
            hub_errors.append(exc)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(hub_side)
            welcome = await connect_handshake(client, a, role=PeerRole.EDGE, name="e1", credential=credential)
    except BaseException:
        await a.aclose()
        await b.aclose()
        raise
    assert welcome.resume_token == "resume-1"
    assert not hub_errors
    return Tunnel(client, a, name="client"), Tunnel(hub, b, handler=handler, name="hub")


async def test_echo_large_body_with_backpressure():
    client, hub = await open_pair()
    payload = bytes(range(256)) * 4096  # 1 MiB, 8x the connection window
    received = bytearray()
    async with anyio.create_task_group() as tg:
        await tg.start(client.run)
        await tg.start(hub.run)
        stream = await client.request("POST", "/echo/x")

        async def upload():
            await stream.send(payload, end_stream=True)

        tg.start_soon(upload)
        response = await stream.wait_response()
        assert response.status == 200
        assert dict(response.headers)[b"x-path"] == b"/echo/x"
        async for chunk in stream:
            received += chunk
            # what the hub may hold is bounded by the windows, whatever the body size
            assert hub.conn.receive_window() <= SMALL.connection_window_size
        await client.aclose()
    assert bytes(received) == payload


async def test_bad_credential_is_refused():
    with pytest.raises(ExceptionGroup) as info:
        await open_pair(credential="bad")
    (error,) = info.value.exceptions
    assert isinstance(error, HandshakeError)
    assert error.code is ErrorCode.UNAUTHORIZED
    assert "bad credential" in str(error)


async def test_peer_loss_resets_in_flight_streams():
    started = anyio.Event()

    async def stall(stream: TunnelStream) -> None:
        started.set()
        await anyio.sleep_forever()

    client, hub = await open_pair(handler=stall)
    async with anyio.create_task_group() as tg:
        await tg.start(client.run)
        await tg.start(hub.run)
        streams = [await client.request("GET", f"/slow/{i}", end_stream=True) for i in range(5)]
        await started.wait()
        await hub.aclose()
        with anyio.fail_after(2):
            for stream in streams:
                with pytest.raises(StreamResetError) as info:
                    await stream.wait_response()
                assert info.value.code is ErrorCode.CONNECTION_LOST
        tg.cancel_scope.cancel()


async def test_finished_streams_are_forgotten_on_both_sides():
    """A long-lived tunnel (the bridge's to an edge) must not keep one stream object per request for ever."""
    client, hub = await open_pair()
    async with anyio.create_task_group() as tg:
        await tg.start(client.run)
        await tg.start(hub.run)
        for i in range(50):
            bodiless = i % 2 == 0
            stream = await client.request("POST", f"/echo/{i}", end_stream=bodiless)
            if not bodiless:
                await stream.send(b"x" * (i * 997), end_stream=True)
            assert (await stream.wait_response()).status == 200
            body = b"".join([chunk async for chunk in stream])
            assert body == (b"" if bodiless else b"x" * (i * 997))
        with anyio.fail_after(2):
            while hub._streams:  # the hub's handler tasks finish just after their last frame
                await anyio.sleep(0.01)
        assert client._streams == {}
        assert client.conn.open_streams == ()
        assert hub.conn.open_streams == ()
        await client.aclose()
        tg.cancel_scope.cancel()
