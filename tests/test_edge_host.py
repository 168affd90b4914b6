"""The plugin host over a real tunnel pair: requests through TunnelStream into FastAPI and back."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any, ClassVar

import anyio
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from radical_edge_edge import CurrentSession, Plugin, PluginHost, streaming_body
from radical_edge_proto import ErrorCode, Limits
from radical_edge_tunnel import StreamResetError

from .edge_helpers import call, hub_for

pytestmark = pytest.mark.anyio


class Demo(Plugin):
    """A plugin exercising what the host must carry."""

    plugin_name = "demo"
    version = "1.2.3"
    ui: ClassVar[dict[str, Any]] = {"icon": "D", "title": "Demo"}

    def __init__(self, name: str | None = None, **kwargs: Any) -> None:
        self.slow_started = anyio.Event()
        self.slow_cancelled = anyio.Event()
        super().__init__(name, **kwargs)

    def routes(self, app: FastAPI) -> None:
        @app.get("/echo/{sid}")
        async def echo(session: CurrentSession, q: str = "") -> dict[str, str]:
            return {"sid": session.sid, "owner": session.owner, "q": q}

        @app.post("/upload")
        @streaming_body
        async def upload(request: Request) -> dict[str, int]:
            total = 0
            chunks = 0
            async for chunk in request.stream():
                total += len(chunk)
                chunks += 1
            return {"bytes": total, "chunks": chunks}

        @app.get("/big")
        def big(chunks: int, size: int = 64 * 1024) -> StreamingResponse:
            def gen() -> Iterator[bytes]:
                block = b"x" * size
                for _ in range(chunks):
                    yield block

            return StreamingResponse(gen(), media_type="application/octet-stream")

        @app.get("/slow")
        async def slow() -> dict[str, bool]:
            self.slow_started.set()
            try:
                await anyio.sleep_forever()
            finally:
                self.slow_cancelled.set()
            return {"done": True}  # pragma: no cover

        @app.get("/boom")
        async def boom() -> None:
            raise RuntimeError("kaboom")

        @app.get("/where")
        async def where(request: Request) -> dict[str, str]:
            return {
                "path": request.url.path,
                "root_path": request.scope["root_path"],
                "route": request.scope["route"].path,
                "query": request.url.query,
            }

        @app.post("/notify/{topic}")
        async def notify(topic: str, request: Request) -> dict[str, bool]:
            self.notify(topic, await request.json())
            return {"ok": True}


async def test_routes_sessions_and_envelope() -> None:
    host = PluginHost("e1")
    await host.add_plugin(Demo())
    async with hub_for(host) as hub:
        reply = await call(hub, "GET", "/demo/version")
        assert (reply.status, reply.json()) == (200, {"version": "1.2.3"})

        reply = await call(hub, "POST", "/demo/register_session")
        assert reply.status == 200
        sid = reply.json()["sid"]
        assert len(sid) == 32
        assert int(sid, 16) >= 0

        reply = await call(hub, "GET", f"/demo/echo/{sid}?q=hi%20there")
        assert reply.json() == {"sid": sid, "owner": "alice", "q": "hi there"}

        reply = await call(hub, "GET", f"/demo/echo/{sid}", caller="mallory")
        assert reply.status == 403
        assert reply.json() == {"error": True, "status_code": 403, "detail": f"session {sid} belongs to another caller"}

        reply = await call(hub, "GET", "/demo/echo/" + "0" * 32)
        assert reply.status == 404
        assert reply.json()["error"] is True

        reply = await call(hub, "GET", "/demo/list_sessions")
        assert reply.json() == {"sessions": [sid]}

        reply = await call(hub, "POST", f"/demo/unregister_session/{sid}")
        assert (reply.status, reply.json()) == (200, {"ok": True})
        assert (await call(hub, "GET", f"/demo/echo/{sid}")).status == 404

        reply = await call(hub, "GET", "/nope/version")
        assert reply.status == 404
        assert reply.json() == {"error": True, "status_code": 404, "detail": "no plugin 'nope' on edge 'e1'"}

        reply = await call(hub, "GET", "/demo/no/such/route")
        assert reply.status == 404
        assert reply.json()["error"] is True

        reply = await call(hub, "GET", "/demo/echo/abc?q=1", root="")
        assert reply.status == 404  # unknown session, still through the plugin

        reply = await call(hub, "POST", "/demo/register_session", {"ttl": -1})
        assert reply.status == 422
        assert reply.json()["status_code"] == 422


async def test_a_served_request_leaves_no_reference_cycle() -> None:
    """Once answered, a request's stream, its ASGI call and their scopes are freed by reference counting:
    nothing is left for the cyclic garbage collector (whose full passes paused an edge for 20 ms)."""
    host = PluginHost("e1")
    await host.add_plugin(Demo())
    async with hub_for(host) as hub:
        await call(hub, "GET", "/demo/version")  # warm: whatever is made once is made now
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(20):
                reply = await call(hub, "GET", "/demo/version")
                assert reply.status == 200
            await anyio.sleep(0.05)  # the edge's handler tasks finish
            gc.collect()
            cyclic = [type(o).__qualname__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    kinds = {"TunnelStream", "_AsgiCall", "CancelScope", "RequestReceived"}
    assert not [k for k in cyclic if k in kinds], sorted(set(cyclic))


async def test_scope_paths() -> None:
    host = PluginHost("e1")
    await host.add_plugin(Demo())
    async with hub_for(host) as hub:
        reply = await call(hub, "GET", "/demo/where?a=1&b=%2F")
        expected = {"path": "/e1/demo/where", "root_path": "/e1/demo", "route": "/where", "query": "a=1&b=%2F"}
        assert reply.json() == expected
        reply = await call(hub, "GET", "/demo/where", root="")
        assert reply.json()["root_path"] == "/demo"


async def test_health_version_ui_config_shapes() -> None:
    host = PluginHost("e1")
    await host.add_plugin(Demo())
    async with hub_for(host) as hub:
        await call(hub, "POST", "/demo/register_session")
        health = (await call(hub, "GET", "/demo/health")).json()
        assert set(health) == {"status", "plugin", "version", "uptime_seconds", "active_sessions"}
        assert health["status"] == "ok"
        assert health["plugin"] == "demo"
        assert health["version"] == "1.2.3"
        assert isinstance(health["uptime_seconds"], float)
        assert health["uptime_seconds"] >= 0
        assert health["active_sessions"] == 1
        ui = (await call(hub, "GET", "/demo/ui_config")).json()
        assert ui["plugin"] == "demo"
        assert ui["version"] == "1.2.3"
        assert ui["ui"]["title"] == "Demo"
        assert ui["ui"]["icon"] == "D"


async def test_streamed_upload_and_download() -> None:
    host = PluginHost("e1")
    await host.add_plugin(Demo())
    limits = Limits(initial_window_size=64 * 1024, connection_window_size=128 * 1024, max_frame_size=16 * 1024)
    async with hub_for(host, limits) as hub:
        size = 8 * 1024 * 1024
        stream = await hub.request("POST", "/demo/upload", [("content-length", str(size))])
        block = b"y" * (256 * 1024)
        for _ in range(size // len(block)):
            await stream.send(block)
        await stream.end()
        response = await stream.wait_response()
        body = b"".join([chunk async for chunk in stream])
        assert response.status == 200
        result = json.loads(body)
        assert result["bytes"] == size
        assert result["chunks"] > 1


async def test_large_streamed_response_has_bounded_memory() -> None:
    host = PluginHost("e1")
    await host.add_plugin(Demo())
    limits = Limits(initial_window_size=256 * 1024, connection_window_size=512 * 1024)
    chunks, size = 1024, 64 * 1024  # 64 MiB in total
    async with hub_for(host, limits) as hub:
        await call(hub, "GET", "/demo/big?chunks=1")  # warm up (imports, route compilation)
        gc.collect()
        tracemalloc.start()
        try:
            stream = await hub.request("GET", f"/demo/big?chunks={chunks}&size={size}", end_stream=True)
            response = await stream.wait_response()
            assert response.status == 200
            total = 0
            async for chunk in stream:
                total += len(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert total == chunks * size
    # the whole body is 64 MiB; what is alive at once is bounded by the windows, not the size
    assert peak < 16 * 1024 * 1024, peak


async def test_client_reset_cancels_the_handler() -> None:
    host = PluginHost("e1")
    demo = Demo()
    await host.add_plugin(demo)
    async with hub_for(host) as hub:
        stream = await hub.request("GET", "/demo/slow", end_stream=True)
        with anyio.fail_after(5):
            await demo.slow_started.wait()
            await stream.reset(ErrorCode.CANCEL)
            await demo.slow_cancelled.wait()
        # the edge is still serving
        assert (await call(hub, "GET", "/demo/version")).status == 200


async def test_handler_error_is_a_500_envelope() -> None:
    host = PluginHost("e1")
    await host.add_plugin(Demo())
    async with hub_for(host) as hub:
        reply = await call(hub, "GET", "/demo/boom")
        assert reply.status == 500
        assert reply.json() == {
            "error": True,
            "status_code": 500,
            "detail": "internal error in the plugin: RuntimeError: kaboom",
        }


async def test_raw_asgi_app_errors() -> None:
    async def early_failure(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan here")
        raise ValueError("broken before any response")

    async def half_response(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("broken half-way")

    async def no_response(scope: Any, receive: Any, send: Any) -> None:
        return None

    async def bad_header(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-bad", b"line\r\nbreak")]})
        await send({"type": "http.response.body", "body": b"never"})

    host = PluginHost("e1")
    await host.add_app("early", early_failure)
    await host.add_app("half", half_response)
    await host.add_app("silent", no_response)
    await host.add_app("badheader", bad_header)
    async with hub_for(host) as hub:
        reply = await call(hub, "GET", "/early/x")
        assert reply.status == 500
        assert "broken before any response" in reply.json()["detail"]
        stream = await hub.request("GET", "/half/x", end_stream=True)
        response = await stream.wait_response()
        assert response.status == 200
        with pytest.raises(StreamResetError) as info:
            async for _ in stream:
                pass
        assert info.value.code == ErrorCode.INTERNAL_ERROR
        reply = await call(hub, "GET", "/silent/")
        assert reply.status == 500
        reply = await call(hub, "GET", "/badheader/")
        assert reply.status == 500
        assert "LocalProtocolError" in reply.json()["detail"]


async def test_openapi_merge() -> None:
    host = PluginHost("e1")
    await host.add_plugin(Demo())
    await host.add_plugin(Demo("demo2"))
    async with hub_for(host) as hub:
        doc = (await call(hub, "GET", "/openapi.json")).json()
        assert doc["servers"] == [{"url": "/e1"}]
        assert "/demo/echo/{sid}" in doc["paths"]
        assert "/demo2/register_session" in doc["paths"]
        op_ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
        assert len(op_ids) == len(set(op_ids))
        assert {t["name"] for t in doc["tags"]} == {"demo", "demo2"}
        assert doc["paths"]["/demo/version"]["get"]["tags"] == ["demo"]
        # each plugin's own document is served by the plugin, with the server URL the bridge exposes
        own = (await call(hub, "GET", "/demo/openapi.json")).json()
        assert own["servers"] == [{"url": "/e1/demo"}]
        assert "/echo/{sid}" in own["paths"]
        assert (await call(hub, "POST", "/openapi.json")).status == 405
        index = (await call(hub, "GET", "/")).json()
        assert index["edge"] == "e1"
        assert set(index["plugins"]) == {"demo", "demo2"}


async def test_manifest_on_add_and_remove() -> None:
    seen: list[dict[str, Any]] = []
    host = PluginHost("e1", on_manifest_change=seen.append)
    await host.add_plugin(Demo())
    assert seen[-1] == {
        "demo": {"type": "demo", "version": "1.2.3", "enabled": True, "ui_config": Demo().ui_config(), "error": None}
    }
    async with hub_for(host) as hub:
        await host.add_plugin(Demo("other"))
        assert set(seen[-1]) == {"demo", "other"}
        assert (await call(hub, "GET", "/other/version")).status == 200
        sid = (await call(hub, "POST", "/other/register_session")).json()["sid"]
        assert host.plugins["other"].sessions.get(sid, "alice").sid == sid
        await host.remove_plugin("other")
        assert set(seen[-1]) == {"demo"}
        assert (await call(hub, "GET", "/other/version")).status == 404
        with pytest.raises(KeyError):
            await host.remove_plugin("other")
        with pytest.raises(ValueError, match="already mounted"):
            await host.add_plugin(Demo())


async def test_failing_plugin_is_reported_not_loaded() -> None:
    class Broken(Plugin):
        plugin_name = "broken"

        async def startup(self) -> None:
            raise OSError("no such device")

    class NoScheduler(Plugin):
        plugin_name = "queue"

        @classmethod
        def unavailable_reason(cls) -> str | None:
            return "no Slurm or PBS found"

    host = PluginHost("e1")
    host.add_failed("missing", "ModuleNotFoundError: No module named 'psij'")
    await host.add_plugin(Demo())
    await host.add_plugin(Broken())
    await host.add_plugin(NoScheduler())
    async with hub_for(host) as hub:
        manifest = host.manifest()
        assert manifest["missing"]["enabled"] is False
        assert manifest["missing"]["error"] == "ModuleNotFoundError: No module named 'psij'"
        assert manifest["broken"]["enabled"] is False
        assert "no such device" in manifest["broken"]["error"]
        assert manifest["demo"]["enabled"] is True
        assert manifest["queue"] == {
            "type": "queue",
            "version": "",
            "enabled": False,
            "ui_config": {},
            "error": "not available on this host: no Slurm or PBS found",
        }
        reply = await call(hub, "GET", "/missing/version")
        assert reply.status == 503
        assert "not loaded" in reply.json()["detail"]
        assert (await call(hub, "GET", "/demo/version")).status == 200


async def test_unavailable_is_information_and_a_failure_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """``--plugins all`` tries every plugin on every host: one that cannot work here is no error."""

    class NoScheduler(Plugin):
        plugin_name = "queue"

        @classmethod
        def unavailable_reason(cls) -> str | None:
            return "no Slurm or PBS found"

    host = PluginHost("e1")
    with caplog.at_level("DEBUG", logger="radical_edge.edge"):
        await host.add_plugin(NoScheduler())
        host.add_unavailable("rhapsody", "not inside an allocation", plugin_type="rhapsody")
        host.add_failed("broken", "ImportError: no module named 'x'")
    levels = {r.getMessage(): r.levelname for r in caplog.records}
    assert levels == {
        "plugin queue not available on this host: no Slurm or PBS found": "INFO",
        "plugin rhapsody not available on this host: not inside an allocation": "INFO",
        "plugin broken not loaded: ImportError: no module named 'x'": "ERROR",
    }
    manifest = host.manifest()
    assert manifest["rhapsody"]["error"] == "not available on this host: not inside an allocation"
    assert manifest["rhapsody"]["type"] == "rhapsody"
    assert not manifest["rhapsody"]["enabled"]


async def test_notifications_from_threads_and_loop() -> None:
    host = PluginHost("e1")
    demo = Demo()
    await host.add_plugin(demo)
    async with hub_for(host) as hub:
        await call(hub, "POST", "/demo/notify/loop", {"n": 0})

        def from_thread(i: int) -> None:
            demo.notify("thread", {"n": i})

        for i in range(1, 4):
            await anyio.to_thread.run_sync(from_thread, i)
        got = []
        with anyio.fail_after(5):
            while len(got) < 4:
                got += await host.events.get_batch()
        assert [(n.plugin, n.topic, json.loads(n.payload)) for n in got] == [
            ("demo", "loop", {"n": 0}),
            ("demo", "thread", {"n": 1}),
            ("demo", "thread", {"n": 2}),
            ("demo", "thread", {"n": 3}),
        ]
        with pytest.raises(TypeError):
            demo.notify("bad", object())
