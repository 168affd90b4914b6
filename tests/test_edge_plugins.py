"""Plugins as a third party ships them: the example package pip-installed, found by entry point;
selection; sessions (TTL, 410, cleanup); and the ``radical-edge-service`` command."""

from __future__ import annotations

import json
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from radical_edge_edge import Plugin, PluginHost, PluginSelectionError, Session, discover, select
from radical_edge_proto import Connection, ErrorCode, GoAway, Hello, Side
from radical_edge_tunnel import HandshakeError, Tunnel, accept_handshake

from .edge_helpers import WebSocketsCarrier, call, example_plugin, hub_for

pytestmark = pytest.mark.anyio
__all__ = ["example_plugin"]  # the fixture, imported for pytest


def test_example_plugin_is_found_by_its_entry_point(example_plugin: str) -> None:
    eps = discover()
    assert eps["hello"].value == "radical_edge_example_plugin:HelloPlugin"
    assert eps["hello_broken"].value == "radical_edge_example_plugin.broken:BrokenPlugin"
    assert "sysinfo" in eps  # the built-in one, registered the same way


async def test_example_plugin_loaded_like_a_third_party(example_plugin: str) -> None:
    host = PluginHost("e1")
    assert host.load_entry_points("hello,hello_b,sys") == ["hello", "hello_broken", "sysinfo"]
    manifest = host.manifest()
    assert manifest["hello_broken"]["enabled"] is False
    assert "No module named 'radical_edge_example_missing_dependency'" in manifest["hello_broken"]["error"]
    async with hub_for(host) as hub:
        manifest = host.manifest()
        assert manifest["hello"]["enabled"] is True
        assert manifest["hello"]["version"] == "0.1.0"
        assert manifest["hello"]["ui_config"]["forms"][0]["id"] == "greet"
        assert manifest["sysinfo"]["enabled"] is True

        sid = (await call(hub, "POST", "/hello/register_session")).json()["sid"]
        assert (await call(hub, "GET", f"/hello/greet/{sid}?name=Ada")).json() == {
            "greeting": "Hello, Ada!",
            "count": 1,
        }
        assert (await call(hub, "GET", f"/hello/greet/{sid}")).json()["count"] == 2
        assert (await call(hub, "GET", f"/hello/greet/{sid}", caller="bob")).status == 403
        assert (await call(hub, "POST", f"/hello/shout/{sid}", {"text": "hi"})).json() == {"ok": True}
        with anyio.fail_after(5):
            (notice,) = await host.events.get_batch()
        assert (notice.plugin, notice.topic, json.loads(notice.payload)) == (
            "hello",
            "shout",
            {"text": "HI", "sid": sid},
        )
        assert (await call(hub, "GET", "/hello_broken/version")).status == 503


def test_selection() -> None:
    names = ["hello", "hello_broken", "psij", "queue_info", "sysinfo"]
    assert select("all", names) == sorted(names)
    assert select(None, names) == sorted(names)
    assert select("sys,psij", names) == ["sysinfo", "psij"]
    assert select(" q , sysinfo,q", names) == ["queue_info", "sysinfo"]
    assert select(["hello"], names) == ["hello"]  # an exact name wins over being a prefix of another
    with pytest.raises(PluginSelectionError, match=r"'hel' is ambiguous: it matches hello, hello_broken"):
        select("hel", names)
    with pytest.raises(PluginSelectionError, match=r"no installed plugin matches 'nope'; installed: hello, "):
        select("sysinfo,nope", names)
    with pytest.raises(PluginSelectionError, match="'all' cannot be combined"):
        select("all,psij", names)


# ---------------------------------------------------------------- sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Tracked(Session):
    closed: list[str] = []  # noqa: RUF012 - shared by the test on purpose

    async def close(self) -> None:
        Tracked.closed.append(self.sid)


class Timed(Plugin):
    plugin_name = "timed"
    session_class = Tracked


async def test_session_ttl_410_and_tombstones() -> None:
    clock = Clock()
    plugin = Timed(session_ttl=100, clock=clock)
    host = PluginHost("e1")
    await host.add_plugin(plugin)
    Tracked.closed.clear()
    async with hub_for(host) as hub:
        sid = (await call(hub, "POST", "/timed/register_session")).json()["sid"]
        short = (await call(hub, "POST", "/timed/register_session", {"ttl": 10})).json()["sid"]
        clock.now += 50
        assert (await call(hub, "POST", "/timed/register_session", {"sid": sid})).json() == {"sid": sid}  # renewed
        clock.now += 60  # 110 s after creation, 60 s after the renewal; the short one is 110 s idle
        assert (await call(hub, "GET", "/timed/list_sessions")).json() == {"sessions": [sid]}
        reply = await call(hub, "POST", "/timed/register_session", {"sid": short})
        assert reply.status == 410
        assert reply.json() == {"error": True, "status_code": 410, "detail": f"session {short} expired"}
        assert [s.sid for s in plugin.sessions.expire()] == [short]  # what the cleanup task does
        assert (await call(hub, "POST", f"/timed/unregister_session/{short}")).status == 410  # a tombstone
        assert (await call(hub, "POST", f"/timed/unregister_session/{'f' * 32}")).status == 404
        assert (await call(hub, "GET", "/timed/health")).json()["active_sessions"] == 1
        assert (await call(hub, "POST", f"/timed/unregister_session/{sid}")).json() == {"ok": True}
        assert Tracked.closed == [sid]  # expire() hands sessions back; the cleanup loop closes them


async def test_background_cleanup_closes_expired_sessions() -> None:
    Tracked.closed.clear()
    host = PluginHost("e1")
    await host.add_plugin(Timed(session_ttl=0.2))
    async with hub_for(host) as hub:
        sid = (await call(hub, "POST", "/timed/register_session")).json()["sid"]
        with anyio.fail_after(5):
            while Tracked.closed != [sid]:
                await anyio.sleep(0.05)
        assert (await call(hub, "GET", "/timed/health")).json()["active_sessions"] == 0
        assert (await call(hub, "POST", f"/timed/unregister_session/{sid}")).status == 410
        other = (await call(hub, "POST", "/timed/register_session")).json()["sid"]
    # the edge stopping closes what is left
    assert Tracked.closed == [sid, other]


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def tls() -> tuple[trustme.CA, ssl.SSLContext]:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(ctx)
    return ca, ctx


@asynccontextmanager
async def bridge_like_hub(ctx: ssl.SSLContext, hellos: list[Hello], events: list[Any]) -> AsyncIterator[int]:
    """What the bridge does at /register: bearer token on the upgrade, HELLO credential, then a tunnel."""

    def check(ws: ServerConnection, request: Request) -> Response | None:
        if request.path != "/register":
            return ws.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
        if request.headers.get("Authorization") != "Bearer tok":
            return ws.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        carrier = WebSocketsCarrier(ws)
        conn = Connection(Side.HUB)

        async def decide(hello: Hello) -> tuple[bool, ErrorCode, str, float]:
            hellos.append(hello)
            return True, ErrorCode.NO_ERROR, "r", 30.0

        try:
            await accept_handshake(conn, carrier, decide)
        except HandshakeError:
            return
        await Tunnel(conn, carrier, on_event=events.append).run()

    async with serve(handler, "localhost", 0, ssl=ctx, process_request=check) as server:
        yield next(iter(server.sockets)).getsockname()[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADICAL_BRIDGE_")}
    env["HOME"] = str(tmp_path)  # no stray ~/.radical/edge/bridge.token
    env.update(extra)
    return env


async def _run_cli(args: list[str], env: dict[str, str], timeout: float = 20) -> tuple[int, str]:
    with anyio.fail_after(timeout):
        done = await anyio.run_process([sys.executable, "-m", "radical_edge_edge", *args], env=env, check=False)
    return done.returncode, done.stderr.decode() + done.stdout.decode()


async def test_cli_usage_errors(tmp_path: Path, example_plugin: str) -> None:
    code, out = await _run_cli(["--plugins", "nosuch", "--url", "https://localhost:1"], _env(tmp_path))
    assert code == 2
    assert "no installed plugin matches 'nosuch'" in out
    code, out = await _run_cli(["--plugins", "hel", "--url", "https://localhost:1"], _env(tmp_path))
    assert code == 2
    assert "ambiguous" in out
    code, out = await _run_cli([], _env(tmp_path))
    assert code == 2
    assert "RADICAL_BRIDGE_URL" in out
    code, out = await _run_cli(["--list-plugins"], _env(tmp_path))
    assert code == 0
    assert "sysinfo" in out
    assert "radical_edge_example_plugin:HelloPlugin" in out


async def test_cli_wrong_token_is_fatal(tls: tuple[trustme.CA, ssl.SSLContext], tmp_path: Path) -> None:
    ca, ctx = tls
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    async with bridge_like_hub(ctx, [], []) as port:
        env = _env(tmp_path, RADICAL_BRIDGE_CERT=str(tmp_path / "ca.pem"), RADICAL_BRIDGE_TOKEN="wrong")
        code, out = await _run_cli(["--url", f"https://localhost:{port}", "--plugins", "sysinfo"], env)
    assert code == 1
    assert "refused the credential" in out
    assert "HTTP 401" in out


async def test_cli_serves_and_drains_on_sigterm(
    tls: tuple[trustme.CA, ssl.SSLContext], tmp_path: Path, example_plugin: str
) -> None:
    ca, ctx = tls
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    token_file = tmp_path / ".radical" / "edge" / "bridge.token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text("tok\n")
    token_file.chmod(0o600)
    hellos: list[Hello] = []
    events: list[Any] = []
    async with bridge_like_hub(ctx, hellos, events) as port:
        env = _env(
            tmp_path, RADICAL_BRIDGE_URL=f"https://localhost:{port}", RADICAL_BRIDGE_CERT=str(tmp_path / "ca.pem")
        )
        cmd = [sys.executable, "-m", "radical_edge_edge", "--name", "cli-edge", "--log-level", "debug"]
        output = bytearray()
        async with await anyio.open_process(cmd, env=env) as process, anyio.create_task_group() as tg:

            async def collect() -> None:
                assert process.stderr is not None
                async for chunk in process.stderr:
                    output.extend(chunk)

            tg.start_soon(collect)
            with anyio.fail_after(20):
                while not hellos:
                    await anyio.sleep(0.05)
            hello = hellos[0]
            assert hello.name == "cli-edge"
            assert hello.credential == "tok"
            assert hello.manifest["sysinfo"]["enabled"] is True
            assert hello.manifest["hello"]["enabled"] is True
            assert hello.manifest["hello_broken"]["enabled"] is False
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(20):
                code = await process.wait()
    log = output.decode()
    assert code == 0, log
    assert any(isinstance(e, GoAway) for e in events)
    assert "draining" in log
