"""The edge service against the real bridge over verified TLS: a plain HTTP client asks the bridge,
the bridge asks the edge, a plugin answers."""

from __future__ import annotations

import json
import random
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import trustme
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from radical_edge_plugins.sysinfo import SysInfoPlugin

from radical_edge_bridge import Bridge, BridgeConfig
from radical_edge_edge import Backoff, EdgeFatalError, EdgeService, Plugin, PluginHost, streaming_body

pytestmark = pytest.mark.anyio
TOKEN = "e2e-token"


class Files(Plugin):
    plugin_name = "files"
    version = "0.3"

    def routes(self, app: FastAPI) -> None:
        @app.post("/count")
        @streaming_body
        async def count(request: Request) -> dict[str, int]:
            total = 0
            async for chunk in request.stream():
                total += len(chunk)
            return {"bytes": total}

        @app.get("/blob")
        def blob(mib: int) -> StreamingResponse:
            return StreamingResponse((b"z" * (1 << 20) for _ in range(mib)), media_type="application/octet-stream")

        @app.post("/notify")
        async def notify(request: Request) -> dict[str, bool]:
            self.notify("ping", await request.json())
            return {"ok": True}


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def bridge(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[Bridge]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    key_path.chmod(0o600)
    b = Bridge(BridgeConfig(port=0, cert=cert_path, key=key_path, token=TOKEN, request_timeout=10))
    async with anyio.create_task_group() as tg:
        await tg.start(b.serve)
        yield b
        b.stop()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def client(bridge: Bridge, ca_file: Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{bridge.port}",
        verify=ssl.create_default_context(cafile=str(ca_file)),
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=20,
    )


async def edge(bridge: Bridge, ca_file: Path, **kwargs: Any) -> EdgeService:
    host = PluginHost("e1")
    await host.add_plugin(SysInfoPlugin())
    await host.add_plugin(Files())
    options: dict[str, Any] = {"token": TOKEN, "ca_file": ca_file, "backoff": Backoff(0.05, 0.2)}
    options.update(kwargs)
    return EdgeService("e1", url=f"https://127.0.0.1:{bridge.port}", host=host, plugins=None, **options)


async def test_requests_through_the_bridge(bridge: Bridge, ca_file: Path) -> None:
    service = await edge(bridge, ca_file)
    async with anyio.create_task_group() as tg, client(bridge, ca_file) as http:
        tg.start_soon(service.run)
        with anyio.fail_after(10):
            await service.wait_connected()

        listing = (await http.post("/edge/list")).json()["data"]["edges"]["e1"]["plugins"]
        assert listing["sysinfo"]["namespace"] == "/e1/sysinfo"
        assert listing["files"]["version"] == "0.3"

        sid = (await http.post("/e1/sysinfo/register_session")).json()["sid"]
        metrics = (await http.get(f"/e1/sysinfo/metrics/{sid}")).json()
        assert set(metrics) == {"system", "cpu", "memory", "disks", "network", "gpus"}
        assert (await http.get("/e1/sysinfo/homedir")).json()["homedir"]

        r = await http.get("/e1/nope/x")
        assert r.status_code == 404
        assert r.json() == {"error": True, "status_code": 404, "detail": "no plugin 'nope' on edge 'e1'"}
        assert (await http.get("/e1/sysinfo/metrics/" + "0" * 32)).status_code == 404

        doc = (await http.get("/e1/openapi.json")).json()
        assert doc["servers"] == [{"url": "/e1"}]
        assert "/sysinfo/metrics/{sid}" in doc["paths"]
        assert (await http.get("/e1/files/openapi.json")).json()["servers"] == [{"url": "/e1/files"}]

        # bodies stream both ways
        async def upload() -> AsyncIterator[bytes]:
            for _ in range(160):
                yield b"q" * 65536

        r = await http.post("/e1/files/count", content=upload())
        assert r.json() == {"bytes": 160 * 65536}
        async with http.stream("GET", "/e1/files/blob?mib=32") as r:
            total = 0
            async for chunk in r.aiter_bytes():
                total += len(chunk)
        assert total == 32 << 20

        service.stop()
        tg.cancel_scope.cancel()


async def test_notifications_reach_sse_subscribers(bridge: Bridge, ca_file: Path) -> None:
    service = await edge(bridge, ca_file)
    async with anyio.create_task_group() as tg, client(bridge, ca_file) as http:
        tg.start_soon(service.run)
        with anyio.fail_after(10):
            await service.wait_connected()
        got: list[dict[str, Any]] = []
        async with http.stream("GET", "/events") as events:
            lines = events.aiter_lines()
            await http.post("/e1/files/notify", json={"n": 1})
            with anyio.fail_after(10):
                async for line in lines:
                    if line.startswith("data:"):
                        got.append(json.loads(line[5:]))
                        if got[-1]["topic"] == "notification":
                            break
        assert got[0]["topic"] == "topology"
        assert got[-1]["data"] == {"edge": "e1", "plugin": "files", "topic": "ping", "data": {"n": 1}}
        service.stop()
        tg.cancel_scope.cancel()


async def test_disconnect_route_stops_the_edge(bridge: Bridge, ca_file: Path) -> None:
    service = await edge(bridge, ca_file)
    async with client(bridge, ca_file) as http:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(service.run)
                await service.wait_connected()
                assert (await http.post("/edge/disconnect/e1")).status_code == 200
        assert service.state == "stopped"
        assert service.connections == 1


async def test_wrong_token_is_fatal(bridge: Bridge, ca_file: Path) -> None:
    service = await edge(bridge, ca_file, token="wrong")
    with anyio.fail_after(10), pytest.raises(EdgeFatalError, match="401"):
        await service.run()


async def test_reconnects_when_the_bridge_drops_it(bridge: Bridge, ca_file: Path) -> None:
    service = await edge(bridge, ca_file, rng=random.Random(2))
    async with anyio.create_task_group() as tg, client(bridge, ca_file) as http:
        tg.start_soon(service.run)
        with anyio.fail_after(10):
            await service.wait_connected()
        assert service.tunnel is not None
        await service.tunnel.carrier.aclose()  # the connection breaks under the edge
        with anyio.fail_after(10):
            while service.connections < 2 or service.state != "connected":
                await anyio.sleep(0.02)
            while (await http.get("/e1/files/version")).status_code != 200:
                await anyio.sleep(0.05)
        service.stop()
        tg.cancel_scope.cancel()


async def test_plugins_added_removed_or_broken_at_run_time_reach_the_topology(bridge: Bridge, ca_file: Path) -> None:
    service = await edge(bridge, ca_file)
    async with anyio.create_task_group() as tg, client(bridge, ca_file) as http:
        tg.start_soon(service.run)
        with anyio.fail_after(10):
            await service.wait_connected()
        async with http.stream("GET", "/events") as events:
            lines = events.aiter_lines()

            async def next_topology() -> dict[str, Any]:
                """e1's plugins from the next snapshot (``topology``) or change of e1 (``topology_change``)."""
                with anyio.fail_after(5):
                    async for line in lines:
                        if line.startswith("data: "):
                            payload = json.loads(line[6:])
                            if payload["topic"] == "topology":
                                return payload["data"]["edges"]["e1"]["plugins"]
                            if payload["topic"] == "topology_change" and payload["data"]["edge"] == "e1":
                                assert payload["data"]["change"] == "updated"
                                return payload["data"]["state"]["plugins"]
                raise AssertionError("event stream ended")

            assert set(await next_topology()) == {"sysinfo", "files"}  # the snapshot
            service.host.add_failed("gpu_probe", "nvidia-smi not found")
            plugins = await next_topology()
            assert plugins["gpu_probe"]["enabled"] is False
            assert plugins["gpu_probe"]["error"] == "nvidia-smi not found"
            await service.host.remove_plugin("files")
            assert "files" not in await next_topology()
        listing = (await http.post("/edge/list")).json()["data"]["edges"]["e1"]["plugins"]
        assert set(listing) == {"sysinfo", "gpu_probe"}
        assert (await http.get("/e1/files/count")).status_code == 404  # gone from the edge too
        service.stop()
