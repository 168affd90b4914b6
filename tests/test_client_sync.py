"""The blocking SDK (from a worker thread here, from a plain script and from inside an event loop in a
subprocess), how it is derived from the async one, and the SDK working with only the ``client`` extra:
no fastapi, psutil, edge or bridge code imported."""

from __future__ import annotations

import inspect
import io
import json
import os
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

import radical_edge_client
import radical_edge_client.sync as radical_edge_sync
import radical_edge_proto
from radical_edge_client import (
    AsyncBridgeClient,
    AsyncEdgeClient,
    AsyncPluginClient,
    AsyncPSIJClient,
    AsyncQueueInfoClient,
    AsyncRhapsodyClient,
    AsyncStagingClient,
    AsyncStreamResponse,
    AsyncSysInfoClient,
    AuthError,
    BridgeClient,
    BridgeProtocolError,
    EdgeClient,
    JobUpdate,
    PluginClient,
    PluginNotFound,
    PSIJClient,
    QueueInfoClient,
    RhapsodyClient,
    SessionExpired,
    StagingClient,
    StreamResponse,
    SysInfoClient,
    blocking_class,
    register_plugin_client,
)
from radical_edge_client._blocking import Blocking

from .client_helpers import TOKEN, Live, TLSFiles, echo_plugin, example_plugin, live, live_system, pattern, tls

pytestmark = pytest.mark.anyio
__all__ = ["example_plugin", "live", "tls"]  # fixtures, imported for pytest

ROOT = Path(__file__).resolve().parent.parent


def client_env(live: Live) -> dict[str, str]:
    env = dict(os.environ)
    env.update(RADICAL_BRIDGE_URL=live.url, RADICAL_BRIDGE_TOKEN=TOKEN, RADICAL_BRIDGE_CERT=str(live.tls.ca))
    env.pop("PYTHONWARNINGS", None)
    return env


async def run_script(live: Live, script: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run ``python -c script`` (the live system keeps serving meanwhile); its last stdout line is JSON."""
    cmd = [sys.executable, "-X", "dev", "-W", "error", "-c", textwrap.dedent(script), *args]
    with anyio.fail_after(timeout):
        done = await anyio.run_process(cmd, env=client_env(live), cwd=str(ROOT), check=False)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, f"script failed ({done.returncode}):\n{out}\n{err}"
    for bad in ("Warning", "Exception ignored", "Traceback"):
        assert bad not in err, err
    return dict(json.loads(out.strip().splitlines()[-1]))


async def test_sync_facade_from_a_thread(live: Live, tmp_path: Path) -> None:
    env = client_env(live)

    def script() -> dict[str, Any]:
        got: list[Any] = []
        topologies: list[Any] = []
        arrived = threading.Event()

        def on_tick(edge: str, plugin: str, topic: str, data: Any) -> None:
            got.append((edge, plugin, topic, data))
            if len(got) == 2:
                arrived.set()

        with BridgeClient(env["RADICAL_BRIDGE_URL"], TOKEN, env["RADICAL_BRIDGE_CERT"], timeout=20) as bridge:
            assert bridge.connected
            assert bridge.list_edges() == ["e1"]
            assert bridge.edges()[0]["name"] == "e1"
            assert bridge.health()["status"] == "ok"
            assert "e1" in bridge.topology()["edges"]
            assert bridge.request("GET", "/edges").json()["total"] == 1
            edge = bridge.get_edge_client("e1")
            assert set(edge.list_plugins()) >= {"sysinfo", "hello", "probe"}
            assert "/probe/slow" in edge.openapi()["paths"]
            sysinfo = edge.get_plugin("sysinfo")
            assert isinstance(sysinfo, SysInfoClient)
            assert {"sid", "name", "info", "get_metrics"} <= set(dir(sysinfo))  # instance attributes too
            assert (sysinfo.edge.name, sysinfo.bridge) == ("e1", bridge)  # async objects come back blocking
            bridge.timeout = 30  # set on the async client
            assert bridge.timeout == 30
            assert "timeout" not in vars(bridge)
            metrics = sysinfo.get_metrics()
            role = sysinfo.host_role()
            home = sysinfo.homedir()
            assert sysinfo.health()["plugin"] == "sysinfo"
            assert sysinfo.version() == "0.1.0"
            assert sysinfo.ui_config()["plugin"] == "sysinfo"
            assert sysinfo.sid in sysinfo.list_sessions()
            # errors are the same typed exceptions
            with pytest.raises(PluginNotFound) as missing:
                edge.get_plugin("nope")
            assert missing.value.status == 404
            hello = edge.get_plugin("hello", ttl=0.2)
            assert type(hello) is PluginClient
            assert hello.get_json(hello.session_path("greet"), params={"name": "Bo"})["greeting"] == "Hello, Bo!"
            threading.Event().wait(0.4)
            with pytest.raises(SessionExpired) as expired:
                hello.get_json(hello.session_path("greet"))
            assert expired.value.status == 410
            hello.register_session()
            # events: callbacks run in worker threads and may call the client
            bridge.register_callback("e1", "probe", "tick", on_tick)
            bridge.register_topology_callback(topologies.append)
            probe = edge.get_plugin("probe")
            probe.post_json("tick", json={"n": 1})
            probe.request("POST", "tick", json={"n": 2})
            assert arrived.wait(10)
            bridge.unregister_callback("e1", "probe", "tick", on_tick)
            bridge.unregister_topology_callback(topologies.append)
            # bodies stream both ways
            data = pattern(5_000_000)
            assert probe.upload("count", io.BytesIO(data)).json()["bytes"] == len(data)
            assert probe.request("POST", "count", data=iter([b"a", b"bc"])).json()["bytes"] == 3
            sink = io.BytesIO()
            assert probe.download("blob", sink, params={"size": len(data)}) == len(data)
            assert sink.getvalue() == data
            with probe.stream("GET", "blob", params={"size": 100_000}) as answer:
                assert answer.ok
                assert answer.status == 200
                assert answer.header("content-type") == "application/octet-stream"
                assert b"".join(answer.iter_bytes()) == data[:100_000]
            with bridge.stream("GET", "/e1/probe/blob", params={"size": 10}) as answer:
                assert answer.read() == data[:10]
            with edge.stream("GET", "probe/blob", params={"size": 10}) as answer:
                assert answer.download(tmp_path / "ten.bin") == 10
            assert edge.request("GET", "probe/version").json() == {"version": "1.2.3"}
            probe.close()
            assert probe.sid is None
            state = bridge.stats
        assert bridge.state == "closed"
        return {"metrics": sorted(metrics), "role": role, "home": home, "got": got, "stats": state}

    result = await anyio.to_thread.run_sync(script)
    assert result["metrics"] == ["cpu", "disks", "gpus", "memory", "network", "system"]
    assert result["home"] == str(Path.home())
    assert result["got"] == [("e1", "probe", "tick", {"n": 1}), ("e1", "probe", "tick", {"n": 2})]
    assert result["stats"]["connections"] == 1
    assert (tmp_path / "ten.bin").read_bytes() == pattern(10)


async def test_sync_facade_errors_in_the_constructor(live: Live) -> None:
    def wrong_token() -> None:
        BridgeClient(live.url, "wrong", live.tls.ca)

    with pytest.raises(AuthError) as info:
        await anyio.to_thread.run_sync(wrong_token)
    assert info.value.status == 401
    # its event loop thread is gone
    assert not [t for t in threading.enumerate() if t.name == "radical-edge-client"]


async def test_sync_facade_from_a_plain_script(live: Live) -> None:
    result = await run_script(
        live,
        """
        import json, threading
        from radical_edge_client import BridgeClient

        got, done = [], threading.Event()

        def on_shout(edge, plugin, topic, data):
            got.append([edge, plugin, topic, data])
            done.set()

        with BridgeClient() as bridge:  # RADICAL_BRIDGE_URL / _TOKEN / _CERT from the environment
            edges = bridge.list_edges()
            sysinfo = bridge.get_edge_client("e1").get_plugin("sysinfo")
            hello = bridge.get_edge_client("e1").get_plugin("hello")
            hello.register_notification_callback(on_shout, topic="shout")
            hello.post_json(f"shout/{hello.sid}", json={"text": "from a script"})
            done.wait(10)
            print(json.dumps({"edges": edges, "home": sysinfo.homedir(), "cpu": "cpu" in sysinfo.get_metrics(),
                              "got": got}))
        """,
    )
    assert result["edges"] == ["e1"]
    assert result["home"] == str(Path.home())
    assert result["cpu"] is True
    assert result["got"][0][:3] == ["e1", "hello", "shout"]
    assert result["got"][0][3]["text"] == "FROM A SCRIPT"


async def test_a_script_that_forgets_close_exits(live: Live) -> None:
    result = await run_script(
        live,
        """
        import json
        from radical_edge_client.sync import BridgeClient  # the old address of the blocking client still works
        bridge = BridgeClient()
        print(json.dumps({"edges": bridge.list_edges()}))
        """,
        timeout=30,
    )
    assert result == {"edges": ["e1"]}


async def test_the_blocking_client_inside_a_running_event_loop(live: Live) -> None:
    """As in a notebook cell: blocking calls from the thread of a running event loop, which is not touched."""
    result = await run_script(
        live,
        """
        import asyncio, json
        from radical_edge_client import BridgeClient

        async def cell():
            loop = asyncio.get_running_loop()
            loop.slow_callback_duration = 60  # this cell blocks its loop on purpose (no -X dev complaint)
            ran = []
            loop.call_soon(ran.append, "the cell's loop")
            with BridgeClient() as bridge:
                edges = bridge.list_edges()
                sysinfo = bridge.get_edge_client("e1").get_plugin("sysinfo")
                home = sysinfo.homedir()
                cpu = "cpu" in sysinfo.get_metrics()
            await asyncio.sleep(0)
            try:  # async code written for the async client gets told what to use
                async with BridgeClient():
                    pass
            except TypeError as exc:
                hint = str(exc)
            return {"edges": edges, "home": home, "cpu": cpu, "ran": ran, "hint": hint}

        print(json.dumps(asyncio.run(cell())))
        """,
    )
    assert result["edges"] == ["e1"]
    assert result["home"] == str(Path.home())
    assert result["cpu"] is True
    assert result["ran"] == ["the cell's loop"]
    assert "use radical_edge_client.AsyncBridgeClient" in result["hint"]


CLIENT_ONLY = """
import importlib.abc, json, sys

BLOCKED = {"fastapi", "starlette", "pydantic", "psutil", "h11_server_only_marker",
           "radical_edge_edge", "radical_edge_bridge", "radical_edge_plugins", "radical_edge_cli"}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not part of the client extra")
        return None

sys.meta_path.insert(0, Block())

import radical_edge_client
from radical_edge_client import AsyncBridgeClient, BridgeClient
import anyio

with BridgeClient() as bridge:
    edges = bridge.list_edges()
    home = bridge.get_edge_client("e1").get_plugin("sysinfo").homedir()

async def main():
    async with AsyncBridgeClient() as bridge:
        edge = await bridge.get_edge_client("e1")
        return (await (await edge.get_plugin("sysinfo")).get_metrics())["cpu"]

cpu = anyio.run(main)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"edges": edges, "home": home, "cpu": bool(cpu), "loaded": loaded}))
"""


async def test_client_works_with_only_the_client_extra(live: Live) -> None:
    result = await run_script(live, CLIENT_ONLY)
    assert result == {"edges": ["e1"], "home": str(Path.home()), "cpu": True, "loaded": []}


async def test_sync_clients_of_the_other_builtin_plugins(tls: TLSFiles, example_plugin: str) -> None:
    extra = (echo_plugin("queue_info"), echo_plugin("psij"), echo_plugin("staging"))
    async with live_system(tls, extra_plugins=extra) as system:
        env = (system.url, TOKEN, str(tls.ca))

        def script() -> list[Any]:
            with BridgeClient(*env) as bridge:
                edge = bridge.get_edge_client("e1")
                qi = edge.get_plugin("queue_info")
                psij = edge.get_plugin("psij")
                staging = edge.get_plugin("staging")
                assert isinstance(qi, QueueInfoClient)
                assert isinstance(psij, PSIJClient)
                assert isinstance(staging, StagingClient)
                assert repr(qi).startswith("QueueInfoClient('/e1/queue_info', sid=")
                assert (qi.name, qi.edge_name, qi.namespace) == ("queue_info", "e1", "/e1/queue_info")
                assert qi.info["type"] == "queue_info"
                return [
                    qi.backend(),
                    qi.job_allocation()["path"],  # type: ignore[index]
                    qi.get_info(user="*")["query"],
                    qi.list_jobs("debug")["path"] == f"list_jobs/{qi.sid}/debug",
                    qi.list_all_jobs(force=True)["query"],
                    qi.list_allocations()["path"] == f"list_allocations/{qi.sid}",
                    qi.cancel_job("7")["path"] == f"cancel/{qi.sid}/7",
                    psij.submit_job({"executable": "true"})["json"],
                    psij.get_job_status("j1")["query"],
                    psij.list_jobs()["path"] == f"list_jobs/{psij.sid}",
                    psij.cancel_job("j1")["method"],
                    staging.put("~/a", "text")["json"]["content"],
                    staging.get("~/a"),
                    staging.list()["json"],
                    staging.put_file(str(tls.ca), "~/ca.pem")["path"] == f"put/{staging.sid}",
                ]

        got = await anyio.to_thread.run_sync(script)
    assert got == [
        "slurm",
        "job_allocation",
        {"user": "*"},
        True,
        {"force": "true"},
        True,
        True,
        {"job_spec": {"executable": "true"}, "executor": "local"},
        {"stdout_offset": "0", "stderr_offset": "0"},
        True,
        "POST",
        "dGV4dA==",
        b"file-content",
        {"path": "~"},
        True,
    ]


# ---------------------------------------------------------------- how the blocking classes are made

BLOCKING = {
    BridgeClient: AsyncBridgeClient,
    EdgeClient: AsyncEdgeClient,
    PluginClient: AsyncPluginClient,
    SysInfoClient: AsyncSysInfoClient,
    QueueInfoClient: AsyncQueueInfoClient,
    PSIJClient: AsyncPSIJClient,
    RhapsodyClient: AsyncRhapsodyClient,
    StagingClient: AsyncStagingClient,
    StreamResponse: AsyncStreamResponse,
}


async def test_each_blocking_class_is_derived_from_its_async_class() -> None:
    for blocking, wrapped in BLOCKING.items():
        assert blocking_class(wrapped) is blocking
        assert getattr(radical_edge_sync, blocking.__name__) is blocking  # the old module is an alias
        # every member a type checker does not see by name is at least annotated (instance data, plugin_type)
        annotated = {name for klass in blocking.__mro__ for name in vars(klass).get("__annotations__", {})}
        assert set(blocking._derived) <= annotated, (blocking, blocking._derived)
    assert blocking_class(AsyncPluginClient) is PluginClient
    assert issubclass(SysInfoClient, PluginClient)
    assert (SysInfoClient.plugin_type, PluginClient.plugin_type) == ("sysinfo", "")
    # the async methods' docstrings and parameters; the blocking return annotation
    method = SysInfoClient.get_metrics
    assert method.__doc__ == AsyncSysInfoClient.get_metrics.__doc__
    assert method.__wrapped__ is AsyncSysInfoClient.get_metrics  # type: ignore[attr-defined]
    assert (method.__name__, method.__qualname__) == ("get_metrics", "SysInfoClient.get_metrics")
    assert inspect.signature(method).return_annotation == dict[str, Any]
    assert inspect.signature(BridgeClient.get_edge_client).return_annotation is EdgeClient
    assert inspect.signature(EdgeClient.get_plugin).return_annotation is PluginClient
    get_plugin = inspect.signature(EdgeClient.get_plugin).parameters
    assert list(get_plugin) == ["self", "name", "session", "session_options"]
    assert inspect.signature(PluginClient.stream).return_annotation == AbstractContextManager[StreamResponse]
    assert inspect.signature(StreamResponse.iter_bytes).return_annotation == Iterator[bytes]
    assert inspect.signature(PSIJClient.watch).return_annotation == Iterator[JobUpdate]  # an async iterator, blocking
    assert "backends" in inspect.signature(RhapsodyClient.register_session).parameters  # the subclass's own
    assert inspect.signature(BridgeClient).parameters.keys() == inspect.signature(AsyncBridgeClient).parameters.keys()
    assert "radical-edge bridge" in (BridgeClient.__doc__ or "")
    assert "queues, jobs and allocations" in (QueueInfoClient.__doc__ or "")


async def test_what_is_not_a_blocking_client() -> None:
    class Mine(PluginClient):  # the old way to write a plugin client: it is written async now
        plugin_type = "mine"

        async def shout(self) -> None: ...

    with pytest.raises(TypeError, match="not an AsyncPluginClient subclass"):
        register_plugin_client(Mine)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="not an async client class"):
        blocking_class(dict)
    with pytest.raises(TypeError, match="name the async class it wraps"):

        class Bare(Blocking):
            pass

    with pytest.raises(TypeError, match="already has a blocking class"):

        class Again(Blocking, wraps=AsyncSysInfoClient):
            pass

    class Helpful(SysInfoClient):  # a blocking class of one's own, with helpers: it wraps what its base wraps
        def cpus(self) -> int:
            return int(self.get_metrics()["cpu"]["count"])

    assert Helpful._wraps is AsyncSysInfoClient
    assert blocking_class(AsyncSysInfoClient) is SysInfoClient


async def test_the_old_name_of_bridge_protocol_error() -> None:
    with pytest.warns(DeprecationWarning, match="BridgeProtocolError"):
        from radical_edge_client import ProtocolError  # noqa: PLC0415
    assert ProtocolError is BridgeProtocolError
    assert not issubclass(ProtocolError, radical_edge_proto.ProtocolError)  # one meaning per name
    assert "ProtocolError" not in radical_edge_client.__all__
