"""A live system for the SDK tests: a bridge (TLS, token) and an edge with plugins, in this process.

The edge ``e1`` runs ``sysinfo``, the example plugin ``hello`` (installed
like a third party) and ``probe``, a test plugin with slow, streaming and
notifying routes.  :class:`Live` can restart the bridge on the same port and
put a TCP proxy between a client and the bridge whose connections can be cut
(a network drop).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
import trustme
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from radical_edge_plugins.sysinfo import SysInfoPlugin

from radical_edge_bridge import Bridge, BridgeConfig
from radical_edge_client import AsyncBridgeClient, Backoff
from radical_edge_edge import Backoff as EdgeBackoff
from radical_edge_edge import EdgeService, Plugin, PluginHost, streaming_body

from .edge_helpers import example_plugin

__all__ = ["TOKEN", "Live", "Probe", "example_plugin", "live", "pattern", "tls"]

TOKEN = "sdk-test-token"
#: short reconnect delays for the tests
FAST = Backoff(initial=0.05, maximum=0.3)


def pattern(n: int) -> bytes:
    """``n`` bytes of a repeating, position-dependent pattern (so misordered chunks are noticed)."""
    block = bytes(range(256)) * 4096  # 1 MiB
    out = block * (n // len(block)) + block[: n % len(block)]
    return out


class Probe(Plugin):
    """A test plugin: slow answers, streamed bodies both ways, notifications on demand, a non-JSON answer."""

    plugin_name = "probe"
    version = "1.2.3"

    def __init__(self) -> None:
        self.cancelled = 0
        super().__init__()

    def routes(self, app: FastAPI) -> None:
        @app.get("/slow")
        async def slow(seconds: float = 5.0) -> dict[str, float]:
            try:
                await anyio.sleep(seconds)
            except BaseException:
                self.cancelled += 1
                raise
            return {"slept": seconds}

        @app.post("/count")
        @streaming_body
        async def count(request: Request) -> dict[str, Any]:
            total = 0
            digest = hashlib.sha256()
            async for chunk in request.stream():
                total += len(chunk)
                digest.update(chunk)
            return {"bytes": total, "sha256": digest.hexdigest()}

        @app.post("/echo")
        @streaming_body
        async def echo(request: Request) -> StreamingResponse:
            return StreamingResponse(request.stream(), media_type="application/octet-stream")

        @app.get("/blob")
        def blob(size: int) -> StreamingResponse:
            def chunks() -> Iterator[bytes]:
                block = pattern(1 << 20)  # the pattern repeats every MiB: never hold the whole body
                for i in range(0, size, 1 << 20):
                    yield block[: min(1 << 20, size - i)]

            return StreamingResponse(chunks(), media_type="application/octet-stream")

        @app.post("/tick")
        async def tick(request: Request) -> dict[str, bool]:
            self.notify("tick", await request.json())
            return {"ok": True}

        @app.get("/text")
        async def text() -> PlainTextResponse:
            return PlainTextResponse("this is not JSON")

        @app.get("/boom")
        async def boom() -> dict[str, str]:
            raise RuntimeError("the probe exploded")


class Echo(Plugin):
    """Answers every other route with what it was asked (method, path, query, JSON body) plus canned
    fields the typed clients read, so the queue_info / psij / staging clients can be checked."""

    plugin_name = "echo"

    def routes(self, app: FastAPI) -> None:
        @app.api_route("/{rest:path}", methods=["GET", "POST"])
        async def echo(rest: str, request: Request) -> dict[str, Any]:
            body = await request.body()
            return {
                "method": request.method,
                "path": rest,
                "query": dict(request.query_params),
                "json": json.loads(body) if body else None,
                "content": base64.b64encode(b"file-content").decode(),
                "backend": "slurm",
            }


def echo_plugin(plugin_type: str) -> Plugin:
    """An :class:`Echo` mounted as ``plugin_type`` with that type in the manifest."""
    cls = type(f"Echo_{plugin_type}", (Echo,), {"plugin_name": plugin_type, "plugin_type": plugin_type})
    plugin = cls()
    assert isinstance(plugin, Plugin)
    return plugin


@dataclass
class TLSFiles:
    cert: Path
    key: Path
    ca: Path
    other_ca: Path


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TLSFiles(tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem", tmp_path / "other-ca.pem")
    cert.private_key_and_cert_chain_pem.write_to_path(str(files.cert))
    cert.private_key_pem.write_to_path(str(files.key))
    files.key.chmod(0o600)
    ca.cert_pem.write_to_path(str(files.ca))
    trustme.CA().cert_pem.write_to_path(str(files.other_ca))
    return files


class CuttableProxy:
    """A TCP proxy in front of the bridge.

    :meth:`cut` drops every connection and refuses new ones (the client sees
    its connection end); :meth:`silence` lets bytes vanish without closing
    anything (a network partition: only heartbeats notice); :meth:`restore`
    ends either.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.up = True
        self.silent = False
        self.accepted = 0
        self._scopes: set[anyio.CancelScope] = set()

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = int(listener.extra(anyio.abc.SocketAttribute.local_address)[1])
        task_status.started()
        async with listener:
            await listener.serve(self._handle)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            if not self.up:
                return
            if self.silent:  # accepted, but nothing gets through until restore() drops it
                with anyio.CancelScope() as held:
                    self._scopes.add(held)
                    await anyio.sleep_forever()
                self._scopes.discard(held)
                return
            self.accepted += 1
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", self.target_port)
            except OSError:
                return
            async with upstream:
                with anyio.CancelScope() as scope:
                    self._scopes.add(scope)
                    try:
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(self._pipe, client, upstream, tg.cancel_scope)
                            tg.start_soon(self._pipe, upstream, client, tg.cancel_scope)
                    finally:
                        self._scopes.discard(scope)

    async def _pipe(self, src: anyio.abc.SocketStream, dst: anyio.abc.SocketStream, scope: anyio.CancelScope) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            while True:
                data = await src.receive()
                if not self.silent:
                    await dst.send(data)
        scope.cancel()

    def cut(self) -> None:
        """Drop every open connection (the client sees its TCP connection end) and refuse new ones."""
        self.up = False
        for scope in list(self._scopes):
            scope.cancel()

    def silence(self) -> None:
        """Let every byte vanish from now on, closing nothing."""
        self.silent = True

    def restore(self) -> None:
        """Accept and forward again; connections that lost bytes while silent are dropped."""
        if self.silent:
            self.silent = False
            for scope in list(self._scopes):
                scope.cancel()
        self.up = True


@dataclass
class Live:
    """A running bridge + edge; made by the :func:`live` fixture."""

    tls: TLSFiles
    tg: anyio.abc.TaskGroup
    config: BridgeConfig
    bridge: Bridge
    service: EdgeService
    probe: Probe
    port: int = 0
    bridges: list[Bridge] = field(default_factory=list)
    _bridge_done: anyio.Event | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self, **options: Any) -> AsyncBridgeClient:
        options.setdefault("token", TOKEN)
        options.setdefault("cert", self.tls.ca)
        options.setdefault("backoff", FAST)
        options.setdefault("timeout", 20)
        url = options.pop("url", self.url)
        return AsyncBridgeClient(url, **options)

    async def start_bridge(self) -> None:
        bridge = Bridge(self.config if not self.port else _with_port(self.config, self.port))
        done = anyio.Event()

        async def run(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            try:
                await bridge.serve(task_status=task_status)
            finally:
                done.set()

        await self.tg.start(run)
        assert bridge.port is not None
        self.port = bridge.port
        self.bridge = bridge
        self.bridges.append(bridge)
        self._bridge_done = done

    async def stop_bridge(self) -> None:
        self.bridge.stop()
        assert self._bridge_done is not None
        with anyio.fail_after(10):
            await self._bridge_done.wait()

    async def wait_edge(self, state: str = "connected", timeout: float = 10) -> None:
        with anyio.fail_after(timeout):
            while self.service.state != state:
                await anyio.sleep(0.01)

    async def restart_bridge(self) -> None:
        await self.stop_bridge()
        await self.start_bridge()

    async def proxy(self) -> CuttableProxy:
        proxy = CuttableProxy(self.port)
        await self.tg.start(proxy.serve)
        return proxy


def _with_port(config: BridgeConfig, port: int) -> BridgeConfig:
    return replace(config, port=port)


@contextlib.asynccontextmanager
async def live_system(tls: TLSFiles, *, extra_plugins: tuple[Plugin, ...] = (), **config: Any) -> AsyncIterator[Live]:
    """A bridge and the edge ``e1`` (sysinfo, hello, probe, ``extra_plugins``), connected; torn down on exit."""
    from radical_edge_example_plugin import HelloPlugin  # noqa: PLC0415 - installed by the example_plugin fixture

    options: dict[str, Any] = {"port": 0, "cert": tls.cert, "key": tls.key, "token": TOKEN, "request_timeout": 20}
    options.update(config)
    probe = Probe()
    host = PluginHost("e1")
    await host.add_plugin(SysInfoPlugin())
    await host.add_plugin(HelloPlugin())
    await host.add_plugin(probe)
    for plugin in extra_plugins:
        await host.add_plugin(plugin)
    async with anyio.create_task_group() as tg:
        system = Live(tls, tg, BridgeConfig(**options), None, None, probe)  # type: ignore[arg-type]
        await system.start_bridge()
        system.service = EdgeService(
            "e1",
            url=system.url,
            host=host,
            plugins=None,
            token=TOKEN,
            ca_file=tls.ca,
            backoff=EdgeBackoff(0.05, 0.2),
        )
        tg.start_soon(system.service.run)
        await system.wait_edge()
        try:
            yield system
        finally:
            system.service.stop()
            with anyio.move_on_after(5):
                await system.wait_edge("stopped")
            system.bridge.stop()
            tg.cancel_scope.cancel()


@pytest.fixture
async def live(tls: TLSFiles, example_plugin: str) -> AsyncIterator[Live]:
    async with live_system(tls) as system:
        yield system


async def wait_for(predicate: Any, timeout: float = 10) -> None:
    """Poll ``predicate()`` until it is true (``TimeoutError`` after ``timeout`` seconds)."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)
