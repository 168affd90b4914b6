"""The anyio tunnel over in-memory carriers: streams, backpressure, resets, loss."""

from __future__ import annotations

import struct

import anyio
import pytest

from radical_edge_proto import (
    Connection,
    ConnectionClosed,
    ErrorCode,
    Event,
    Limits,
    LocalProtocolError,
    ManifestUpdated,
    Notification,
    PeerRole,
    Side,
    Subscribed,
    Subscription,
    Unsubscribed,
)
from radical_edge_tunnel import (
    HandshakeError,
    MemoryCarrier,
    StreamResetError,
    Tunnel,
    TunnelClosedError,
    TunnelStream,
    accept_handshake,
    connect_handshake,
    memory_carrier_pair,
)

from .wire_helpers import raw_headers, response_payload

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


async def open_pair(handler=echo, limits=SMALL, credential="good", *, on_client_event=None, on_hub_event=None):
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
    return (
        Tunnel(client, a, on_event=on_client_event, name="client"),
        Tunnel(hub, b, handler=handler, on_event=on_hub_event, name="hub"),
    )


async def test_echo_large_body_with_backpressure():
    client, hub = await open_pair()
    for tunnel in (client, hub):  # windows may not grow past the announced ones here
        tunnel.max_stream_window = SMALL.initial_window_size
        tunnel.max_connection_window = SMALL.connection_window_size
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
            assert hub._conn.receive_window() <= SMALL.connection_window_size
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
    serving = 0

    async def stall(stream: TunnelStream) -> None:
        nonlocal serving
        serving += 1
        if serving == 5:  # every stream reached the hub: none is refused by its GOAWAY
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
        assert client.open_stream_count == 0
        assert hub.open_stream_count == 0
        await client.aclose()
        tg.cancel_scope.cancel()


async def wait_for(condition) -> None:
    with anyio.fail_after(2):
        while not condition():
            await anyio.sleep(0.01)


def stalling_handler() -> tuple[anyio.Event, object]:
    started = anyio.Event()

    async def stall(stream: TunnelStream) -> None:
        started.set()
        await anyio.sleep_forever()

    return started, stall


async def test_a_peer_goaway_with_an_error_ends_streams_with_its_code_and_reason():
    started, stall = stalling_handler()
    client, hub = await open_pair(handler=stall)
    async with anyio.create_task_group() as tg:
        await tg.start(client.run)
        await tg.start(hub.run)
        stream = await client.request("POST", "/slow")
        await started.wait()
        await hub.aclose(ErrorCode.INTERNAL_ERROR, "hub exploded")
        with anyio.fail_after(2):
            with pytest.raises(StreamResetError) as info:
                await stream.wait_response()
            await client.closed.wait()
        assert info.value.code is ErrorCode.INTERNAL_ERROR
        assert "hub exploded" in str(info.value)
        assert client.close_event == ConnectionClosed(ErrorCode.INTERNAL_ERROR, "hub exploded", by_peer=True)
        assert hub.close_event == ConnectionClosed(ErrorCode.INTERNAL_ERROR, "hub exploded", by_peer=False)
        with pytest.raises(StreamResetError) as info:
            await stream.send(b"more")
        assert info.value.code is ErrorCode.INTERNAL_ERROR
        with pytest.raises(TunnelClosedError) as closed_info:
            await client.request("GET", "/again")
        assert "hub exploded" in str(closed_info.value)
        assert closed_info.value.close_event == client.close_event
        tg.cancel_scope.cancel()


async def test_a_malformed_frame_ends_streams_with_the_protocol_error_and_keeps_what_came_before():
    async def bad_answer(stream: TunnelStream) -> None:
        # a valid response head and, in the same carrier message, a frame of an unknown type
        garbage = struct.pack("!IBBI", 0, 0xEE, 0, 0)
        await stream.tunnel.carrier.send(raw_headers(stream.id, response_payload(200)) + garbage)
        await anyio.sleep_forever()

    client, hub = await open_pair(handler=bad_answer)
    async with anyio.create_task_group() as tg:
        await tg.start(client.run)
        await tg.start(hub.run)
        stream = await client.request("GET", "/bad", end_stream=True)
        with anyio.fail_after(2):
            await client.closed.wait()
        assert stream.response is not None  # decoded before the garbage: not lost
        assert stream.response.status == 200
        with pytest.raises(StreamResetError) as info:
            await stream.receive()
        assert info.value.code is ErrorCode.PROTOCOL_ERROR
        assert "unknown frame type 0xee" in str(info.value)
        assert stream.reset_code is ErrorCode.PROTOCOL_ERROR
        assert client.close_event == ConnectionClosed(ErrorCode.PROTOCOL_ERROR, "unknown frame type 0xee", False)
        # the hub was told why, in a GOAWAY
        with anyio.fail_after(2):
            await hub.closed.wait()
        assert hub.close_event == ConnectionClosed(ErrorCode.PROTOCOL_ERROR, "unknown frame type 0xee", True)
        tg.cancel_scope.cancel()


async def test_tunnel_methods_send_at_once_and_is_open_follows_the_connection():
    client_events: list[Event] = []
    hub_events: list[Event] = []
    client, hub = await open_pair(on_client_event=client_events.append, on_hub_event=hub_events.append)
    async with anyio.create_task_group() as tg:
        await tg.start(client.run)
        await tg.start(hub.run)
        assert client.is_open
        assert hub.is_open
        assert not client.is_closed
        assert not hub.is_closed
        # no flush() anywhere: each method writes what it queued
        await client.subscribe(5, Subscription(topic="tick"), resume_after=3)
        await client.send_manifest({"echo": {}})
        await wait_for(lambda: len(hub_events) == 2)
        assert hub_events == [Subscribed(5, Subscription(topic="tick"), 3), ManifestUpdated({"echo": {}})]
        assert hub.subscriptions == {5: Subscription(topic="tick")}
        assert await hub.send_event("e1", "echo", "tick", 4, b"{}") is True
        assert await hub.send_event("e1", "echo", "other", 5, b"{}") is False  # no subscription wants it
        # a batch: queued without writing, then one flush
        assert hub.queue_event("e1", "echo", "tick", 6, b"1")
        assert hub.queue_event("e1", "echo", "tick", 7, b"2")
        await hub.flush()
        await wait_for(lambda: len(client_events) == 3)
        assert all(isinstance(e, Notification) for e in client_events)
        assert [e.seq for e in client_events if isinstance(e, Notification)] == [4, 6, 7]
        await client.unsubscribe(5)
        await wait_for(lambda: len(hub_events) == 3)
        assert hub_events[-1] == Unsubscribed(5)
        assert hub.subscriptions == {}
        await client.aclose()
        with anyio.fail_after(2):
            await hub.closed.wait()
        assert not client.is_open
        assert client.is_closed
        assert not hub.is_open
        assert hub.is_closed
        tg.cancel_scope.cancel()


async def test_open_stream_count_send_window_and_draining():
    started, stall = stalling_handler()
    client, hub = await open_pair(handler=stall)
    async with anyio.create_task_group() as tg:
        await tg.start(client.run)
        await tg.start(hub.run)
        stream = await client.request("POST", "/x")
        await started.wait()
        assert client.open_stream_count == hub.open_stream_count == 1
        assert stream.send_window == SMALL.initial_window_size
        await stream.send(b"x" * 1000)
        assert stream.send_window == SMALL.initial_window_size - 1000
        tg.start_soon(client.drain)
        await wait_for(lambda: not hub.is_open)
        # draining: neither open for new streams nor closed
        assert not client.is_open
        assert not client.is_closed
        assert not hub.is_closed
        await stream.reset()
        assert stream.send_window == 0
        with anyio.fail_after(2):
            await client.closed.wait()
            await hub.closed.wait()
        assert client.open_stream_count == hub.open_stream_count == 0
        assert client.is_closed
        assert hub.is_closed
        tg.cancel_scope.cancel()


async def handshaken(
    interval: float = 5.0, buffer: int = 16
) -> tuple[Connection, Connection, MemoryCarrier, MemoryCarrier]:
    """A connector and a hub whose handshake is done, with this heartbeat interval, over carriers that hold
    ``buffer`` messages; no tunnel runs on them yet."""

    async def accept(hello):
        return True, ErrorCode.NO_ERROR, "resume-1", interval

    a, b = memory_carrier_pair(buffer=buffer)
    client, hub = Connection(Side.CONNECTOR, SMALL), Connection(Side.HUB, SMALL)
    async with anyio.create_task_group() as tg:
        tg.start_soon(accept_handshake, hub, b, accept)
        await connect_handshake(client, a, role=PeerRole.EDGE, name="e1", credential="good")
    return client, hub, a, b


async def test_a_steady_heartbeat_puts_the_hub_timer_off_instead_of_waking_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the connector pings after each interval of silence; each PING puts the hub's deadlines (its own PING after
    # two intervals, giving up after three) off by an interval.  The hub's timer task must not wake at each old
    # deadline for nothing: on a bridge with 1,000 idle edges that was a task wake-up per PING
    interval = 0.4
    client, hub, a, b = await handshaken(interval)
    calls = {"hub": 0, "connector": 0}
    real = Connection.handle_timer

    def counted(self: Connection, now: float) -> list[Event]:
        calls["hub" if self is hub else "connector"] += 1
        return real(self, now)

    monkeypatch.setattr(Connection, "handle_timer", counted)  # (a Connection has no instance dict)
    client_tunnel, hub_tunnel = Tunnel(client, a, name="client"), Tunnel(hub, b, name="hub")
    async with anyio.create_task_group() as tg:
        tg.start_soon(client_tunnel.run)
        tg.start_soon(hub_tunnel.run)
        await anyio.sleep(8 * interval)
        assert hub_tunnel.is_open
        assert client_tunnel.is_open
        assert calls["connector"] >= 6  # it pinged about once per interval: the hub heard from it all along
        assert calls["hub"] <= 1  # the start of the clock only; once per interval (8) without putting it off
        await client_tunnel.aclose()
        await hub_tunnel.aclose()
        tg.cancel_scope.cancel()


async def _unblock_after(seconds: float, carrier: MemoryCarrier, fired: list[bool]) -> None:
    """A watchdog for the write-timeout tests: a write blocked in a shielded scope ignores ``fail_after``, so if
    the timeout failed the test would hang; after ``seconds`` this closes the peer's carrier (which ends the
    blocked write) and records that it had to."""
    await anyio.sleep(seconds)
    fired.append(True)
    await carrier.aclose()


async def test_a_peer_that_takes_no_data_is_cut_after_the_write_timeout(caplog: pytest.LogCaptureFixture) -> None:
    # the hub's side of the carrier is never read: after its small buffer the connector's writes block, and the
    # tunnel gives the carrier up after write_timeout instead of waiting for ever (its flush returns then)
    client, _, a, b = await handshaken(buffer=4)
    tunnel = Tunnel(client, a, name="stuck")
    tunnel.write_timeout = 0.3
    started, watchdog = anyio.current_time(), []
    async with anyio.create_task_group() as tg:
        tg.start_soon(tunnel.run)
        tg.start_soon(_unblock_after, 5, b, watchdog)
        for n in range(20):  # each waits until written: one waits for the timeout, and then the next one fails
            try:
                await tunnel.send_manifest({"n": n})
            except LocalProtocolError:  # as documented for a connection that is closing or closed
                break
        await tunnel.closed.wait()
        tg.cancel_scope.cancel()
    assert not watchdog, "the write was never given up"
    assert 0.3 <= anyio.current_time() - started < 3
    assert "peer took no data for 0.3 s" in caplog.text
    await b.aclose()


async def test_a_heartbeat_write_that_never_completes_is_cut_too(caplog: pytest.LogCaptureFixture) -> None:
    # the only writes are the connector's heartbeat PINGs, written by the timer task itself; the peer never reads,
    # so the second PING blocks (a carrier that holds one message): the write timeout still ends it
    client, _, a, b = await handshaken(0.2, buffer=1)
    tunnel = Tunnel(client, a, name="stuck")
    tunnel.write_timeout = 0.3
    watchdog: list[bool] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(tunnel.run)
        tg.start_soon(_unblock_after, 5, b, watchdog)
        await tunnel.closed.wait()
        tg.cancel_scope.cancel()
    assert not watchdog, "the write was never given up"
    assert "peer took no data for 0.3 s" in caplog.text
    await b.aclose()


# ---------------------------------------------------------------- one writer, and the others' frames


class GatedCarrier:
    """A carrier whose writes wait while it is held (a peer that is slow to take data) and each take ``delay``
    seconds; it counts the writes that started."""

    def __init__(self, inner: MemoryCarrier, delay: float = 0.0) -> None:
        self.inner, self.delay, self.writes = inner, delay, 0
        self.gate = anyio.Event()
        self.gate.set()

    def hold(self) -> None:
        self.gate = anyio.Event()
        self.writes = 0

    async def send(self, data: bytes) -> None:
        self.writes += 1
        await self.gate.wait()
        if self.delay:
            await anyio.sleep(self.delay)
        await self.inner.send(data)

    async def receive(self) -> bytes:
        return await self.inner.receive()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def gated_pair(handler, delay: float = 0.0) -> tuple[Tunnel, Tunnel, GatedCarrier]:
    client, hub, a, b = await handshaken()
    gated = GatedCarrier(a, delay)
    tunnel = Tunnel(client, gated, name="client")
    tunnel.write_timeout = 5  # a failing test ends then: a blocked write is shielded from the tests' fail_after
    return tunnel, Tunnel(hub, b, handler=handler, name="hub"), gated


async def test_a_head_queued_while_another_task_writes_leaves_with_that_writer_without_waiting_for_it():
    seen: list[str] = []

    async def answer(stream: TunnelStream) -> None:
        assert stream.request is not None
        seen.append(stream.request.path)
        await stream.respond(204, end_stream=True)

    client, hub, gated = await gated_pair(answer)
    async with anyio.create_task_group() as tg:
        await tg.start(client.run)
        await tg.start(hub.run)
        gated.hold()  # the peer takes nothing for now
        first: list[TunnelStream] = []

        async def open_first() -> None:
            first.append(await client.request("GET", "/one", end_stream=True))

        tg.start_soon(open_first)
        await wait_for(lambda: gated.writes == 1)  # that task is the writer, its write blocked
        with anyio.fail_after(1):  # not held up by the blocked write
            second = await client.request("GET", "/two", end_stream=True)
        assert gated.writes == 1  # queued, not written: the writer takes it next
        assert not first  # the writer itself still waits for its write
        gated.gate.set()
        with anyio.fail_after(2):
            await wait_for(lambda: bool(first))
            assert (await first[0].wait_response()).status == 204
            assert (await second.wait_response()).status == 204
        assert seen == ["/one", "/two"]  # in the order queued
        assert gated.writes == 2  # the writer's second round
        await client.aclose()
        tg.cancel_scope.cancel()


async def test_a_task_that_finds_the_handoff_limit_queued_waits_for_the_writer():
    body = bytearray()

    async def consume(stream: TunnelStream) -> None:
        await stream.respond(200)
        async for chunk in stream:
            body.extend(chunk)
        await stream.end()

    client, hub, gated = await gated_pair(consume)
    client.handoff_limit = 4096  # below the stream's window (64 KiB here), which would stop the sender anyway
    async with anyio.create_task_group() as tg:
        await tg.start(client.run)
        await tg.start(hub.run)
        upload = await client.request("POST", "/up")
        gated.hold()
        tg.start_soon(client.send_manifest, {"blocked": {}})  # the writer, its write blocked
        await wait_for(lambda: gated.writes == 1)
        with anyio.fail_after(1):
            await upload.send(b"a" * 100)  # small: left to the writer
        sent = anyio.Event()

        async def send_big() -> None:
            await upload.send(b"b" * 8192, end_stream=True)
            sent.set()

        tg.start_soon(send_big)
        await anyio.sleep(0.2)
        assert not sent.is_set()  # queued, and waiting: the queue does not grow past the limit
        gated.gate.set()
        with anyio.fail_after(2):
            await sent.wait()
            await upload.wait_response()
            while await upload.receive():
                pass
        assert bytes(body) == b"a" * 100 + b"b" * 8192
        await client.aclose()
        tg.cancel_scope.cancel()


async def test_the_writer_is_not_kept_writing_for_tasks_that_keep_queuing():
    # the writer is one of the stream tasks: while it writes, another task queues a little at a time, under the
    # byte limit; after handoff_rounds writes that task waits too, and the writer gets back to its own stream
    received: dict[str, int] = {}

    async def count(stream: TunnelStream) -> None:
        assert stream.request is not None
        await stream.respond(200, flush=False)
        async for chunk in stream:
            received[stream.request.path] = received.get(stream.request.path, 0) + len(chunk)
        await stream.end()

    client, hub, gated = await gated_pair(count, delay=0.002)
    sent = 0
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(client.run)
        await tg.start(hub.run)
        mine = await client.request("POST", "/mine")
        other = await client.request("POST", "/other")

        async def keep_queuing() -> None:
            nonlocal sent
            while not stop.is_set():
                await other.send(b"o" * 100)
                sent += 100
                await anyio.sleep(0.0005)
            await other.end()

        gated.hold()
        writing = anyio.Event()

        async def write_mine() -> None:
            await mine.send(b"m", end_stream=True)  # this task is the writer
            writing.set()

        tg.start_soon(write_mine)
        await wait_for(lambda: gated.writes == 1)
        tg.start_soon(keep_queuing)
        await anyio.sleep(0.01)
        gated.gate.set()
        with anyio.fail_after(2):  # without the bound on rounds, this writer would write the other's bytes for ever
            await writing.wait()
        assert sent > 0  # the other task queued while this one wrote, and goes on doing so until stopped below
        stop.set()
        with anyio.fail_after(2):
            for stream in (mine, other):
                await stream.wait_response()
                while await stream.receive():
                    pass
        assert received == {"/mine": 1, "/other": sent}
        await client.aclose()
        tg.cancel_scope.cancel()


async def test_a_reader_behind_a_stuck_writer_stops_after_the_handoff_frame_count():
    """A peer that floods PINGs while this side's writer is stuck: each PING queues a PONG; the reader hands them
    to the writer only up to ``handoff_frames`` frames, then waits (stops reading), so the queue stays short."""
    client, hub, gated = await gated_pair(echo)
    async with anyio.create_task_group() as tg:
        await tg.start(client.run)
        await tg.start(hub.run)
        gated.hold()
        tg.start_soon(client.send_manifest, {"blocked": {}})  # the writer, its write blocked
        await wait_for(lambda: gated.writes == 1)

        async def flood() -> None:
            for _ in range(4 * client.handoff_frames):
                if hub._conn.closed:
                    return
                hub._conn.ping(b"12345678")
                await hub.flush()  # blocks once the client stops reading (the carrier holds 16 messages)

        tg.start_soon(flood)
        await anyio.sleep(0.3)
        assert client.handoff_frames < client._conn.frames_queued <= client.handoff_frames + 2
        gated.gate.set()
        with anyio.fail_after(2):
            await wait_for(lambda: client._conn.frames_queued == 0)  # the writer, released, took them all
        tg.cancel_scope.cancel()
    await client.aclose()
