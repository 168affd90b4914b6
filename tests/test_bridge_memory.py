"""The bridge's memory stays bounded under hostile use.

* disconnected edges expire after ``edge_ttl`` and at most ``max_disconnected_edges`` are remembered;
* every claim of a name issues a fresh resume token, so a taker cannot later evict the real edge;
* topology events carry the one edge that changed, a whole snapshot goes only to a new subscriber;
* the replay ring is bounded in bytes as well as in events.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
import trustme

from radical_edge_bridge import Bridge, BridgeConfig
from radical_edge_bridge._registry import EdgeRegistry
from radical_edge_client import AsyncBridgeClient
from radical_edge_client import Backoff as ClientBackoff
from radical_edge_edge import Backoff, EdgeService, PluginHost
from radical_edge_proto import (
    MIN_FRAME_SIZE,
    Connection,
    ErrorCode,
    Event,
    Limits,
    Notification,
    PeerRole,
    Side,
    Subscription,
)
from radical_edge_tunnel import (
    Carrier,
    HandshakeError,
    Tunnel,
    connect_handshake,
    connect_websocket,
    memory_carrier_pair,
)

from .client_helpers import CuttableProxy
from .conftest import running_bridge

pytestmark = pytest.mark.anyio
TOKEN = "memory-test-token"
MANIFEST = {"echo": {"type": "echo", "version": "1.0", "enabled": True, "ui_config": {}}}


@dataclass
class TLS:
    cert: Path
    key: Path
    ca_file: Path
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls(ca: trustme.CA, tmp_path: Path) -> TLS:
    issued = ca.issue_cert("127.0.0.1", "localhost")
    files = TLS(tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem", ssl.create_default_context())
    issued.private_key_and_cert_chain_pem.write_to_path(str(files.cert))
    issued.private_key_pem.write_to_path(str(files.key))
    files.key.chmod(0o600)
    ca.cert_pem.write_to_path(str(files.ca_file))
    ca.configure_trust(files.client)
    return files


@contextlib.asynccontextmanager
async def running(tls: TLS, **config: Any) -> AsyncIterator[Bridge]:
    options: dict[str, Any] = {"port": 0, "cert": tls.cert, "key": tls.key, "token": TOKEN, "request_timeout": 10}
    options.update(config)
    async with running_bridge(BridgeConfig(**options)) as bridge:
        yield bridge


def http(bridge: Bridge, tls: TLS) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{bridge.port}",
        verify=tls.client,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=20,
    )


async def dial(
    bridge: Bridge,
    tls: TLS,
    name: str,
    *,
    resume_token: str | None = None,
    manifest: dict[str, Any] | None = None,
    limits: Limits | None = None,
) -> tuple[Tunnel, str]:
    """An edge ``name`` handshaken over a real WebSocket: its tunnel (not yet running) and its resume token."""
    carrier = await connect_websocket(f"wss://127.0.0.1:{bridge.port}/register", token=TOKEN, ssl_context=tls.client)
    conn = Connection(Side.CONNECTOR, limits)
    try:
        welcome = await connect_handshake(
            conn,
            carrier,
            role=PeerRole.EDGE,
            name=name,
            credential=TOKEN,
            resume_token=resume_token,
            manifest=MANIFEST if manifest is None else manifest,
        )
    except BaseException:
        with anyio.CancelScope(shield=True):
            await carrier.aclose()
        raise
    return Tunnel(conn, carrier, name=name), welcome.resume_token


async def wait_until(predicate: Any, timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


def connected(bridge: Bridge, name: str) -> bool:
    entry = bridge.registry.get(name)
    return entry is not None and entry.connected


class SSE:
    """Reads ``(id, payload)`` events from a ``GET /events`` response."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next(self, timeout: float = 5) -> tuple[int | None, dict[str, Any]]:
        event_id: int | None = None
        with anyio.fail_after(timeout):
            async for line in self.lines:
                if line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("data: "):
                    return event_id, json.loads(line[6:])
        raise AssertionError("the event stream ended")

    async def next_topology(self) -> tuple[int | None, dict[str, Any]]:
        while True:
            event_id, payload = await self.next()
            if payload["topic"] != "notification":
                return event_id, payload


# ---------------------------------------------------------------- 1. names expire; the ring stays small


async def test_a_flood_of_edge_names_expires_and_the_ring_stays_small(tls: TLS) -> None:
    names = [f"flood-{n:04d}" for n in range(1000)]
    async with running(tls, edge_ttl=0.2, heartbeat_interval=30) as bridge:
        limiter = anyio.Semaphore(16)

        async def come_and_go(name: str) -> None:
            async with limiter:
                tunnel, _token = await dial(bridge, tls, name)
                await wait_until(lambda: connected(bridge, name))
                await tunnel.carrier.aclose()

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(come_and_go, name)
        # every name has been seen; after the TTL the bridge remembers none of them
        await wait_until(lambda: not bridge.registry.entries(), timeout=10)
        async with http(bridge, tls) as client:
            assert (await client.get("/edges")).json() == {"edges": [], "total": 0}
            assert (await client.post("/edge/list")).json()["data"]["edges"] == {}
            metrics = (await client.get("/metrics")).text
        hub = bridge.events
        assert "radical_edge_edges_known 0\n" in metrics
        assert f"radical_edge_event_ring_bytes {hub.ring_bytes}\n" in metrics
        assert f"radical_edge_event_ring_events {3 * len(names)}\n" in metrics
        # each name made three small events (connected, disconnected, removed), none a copy of the edge list
        assert hub.last_seq == 3 * len(names)
        assert hub.ring_bytes <= bridge.config.event_ring_bytes
        assert hub.ring_bytes < 2 * 1024 * 1024, hub.ring_bytes
        replay = hub.replay(0)
        assert not replay.gap  # all of it still fits: nothing had to be evicted
        assert max(e.size for e in replay.events) < 2048
        removed = [json.loads(e.payload) for e in replay.events if json.loads(e.payload)["change"] == "removed"]
        assert sorted(r["edge"] for r in removed) == names
        assert all(r["state"] is None for r in removed)


async def test_disconnected_edges_beyond_the_cap_are_forgotten_oldest_first(tls: TLS) -> None:
    async with running(tls, edge_ttl=3600, max_disconnected_edges=5) as bridge, anyio.create_task_group() as tg:
        live, _ = await dial(bridge, tls, "stays")
        tg.start_soon(live.run)
        for n in range(12):
            tunnel, _token = await dial(bridge, tls, f"gone-{n:02d}")
            await wait_until(lambda n=n: connected(bridge, f"gone-{n:02d}"))
            await tunnel.carrier.aclose()
            await wait_until(lambda n=n: not connected(bridge, f"gone-{n:02d}"))
        # a connected edge is never forgotten; of the disconnected ones the last five are remembered
        remembered = [e.name for e in bridge.registry.entries()]
        assert remembered == ["gone-07", "gone-08", "gone-09", "gone-10", "gone-11", "stays"]
        await live.aclose()
        tg.cancel_scope.cancel()


async def test_the_registry_forgets_by_ttl_and_cap_and_keeps_a_claim_that_expired_mid_handshake() -> None:
    now = [100.0]
    registry = EdgeRegistry(ttl=10.0, max_disconnected=2, clock=lambda: now[0])
    carriers: list[Carrier] = []

    def tunnel() -> Tunnel:
        carriers.extend(memory_carrier_pair())
        return Tunnel(Connection(Side.HUB), carriers[-2])

    live = tunnel()
    claim = registry.claim("a", None)
    registry.attach(claim, live, {})
    assert registry.next_expiry() is None  # nothing disconnected
    registry.detach(claim.entry, live)
    assert registry.next_expiry() == 10.0
    now[0] += 9.0
    assert registry.expire() == []
    now[0] += 1.0
    assert [e.name for e in registry.expire()] == ["a"]
    assert "a" not in registry
    # a claim whose handshake outlives the TTL: attaching puts the name back
    slow = registry.claim("b", None)
    now[0] += 60.0
    assert [e.name for e in registry.expire()] == ["b"]
    registry.attach(slow, tunnel(), {"p": {}})
    assert registry.get("b") is slow.entry
    assert registry.get("b").connected  # type: ignore[union-attr]
    assert registry.disconnected == 0
    # the cap: the longest-disconnected go first; a connected edge never
    for name in ("c", "d", "e"):
        registry.claim(name, None)
        now[0] += 1.0
    assert [e.name for e in registry.expire()] == ["c"]
    assert [e.name for e in registry.entries()] == ["b", "d", "e"]
    for carrier in carriers:
        await carrier.aclose()


# ---------------------------------------------------------------- 2. fresh resume tokens


async def test_a_takeover_gets_a_fresh_resume_token_and_the_old_one_is_void(tls: TLS) -> None:
    async with (
        running(tls, heartbeat_interval=0.2, idle_heartbeat_interval=0.2) as bridge,
        anyio.create_task_group() as tg,
    ):
        # the real edge freezes: it runs no tunnel, so it answers no heartbeat and the bridge lets it go
        frozen, frozen_token = await dial(bridge, tls, "e1")
        await wait_until(lambda: not connected(bridge, "e1"), timeout=5)
        # the name is free: another process takes it, and must not learn the real edge's token
        taker, taker_token = await dial(bridge, tls, "e1")
        tg.start_soon(taker.run)
        assert taker_token != frozen_token
        # the real edge thaws and tries to resume with its token: it no longer names this edge
        with pytest.raises(HandshakeError) as refused:
            await dial(bridge, tls, "e1", resume_token=frozen_token)
        assert refused.value.code == ErrorCode.NAME_CONFLICT
        assert connected(bridge, "e1")
        assert bridge.registry.get("e1").resume_token == taker_token  # type: ignore[union-attr]
        assert not taker.closed.is_set()
        # the token holder replaces its own (stale) connection, and gets a fresh token again
        again, again_token = await dial(bridge, tls, "e1", resume_token=taker_token)
        tg.start_soon(again.run)
        assert again_token not in (taker_token, frozen_token)
        with anyio.fail_after(5):
            await taker.closed.wait()
        with pytest.raises(HandshakeError) as refused:
            await dial(bridge, tls, "e1", resume_token=taker_token)
        assert refused.value.code == ErrorCode.NAME_CONFLICT
        await frozen.carrier.aclose()
        await again.aclose()
        tg.cancel_scope.cancel()


class Severable:
    """A carrier the edge can lose without the bridge noticing (a half-open connection)."""

    def __init__(self, inner: Carrier) -> None:
        self.inner = inner
        self.severed = anyio.Event()

    async def send(self, data: bytes) -> None:
        if not self.severed.is_set():
            await self.inner.send(data)

    async def receive(self) -> bytes:
        async with anyio.create_task_group() as tg:
            got: list[bytes] = []

            async def read() -> None:
                got.append(await self.inner.receive())
                tg.cancel_scope.cancel()

            async def cut() -> None:
                await self.severed.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(read)
            tg.start_soon(cut)
        return b"" if self.severed.is_set() or not got else got[0]

    async def aclose(self) -> None:
        if not self.severed.is_set():
            await self.inner.aclose()


async def test_the_edge_service_resumes_its_name_with_the_token_of_each_welcome(tls: TLS) -> None:
    carriers: list[Severable] = []

    async with running(tls, heartbeat_interval=60) as bridge:

        async def connector() -> Carrier:
            inner = await connect_websocket(
                f"wss://127.0.0.1:{bridge.port}/register", token=TOKEN, ssl_context=tls.client
            )
            carriers.append(Severable(inner))
            return carriers[-1]

        service = EdgeService(
            "e1", host=PluginHost("e1"), plugins=None, token=TOKEN, connector=connector, backoff=Backoff(0.02, 0.05)
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(service.run)
            await service.wait_connected()
            tokens = [service.resume_token]
            for round_ in (2, 3):
                # the edge loses its connection, the bridge does not notice: the name is still connected,
                # so only the token of the latest WELCOME lets the edge take its name back
                carriers[-1].severed.set()
                await wait_until(lambda round_=round_: service.connections == round_ and service.state == "connected")
                tokens.append(service.resume_token)
                assert bridge.registry.get("e1").resume_token == service.resume_token  # type: ignore[union-attr]
            assert len(set(tokens)) == 3  # a fresh token on every claim
            assert connected(bridge, "e1")
            service.stop()
            await wait_until(lambda: service.state == "stopped", timeout=5)
            tg.cancel_scope.cancel()
        for carrier in carriers:
            await carrier.inner.aclose()


# ---------------------------------------------------------------- 3. topology: snapshot first, then changes


async def test_sse_gets_a_snapshot_then_changes_naming_only_that_edge(tls: TLS) -> None:
    async with running(tls, edge_ttl=0.3) as bridge, anyio.create_task_group() as tg, http(bridge, tls) as client:
        first, _ = await dial(bridge, tls, "e1")
        tg.start_soon(first.run)
        async with client.stream("GET", "/events") as response:
            sse = SSE(response)
            snapshot_id, snapshot = await sse.next()
            assert snapshot["topic"] == "topology"
            assert set(snapshot["data"]["edges"]) == {"e1"}
            assert snapshot_id == bridge.events.last_seq

            second, _ = await dial(bridge, tls, "e2")
            tg.start_soon(second.run)
            change_id, change = await sse.next_topology()
            assert change == {
                "topic": "topology_change",
                "data": {"edge": "e2", "change": "connected", "state": bridge.topology()["edges"]["e2"]},
            }
            assert change["data"]["state"]["endpoint"]["connected"] is True
            assert change_id is not None
            assert snapshot_id is not None
            assert change_id > snapshot_id

            await second.aclose()
            _, change = await sse.next_topology()
            assert change["topic"] == "topology_change"
            assert change["data"]["edge"] == "e2"
            assert change["data"]["change"] == "disconnected"
            assert change["data"]["state"]["endpoint"]["connected"] is False
            assert "echo" in change["data"]["state"]["plugins"]

            _, change = await sse.next_topology()  # after the TTL
            assert change["data"] == {"edge": "e2", "change": "removed", "state": None}

        # a subscriber resuming after a Last-Event-ID gets what it missed, then a snapshot again
        headers = {"Last-Event-ID": str(snapshot_id)}
        async with client.stream("GET", "/events", headers=headers) as response:
            sse = SSE(response)
            changes = [(await sse.next())[1] for _ in range(3)]
            assert [c["data"]["change"] for c in changes] == ["connected", "disconnected", "removed"]
            _, snapshot = await sse.next()
            assert snapshot["topic"] == "topology"
            assert set(snapshot["data"]["edges"]) == {"e1"}
        await first.aclose()
        tg.cancel_scope.cancel()


async def small_frame_client(bridge: Bridge, tls: TLS, tg: anyio.abc.TaskGroup) -> tuple[Tunnel, list[Notification]]:
    """An SDK-style client on ``/connect`` that takes only 16 KiB frames, subscribed to everything from now;
    returns its tunnel and the list its events arrive in."""
    got: list[Notification] = []

    def on_event(event: Event) -> None:
        if isinstance(event, Notification):
            got.append(event)

    carrier = await connect_websocket(f"wss://127.0.0.1:{bridge.port}/connect", token=TOKEN, ssl_context=tls.client)
    conn = Connection(Side.CONNECTOR, Limits(max_frame_size=MIN_FRAME_SIZE))
    await connect_handshake(conn, carrier, role=PeerRole.CLIENT, name="sdk", credential=TOKEN)
    client = Tunnel(conn, carrier, on_event=on_event, name="sdk")
    tg.start_soon(client.run)
    await client.subscribe(1, Subscription(), resume_after=bridge.events.last_seq)
    return client, got


async def test_a_websocket_client_gets_a_snapshot_in_parts_that_fit_its_frames(tls: TLS) -> None:
    # manifests big enough that the whole topology does not fit one frame of this client
    manifest = {
        f"plugin_{n:02d}": {"type": "echo", "version": "1.0", "enabled": True, "ui_config": {"x": "y" * 40}}
        for n in range(40)
    }
    async with running(tls) as bridge, anyio.create_task_group() as tg:
        for name in ("a", "b", "c", "d", "e"):
            edge, _ = await dial(bridge, tls, name, manifest=manifest)
            tg.start_soon(edge.run)
        assert len(json.dumps(bridge.topology())) > MIN_FRAME_SIZE
        client, got = await small_frame_client(bridge, tls, tg)
        await wait_until(lambda: got and not json.loads(got[-1].payload)["more"])
        # the snapshot: sequence number 0 (never an event's number), the parts add up to topology()
        assert {(e.source, e.plugin, e.topic, e.seq) for e in got} == {("bridge", "bridge", "topology", 0)}
        parts = [json.loads(e.payload) for e in got]
        assert len(parts) > 1
        assert [p["more"] for p in parts] == [True] * (len(parts) - 1) + [False]
        assert {p["as_of"] for p in parts} == {bridge.events.last_seq}
        edges: dict[str, Any] = {}
        for part in parts:
            edges.update(part["edges"])
            assert part["bridge"] == bridge.topology()["bridge"]
        assert edges == bridge.topology()["edges"]

        # then a change: numbered, one edge only
        late, _ = await dial(bridge, tls, "late")
        tg.start_soon(late.run)
        await wait_until(lambda: got[-1].topic == "topology_change")
        change = got[-1]
        assert change.seq == bridge.events.last_seq
        assert json.loads(change.payload)["edge"] == "late"
        assert json.loads(change.payload)["change"] == "connected"
        await client.aclose()
        tg.cancel_scope.cancel()


async def test_the_sdk_keeps_the_whole_edges_view_from_snapshot_and_changes(tls: TLS) -> None:
    async with running(tls, edge_ttl=0.3) as bridge, anyio.create_task_group() as tg:
        first, _ = await dial(bridge, tls, "e1")
        tg.start_soon(first.run)
        proxy = CuttableProxy(bridge.port)  # between the SDK and the bridge, to drop the SDK's connection
        await tg.start(proxy.serve)
        seen: list[dict[str, Any]] = []
        options: dict[str, Any] = {"token": TOKEN, "cert": tls.ca_file, "backoff": ClientBackoff(0.05, 0.3)}
        async with AsyncBridgeClient(f"https://127.0.0.1:{proxy.port}", **options) as sdk:
            await sdk.register_topology_callback(seen.append)
            assert seen == []  # subscribing is not a change
            second, _ = await dial(bridge, tls, "e2")
            tg.start_soon(second.run)
            await wait_until(lambda: len(seen) == 1)
            # e1 connected before this client subscribed: it comes from the snapshot
            assert seen[0] == bridge.topology()["edges"]
            assert set(seen[0]) == {"e1", "e2"}
            await second.aclose()
            await wait_until(lambda: len(seen) == 3)
            assert seen[1]["e2"]["endpoint"]["connected"] is False
            assert seen[1]["e1"]["endpoint"]["connected"] is True
            assert "echo" in seen[1]["e2"]["plugins"]
            assert set(seen[2]) == {"e1"}  # e2 expired
            seen[2]["e1"]["plugins"].clear()  # a callback's dict is its own: the SDK's view does not change

            # the SDK's connection drops; meanwhile e3 connects; the SDK resumes: e3 is replayed, once
            proxy.cut()
            await wait_until(lambda: not sdk.connected)
            third, _ = await dial(bridge, tls, "e3")
            tg.start_soon(third.run)
            proxy.restore()
            await wait_until(lambda: len(seen) == 4 and sdk.connected)
            assert seen[3] == bridge.topology()["edges"]
            assert set(seen[3]) == {"e1", "e3"}
            await anyio.sleep(0.3)
            assert len(seen) == 4  # the snapshot after the replay changed nothing: no call
            assert sdk.stats["connections"] == 2
            assert (await sdk.topology())["edges"] == bridge.topology()["edges"]
        await first.aclose()
        await third.aclose()
        tg.cancel_scope.cancel()


# ---------------------------------------------------------------- 4. the ring is bounded in bytes


async def test_the_replay_ring_is_bounded_in_bytes(tls: TLS) -> None:
    bound = 1024 * 1024
    blob = "x" * 50_000
    async with running(tls, event_ring_bytes=bound) as bridge, anyio.create_task_group() as tg:
        edge, _ = await dial(bridge, tls, "e1")
        tg.start_soon(edge.run)
        for n in range(60):  # 3 MB of notifications: three times the bound
            await edge.send_event("e1", "echo", "big", n + 1, json.dumps({"n": n, "blob": blob}).encode())
        await wait_until(lambda: bridge.events.last_seq == 61)  # the connect, then 60 notifications
        hub = bridge.events
        assert hub.ring_bytes <= bound
        held = hub.replay(0)
        assert held.gap
        assert sum(e.size for e in held.events) <= bound
        async with (
            http(bridge, tls) as client,
            client.stream("GET", "/events", headers={"Last-Event-ID": "0"}) as response,
        ):
            sse = SSE(response)
            _, gap = await sse.next()
            assert gap["topic"] == "gap"
            assert gap["data"]["oldest_available"] == held.oldest > 2
            replayed: list[int] = []
            size = 0
            while True:
                event_id, payload = await sse.next()
                if payload["topic"] == "topology":
                    break
                assert event_id is not None
                replayed.append(event_id)
                size += len(json.dumps(payload))
        assert replayed == list(range(held.oldest, 62))  # the newest ones, in order
        assert size <= bound
        await edge.aclose()
        tg.cancel_scope.cancel()


async def test_an_event_too_large_for_a_clients_frames_is_a_gap_not_a_dead_connection(tls: TLS) -> None:
    # the edge may send what fits the bridge's frames (64 KiB); this client takes 16 KiB frames
    async with running(tls) as bridge, anyio.create_task_group() as tg:
        edge, _ = await dial(bridge, tls, "e1")
        tg.start_soon(edge.run)
        client, got = await small_frame_client(bridge, tls, tg)
        await wait_until(lambda: len(got) == 1)  # the snapshot
        edge.queue_event("e1", "echo", "big", 1, json.dumps({"blob": "x" * 30_000}).encode())
        edge.queue_event("e1", "echo", "small", 2, b'{"n": 2}')
        await edge.flush()
        await wait_until(lambda: len(got) == 3)
        gap, small = got[1:]
        assert (gap.topic, gap.seq) == ("gap", 0)
        info = json.loads(gap.payload)
        assert (info["after"], info["oldest"]) == (small.seq - 2, small.seq)  # the big one only is missing
        assert "larger than this connection's frames" in info["detail"]
        assert (small.topic, json.loads(small.payload)) == ("small", {"n": 2})
        assert not client.closed.is_set()
        await client.aclose()
        await edge.aclose()
        tg.cancel_scope.cancel()
