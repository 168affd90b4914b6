"""The edge service against small hubs run in the test: reconnects, backoff, fatal refusals, drain, events."""

from __future__ import annotations

import json
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
import trustme
from fastapi import FastAPI
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from radical_edge_edge import Backoff, EdgeFatalError, EdgeService, Plugin, PluginHost
from radical_edge_proto import (
    Connection,
    ConnectionClosed,
    ErrorCode,
    GoAway,
    Hello,
    ManifestUpdated,
    Notification,
    Side,
)
from radical_edge_tunnel import (
    Carrier,
    ConnectError,
    HandshakeError,
    Tunnel,
    accept_handshake,
    memory_carrier_pair,
)

from .edge_helpers import WebSocketsCarrier

pytestmark = pytest.mark.anyio

FAST = Backoff(initial=0.02, maximum=0.1)


class Slow(Plugin):
    plugin_name = "slow"
    version = "2.0"

    def __init__(self, name: str | None = None, **kwargs: Any) -> None:
        self.started = anyio.Event()
        super().__init__(name, **kwargs)

    def routes(self, app: FastAPI) -> None:
        @app.get("/block")
        async def block(seconds: float) -> dict[str, float]:
            await self.run_sync(time.sleep, seconds)  # blocking work, off the event loop
            return {"blocked": seconds}

        @app.get("/wait")
        async def wait(seconds: float) -> dict[str, float]:
            self.started.set()
            await anyio.sleep(seconds)
            return {"slept": seconds}


Decision = tuple[bool, ErrorCode, str, float]


@dataclass
class Hub:
    """A hub on memory carriers: records HELLOs, answers per ``decide``, keeps the live tunnels."""

    tg: anyio.abc.TaskGroup
    decide: Callable[[Hello], Decision] = lambda hello: (True, ErrorCode.NO_ERROR, "resume-1", 30.0)
    hellos: list[Hello] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    tunnels: list[Tunnel] = field(default_factory=list)
    attempts: list[float] = field(default_factory=list)
    fail_dials: int = 0
    changed: anyio.Event = field(default_factory=anyio.Event)

    def _changed(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5) -> None:
        with anyio.fail_after(timeout):
            while not predicate():
                await self.changed.wait()

    async def connector(self) -> Carrier:
        self.attempts.append(anyio.current_time())
        self._changed()
        if self.fail_dials > 0:
            self.fail_dials -= 1
            raise ConnectError("cannot connect to hub:1: Connection refused")
        a, b = memory_carrier_pair()
        self.tg.start_soon(self._serve, b)
        return a

    async def _serve(self, carrier: Carrier) -> None:
        conn = Connection(Side.HUB)

        async def decide(hello: Hello) -> Decision:
            self.hellos.append(hello)
            return self.decide(hello)

        try:
            await accept_handshake(conn, carrier, decide)
        except HandshakeError:
            await carrier.aclose()
            self._changed()
            return

        def on_event(event: Any) -> None:
            self.events.append(event)
            self._changed()

        tunnel = Tunnel(conn, carrier, on_event=on_event, name="hub")
        self.tunnels.append(tunnel)
        self._changed()
        await tunnel.run()
        self._changed()

    @property
    def live(self) -> Tunnel:
        return self.tunnels[-1]

    async def get(self, path: str) -> tuple[int, Any]:
        stream = await self.live.request("GET", path, [("x-radical-caller", "alice")], end_stream=True)
        response = await stream.wait_response()
        body = b"".join([chunk async for chunk in stream])
        return response.status, json.loads(body)


@asynccontextmanager
async def running(service: EdgeService) -> AsyncIterator[list[BaseException]]:
    """Run ``service`` in the background; yields the list its exception (if any) lands in."""
    errors: list[BaseException] = []

    async def run() -> None:
        try:
            await service.run()
        except Exception as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        try:
            yield errors
        finally:
            service.stop()
            with anyio.fail_after(10):
                while service.state != "stopped":
                    await anyio.sleep(0.01)


def make_service(hub: Hub, host: PluginHost | None = None, **kwargs: Any) -> EdgeService:
    return EdgeService(
        "e1", host=host, plugins=None, connector=hub.connector, backoff=FAST, rng=random.Random(1), **kwargs
    )


async def test_connects_serves_and_resumes_after_loss() -> None:
    host = PluginHost("e1")
    await host.add_plugin(Slow())
    async with anyio.create_task_group() as tg:
        hub = Hub(tg)
        service = make_service(hub, host)
        async with running(service) as errors:
            with anyio.fail_after(5):
                await service.wait_connected()
            first = hub.hellos[0]
            assert first.name == "e1"
            assert first.credential == ""
            assert first.resume_token is None
            assert first.manifest["slow"] == {
                "type": "slow",
                "version": "2.0",
                "enabled": True,
                "ui_config": host.plugins["slow"].ui_config(),
                "error": None,
            }
            assert await hub.get("/slow/version") == (200, {"version": "2.0"})

            await hub.live.aclose()  # the bridge goes away
            await hub.wait_for(lambda: len(hub.tunnels) == 2)
            assert hub.hellos[1].resume_token == "resume-1"
            assert await hub.get("/slow/version") == (200, {"version": "2.0"})
            assert service.connections == 2
            assert not errors
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("code", [ErrorCode.UNAUTHORIZED, ErrorCode.UNSUPPORTED_VERSION])
async def test_fatal_refusal_stops_the_service(code: ErrorCode) -> None:
    async with anyio.create_task_group() as tg:
        hub = Hub(tg, decide=lambda hello: (False, code, "go away", 0.0))
        service = make_service(hub)
        with anyio.fail_after(5), pytest.raises(EdgeFatalError) as info:
            await service.run()
        assert code.name in str(info.value)
        assert "go away" in str(info.value)
        assert len(hub.attempts) == 1
        assert service.state == "stopped"
        tg.cancel_scope.cancel()


async def test_other_refusals_and_dial_errors_are_retried_with_backoff() -> None:
    backoff = Backoff(initial=0.05, maximum=0.2, factor=2)
    refusals = iter([ErrorCode.NAME_CONFLICT, ErrorCode.INTERNAL_ERROR])

    def decide(hello: Hello) -> Decision:
        code = next(refusals, None)
        if code is not None:
            return False, code, "not now", 0.0
        return True, ErrorCode.NO_ERROR, "r", 30.0

    async with anyio.create_task_group() as tg:
        hub = Hub(tg, decide=decide, fail_dials=2)
        service = EdgeService("e1", plugins=None, connector=hub.connector, backoff=backoff, rng=random.Random(7))
        async with running(service) as errors:
            await hub.wait_for(lambda: len(hub.tunnels) == 1)
            assert not errors
        tg.cancel_scope.cancel()
    # two dial errors, two refusals, then success: five attempts, four growing (jittered, capped) pauses
    assert len(hub.attempts) == 5
    gaps = [b - a for a, b in zip(hub.attempts, hub.attempts[1:], strict=False)]
    rng = random.Random(7)
    expected = [backoff.delay(i, rng) for i in range(4)]
    for gap, want in zip(gaps, expected, strict=True):
        assert want <= gap < want + 0.15
    assert [h.resume_token for h in hub.hellos] == [None, None, None]


def test_backoff_is_capped_and_jittered() -> None:
    backoff = Backoff(initial=0.5, maximum=30, factor=2)
    rng = random.Random(3)
    for attempt in range(200):
        cap = min(30, 0.5 * 2**attempt)
        delays = {backoff.delay(attempt, rng) for _ in range(20)}
        assert all(cap / 2 <= d <= cap for d in delays)
        assert len(delays) > 1  # jittered


async def test_stop_drains_in_flight_requests() -> None:
    host = PluginHost("e1")
    slow = Slow()
    await host.add_plugin(slow)
    async with anyio.create_task_group() as tg:
        hub = Hub(tg)
        service = make_service(hub, host)
        result: list[tuple[int, Any]] = []
        async with running(service):
            await hub.wait_for(lambda: len(hub.tunnels) == 1)

            async def slow_request() -> None:
                result.append(await hub.get("/slow/wait?seconds=0.3"))

            tg.start_soon(slow_request)
            await slow.started.wait()
            service.stop()
            await hub.wait_for(lambda: any(isinstance(e, GoAway) for e in hub.events))
            # no new request is accepted while draining
            with pytest.raises(Exception):  # noqa: B017,PT011 - refused stream or closed tunnel
                await hub.get("/slow/version")
            with anyio.fail_after(5):
                await hub.live.closed.wait()
        assert result == [(200, {"slept": 0.3})]
        assert service.state == "stopped"
        assert len(hub.attempts) == 1  # no reconnect after a stop
        tg.cancel_scope.cancel()


async def test_bridge_shutdown_request_ends_the_service() -> None:
    async with anyio.create_task_group() as tg:
        hub = Hub(tg)
        service = make_service(hub)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as inner:
                inner.start_soon(service.run)
                await hub.wait_for(lambda: len(hub.tunnels) == 1)
                await hub.live.aclose(ErrorCode.STOP, "disconnected by the bridge operator")
        assert service.state == "stopped"
        assert len(hub.attempts) == 1
        tg.cancel_scope.cancel()


async def test_a_connection_ended_with_cancel_is_redialled() -> None:
    """Only STOP means "do not come back"; any other code (here CANCEL, a stream code) means reconnect."""
    async with anyio.create_task_group() as tg:
        hub = Hub(tg)
        service = make_service(hub)
        async with running(service):
            await hub.wait_for(lambda: len(hub.tunnels) == 1)
            await hub.live.aclose(ErrorCode.CANCEL, "not a stop")
            await hub.wait_for(lambda: len(hub.tunnels) == 2)
        tg.cancel_scope.cancel()


async def test_notifications_become_events_and_survive_a_reconnect() -> None:
    host = PluginHost("e1")
    slow = Slow()
    await host.add_plugin(slow)
    async with anyio.create_task_group() as tg:
        hub = Hub(tg)
        service = make_service(hub, host)
        async with running(service):
            await hub.wait_for(lambda: len(hub.tunnels) == 1)
            await anyio.to_thread.run_sync(slow.notify, "job_status", {"job": 1, "state": "RUNNING"})
            slow.notify("job_status", {"job": 1, "state": "DONE"})
            await hub.wait_for(lambda: sum(isinstance(e, Notification) for e in hub.events) == 2)

            await hub.live.aclose()
            await hub.wait_for(lambda: len(hub.tunnels) == 1 and hub.live.closed.is_set())
            for i in range(3):  # while the bridge is away: queued
                slow.notify("job_status", {"job": 2, "n": i})
            await hub.wait_for(lambda: len(hub.tunnels) == 2 and service.state == "connected")
            await hub.wait_for(lambda: sum(isinstance(e, Notification) for e in hub.events) == 5)
        tg.cancel_scope.cancel()
    notes = [e for e in hub.events if isinstance(e, Notification)]
    assert [n.seq for n in notes] == [1, 2, 3, 4, 5]
    assert {(n.source, n.plugin, n.topic) for n in notes} == {("e1", "slow", "job_status")}
    assert [json.loads(n.payload) for n in notes] == [
        {"job": 1, "state": "RUNNING"},
        {"job": 1, "state": "DONE"},
        {"job": 2, "n": 0},
        {"job": 2, "n": 1},
        {"job": 2, "n": 2},
    ]


async def test_manifest_updates_on_add_and_remove() -> None:
    async with anyio.create_task_group() as tg:
        hub = Hub(tg)
        service = make_service(hub)
        async with running(service):
            await hub.wait_for(lambda: len(hub.tunnels) == 1)
            assert hub.hellos[0].manifest == {}
            await service.add_plugin(Slow())
            await hub.wait_for(lambda: any(isinstance(e, ManifestUpdated) for e in hub.events))
            update = [e for e in hub.events if isinstance(e, ManifestUpdated)][-1]
            assert update.manifest["slow"]["enabled"] is True
            assert await hub.get("/slow/version") == (200, {"version": "2.0"})
            await service.remove_plugin("slow")
            await hub.wait_for(lambda: [e for e in hub.events if isinstance(e, ManifestUpdated)][-1].manifest == {})
        tg.cancel_scope.cancel()


async def test_a_large_manifest_follows_the_hello() -> None:
    class Big(Plugin):
        plugin_name = "big"

        def ui_config(self) -> dict[str, Any]:
            return {"title": "big", "help": "x" * 20_000}

    host = PluginHost("e1")
    await host.add_plugin(Big())
    async with anyio.create_task_group() as tg:
        hub = Hub(tg)
        async with running(make_service(hub, host)):
            await hub.wait_for(lambda: any(isinstance(e, ManifestUpdated) for e in hub.events))
        tg.cancel_scope.cancel()
    assert hub.hellos[0].manifest == {}
    update = next(e for e in hub.events if isinstance(e, ManifestUpdated))
    assert update.manifest["big"]["ui_config"]["help"] == "x" * 20_000


async def test_stop_while_waiting_to_reconnect() -> None:
    async with anyio.create_task_group() as tg:
        hub = Hub(tg, fail_dials=1000)
        service = EdgeService("e1", plugins=None, connector=hub.connector, backoff=Backoff(initial=60, maximum=60))
        with anyio.fail_after(5):
            async with anyio.create_task_group() as inner:
                inner.start_soon(service.run)
                await hub.wait_for(lambda: len(hub.attempts) == 1)
                await anyio.sleep(0.05)
                assert service.state == "waiting"
                service.stop()
        assert service.state == "stopped"
        tg.cancel_scope.cancel()


# ---------------------------------------------------------------- over a real TLS WebSocket, from a sync program


@pytest.fixture(scope="module")
def tls() -> tuple[trustme.CA, ssl.SSLContext]:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(ctx)
    return ca, ctx


@asynccontextmanager
async def websocket_hub(
    ctx: ssl.SSLContext, decide: Callable[[Hello], Decision], events: list[Any], tunnels: list[Tunnel]
) -> AsyncIterator[int]:
    def check_token(ws: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Authorization") != "Bearer tok":
            return ws.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        carrier = WebSocketsCarrier(ws)
        conn = Connection(Side.HUB)

        async def answer(hello: Hello) -> Decision:
            return decide(hello)

        try:
            await accept_handshake(conn, carrier, answer)
        except HandshakeError:
            await carrier.aclose()
            return
        tunnel = Tunnel(conn, carrier, on_event=events.append, name="ws-hub")
        tunnels.append(tunnel)
        await tunnel.run()

    async with serve(handler, "localhost", 0, ssl=ctx, process_request=check_token) as server:
        yield next(iter(server.sockets)).getsockname()[1]


async def test_start_in_thread_over_tls(tls: tuple[trustme.CA, ssl.SSLContext], tmp_path: Path) -> None:
    ca, ctx = tls
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    events: list[Any] = []
    tunnels: list[Tunnel] = []

    def decide(hello: Hello) -> Decision:
        if hello.credential != "tok":
            return False, ErrorCode.UNAUTHORIZED, "wrong credential", 0.0
        return True, ErrorCode.NO_ERROR, "r-tls", 30.0

    async with websocket_hub(ctx, decide, events, tunnels) as port:
        service = EdgeService(
            "sync-edge", url=f"https://localhost:{port}", token="tok", ca_file=ca_file, plugins=None, backoff=FAST
        )
        assert service.url == f"wss://localhost:{port}/register"
        service.start_in_thread()
        try:
            with anyio.fail_after(10):
                while not tunnels:
                    await anyio.sleep(0.01)
            service.portal.call(service.add_plugin, Slow())
            with anyio.fail_after(5):
                while not any(isinstance(e, ManifestUpdated) for e in events):
                    await anyio.sleep(0.01)
            stream = await tunnels[0].request("GET", "/slow/version", end_stream=True)
            assert (await stream.wait_response()).status == 200
            assert b"".join([c async for c in stream]) == b'{"version":"2.0"}'
        finally:
            await anyio.to_thread.run_sync(service.stop)
        assert service.state == "stopped"
        assert any(isinstance(e, GoAway) for e in events)

        # the same hub with a wrong token: the sync program sees the fatal error
        bad = EdgeService("sync-edge", url=f"wss://localhost:{port}", token="nope", ca_file=ca_file, plugins=None)
        bad.start_in_thread()
        with pytest.raises(EdgeFatalError, match="HTTP 401: missing or wrong bearer token"):
            await anyio.to_thread.run_sync(bad.wait, 10)


async def test_tls_failure_is_retried_not_fatal(tls: tuple[trustme.CA, ssl.SSLContext], tmp_path: Path) -> None:
    _, ctx = tls
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with websocket_hub(ctx, lambda hello: (True, ErrorCode.NO_ERROR, "r", 30.0), [], []) as port:
        service = EdgeService("e1", url=f"https://localhost:{port}", token="tok", ca_file=other, plugins=None)
        with anyio.move_on_after(0.5):
            await service.run()
        assert service.state == "stopped"
        assert service.connections == 0


async def test_closed_by_peer_is_not_treated_as_fatal() -> None:
    # a NAME_CONFLICT GOAWAY means a newer connection of this edge took over: reconnect, not exit
    async with anyio.create_task_group() as tg:
        hub = Hub(tg)
        service = make_service(hub)
        async with running(service) as errors:
            await hub.wait_for(lambda: len(hub.tunnels) == 1)
            await hub.live.aclose(ErrorCode.NAME_CONFLICT, "replaced")
            await hub.wait_for(lambda: len(hub.tunnels) == 2)
            assert not errors
        tg.cancel_scope.cancel()
    assert not any(isinstance(e, ConnectionClosed) and e.error_code == ErrorCode.UNAUTHORIZED for e in hub.events)


async def test_heartbeats_survive_blocking_plugin_work() -> None:
    host = PluginHost("e1")
    await host.add_plugin(Slow())
    async with anyio.create_task_group() as tg:
        # a 0.1 s heartbeat: a peer silent for 0.3 s is declared dead
        hub = Hub(tg, decide=lambda hello: (True, ErrorCode.NO_ERROR, "r", 0.1))
        async with running(make_service(hub, host)):
            await hub.wait_for(lambda: len(hub.tunnels) == 1)
            assert await hub.get("/slow/block?seconds=1.0") == (200, {"blocked": 1.0})
            assert not hub.live.closed.is_set()
            assert len(hub.tunnels) == 1
        tg.cancel_scope.cancel()
