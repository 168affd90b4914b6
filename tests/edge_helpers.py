"""Shared pieces of the edge tests: a plugin host behind a real tunnel pair, and a request helper."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from radical_edge_edge import PluginHost
from radical_edge_proto import Connection, ErrorCode, Hello, Limits, PeerRole, Side
from radical_edge_tunnel import Tunnel, accept_handshake, connect_handshake, memory_carrier_pair


async def _welcome(hello: Hello) -> tuple[bool, ErrorCode, str, float]:
    return True, ErrorCode.NO_ERROR, "resume-1", 30.0


@asynccontextmanager
async def hub_for(host: PluginHost, limits: Limits | None = None) -> AsyncIterator[Tunnel]:
    """Run ``host`` behind the connector end of a tunnel; yield the hub end (to open requests on)."""
    a, b = memory_carrier_pair()
    edge_conn = Connection(Side.CONNECTOR, limits)
    hub_conn = Connection(Side.HUB, limits)
    async with anyio.create_task_group() as tg:
        tg.start_soon(accept_handshake, hub_conn, b, _welcome)
        await connect_handshake(edge_conn, a, role=PeerRole.EDGE, name=host.edge_name, manifest=host.manifest())
    edge = Tunnel(edge_conn, a, handler=host.handle, name="edge")
    hub = Tunnel(hub_conn, b, name="hub")
    async with anyio.create_task_group() as tg:
        await tg.start(host.run)
        await tg.start(edge.run)
        await tg.start(hub.run)
        try:
            yield hub
        finally:
            await hub.aclose()
            tg.cancel_scope.cancel()


class Reply:
    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:200]!r})"


async def call(
    hub: Tunnel,
    method: str,
    path: str,
    body: Any = None,
    *,
    caller: str = "alice",
    root: str = "/e1",
    headers: list[tuple[str, str]] | None = None,
) -> Reply:
    """One request through the tunnel, the whole answer read."""
    head = [("x-radical-caller", caller), ("x-radical-root-path", root), *(headers or [])]
    raw: bytes | None = None
    if body is not None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        head += [("content-type", "application/json"), ("content-length", str(len(raw)))]
    stream = await hub.request(method, path, head, end_stream=raw is None)
    if raw is not None:
        await stream.send(raw, end_stream=True)
    response = await stream.wait_response()
    data = bytearray()
    async for chunk in stream:
        data += chunk
    return Reply(response.status, dict(response.headers), bytes(data))


# ---------------------------------------------------------------- the example plugin, installed like a third party

EXAMPLE_PLUGIN = Path(__file__).parent / "example_plugin"
#: its distribution and package names
EXAMPLE_DIST = "radical-edge-example-plugin"
EXAMPLE_PACKAGE = "radical_edge_example_plugin"


@pytest.fixture(scope="session")
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``tests/example_plugin`` installed like a third-party plugin, but never into the venv the tests run in.

    pip builds it from its ``pyproject.toml`` (a copy, so the tree stays clean) and installs it into a
    throw-away directory (``--target``): the package and its ``*.dist-info`` with the ``radical_edge.plugins``
    entry points.  That directory goes first on ``sys.path`` (this process) and on ``PYTHONPATH`` (every
    child Python: bridges, edges, the CLI), where ``importlib.metadata`` finds the entry points exactly as
    it finds them in site-packages.  Both are put back when the session ends; ``.venv`` is never written to
    (``tests/test_venv_untouched.py`` checks that), so ``scripts/demo`` never shows the test plugins.
    """
    work = tmp_path_factory.mktemp("example")
    src, site = work / "src", work / "site"
    shutil.copytree(EXAMPLE_PLUGIN, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-cache-dir"]
    cmd += ["--no-deps", "--no-build-isolation", "--target", str(site), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"pip install of the example plugin failed:\n{done.stdout}\n{done.stderr}"
    assert list(site.glob(f"{EXAMPLE_PACKAGE}-*.dist-info/entry_points.txt")), sorted(site.iterdir())
    saved = os.environ.get("PYTHONPATH")
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), saved) if p)
    importlib.invalidate_caches()
    try:
        yield "hello"
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(site))
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
        importlib.invalidate_caches()


# ---------------------------------------------------------------- a hub on the independent websockets server


class WebSocketsCarrier:
    """A tunnel carrier over a ``websockets`` server connection (the hub side in tests)."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws

    async def send(self, data: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(data)

    async def receive(self) -> bytes:
        try:
            message = await self.ws.recv()
        except ConnectionClosed:
            return b""
        return message if isinstance(message, bytes) else b""

    async def aclose(self) -> None:
        await self.ws.close()
