"""The async SDK against a live bridge and edge (verified TLS): every public method."""

from __future__ import annotations

import base64
import hashlib
import inspect
import io
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from radical_edge_client import (
    AsyncBridgeClient,
    AsyncEdgeClient,
    AsyncPluginClient,
    AsyncPSIJClient,
    AsyncQueueInfoClient,
    AsyncStagingClient,
    AsyncSysInfoClient,
    BridgeClient,
    EdgeClient,
    PluginClient,
    Response,
    _client,
    blocking_class,
    plugin_client_class,
    register_plugin_client,
)

from .client_helpers import TOKEN, Live, TLSFiles, echo_plugin, example_plugin, live, live_system, pattern, tls

pytestmark = pytest.mark.anyio
__all__ = ["example_plugin", "live", "tls"]  # fixtures, imported for pytest


async def test_bridge_level_methods(live: Live) -> None:
    async with live.client() as bridge:
        assert bridge.connected
        assert await bridge.list_edges() == ["e1"]
        topology = await bridge.topology()
        assert topology["edges"]["e1"]["plugins"]["probe"]["namespace"] == "/e1/probe"
        (entry,) = await bridge.edges()
        assert entry["name"] == "e1"
        assert entry["connected"] is True
        assert {"hello", "probe", "sysinfo"} <= set(entry["plugins"])
        health = await bridge.health()
        assert health["status"] == "ok"
        assert isinstance(health["event_epoch"], str)
        raw = await bridge.request("GET", "/edges")
        assert isinstance(raw, Response)
        assert raw.status == 200
        assert raw.header("content-type") == "application/json"
        assert raw.json()["total"] == 1
        edge = await bridge.get_edge_client("e1")
        assert isinstance(edge, AsyncEdgeClient)
        assert edge.name == "e1"
    assert bridge.state == "closed"


async def test_edge_and_plugin_methods(live: Live) -> None:
    async with live.client() as bridge:
        edge = await bridge.get_edge_client("e1")
        plugins = await edge.list_plugins()
        assert plugins["sysinfo"]["type"] == "sysinfo"
        assert plugins["probe"]["version"] == "1.2.3"
        sysinfo = await edge.get_plugin("sysinfo")
        assert isinstance(sysinfo, AsyncSysInfoClient)
        assert sysinfo.sid is not None
        assert sysinfo.namespace == "/e1/sysinfo"
        metrics = await sysinfo.get_metrics()
        assert set(metrics) == {"system", "cpu", "memory", "disks", "network", "gpus"}
        assert await sysinfo.homedir() == str(Path.home())
        role = await sysinfo.host_role()
        assert role["role"] in ("login", "compute", "bridge")
        health = await sysinfo.health()
        assert health["plugin"] == "sysinfo"
        assert health["active_sessions"] >= 1
        assert await sysinfo.version() == "0.1.0"
        assert (await sysinfo.ui_config())["plugin"] == "sysinfo"
        assert sysinfo.sid in await sysinfo.list_sessions()

        hello = await edge.get_plugin("hello", ttl=600)
        assert type(hello) is AsyncPluginClient
        greeting = await hello.get_json(f"greet/{hello.sid}", params={"name": "Ada"})
        assert greeting == {"greeting": "Hello, Ada!", "count": 1}
        assert (await hello.request("GET", hello.session_path("greet"))).json()["count"] == 2
        assert await hello.post_json(f"shout/{hello.sid}", json={"text": "hi"}) == {"ok": True}
        sid = hello.sid
        await hello.close()
        assert hello.sid is None
        assert sid not in await sysinfo.list_sessions()

        bare = await edge.get_plugin("probe", session=False)
        assert bare.sid is None
        with pytest.raises(RuntimeError, match="no session"):
            bare.session_path("x")
        assert (await edge.request("GET", "probe/version")).json() == {"version": "1.2.3"}
        doc = await edge.openapi()
        assert "/probe/slow" in doc["paths"]


async def test_concurrent_requests_share_one_connection(live: Live) -> None:
    async with live.client() as bridge:
        edge = await bridge.get_edge_client("e1")
        probe = await edge.get_plugin("probe", session=False)
        results: list[Any] = []

        async def one(i: int) -> None:
            results.append((await probe.request("GET", "slow", params={"seconds": 0.2})).json())

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(40):
                    tg.start_soon(one, i)
        assert results == [{"slept": 0.2}] * 40
        assert bridge.stats["connections"] == 1


async def test_bodies_stream_both_ways(live: Live, tmp_path: Path) -> None:
    size = 24 << 20
    data = pattern(size)
    src = tmp_path / "up.bin"
    src.write_bytes(data)
    expected = {"bytes": size, "sha256": hashlib.sha256(data).hexdigest()}
    async with live.client() as bridge:
        edge = await bridge.get_edge_client("e1")
        probe = await edge.get_plugin("probe", session=False)
        # upload from a file object, from an async iterator, from a plain iterator, from bytes
        with src.open("rb") as fh:
            assert (await probe.upload("count", fh)).json() == expected

        async def agen() -> AsyncIterator[bytes]:
            for i in range(0, size, 1 << 20):
                yield data[i : i + (1 << 20)]

        assert (await probe.upload("count", agen())).json() == expected
        assert (await probe.request("POST", "count", data=iter([data[:10], data[10:100]]))).json()["bytes"] == 100
        assert (await probe.request("POST", "count", data=b"abc")).json()["bytes"] == 3
        # an echo: the upload and the download run at the same time
        echoed = io.BytesIO()
        async with probe.stream("POST", "echo", data=io.BytesIO(data)) as answer:
            assert answer.status == 200
            assert await answer.download(echoed) == size
        assert echoed.getvalue() == data
        # download to a path and to a file object
        dest = tmp_path / "down.bin"
        assert await probe.download("blob", dest, params={"size": size}) == size
        assert dest.read_bytes() == data
        sink = io.BytesIO()
        async with probe.stream("GET", "blob", params={"size": 3_000_001}) as answer:
            chunks = [chunk async for chunk in answer.aiter_bytes()]
        assert b"".join(chunks) == data[:3_000_001]
        assert len(chunks) > 1
        _ = sink


async def test_client_resolves_url_token_and_cert_from_the_environment(
    live: Live, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RADICAL_BRIDGE_URL", live.url)
    monkeypatch.setenv("RADICAL_BRIDGE_CERT", str(live.tls.ca))
    monkeypatch.setenv("RADICAL_BRIDGE_TOKEN", TOKEN)
    async with AsyncBridgeClient() as bridge:
        assert await bridge.list_edges() == ["e1"]
    # no token in the environment: the token file
    monkeypatch.delenv("RADICAL_BRIDGE_TOKEN")
    token_file = tmp_path / "bridge.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    async with AsyncBridgeClient(token_file=token_file) as bridge:
        assert await bridge.list_edges() == ["e1"]
    monkeypatch.delenv("RADICAL_BRIDGE_URL")
    with pytest.raises(ValueError, match="RADICAL_BRIDGE_URL"):
        AsyncBridgeClient()


async def test_clients_of_the_other_builtin_plugins(tls: TLSFiles, example_plugin: str) -> None:
    extra = (echo_plugin("queue_info"), echo_plugin("psij"), echo_plugin("staging"))
    async with live_system(tls, extra_plugins=extra) as system, system.client() as bridge:
        edge = await bridge.get_edge_client("e1")
        qi = await edge.get_plugin("queue_info")
        assert isinstance(qi, AsyncQueueInfoClient)
        sid = qi.sid
        assert await qi.backend() == "slurm"
        assert (await qi.job_allocation() or {})["path"] == "job_allocation"
        info = await qi.get_info(user="*", force=True)
        assert (info["method"], info["path"], info["query"]) == (
            "GET",
            f"get_info/{sid}",
            {"user": "*", "force": "true"},
        )
        assert (await qi.list_jobs("debug"))["path"] == f"list_jobs/{sid}/debug"
        assert (await qi.list_all_jobs(user="ada"))["query"] == {"user": "ada"}
        assert (await qi.list_allocations())["path"] == f"list_allocations/{sid}"
        assert (await qi.cancel_job("42"))["path"] == f"cancel/{sid}/42"

        psij = await edge.get_plugin("psij")
        assert isinstance(psij, AsyncPSIJClient)
        spec = {"executable": "/bin/date", "attributes": {"duration": "100"}}
        submitted = await psij.submit_job(spec, executor="slurm")
        assert (submitted["method"], submitted["path"]) == ("POST", f"submit/{psij.sid}")
        assert submitted["json"] == {"job_spec": spec, "executor": "slurm"}
        status = await psij.get_job_status("j1", stdout_offset=5)
        assert status["path"] == f"status/{psij.sid}/j1"
        assert status["query"] == {"stdout_offset": "5", "stderr_offset": "0"}
        assert (await psij.list_jobs())["path"] == f"list_jobs/{psij.sid}"
        assert (await psij.cancel_job("j1"))["path"] == f"cancel/{psij.sid}/j1"

        staging = await edge.get_plugin("staging")
        assert isinstance(staging, AsyncStagingClient)
        put = await staging.put("~/x.txt", b"data", overwrite=True)
        assert put["json"] == {"filename": "~/x.txt", "content": base64.b64encode(b"data").decode(), "overwrite": True}
        assert await staging.get("~/x.txt") == b"file-content"
        assert (await staging.list("/tmp"))["json"] == {"path": "/tmp"}
        local = system.tls.ca
        assert (await staging.put_file(local, "~/ca.pem"))["json"]["content"] == base64.b64encode(
            local.read_bytes()
        ).decode()


async def test_third_party_plugin_client_classes(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin client written once, async, and registered: blocking too, with nothing more written."""

    class HelloClient(AsyncPluginClient):
        """The hello plugin, greeting by name."""

        plugin_type = "hello"

        async def greet(self, name: str) -> str:
            """Greet ``name``."""
            return str((await self.get_json(self.session_path("greet"), params={"name": name}))["greeting"])

        async def aiter_greetings(self, *names: str) -> AsyncIterator[str]:
            """One greeting after the other."""
            for name in names:
                yield await self.greet(name)

        async def its_edge(self) -> AsyncEdgeClient:
            return self.edge

    monkeypatch.setattr(_client, "_PLUGIN_CLIENTS", dict(_client._PLUGIN_CLIENTS))  # registered for this test only
    assert register_plugin_client(HelloClient) is HelloClient
    assert plugin_client_class("hello") is HelloClient
    async with live.client() as bridge:
        edge = await bridge.get_edge_client("e1")
        hello = await edge.get_plugin("hello")
        assert isinstance(hello, HelloClient)
        assert await hello.greet("Ada") == "Hello, Ada!"
        env = (live.url, TOKEN, str(live.tls.ca))

    def blocking() -> list[Any]:
        with BridgeClient(*env) as sync_bridge:
            sync_hello = sync_bridge.get_edge_client("e1").get_plugin("hello")
            return [
                sync_hello,
                sync_hello.greet("Bo"),  # the async class's own method, blocking
                list(sync_hello.iter_greetings("Cy", "Di")),
                sync_hello.its_edge(),
                sync_hello.edge.name,
                sync_hello.bridge is sync_bridge,
            ]

    sync_hello, greeting, greetings, its_edge, edge_name, same_bridge = await anyio.to_thread.run_sync(blocking)
    assert type(sync_hello) is blocking_class(HelloClient)
    assert isinstance(sync_hello, PluginClient)
    assert type(sync_hello).__name__ == "HelloClient"
    assert repr(sync_hello).startswith("HelloClient('/e1/hello', sid=")
    assert greeting == "Hello, Bo!"
    assert greetings == ["Hello, Cy!", "Hello, Di!"]
    assert isinstance(its_edge, EdgeClient)
    assert (edge_name, same_bridge) == ("e1", True)
    # its docstrings, and the blocking return annotations
    blocking_hello: Any = type(sync_hello)  # a type checker knows it as PluginClient only
    assert blocking_hello.__doc__ == "The hello plugin, greeting by name."
    assert blocking_hello.greet.__doc__ == "Greet ``name``."
    assert str(inspect.signature(blocking_hello.greet)) == "(self, name: 'str') -> str"
    assert inspect.signature(sync_hello.greet).return_annotation is str
    assert inspect.signature(blocking_hello.iter_greetings).return_annotation == Iterator[str]
    assert inspect.signature(blocking_hello.its_edge).return_annotation is EdgeClient
    assert set(blocking_hello._derived) == {"greet", "iter_greetings", "its_edge", "plugin_type"}
    with pytest.raises(ValueError, match="plugin_type"):
        register_plugin_client(AsyncPluginClient)


async def test_bodies_are_never_held_whole(live: Live) -> None:
    """64 MiB down and up through bridge, edge and client (all in this process) with a few MiB of memory."""

    class Sink:
        size = 0

        def write(self, chunk: bytes) -> None:
            self.size += len(chunk)

    async def source() -> AsyncIterator[bytes]:
        block = b"x" * (1 << 20)
        for _ in range(64):
            yield block

    async with live.client() as bridge:
        edge = await bridge.get_edge_client("e1")
        probe = await edge.get_plugin("probe", session=False)
        tracemalloc.start()
        try:
            sink = Sink()
            assert await probe.download("blob", sink, params={"size": 64 << 20}) == 64 << 20
            assert sink.size == 64 << 20
            _, down_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            assert (await probe.upload("count", source())).json()["bytes"] == 64 << 20
            _, up_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert down_peak < 16 << 20
    assert up_peak < 16 << 20


async def test_the_context_manager_passes_errors_and_cancellation_through(live: Live) -> None:
    async def fails() -> None:
        async with live.client() as bridge:
            await bridge.list_edges()
            raise KeyError("mine")

    with pytest.raises(KeyError):  # the caller's own exception, not an exception group
        await fails()
    with anyio.move_on_after(0.5) as scope:
        async with live.client() as bridge:
            await anyio.sleep(30)
    assert scope.cancelled_caught
    assert bridge.state == "closed"
    # close() inside the block, even nested in a task group, then the block ends normally
    async with live.client() as bridge, anyio.create_task_group():
        await bridge.close()
        await anyio.sleep(0.05)  # the caller's code is not cancelled by the close
    assert bridge.state == "closed"
    # connect() and close() without a context manager
    client = live.client()
    assert repr(client).startswith("AsyncBridgeClient('https://127.0.0.1:")
    with pytest.raises(RuntimeError, match="not connected"):
        await client.list_edges()
    await client.connect()
    assert await client.connect() is client
    assert await client.list_edges() == ["e1"]
    await client.close()
