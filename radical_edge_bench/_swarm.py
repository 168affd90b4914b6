"""The scale benchmark's load process: N edges and N SDK connections to one bridge, in one event loop.

Run by ``python -m radical_edge_bench._procs scale --url URL --ca CA --count N`` (the
token in ``RADICAL_BRIDGE_TOKEN``).  Every edge is a real
:class:`~radical_edge_edge.EdgeService` (its own name, WS ``/register``, the
redialer every edge uses) with one trivial plugin, ``ping``; every SDK
connection is a :class:`~radical_edge_tunnel.Redialer` on WS ``/connect``, as
the SDK's link keeps it (no event subscription: an SDK client that only makes calls).

Once all are connected it prints ``SCALE-READY {json}`` and then answers one
command per line on stdin, each with one line on stdout:

* ``watch``: note each connection's handshake count now and record, from then
  on, when each one completes its next handshake, as it happens (``SCALE-WATCHING``);
* ``report``: ``SCALE-REPORT {json}``: for each edge and client the
  ``time.monotonic()`` (CLOCK_MONOTONIC, the same clock in every process) of
  its first handshake after ``watch`` (null while none), and how many are connected now;
* ``check K``: ``SCALE-CHECK {json}``: K requests, each from one SDK connection
  through the bridge to one edge's ``ping`` plugin (the routing works);
* ``quit``: stop everything and exit.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import anyio.abc

from radical_edge_edge import EdgeService
from radical_edge_proto import PeerRole
from radical_edge_tunnel import BridgeSettings, Redialer, Tunnel, raise_open_file_limit, resolve_settings

READY = "SCALE-READY"
PING_BODY = b'{"pong":true}'

Message = MutableMapping[str, Any]


async def ping_app(
    scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
) -> None:
    """The edges' one plugin: a plain ASGI app, shared by every edge (it answers any path with a small JSON)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": PING_BODY})


class Client:
    """One SDK connection on ``/connect``, kept up by the redialer as the SDK's link keeps it."""

    def __init__(self, settings: BridgeSettings, name: str) -> None:
        self.redialer = Redialer(
            settings, role=PeerRole.CLIENT, name=name, label=f"client {name}", on_state=self._on_state
        )
        self.tunnel: Tunnel | None = None
        self.connected = anyio.Event()
        #: (``watch``) handshakes before it, and the time of the first one after it
        self.watch_base: int | None = None
        self.reconnected_at: float | None = None
        #: (``watch``) when it began to dial again (the end of its redial delay)
        self.redialed_at: float | None = None

    def _on_state(self, state: str) -> None:
        if state == "connecting" and self.watch_base is not None and self.redialed_at is None:
            self.redialed_at = time.monotonic()

    async def run(self) -> None:
        await self.redialer.run(self._serve)

    async def _serve(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.connected.set()
        base = self.watch_base
        if base is not None and self.reconnected_at is None and self.redialer.connections > base:
            self.reconnected_at = time.monotonic()
        try:
            await tunnel.run()
        finally:
            self.tunnel = None

    @property
    def connections(self) -> int:
        return self.redialer.connections

    @property
    def is_connected(self) -> bool:
        return self.tunnel is not None and not self.tunnel.is_closed


class Swarm:
    def __init__(self, url: str, ca: str, count: int, prefix: str = "scale", concurrency: int = 64) -> None:
        self.url = url
        self.ca = ca
        self.count = count
        self.prefix = prefix
        self.concurrency = concurrency
        self.edges: list[EdgeService] = []
        self.clients: list[Client] = []
        self._since: list[float | None] = []
        self.failures = FailureCounter()

    def edge_name(self, i: int) -> str:
        return f"{self.prefix}-{i:05d}"

    async def run(self) -> None:
        settings = resolve_settings(self.url, cert=self.ca)  # the token from RADICAL_BRIDGE_TOKEN
        nofile = raise_open_file_limit(2 * self.count + 256)
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            limit = anyio.Semaphore(self.concurrency)

            self.edges = [EdgeService(self.edge_name(i), settings=settings, plugins=None) for i in range(self.count)]
            self.clients = [Client(settings, f"{self.prefix}-client-{i}") for i in range(self.count)]

            async def start_edge(service: EdgeService) -> None:
                async with limit:
                    await service.host.add_app("ping", ping_app, version="1")
                    tg.start_soon(service.run, name=f"edge {service.name}")
                    with anyio.fail_after(60):
                        await service.wait_connected()

            async def start_client(client: Client) -> None:
                async with limit:
                    tg.start_soon(client.run, name=client.redialer.label)
                    with anyio.fail_after(60):
                        await client.connected.wait()

            async with anyio.create_task_group() as starting:
                for service in self.edges:
                    starting.start_soon(start_edge, service)
            edges_s = time.monotonic() - started
            async with anyio.create_task_group() as starting:
                for client in self.clients:
                    starting.start_soon(start_client, client)
            ready = {
                "edges": self.count,
                "clients": self.count,
                "edges_connect_s": round(edges_s, 3),
                "connect_s": round(time.monotonic() - started, 3),
                "nofile": nofile,
                "concurrency": self.concurrency,
            }
            _say(f"{READY} {json.dumps(ready)}")
            await self.commands(tg)
            for service in self.edges:
                service.stop()
            tg.cancel_scope.cancel()

    async def commands(self, tg: anyio.abc.TaskGroup) -> None:
        """Answer the parent's commands (one per line on stdin) until ``quit`` or the end of stdin."""
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                return
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                return
            if words[0] == "watch":
                self.failures.counts.clear()
                self._since = [None] * self.count
                for i, service in enumerate(self.edges):
                    tg.start_soon(self._watch_edge, i, service, service.connections)
                for client in self.clients:
                    client.watch_base, client.reconnected_at, client.redialed_at = client.connections, None, None
                _say("SCALE-WATCHING")
            elif words[0] == "report":
                _say(f"SCALE-REPORT {json.dumps(self.report())}")
            elif words[0] == "check":
                result = await self.check(int(words[1]) if len(words) > 1 else 20)
                _say(f"SCALE-CHECK {json.dumps(result)}")
            else:
                _say(f"SCALE-ERROR unknown command {words[0]!r}")

    async def _watch_edge(self, i: int, service: EdgeService, base: int) -> None:
        """Note when ``service`` completes its next handshake (the connection it has now ends first)."""
        while True:
            tunnel = service.tunnel
            if tunnel is not None and service.connections == base:
                await tunnel.closed.wait()
            await service.wait_connected()
            if service.connections > base:
                self._since[i] = time.monotonic()
                return
            await anyio.sleep(0.05)  # it still looked connected: the end was not handled yet

    def report(self) -> dict[str, Any]:
        n = self.count
        return {
            "edges_connected": sum(_connected(e) for e in self.edges),
            "clients_connected": sum(c.is_connected for c in self.clients),
            "edges_reconnected_at": self._since[:n],
            "clients_reconnected_at": [c.reconnected_at for c in self.clients],
            "clients_redialed_at": [c.redialed_at for c in self.clients],
            "edge_handshakes": sum(e.connections for e in self.edges),
            "client_handshakes": sum(c.connections for c in self.clients),
            "warnings": dict(self.failures.counts.most_common()),
        }

    async def check(self, k: int) -> dict[str, Any]:
        """``k`` GETs, each from a random SDK connection to a random edge's ``ping`` plugin, through the bridge."""
        rng = random.Random(k)
        ok = 0
        errors: list[str] = []
        for _ in range(k):
            client = self.clients[rng.randrange(self.count)]
            edge = self.edge_name(rng.randrange(self.count))
            try:
                with anyio.fail_after(10):
                    tunnel = client.tunnel
                    if tunnel is None:
                        raise RuntimeError("not connected")
                    stream = await tunnel.request("GET", f"/{edge}/ping/", end_stream=True)
                    response = await stream.wait_response()
                    body = b""
                    while chunk := await stream.receive():
                        body += chunk
                if response.status == 200 and body == PING_BODY:
                    ok += 1
                else:
                    errors.append(f"{edge}: {response.status} {body[:80]!r}")
            except Exception as exc:
                errors.append(f"{edge}: {type(exc).__name__}: {exc}")
        return {"ok": ok, "of": k, "errors": errors[:5]}


class FailureCounter(logging.Handler):
    """Counts the redialers' warnings (failed dials, refused handshakes, lost connections) by kind."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "timed out" in text:
            kind = "dial timed out"
        elif "handshake refused" in text:
            kind = "handshake refused"
        elif "Connection refused" in text or "Errno 111" in text:
            kind = "connection refused"
        elif "TLS handshake" in text:
            kind = "TLS handshake failed"
        elif "disconnected from the bridge" in text:
            kind = "disconnected"
        elif "upgrade" in text:
            kind = "WebSocket upgrade failed"
        else:
            kind = "other: " + text.split(": ", 1)[-1][:80]
        self.counts[kind] += 1


def _connected(service: EdgeService) -> bool:
    return service.state == "connected"


def _say(line: str) -> None:
    print(line, flush=True)


def run(url: str, ca: str, count: int, concurrency: int = 64) -> int:
    # a reconnect storm is thousands of "cannot connect" warnings, all expected: counted, errors logged
    errors = logging.StreamHandler()
    errors.setLevel(logging.ERROR)
    errors.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(errors)
    swarm = Swarm(url, ca, count, concurrency=concurrency)
    logger = logging.getLogger("radical_edge")
    logger.setLevel(logging.WARNING)
    logger.addHandler(swarm.failures)
    anyio.run(swarm.run)
    return 0
