"""What many edges cost the bridge (``radical-edge bench --scale``): idle connections and a reconnect storm.

* a connection upgraded to a WebSocket keeps no HTTP state (no ``HTTPChannel``, h11 connection or
  upgrade request) while it lives;
* an SDK client on ``/connect`` has an event queue (and a task pumping it) only once it subscribes;
  subscribed, it gets the snapshot, then every event once, and its queue goes when it leaves;
* TLS handshakes take slots (:class:`HandshakeSlots`): so many at once in total and per peer address,
  first come first served; a storm of connections gets through a batch at a time, a silent socket
  holds no slot, and one address stalling its handshakes cannot hold them all.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from radical_edge_bridge import Bridge, BridgeConfig
from radical_edge_bridge._http import HTTPChannel
from radical_edge_bridge._listener import HandshakeSlots
from radical_edge_proto import Connection, Notification, PeerRole, Side, profile
from radical_edge_tunnel import Tunnel, connect_handshake, connect_websocket

from .conftest import TOKEN, running_bridge

pytestmark = pytest.mark.anyio
MANIFEST = {"ping": {"type": "ping", "version": "1", "enabled": True, "ui_config": {}}}


async def _dial(bridge: Bridge, ctx: ssl.SSLContext, role: PeerRole, name: str, on_event: Any = None) -> Tunnel:
    path = "/register" if role is PeerRole.EDGE else "/connect"
    carrier = await connect_websocket(f"wss://127.0.0.1:{bridge.port}{path}", token=TOKEN, ssl_context=ctx)
    conn = Connection(Side.CONNECTOR)
    manifest = MANIFEST if role is PeerRole.EDGE else None
    await connect_handshake(conn, carrier, role=role, name=name, credential=TOKEN, manifest=manifest)
    return Tunnel(conn, carrier, name=name, on_event=on_event)


def _alive(kind: type) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


async def _until(predicate: Any, timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def test_an_upgraded_connection_keeps_no_http_state(bridge: Bridge, client_ssl: ssl.SSLContext) -> None:
    async with anyio.create_task_group() as tg:
        tunnels = [await _dial(bridge, client_ssl, PeerRole.EDGE, f"idle-{i}") for i in range(3)]
        tunnels += [await _dial(bridge, client_ssl, PeerRole.CLIENT, f"sdk-{i}") for i in range(3)]
        for tunnel in tunnels:
            await tg.start(tunnel.run)
        await _until(lambda: sum(e.connected for e in bridge.registry.entries()) == 3)
        assert _alive(HTTPChannel) == 0  # six WebSockets up, no HTTP channel behind any of them
        for tunnel in tunnels:
            await tunnel.aclose()
        tg.cancel_scope.cancel()
    await _until(lambda: not any(e.connected for e in bridge.registry.entries()))


async def test_an_sdk_client_has_an_event_queue_only_once_it_subscribes(
    bridge: Bridge, client_ssl: ssl.SSLContext
) -> None:
    got: list[tuple[str, int, Any]] = []

    def on_event(event: object) -> None:
        if isinstance(event, Notification):
            got.append((event.topic, event.seq, json.loads(event.payload)))

    async with anyio.create_task_group() as tg:
        client = await _dial(bridge, client_ssl, PeerRole.CLIENT, "sdk", on_event)
        await tg.start(client.run)
        first = await _dial(bridge, client_ssl, PeerRole.EDGE, "first")
        await tg.start(first.run)
        await _until(lambda: bridge.registry.get("first") is not None and bridge.registry.get("first").connected)
        await anyio.sleep(0.1)
        assert len(bridge.events) == 0  # connected, not subscribed: no queue, no pump
        assert got == []

        await client.subscribe(1, profile.BRIDGE_EVENTS)
        await _until(lambda: len(got) == 1)
        topic, seq, snapshot = got[0]
        assert (topic, seq) == (profile.TOPIC_TOPOLOGY, 0)
        assert list(snapshot["edges"]) == ["first"]  # what happened before is in the snapshot
        assert len(bridge.events) == 1

        second = await _dial(bridge, client_ssl, PeerRole.EDGE, "second")
        await tg.start(second.run)
        await _until(lambda: len(got) == 2)
        await anyio.sleep(0.1)
        topic, seq, change = got[1]
        assert topic == profile.TOPIC_TOPOLOGY_CHANGE
        assert seq > 0
        assert (change["edge"], change["change"]) == ("second", "connected")
        assert len(got) == 2  # once

        await client.aclose()
        await _until(lambda: len(bridge.events) == 0)  # its queue went with it
        for tunnel in (first, second):
            await tunnel.aclose()
        tg.cancel_scope.cancel()


# ---------------------------------------------------------------- TLS handshake slots


async def test_handshake_slots_cap_in_total_and_per_peer_first_come_first_served() -> None:
    slots = HandshakeSlots(total=3, per_peer=2)
    holding: list[str] = []
    release = {name: anyio.Event() for name in ("a1", "a2", "a3", "b1", "c1")}

    async def hold(name: str, peer: str) -> None:
        async with slots.slot(peer):
            holding.append(name)
            await release[name].wait()
        holding.remove(name)

    async with anyio.create_task_group() as tg:
        for name, peer in (("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("c1", "C")):
            tg.start_soon(hold, name, peer)
            await anyio.sleep(0.01)  # in this order
        assert sorted(holding) == ["a1", "a2", "b1"]  # a3: A's share (2) is taken; c1: all 3 are
        assert (slots.in_use, slots.peers) == (3, 3)

        release["a1"].set()
        await anyio.sleep(0.05)
        assert sorted(holding) == ["a2", "b1", "c1"]  # c1 asked first for the free slot; a3 queues behind it
        release["b1"].set()
        await anyio.sleep(0.05)
        assert sorted(holding) == ["a2", "a3", "c1"]
        for event in release.values():
            event.set()
    assert (slots.in_use, slots.peak, slots.peers) == (0, 3, 0)  # the table forgets idle peers
    with pytest.raises(ValueError, match="at least 1"):
        HandshakeSlots(total=0, per_peer=1)


@asynccontextmanager
async def _slotted_bridge(tls_files: tuple[Path, Path], total: int, per_peer: int) -> AsyncIterator[Bridge]:
    cert, key = tls_files
    config = BridgeConfig(
        port=0,
        cert=cert,
        key=key,
        token=TOKEN,
        tls_handshake_timeout=5,
        tls_handshake_concurrency=total,
        tls_handshake_concurrency_per_peer=per_peer,
    )
    async with running_bridge(config) as bridge:
        yield bridge


async def _healthz(bridge: Bridge, ctx: ssl.SSLContext, source: str = "127.0.0.1") -> int:
    """GET /healthz on a new TLS connection from ``source``; the status."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", bridge.port, ssl=ctx, server_hostname="127.0.0.1", local_addr=(source, 0)
    )
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        head = await reader.readuntil(b"\r\n")
        return int(head.split()[1])
    finally:
        writer.close()


async def test_a_storm_of_handshakes_is_served_a_batch_at_a_time(
    tls_files: tuple[Path, Path], client_ssl: ssl.SSLContext
) -> None:
    async with _slotted_bridge(tls_files, total=4, per_peer=4) as bridge:
        statuses: list[int] = []

        async def one() -> None:
            statuses.append(await _healthz(bridge, client_ssl))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(60):
                    tg.start_soon(one)
        assert statuses == [200] * 60
        assert bridge.handshake_slots is not None
        assert 1 <= bridge.handshake_slots.peak <= 4
        assert bridge.handshake_slots.in_use == 0


async def test_a_silent_socket_holds_no_handshake_slot(
    tls_files: tuple[Path, Path], client_ssl: ssl.SSLContext
) -> None:
    async with _slotted_bridge(tls_files, total=1, per_peer=1) as bridge:
        silent = [socket.create_connection(("127.0.0.1", bridge.port)) for _ in range(3)]
        try:
            await anyio.sleep(0.2)
            with anyio.fail_after(2):  # not after the silent sockets' 5 s handshake timeout
                assert await _healthz(bridge, client_ssl) == 200
        finally:
            for sock in silent:
                sock.close()


async def test_one_address_stalling_its_handshakes_cannot_hold_every_slot(
    tls_files: tuple[Path, Path], client_ssl: ssl.SSLContext
) -> None:
    async with _slotted_bridge(tls_files, total=2, per_peer=1) as bridge:
        # a ClientHello from 127.0.0.1, then nothing: the bridge answers it and waits, holding a slot
        hello_bio, out_bio = ssl.MemoryBIO(), ssl.MemoryBIO()
        staller = client_ssl.wrap_bio(hello_bio, out_bio, server_hostname="127.0.0.1")
        with pytest.raises(ssl.SSLWantReadError):
            staller.do_handshake()
        stalled = socket.create_connection(("127.0.0.1", bridge.port))
        try:
            stalled.sendall(out_bio.read())
            assert bridge.handshake_slots is not None
            await _until(lambda: bridge.handshake_slots is not None and bridge.handshake_slots.in_use == 1)

            # 127.0.0.1's one slot is taken: its next handshake waits ...
            with anyio.move_on_after(1) as waited:
                await _healthz(bridge, client_ssl, "127.0.0.1")
            assert waited.cancelled_caught
            # ... while another address gets the other slot at once
            with anyio.fail_after(2):
                assert await _healthz(bridge, client_ssl, "127.0.0.2") == 200
        finally:
            stalled.close()
        with anyio.fail_after(3):  # the stalled handshake gone, 127.0.0.1 is served again
            assert await _healthz(bridge, client_ssl, "127.0.0.1") == 200
