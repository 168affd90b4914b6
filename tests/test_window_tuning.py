"""Receive windows sized to the path (Connection.tune_windows): they grow with the round trip, never on a
short path, never past their caps; only the credit granted changes."""

from __future__ import annotations

import anyio
import pytest

from radical_edge_proto import (
    RTT_PROBES,
    TUNE_MIN_RTT,
    Connection,
    Data,
    ErrorCode,
    Limits,
    LocalProtocolError,
    PeerRole,
    Side,
)
from radical_edge_tunnel import (
    Tunnel,
    TunnelStream,
    accept_handshake,
    connect_handshake,
    memory_carrier_pair,
)

from .helpers import ConnectionPair
from .wire_helpers import open_stream

WINDOW = 512 * 1024
LIMITS = Limits(initial_window_size=WINDOW, max_frame_size=256 * 1024)
MIB = 1024 * 1024


class Path:
    """A connector uploading to a hub over a path with a round trip of ``rtt`` seconds; the hub's application
    consumes every byte the moment it arrives, so only the window can hold the upload back."""

    def __init__(self, rtt: float, *, max_stream: int = 16 * MIB, max_conn: int = 32 * MIB, clock: bool = True):
        self.pair = ConnectionPair(hub_limits=LIMITS)
        self.rtt = rtt
        self.clock = clock
        self.now = 100.0
        hub, connector = self.pair.hub, self.pair.connector
        hub.tune_windows(max_stream, max_conn)
        self.sid = open_stream(self.pair)
        assert not hub.data_to_send()  # an idle connection sends no round-trip PING
        # the first data consumed sends one: it crosses, and the PONG comes back a round trip later
        connector.send_data(self.sid, b"x")
        (event,) = hub.receive_data(connector.data_to_send(), now=self.now)
        hub.acknowledge_received_data(self.sid, len(event.data), self.now if clock else None)
        connector.receive_data(hub.data_to_send(), now=self.now + rtt / 2)
        hub.receive_data(connector.data_to_send(), now=self.now + rtt)
        self.now += rtt

    def round(self) -> int:
        """One round trip: the connector sends all its credit allows, the hub consumes it on arrival and
        its WINDOW_UPDATEs arrive back at the connector; the bytes that moved."""
        connector, hub = self.pair.connector, self.pair.hub
        sent = 0
        while (room := min(connector.send_window(self.sid), 256 * 1024)) > 0:
            connector.send_data(self.sid, b"x" * room)
            sent += room
        arrival = self.now + self.rtt / 2
        for event in hub.receive_data(connector.data_to_send(), now=arrival):
            assert isinstance(event, Data)
            hub.acknowledge_received_data(self.sid, len(event.data), arrival if self.clock else None)
        self.now += self.rtt
        connector.receive_data(hub.data_to_send(), now=self.now)
        return sent


def test_on_a_long_path_the_window_doubles_each_round_trip_up_to_its_cap() -> None:
    path = Path(0.05, max_stream=4 * MIB)
    assert path.pair.hub.min_rtt == pytest.approx(0.05)
    moved = [path.round() for _ in range(12)]
    assert moved[:2] == [WINDOW - 1, WINDOW]  # the first round trips: the initial window, and a rate measured
    assert WINDOW < moved[2] <= 2 * WINDOW  # then it grows, at most doubling
    assert max(moved) <= 4 * MIB  # never past the cap
    # at the cap within a few round trips: a round moves at least 3/4 of it (credit goes back in quarters)
    assert min(moved[-4:]) >= 3 * MIB
    # the connection window followed (the 4 MiB it started with would have capped the stream)
    assert path.pair.connector.send_window(0) >= 4 * MIB


def test_the_connection_window_stays_under_its_cap() -> None:
    path = Path(0.05, max_stream=16 * MIB, max_conn=6 * MIB)
    moved = [path.round() for _ in range(12)]
    assert 4.5 * MIB <= max(moved) <= 6 * MIB  # the connection window, at its cap, holds the stream back
    assert path.pair.hub.receive_window(0) <= 6 * MIB


def test_on_a_short_path_the_windows_stay_as_announced() -> None:
    path = Path(TUNE_MIN_RTT / 2)
    assert [path.round() for _ in range(20)][1:] == [WINDOW] * 19


def test_without_the_time_of_consumption_nothing_is_tuned() -> None:
    path = Path(0.05, clock=False)
    assert path.pair.hub.min_rtt is None  # nothing consumed with a time: no probe either
    assert [path.round() for _ in range(6)][1:] == [WINDOW] * 5


def test_round_trip_probes_go_out_at_their_times_from_the_first_data_and_the_shortest_counts() -> None:
    pair = ConnectionPair(hub_limits=LIMITS, heartbeat_interval=30.0)
    hub, connector = pair.hub, pair.connector
    hub.handle_timer(0.0)  # the heartbeat clock starts
    hub.tune_windows(MIB, 2 * MIB)
    sid = open_stream(pair)
    hub.handle_timer(5.0)
    assert not hub.data_to_send()  # idle: no probe
    assert hub.next_timer() > 10.0
    connector.send_data(sid, b"x")
    (event,) = hub.receive_data(connector.data_to_send(), now=7.0)
    pings = []
    for delay, rtt in zip(RTT_PROBES, (0.2, 0.03, 0.09), strict=True):
        if delay == 0.0:
            hub.acknowledge_received_data(sid, len(event.data), 7.0)  # the first data consumed: probe now
        else:
            assert hub.next_timer() == pytest.approx(7.0 + delay)
            hub.handle_timer(7.0 + delay)
        out = hub.data_to_send()
        pings.append(len(out))
        connector.receive_data(out, now=7.0 + delay + rtt / 2)
        hub.receive_data(connector.data_to_send(), now=7.0 + delay + rtt)
    assert all(pings)  # a PING each time
    assert hub.min_rtt == pytest.approx(0.03)
    assert hub.next_timer() > 7.0 + RTT_PROBES[-1] + 10  # no more probes: the heartbeat's own deadline


def test_tuning_needs_windows_in_range() -> None:
    conn = Connection(Side.HUB)
    with pytest.raises(LocalProtocolError):
        conn.tune_windows(0, MIB)
    with pytest.raises(LocalProtocolError):
        conn.tune_windows(MIB, 2**31)


# ---------------------------------------------------------------- over a tunnel with a delayed carrier


class Delayed:
    """A carrier whose sends arrive ``delay`` seconds later (a long path; bytes are not held back by it)."""

    def __init__(self, inner, delay: float, tg: anyio.abc.TaskGroup) -> None:  # type: ignore[no-untyped-def]
        self._inner = inner
        self._delay = delay
        self._tx, rx = anyio.create_memory_object_stream[tuple[float, bytes]](10_000)
        tg.start_soon(self._pump, rx)

    async def _pump(self, rx) -> None:  # type: ignore[no-untyped-def]
        async with rx:
            async for due, data in rx:
                await anyio.sleep_until(due)
                await self._inner.send(data)

    async def send(self, data: bytes) -> None:
        await self._tx.send((anyio.current_time() + self._delay, data))

    async def receive(self) -> bytes:
        return await self._inner.receive()

    async def aclose(self) -> None:
        self._tx.close()
        await self._inner.aclose()


async def _running_pair(edge_side, hub_side, serve, tg) -> tuple[Tunnel, Tunnel]:  # type: ignore[no-untyped-def]
    """An edge tunnel serving ``serve`` and a hub tunnel (heartbeat 30 s) over these carriers, both running."""
    connector, hub = Connection(Side.CONNECTOR, LIMITS), Connection(Side.HUB, LIMITS)

    async def accept(hello):  # type: ignore[no-untyped-def]
        return True, ErrorCode.NO_ERROR, "tok", 30.0

    async with anyio.create_task_group() as hs:
        hs.start_soon(accept_handshake, hub, hub_side, accept)
        await connect_handshake(connector, edge_side, role=PeerRole.EDGE, name="e", credential="c")
    edge, bridge = Tunnel(connector, edge_side, handler=serve, name="edge"), Tunnel(hub, hub_side, name="hub")
    await tg.start(edge.run)
    await tg.start(bridge.run)
    return edge, bridge


@pytest.mark.anyio
async def test_a_download_over_a_long_path_is_not_held_to_one_window_per_round_trip() -> None:
    """20 ms each way: the hub's window for the edge's answer grows past the 512 KiB it announced, and the
    body arrives whole."""
    body = bytes(range(256)) * (24 * MIB // 256)
    widest = 0

    async def serve(stream: TunnelStream) -> None:
        await stream.respond(200, [])
        await stream.send(body)
        await stream.end()

    async with anyio.create_task_group() as tg:
        a, b = memory_carrier_pair()
        edge, bridge = await _running_pair(Delayed(a, 0.02, tg), Delayed(b, 0.02, tg), serve, tg)
        hub = bridge._conn
        assert hub.min_rtt is None  # no data yet: no probe
        got = bytearray()
        with anyio.fail_after(30):
            stream = await bridge.request("GET", "/big", [], end_stream=True)
            await stream.wait_response()
            while chunk := await stream.receive():
                got += chunk
                widest = max(widest, hub.receive_window(stream.id))
        await bridge.aclose()
        await edge.aclose()
        tg.cancel_scope.cancel()
    assert bytes(got) == body
    assert hub.min_rtt is not None
    assert hub.min_rtt >= 0.04  # the probe sent with the first data measured the 40 ms path
    assert widest > WINDOW


@pytest.mark.anyio
async def test_the_later_round_trip_probes_go_out_on_time_with_a_long_heartbeat_interval() -> None:
    """The tunnel's timer sleeps until the heartbeat's deadline (30 s here); the probes the first data
    schedules (at 1 and 3 s) wake it early instead of waiting for it."""
    served = anyio.Event()

    async def serve(stream: TunnelStream) -> None:
        await stream.respond(200, [])
        await stream.send(b"x" * 1000)
        await stream.end()
        served.set()

    async with anyio.create_task_group() as tg:
        a, b = memory_carrier_pair()
        edge, bridge = await _running_pair(a, b, serve, tg)
        hub = bridge._conn
        stream = await bridge.request("GET", "/x", [], end_stream=True)
        await stream.wait_response()
        while await stream.receive():
            pass
        assert hub.probing
        with anyio.fail_after(RTT_PROBES[-1] + 2):
            while (due := hub.next_timer()) is not None and due < anyio.current_time() + 10:  # probes left
                await anyio.sleep(0.05)
        await bridge.aclose()
        await edge.aclose()
        tg.cancel_scope.cancel()


def test_a_round_trip_measured_long_then_short_takes_the_growth_back() -> None:
    """An early PONG that waited behind data made a 1 ms path look 8 ms long and the windows grew; the next
    probe measures 1 ms (under TUNE_MIN_RTT): the windows shrink back to the announced ones as data is
    consumed, without revoking credit the peer holds."""
    path = Path(0.008)  # the first sample: 8 ms
    grown = [path.round() for _ in range(6)]
    assert max(grown) > WINDOW
    hub, connector = path.pair.hub, path.pair.connector
    hub.ping(b"x")  # an unrelated PING: its PONG must not count as a round-trip sample
    connector.receive_data(hub.data_to_send(), now=path.now)
    hub.receive_data(connector.data_to_send(), now=path.now + 0.0001)
    assert hub.min_rtt == pytest.approx(0.008)
    path.rtt = 0.001
    # the 1 s probe, answered in 1 ms
    hub.handle_timer(path.now + 1.0)
    connector.receive_data(hub.data_to_send(), now=path.now + 1.0005)
    hub.receive_data(connector.data_to_send(), now=path.now + 1.001)
    assert hub.min_rtt == pytest.approx(0.001)
    path.now += 1.001
    after = [path.round() for _ in range(8)]
    assert after[-1] <= WINDOW  # back to the announced window
    assert hub.receive_window(path.sid) <= WINDOW
    assert hub.receive_window(0) <= LIMITS.connection_window_size


def test_a_pong_read_without_a_time_ends_the_measurement_without_a_sample() -> None:
    """A sans-IO user feeding bytes without ``now``: the probe's PONG gives no sample but frees the next probe."""
    pair = ConnectionPair(hub_limits=LIMITS, heartbeat_interval=30.0)
    hub, connector = pair.hub, pair.connector
    hub.handle_timer(0.0)
    hub.tune_windows(MIB, 2 * MIB)
    sid = open_stream(pair)
    connector.send_data(sid, b"x")
    (_data,) = hub.receive_data(connector.data_to_send(), now=1.0)
    hub.acknowledge_received_data(sid, 1, 1.0)  # the first probe goes out
    connector.receive_data(hub.data_to_send())
    hub.receive_data(connector.data_to_send())  # its PONG, without a time
    assert hub.min_rtt is None
    hub.handle_timer(1.0 + RTT_PROBES[1])
    assert hub.data_to_send()  # the next probe was free to go


@pytest.mark.anyio
async def test_a_tunnels_window_caps_are_checked_when_set() -> None:
    a, b = memory_carrier_pair()
    tunnel = Tunnel(Connection(Side.HUB, LIMITS), b)
    tunnel.max_stream_window = 4 * MIB
    assert tunnel.max_stream_window == 4 * MIB
    for bad in (0, 2**31, -1):
        with pytest.raises(ValueError, match="max_connection_window"):
            tunnel.max_connection_window = bad
    assert tunnel.max_connection_window == 32 * MIB  # unchanged by the refused values
    await a.aclose()
    await b.aclose()
