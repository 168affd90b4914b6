"""Edge-side fixes from the security review: identity headers, body limits, session quotas,
edge names and reconnect delays."""

from __future__ import annotations

import gc
import json
import random
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from radical_edge_client import Backoff as ClientBackoff
from radical_edge_edge import (
    DEFAULT_MAX_BODY_BYTES,
    Backoff,
    CurrentSession,
    EdgeService,
    Plugin,
    PluginHost,
    SessionError,
    SessionStore,
    caller_of,
    streaming_body,
)
from radical_edge_edge._cli import main as edge_main
from radical_edge_edge._cli import parse_size
from radical_edge_proto import ErrorCode, Hello, Limits
from radical_edge_tunnel import StreamResetError, Tunnel

from .client_helpers import Live, live, tls
from .edge_helpers import call, example_plugin, hub_for
from .test_edge_service import Decision, Hub, running

__all__ = ["example_plugin", "live", "tls"]

pytestmark = pytest.mark.anyio

MiB = 1 << 20
#: the windows of the body tests: what sits in the tunnel's buffers at once is bounded by these
LIMITS = Limits(initial_window_size=256 * 1024, connection_window_size=512 * 1024)


class Guarded(Plugin):
    """Routes that read whole bodies, a route that streams its body, and header reporters."""

    plugin_name = "guarded"
    version = "1.0"

    def __init__(self, name: str | None = None, **kwargs: Any) -> None:
        self.json_calls = 0
        super().__init__(name, **kwargs)

    def routes(self, app: FastAPI) -> None:
        plugin = self

        @app.post("/doc")
        async def doc(body: dict[str, Any]) -> dict[str, int]:
            plugin.json_calls += 1
            return {"keys": len(body)}

        @app.post("/raw")
        async def raw(request: Request) -> dict[str, int]:
            return {"bytes": len(await request.body())}

        @app.post("/count")
        @streaming_body
        async def count(request: Request) -> dict[str, int]:
            total = 0
            async for chunk in request.stream():
                total += len(chunk)
            return {"bytes": total}

        @streaming_body  # the marker works on either side of the route decorator
        @app.put("/count2")
        async def count2(request: Request) -> dict[str, int]:
            total = 0
            async for chunk in request.stream():
                total += len(chunk)
            return {"bytes": total}

        @app.post("/echo")
        async def echo(request: Request) -> StreamingResponse:
            return StreamingResponse(request.stream(), media_type="application/octet-stream")

        @app.get("/headers")
        async def headers(request: Request) -> dict[str, Any]:
            return {
                "caller": caller_of(request),
                "callers": request.headers.getlist("x-radical-caller"),
                "roots": request.headers.getlist("x-radical-root-path"),
                "root_path": request.scope["root_path"],
            }

        @app.get("/mine/{sid}")
        async def mine(session: CurrentSession) -> dict[str, str]:
            return {"owner": session.owner}


def blocks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    block = b" " * size  # one object reused: the sender holds nothing
    left = total
    while left > 0:
        yield block[: min(size, left)]
        left -= size


class Sent:
    def __init__(self) -> None:
        self.bytes = 0
        self.reset: ErrorCode | int | None = None


async def send_body(
    hub: Tunnel, method: str, path: str, total: int, *, content_length: bool, prefix: bytes = b""
) -> tuple[int | None, bytes, Sent]:
    """Send ``total`` bytes (after ``prefix``) while reading the answer; a reset on either side is reported."""
    head = [("x-radical-caller", "alice"), ("x-radical-root-path", "/e1"), ("content-type", "application/json")]
    if content_length:
        head.append(("content-length", str(total + len(prefix))))
    stream = await hub.request(method, path, head)
    sent = Sent()

    async def sender() -> None:
        try:
            if prefix:
                await stream.send(prefix)
                sent.bytes += len(prefix)
            for block in blocks(total):
                await stream.send(block)
                sent.bytes += len(block)
            await stream.end()
        except StreamResetError as exc:
            sent.reset = exc.code

    status: int | None = None
    body = bytearray()
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender)
            try:
                status = (await stream.wait_response()).status
                async for chunk in stream:
                    body += chunk
            except StreamResetError:
                pass
    return status, bytes(body), sent


# ---------------------------------------------------------------- 1. only the bridge's identity headers count


async def raw_get(hub: Tunnel, path: str, headers: list[tuple[str, str]]) -> tuple[int, Any]:
    stream = await hub.request("GET", path, headers, end_stream=True)
    response = await stream.wait_response()
    body = b"".join([chunk async for chunk in stream])
    return response.status, json.loads(body)


async def test_the_last_caller_header_is_the_caller() -> None:
    host = PluginHost("e1")
    await host.add_plugin(Guarded())
    async with hub_for(host) as hub:
        sid = (await call(hub, "POST", "/guarded/register_session", caller="alice")).json()["sid"]
        assert (await call(hub, "GET", f"/guarded/mine/{sid}", caller="alice")).json() == {"owner": "alice"}
        # a client's own header first, the bridge's appended last: the session is not mallory's
        forged = [("x-radical-caller", "alice"), ("x-radical-caller", "mallory")]
        status, body = await raw_get(hub, f"/guarded/mine/{sid}", forged)
        assert status == 403, body
        assert (await raw_get(hub, "/guarded/list_sessions", forged))[1] == {"sessions": []}
        # and no plugin (or framework) can see the forged copy
        status, body = await raw_get(hub, "/guarded/headers", [*forged, ("x-radical-root-path", "/e1")])
        assert body["caller"] == "mallory"
        assert body["callers"] == ["mallory"]
        # the other way round: alice's own session is usable when the bridge says alice
        status, body = await raw_get(hub, f"/guarded/mine/{sid}", [("x-radical-caller", "mallory"), *forged[:1]])
        assert (status, body) == (200, {"owner": "alice"})


async def test_the_last_root_path_header_is_the_root_path() -> None:
    host = PluginHost("e1")
    await host.add_plugin(Guarded())
    async with hub_for(host) as hub:
        forged = [("x-radical-caller", "alice"), ("x-radical-root-path", "/evil"), ("x-radical-root-path", "/e1")]
        status, doc = await raw_get(hub, "/openapi.json", forged)
        assert status == 200
        assert doc["servers"] == [{"url": "/e1"}]
        status, own = await raw_get(hub, "/guarded/openapi.json", forged)
        assert own["servers"] == [{"url": "/e1/guarded"}]
        status, body = await raw_get(hub, "/guarded/headers", forged)
        assert body["roots"] == ["/e1"]
        assert body["root_path"] == "/e1/guarded"
        # a bad last value is not replaced by an earlier one
        status, doc = await raw_get(
            hub, "/openapi.json", [("x-radical-root-path", "/evil"), ("x-radical-root-path", "x")]
        )
        assert "servers" not in doc


def test_caller_of_takes_the_last_header() -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"x-radical-caller", b"alice"), (b"x-radical-caller", b"bob")],
    }
    assert caller_of(StarletteRequest(scope)) == "bob"
    assert caller_of(StarletteRequest({**scope, "headers": []})) == ""


# ---------------------------------------------------------------- 2. request body limits


async def test_whole_body_routes_get_413_over_the_limit() -> None:
    plugin = Guarded()
    host = PluginHost("e1", max_body_bytes=MiB)
    await host.add_plugin(plugin)
    async with hub_for(host, LIMITS) as hub:
        for content_length in (True, False):
            status, body, sent = await send_body(
                hub, "POST", "/guarded/doc", 4 * MiB, content_length=content_length, prefix=b"{"
            )
            assert status == 413, (content_length, body[:200])
            envelope = json.loads(body)
            assert envelope["error"] is True
            assert envelope["status_code"] == 413
            assert "1048576" in envelope["detail"]
            assert sent.bytes < 4 * MiB  # the rest of the body was refused, not swallowed
            # the request after the 413 works
            assert (await call(hub, "POST", "/guarded/doc", {"a": 1, "b": 2})).json() == {"keys": 2}
        assert plugin.json_calls == 2  # only the two good ones reached the route
        status, body, _ = await send_body(hub, "POST", "/guarded/raw", 2 * MiB, content_length=False)
        assert status == 413
        # at the limit is fine
        status, body, _ = await send_body(hub, "POST", "/guarded/raw", MiB, content_length=True)
        assert (status, json.loads(body)) == (200, {"bytes": MiB})


async def test_a_declared_length_over_the_limit_is_refused_before_the_app_runs() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    host = PluginHost("e1", max_body_bytes=1000)
    await host.add_app("raw", app)
    async with hub_for(host, LIMITS) as hub:
        stream = await hub.request("POST", "/raw/x", [("content-length", str(100 * MiB))])
        response = await stream.wait_response()  # answered without a single body byte sent
        assert response.status == 413
        assert json.loads(b"".join([chunk async for chunk in stream]))["status_code"] == 413
        assert seen == []
        assert (await call(hub, "POST", "/raw/y", b"x" * 1000)).status == 200
        assert seen == ["/e1/raw/y"]


async def test_the_default_limit_protects_json_routes() -> None:
    host = PluginHost("e1")
    assert host.max_body_bytes == DEFAULT_MAX_BODY_BYTES == 16 * MiB
    await host.add_plugin(Guarded())
    async with hub_for(host, LIMITS) as hub:
        status, _, sent = await send_body(hub, "POST", "/guarded/doc", 64 * MiB, content_length=False, prefix=b"{")
        assert status == 413
        assert sent.bytes < 20 * MiB


@pytest.mark.parametrize("content_length", [True, False])
async def test_a_big_body_is_not_buffered(content_length: bool) -> None:
    host = PluginHost("e1", max_body_bytes=MiB)
    await host.add_plugin(Guarded())
    async with hub_for(host, LIMITS) as hub:
        await call(hub, "POST", "/guarded/doc", {"warm": "up"})
        gc.collect()
        tracemalloc.start()
        try:
            status, _, sent = await send_body(
                hub, "POST", "/guarded/doc", 64 * MiB, content_length=content_length, prefix=b"{"
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert status == 413
        assert sent.reset is not None  # the edge cut the stream rather than read 64 MiB
        assert sent.bytes < 4 * MiB
        assert peak < 6 * MiB, peak  # a limit of 1 MiB, twice for the join, plus the windows
        assert (await call(hub, "GET", "/guarded/version")).status == 200


async def test_marked_streaming_routes_take_any_size() -> None:
    host = PluginHost("e1", max_body_bytes=MiB)
    await host.add_plugin(Guarded())
    async with hub_for(host, LIMITS) as hub:
        gc.collect()
        tracemalloc.start()
        try:
            status, body, _ = await send_body(hub, "POST", "/guarded/count", 64 * MiB, content_length=True)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (status, json.loads(body)) == (200, {"bytes": 64 * MiB})
        assert peak < 6 * MiB, peak
        status, body, _ = await send_body(hub, "PUT", "/guarded/count2", 8 * MiB, content_length=False)
        assert (status, json.loads(body)) == (200, {"bytes": 8 * MiB})
        # the same path with another method is not the marked route
        status, body, _ = await send_body(hub, "PUT", "/guarded/count", 8 * MiB, content_length=True)
        assert status in (405, 413)


async def test_over_the_limit_after_the_response_started_resets_the_stream() -> None:
    host = PluginHost("e1", max_body_bytes=MiB)
    await host.add_plugin(Guarded())
    async with hub_for(host, LIMITS) as hub:
        stream = await hub.request("POST", "/guarded/echo", [("x-radical-caller", "alice")])
        await stream.send(b"x" * 1000)
        response = await stream.wait_response()
        assert response.status == 200
        got = 0

        async def push_and_read() -> None:
            nonlocal got
            for block in blocks(4 * MiB):
                await stream.send(block)
                while stream.body_ready and not stream.at_end:
                    got += len(await stream.receive())
            async for chunk in stream:
                got += len(chunk)

        with anyio.fail_after(10), pytest.raises(StreamResetError):
            await push_and_read()
        assert got <= MiB
        assert (await call(hub, "GET", "/guarded/version")).status == 200


async def test_streaming_marker_for_starlette_mounts_and_whole_apps() -> None:
    @streaming_body
    async def upload(request: StarletteRequest) -> JSONResponse:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        return JSONResponse({"bytes": total})

    async def whole(request: StarletteRequest) -> JSONResponse:
        return JSONResponse({"bytes": len(await request.body())})

    inner = Starlette(routes=[Route("/up", upload, methods=["POST"]), Route("/whole", whole, methods=["POST"])])
    app = Starlette(routes=[Mount("/files", app=inner)])

    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        total = 0
        while True:
            message = await receive()
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(total).encode()})

    host = PluginHost("e1", max_body_bytes=MiB)
    await host.add_app("st", app)
    await host.add_app("rawapp", streaming_body(raw_app))
    async with hub_for(host, LIMITS) as hub:
        status, body, _ = await send_body(hub, "POST", "/st/files/up", 8 * MiB, content_length=False)
        assert (status, json.loads(body)) == (200, {"bytes": 8 * MiB})
        status, body, _ = await send_body(hub, "POST", "/st/files/whole", 8 * MiB, content_length=True)
        assert status == 413
        status, body, _ = await send_body(hub, "POST", "/rawapp/anything", 8 * MiB, content_length=False)
        assert (status, body) == (200, str(8 * MiB).encode())


def test_streaming_routes_of_the_shipped_apps_are_marked(example_plugin: str) -> None:
    from radical_edge_example_plugin.bulk import BulkPlugin  # noqa: PLC0415

    from radical_edge_bench._app import build_app  # noqa: PLC0415
    from radical_edge_edge._body import route_streams_body  # noqa: PLC0415

    def scope(method: str, path: str) -> dict[str, Any]:
        return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}

    bulk = BulkPlugin().app
    assert route_streams_body(bulk, scope("POST", "/sha256"))
    assert not route_streams_body(bulk, scope("POST", "/register_session"))
    bench = build_app()
    assert route_streams_body(bench, scope("POST", "/upload"))
    assert not route_streams_body(bench, scope("GET", "/small"))


def test_parse_size() -> None:
    assert parse_size("16MiB") == parse_size("16M") == parse_size("16m") == 16 * MiB
    assert parse_size("1048576") == MiB
    assert parse_size("2 KiB") == 2048
    assert parse_size("1G") == 1 << 30
    assert parse_size("0") == 0
    for bad in ("", "x", "-1", "1.5.M", "12Q"):
        with pytest.raises(ValueError, match="not a size"):
            parse_size(bad)


async def test_edge_service_passes_the_limit_to_its_host() -> None:
    async def connector() -> Any:
        raise AssertionError("not dialled")

    service = EdgeService("e1", plugins=None, connector=connector, max_body_bytes=123)
    assert service.host.max_body_bytes == 123
    assert EdgeService("e1", plugins=None, connector=connector).host.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    host = PluginHost("e1", max_body_bytes=77)
    assert EdgeService("e1", plugins=None, connector=connector, host=host).host.max_body_bytes == 77


# ---------------------------------------------------------------- 3. session quotas per caller


def test_session_store_quota_per_caller() -> None:
    store = SessionStore(max_sessions_per_caller=2)
    from radical_edge_edge import Session  # noqa: PLC0415

    def make(owner: str) -> Session:
        return Session(SessionStore.new_id(), owner, ttl=60, now=store.now())

    a1, a2 = make("alice"), make("alice")
    store.add(a1)
    store.add(a2)
    with pytest.raises(SessionError) as info:
        store.add(make("alice"))
    assert info.value.status == 429
    store.add(make("bob"))
    store.remove(a1.sid, "alice")
    store.add(make("alice"))
    assert len(store.owned_by("alice")) == 2


async def test_one_caller_cannot_take_every_session() -> None:
    plugin = Guarded()
    plugin.sessions.max_sessions_per_caller = 3
    host = PluginHost("e1")
    await host.add_plugin(plugin)
    async with hub_for(host) as hub:
        sids = [
            (await call(hub, "POST", "/guarded/register_session", caller="mallory")).json()["sid"] for _ in range(3)
        ]
        reply = await call(hub, "POST", "/guarded/register_session", caller="mallory")
        assert reply.status == 429
        assert reply.json()["error"] is True
        assert "too many sessions" in reply.json()["detail"]
        assert "3" in reply.json()["detail"]
        # someone else still gets one
        assert (await call(hub, "POST", "/guarded/register_session", caller="alice")).status == 200
        # renewing one of yours is not a new session
        reply = await call(hub, "POST", "/guarded/register_session", {"sid": sids[0]}, caller="mallory")
        assert reply.json() == {"sid": sids[0]}
        assert (await call(hub, "POST", f"/guarded/unregister_session/{sids[0]}", caller="mallory")).status == 200
        assert (await call(hub, "POST", "/guarded/register_session", caller="mallory")).status == 200


def test_default_quota() -> None:
    store = SessionStore()
    assert store.max_sessions_per_caller == 100
    assert store.max_sessions == 10_000


# ---------------------------------------------------------------- 4. edge names


async def _never() -> Any:
    raise AssertionError("not dialled")


@pytest.mark.parametrize("name", ["bad name", "edge", "Edge", "bridge", "a/b", "..", "x" * 200, "é", ""])
def test_edge_service_refuses_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="edge name"):
        EdgeService(name, url="https://bridge.example:8000", plugins=None)


def test_in_process_edges_may_use_reserved_names_but_not_bad_ones() -> None:
    assert EdgeService("bridge", plugins=None, connector=_never).name == "bridge"
    with pytest.raises(ValueError, match="edge name"):
        EdgeService("bad name", plugins=None, connector=_never)
    assert EdgeService("login1.batch-7", url="https://bridge.example:8000", plugins=None).name == "login1.batch-7"


@pytest.mark.parametrize("name", ["bad name", "edge"])
def test_the_cli_refuses_a_bad_name_in_one_line(name: str) -> None:
    cmd = [sys.executable, "-m", "radical_edge_edge", "--name", name, "--url", "https://127.0.0.1:9", "--plugins", ""]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"radical-edge-service started with the edge name {name!r}")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "edge name" in lines[0]
    assert lines[0].startswith("radical-edge-service: ")


def test_the_cli_takes_max_body(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        edge_main(["--url", "https://127.0.0.1:9", "--max-body", "lots"])
    assert info.value.code == 2
    assert "--max-body" in capsys.readouterr().err


# ---------------------------------------------------------------- 5. reconnect delays


async def test_the_edge_is_back_quickly_after_two_bridge_restarts() -> None:
    backoff = Backoff(initial=0.01, maximum=4.0, reachable_maximum=0.2)
    async with anyio.create_task_group() as tg:
        hub = Hub(tg)
        service = EdgeService("e1", plugins=None, connector=hub.connector, backoff=backoff, rng=random.Random(5))
        async with running(service) as errors:
            await hub.wait_for(lambda: len(hub.tunnels) == 1)
            back_after: list[float] = []
            # a slow restart (the bridge refuses connections for six dials), then a quick one
            for refused, want in ((6, 2), (1, 3)):
                hub.fail_dials = refused
                down = anyio.current_time()
                await hub.live.aclose()
                await hub.wait_for(lambda want=want: len(hub.tunnels) == want, timeout=10)  # type: ignore[misc]
                back_after.append(anyio.current_time() - down)
            assert not errors
        tg.cancel_scope.cancel()
    # the second restart (after a session shorter than healthy_after) starts again from about
    # reachable_maximum: at most 0.16 + 0.32 s, not the 0.6-1.3 + 1.3-2.6 s the first restart had climbed to
    assert back_after[1] < 1.0, back_after


async def test_refusals_by_a_reachable_bridge_stay_at_the_small_cap() -> None:
    backoff = Backoff(initial=0.01, maximum=4.0, reachable_maximum=0.08)
    refuse = {"n": 0}

    def decide(hello: Hello) -> Decision:
        if refuse["n"] > 0:
            refuse["n"] -= 1
            return False, ErrorCode.NAME_CONFLICT, "the old connection is still here", 0.0
        return True, ErrorCode.NO_ERROR, "r", 30.0

    async with anyio.create_task_group() as tg:
        hub = Hub(tg, decide=decide)
        service = EdgeService("e1", plugins=None, connector=hub.connector, backoff=backoff, rng=random.Random(2))
        async with running(service) as errors:
            await hub.wait_for(lambda: len(hub.tunnels) == 1)
            refuse["n"] = 7
            first = len(hub.attempts)
            await hub.live.aclose()
            await hub.wait_for(lambda: len(hub.tunnels) == 2, timeout=10)
            gaps = [b - a for a, b in zip(hub.attempts[first:], hub.attempts[first + 1 :], strict=False)]
            assert len(gaps) == 7
            # capped at reachable_maximum (0.08 s), not climbing (the 7th would be 0.32-0.64 s)
            assert max(gaps) < 0.25, gaps
            assert not errors
        tg.cancel_scope.cancel()


def test_backoff_policy_with_default_delays() -> None:
    from radical_edge_tunnel import Redial  # noqa: PLC0415

    for backoff in (Backoff(), ClientBackoff()):
        assert backoff.reachable_maximum <= 5.0
        redial = Redial(backoff, random.Random(1))
        # never connected: climbs to maximum
        delays = [redial.next_delay() for _ in range(12)]
        assert max(delays) > backoff.maximum / 2
        for _ in range(3):  # sessions, each ended by a bridge restart that refuses two dials
            redial.connection_ended(lasted=60.0)
            waited = redial.next_delay()
            for _ in range(2):
                redial.unreachable()
                waited += redial.next_delay()
            assert waited < 4.0, waited
        redial.connection_ended(lasted=60.0)
        refused = [redial.next_delay() for _ in range(20)]  # a reachable bridge refusing the handshake
        assert max(refused) <= backoff.reachable_maximum
        # a bridge that accepts and drops at once: the delays climb to reachable_maximum, no tight loop
        flapping = []
        for _ in range(20):
            redial.connection_ended(lasted=0.01)
            flapping.append(redial.next_delay())
        assert min(flapping[-5:]) >= backoff.reachable_maximum / 2
        assert max(flapping) <= backoff.reachable_maximum


async def test_the_client_is_back_quickly_after_two_bridge_restarts(live: Live) -> None:
    async with live.client(backoff=ClientBackoff(initial=0.01, maximum=4.0, reachable_maximum=0.2)) as bridge:
        await bridge.list_edges()
        back_after: list[float] = []
        for down_for in (1.2, 0.05):  # a slow restart, then a quick one
            await live.stop_bridge()
            with anyio.fail_after(5):
                while bridge.connected:
                    await anyio.sleep(0.01)
            await anyio.sleep(down_for)
            up = anyio.current_time()
            await live.start_bridge()
            with anyio.fail_after(10):
                while not bridge.connected:
                    await anyio.sleep(0.01)
            back_after.append(anyio.current_time() - up)
        assert back_after[1] < 1.0, back_after  # climbing on from the first restart: 1.3 s at the least
        with anyio.fail_after(10):
            while await bridge.list_edges() != ["e1"]:  # the edge is back too
                await anyio.sleep(0.05)


# ---------------------------------------------------------------- untrusted text in the edge's log


async def test_a_request_path_is_never_logged_raw(caplog: pytest.LogCaptureFixture) -> None:
    """A percent-encoded newline in the path (decoded in the ASGI scope) cannot forge a log line."""

    async def boom(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raise RuntimeError("plugin bug")

    host = PluginHost("e1")
    await host.add_app("crash", boom)
    caplog.set_level("DEBUG", logger="radical_edge")
    async with hub_for(host) as hub:
        reply = await call(hub, "GET", "/crash/x%0A2026-12-01%20INFO%20forged%0D%00")
    assert reply.status == 500
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("radical_edge")]
    assert any("plugin bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    assert messages
    for message in messages:
        assert "\n" not in message
        assert "\r" not in message
        assert "\x00" not in message


async def test_json_nested_too_deep_for_the_parser_is_a_clear_400() -> None:
    """A JSON body nested 60,000 deep (RecursionError in the parser) is a 400 with a body, not an empty reply."""
    host = PluginHost("e1")
    await host.add_plugin(Guarded())
    async with hub_for(host) as hub:
        deep = b"[" * 60_000 + b"]" * 60_000
        reply = await call(hub, "POST", "/guarded/doc", deep, headers=[("content-type", "application/json")])
        assert reply.status == 400, reply
        assert reply.json()["detail"]
        assert (await call(hub, "POST", "/guarded/doc", {"a": 1})).json() == {"keys": 1}  # the edge is fine


async def test_notify_from_a_thread_never_waits_for_the_event_loop() -> None:
    """put() from a foreign thread returns at once even while the event loop is busy: a producer that
    holds a lock the loop wants (the psij plugin's job table) must not deadlock with it."""
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415

    from radical_edge_edge._notify import NotificationQueue  # noqa: PLC0415

    queue = NotificationQueue()
    async with anyio.create_task_group() as tg:
        await tg.start(queue.run)
        took: list[float] = []

        def producer() -> None:
            started = time.monotonic()
            queue.put("p", "t", {"n": 1})
            took.append(time.monotonic() - started)

        thread = threading.Thread(target=producer)
        thread.start()
        time.sleep(1.0)  # the event loop is blocked for a second (as by a lock the producer holds)
        thread.join(timeout=5)
        assert took, "put() did not return"
        assert took[0] < 0.5, took
        with anyio.fail_after(5):
            batch = await queue.get_batch()  # and the wake-up still reaches the loop
        assert [n.topic for n in batch] == ["t"]
        tg.cancel_scope.cancel()
