"""Event callbacks against a live bridge and edge: filters, order, slow callbacks, and resuming
across a network drop and a bridge restart with nothing lost and nothing twice."""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any

import anyio
import pytest

from radical_edge_client import AsyncBridgeClient, EventGap
from radical_edge_proto import Connection, PeerRole, Side
from radical_edge_tunnel import connect_handshake, connect_websocket

from .client_helpers import TOKEN, Live, TLSFiles, example_plugin, live, live_system, tls, wait_for

pytestmark = pytest.mark.anyio
__all__ = ["example_plugin", "live", "tls"]  # fixtures, imported for pytest


class Recorder:
    """Collects what callbacks receive (from worker threads), in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, str, Any]] = []
        self.gaps: list[EventGap] = []
        self.topologies: list[dict[str, Any]] = []

    def __call__(self, edge: str, plugin: str, topic: str, data: Any) -> None:
        with self.lock:
            if isinstance(data, EventGap):
                self.gaps.append(data)
            else:
                self.events.append((edge, plugin, topic, data))

    def on_topology(self, edges: dict[str, Any]) -> None:
        with self.lock:
            self.topologies.append(edges)

    def ticks(self) -> list[int]:
        with self.lock:
            return [e[3]["n"] for e in self.events if e[2] == "tick"]


def publish(live: Live, *numbers: int) -> None:
    for n in numbers:
        live.probe.notify("tick", {"n": n})


async def test_callbacks_filters_and_topology(live: Live) -> None:
    everything, ticks, other_topic, other_edge = Recorder(), Recorder(), Recorder(), Recorder()
    got_async: list[Any] = []

    async def async_callback(edge: str, plugin: str, topic: str, data: Any) -> None:
        got_async.append(data)

    async with live.client() as bridge:
        await bridge.register_callback(callback=everything)
        await bridge.register_callback("e1", "probe", "tick", ticks)
        await bridge.register_callback("e1", "probe", "other", other_topic)
        await bridge.register_callback("e2", None, None, other_edge)
        await bridge.register_callback(None, "probe", None, async_callback)
        await bridge.register_topology_callback(everything.on_topology)
        edge = await bridge.get_edge_client("e1")
        hello = await edge.get_plugin("hello")
        await hello.register_notification_callback(ticks, topic="shout")
        publish(live, 1, 2, 3)
        await hello.post_json(f"shout/{hello.sid}", json={"text": "hi"})
        await wait_for(lambda: len(ticks.events) == 4 and len(everything.events) == 4 and len(got_async) == 3)
        assert ticks.ticks() == [1, 2, 3]
        assert ticks.events[3] == ("e1", "hello", "shout", {"text": "HI", "sid": hello.sid})
        assert [e[:3] for e in everything.events[:3]] == [("e1", "probe", "tick")] * 3
        assert got_async == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert other_topic.events == other_edge.events == []
        # the edge drops and comes back: topology callbacks see both
        assert live.service.tunnel is not None
        await live.service.tunnel.carrier.aclose()
        await wait_for(lambda: len(everything.topologies) >= 2)
        assert everything.topologies[0]["e1"]["endpoint"]["connected"] is False
        assert everything.topologies[-1]["e1"]["endpoint"]["connected"] is True
        assert "probe" in everything.topologies[-1]["e1"]["plugins"]
        # unregistered callbacks get nothing more
        await bridge.unregister_callback("e1", "probe", "tick", ticks)
        await hello.unregister_notification_callback(ticks, topic="shout")
        publish(live, 4)
        await wait_for(lambda: len(everything.events) == 5)
        assert ticks.ticks() == [1, 2, 3]
        assert everything.gaps == []
        assert bridge.stats["duplicates_dropped"] == 0


async def test_a_slow_callback_stalls_neither_the_tunnel_nor_later_events(live: Live) -> None:
    release = threading.Event()
    seen: list[int] = []

    def slow(edge: str, plugin: str, topic: str, data: Any) -> None:
        if data["n"] == 1:
            release.wait(10)  # a callback stuck in blocking work
        seen.append(data["n"])

    async with live.client() as bridge:
        await bridge.register_callback("e1", "probe", "tick", slow)
        publish(live, 1, 2, 3)
        edge = await bridge.get_edge_client("e1")
        probe = await edge.get_plugin("probe", session=False)
        started = time.monotonic()
        for _ in range(20):  # requests go on while the callback blocks
            assert (await probe.get_json("version")) == {"version": "1.2.3"}
        assert time.monotonic() - started < 5
        assert seen == []
        release.set()
        await wait_for(lambda: seen == [1, 2, 3])


async def test_callbacks_that_fall_too_far_behind_get_an_overflow_gap(live: Live) -> None:
    release = threading.Event()
    rec = Recorder()

    def blocked(edge: str, plugin: str, topic: str, data: Any) -> None:
        if not isinstance(data, EventGap) and data["n"] == 0:
            release.wait(10)
        rec(edge, plugin, topic, data)

    async with live.client(max_pending_events=5) as bridge:
        await bridge.register_callback("e1", "probe", "tick", blocked)
        publish(live, 0)
        await wait_for(lambda: bridge.stats["events_delivered"] == 1)  # the callback holds event 0
        publish(live, *range(1, 21))
        await anyio.sleep(0.3)
        release.set()
        await wait_for(lambda: len(rec.gaps) == 1 and len(rec.events) == 6)
        assert rec.ticks() == [0, 1, 2, 3, 4, 5]
        assert rec.gaps[0].kind == "overflow"
        assert rec.gaps[0].missed == 15
        publish(live, 21)
        await wait_for(lambda: rec.ticks()[-1] == 21)
        assert bridge.stats["events_overflowed"] == 15


async def test_a_network_drop_inside_the_replay_window_loses_nothing(live: Live) -> None:
    proxy = await live.proxy()
    rec = Recorder()
    async with live.client(url=f"https://127.0.0.1:{proxy.port}") as bridge:
        await bridge.register_callback("e1", "probe", None, rec)
        publish(live, 1, 2)
        await wait_for(lambda: rec.ticks() == [1, 2])
        proxy.cut()
        await wait_for(lambda: bridge.state != "connected")
        publish(live, 3, 4, 5)  # while the client is away
        await anyio.sleep(0.2)
        proxy.restore()
        await wait_for(lambda: bridge.connected)
        publish(live, 6)
        await wait_for(lambda: rec.ticks()[-1:] == [6])
        assert rec.ticks() == [1, 2, 3, 4, 5, 6]
        assert rec.gaps == []
        assert bridge.stats["connections"] == 2


async def test_a_silent_network_partition_is_noticed_by_heartbeats(tls: TLSFiles, example_plugin: str) -> None:
    async with live_system(tls, heartbeat_interval=0.2, client_heartbeat_interval=0.2) as system:
        proxy = await system.proxy()
        rec = Recorder()
        async with system.client(url=f"https://127.0.0.1:{proxy.port}", connect_timeout=1) as bridge:
            await bridge.register_callback("e1", "probe", "tick", rec)
            publish(system, 1)
            await wait_for(lambda: rec.ticks() == [1])
            proxy.silence()  # nothing is closed: only the missing heartbeats tell
            publish(system, 2, 3)
            await wait_for(lambda: bridge.state != "connected", timeout=10)
            await anyio.sleep(0.5)  # a reconnect attempt or two into the void
            proxy.restore()
            await wait_for(lambda: bridge.connected, timeout=15)
            publish(system, 4)
            await wait_for(lambda: rec.ticks()[-1:] == [4])
            assert rec.ticks() == [1, 2, 3, 4]
            assert rec.gaps == []


async def test_a_gap_beyond_the_replay_window_is_reported(tls: TLSFiles, example_plugin: str) -> None:
    async with live_system(tls, event_ring_size=8) as system:
        proxy = await system.proxy()
        rec = Recorder()
        gaps: list[EventGap] = []
        async with system.client(url=f"https://127.0.0.1:{proxy.port}") as bridge:
            await bridge.register_callback("e1", "probe", "tick", rec)
            await bridge.register_callback("e1", "probe", "tick", lambda *a: None, on_gap=gaps.append)
            publish(system, 1)
            await wait_for(lambda: rec.ticks() == [1])
            proxy.cut()
            await wait_for(lambda: bridge.state != "connected")
            publish(system, *range(2, 32))  # 30 events: more than the ring holds
            await wait_for(lambda: system.bridge.events.last_seq >= 31)
            proxy.restore()
            await wait_for(lambda: rec.ticks()[-1:] == [31])
            # the gap comes first, as its own call, then what the ring still had, once each
            assert len(rec.gaps) == 1
            gap = rec.gaps[0]
            assert gap.kind == "ring"
            assert gap.oldest is not None
            assert gap.after is not None
            assert gap.oldest > gap.after + 1
            ticks = rec.ticks()
            assert ticks[0] == 1
            assert ticks[1:] == list(range(32 - 8, 32))
            assert len(set(ticks)) == len(ticks)
            assert gaps == rec.gaps  # the on_gap variant got the same report


async def test_callbacks_survive_a_bridge_restart(live: Live) -> None:
    rec = Recorder()
    async with live.client() as bridge:
        await bridge.register_callback("e1", "probe", "tick", rec)
        await bridge.register_topology_callback(rec.on_topology)
        publish(live, 1, 2)
        await wait_for(lambda: rec.ticks() == [1, 2])
        first_epoch = (await bridge.health())["event_epoch"]

        await live.stop_bridge()
        await live.wait_edge("waiting")
        await wait_for(lambda: bridge.state != "connected")
        publish(live, 3, 4)  # the edge holds them while the bridge is down
        await live.start_bridge()  # a new bridge on the same port: its numbering starts again
        await live.wait_edge("connected")
        await wait_for(lambda: bridge.connected)
        publish(live, 5, 6)
        await wait_for(lambda: rec.ticks()[-1:] == [6])
        assert rec.ticks() == [1, 2, 3, 4, 5, 6]  # nothing lost, nothing twice
        assert [g.kind for g in rec.gaps] == ["restart"]  # and the restart is not hidden
        assert rec.gaps[0].after is not None
        assert (await bridge.health())["event_epoch"] != first_epoch
        assert rec.topologies[-1]["e1"]["endpoint"]["connected"] is True
        assert await bridge.list_edges() == ["e1"]
        # more drops and restarts, events flowing all the time
        await live.restart_bridge()
        await live.wait_edge("connected")
        await wait_for(lambda: bridge.connected)
        publish(live, 7)
        await wait_for(lambda: rec.ticks()[-1:] == [7])
        assert rec.ticks() == [1, 2, 3, 4, 5, 6, 7]
        assert [g.kind for g in rec.gaps] == ["restart", "restart"]
        assert bridge.stats["connections"] == 3


async def test_requests_wait_for_the_reconnect(live: Live) -> None:
    async with live.client(connect_timeout=10) as bridge:
        edge = await bridge.get_edge_client("e1")
        probe = await edge.get_plugin("probe", session=False)
        await live.stop_bridge()
        await wait_for(lambda: bridge.state != "connected")

        async def restart_soon() -> None:
            await anyio.sleep(0.3)
            await live.start_bridge()

        async with anyio.create_task_group() as tg:
            tg.start_soon(restart_soon)
            await live.wait_edge("waiting")
            await wait_for(lambda: live.bridge.port is not None and bridge.connected)
            await live.wait_edge("connected")
            assert (await probe.get_json("version")) == {"version": "1.2.3"}


async def test_a_client_closed_while_waiting_for_events(live: Live) -> None:
    client = live.client()
    await client.connect()
    rec = Recorder()
    await client.register_callback(callback=rec)
    await client.close()
    await client.close()  # twice is fine
    assert client.state == "closed"
    publish(live, 1)
    await anyio.sleep(0.1)
    assert rec.events == []
    with pytest.raises(Exception, match="closed"):
        await client.list_edges()
    assert isinstance(client, AsyncBridgeClient)


async def test_sdk_connections_get_their_own_heartbeat_interval(tls: TLSFiles, example_plugin: str) -> None:
    """Edges and SDK clients are told different intervals in WELCOME (config: heartbeat_interval and
    client_heartbeat_interval): an idle SDK connection costs the bridge a sixth of an idle edge's pings."""
    async with live_system(tls, heartbeat_interval=0.5, client_heartbeat_interval=3.0) as system:
        ctx = ssl.create_default_context(cafile=str(tls.ca))
        intervals = {}
        for role, path in ((PeerRole.CLIENT, "/connect"), (PeerRole.EDGE, "/register")):
            carrier = await connect_websocket(f"wss://127.0.0.1:{system.port}{path}", token=TOKEN, ssl_context=ctx)
            try:
                welcome = await connect_handshake(
                    Connection(Side.CONNECTOR), carrier, role=role, name="e2", credential=TOKEN
                )
                intervals[role] = welcome.heartbeat_interval
            finally:
                await carrier.aclose()
    assert intervals == {PeerRole.CLIENT: 3.0, PeerRole.EDGE: 0.5}
