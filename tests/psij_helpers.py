"""The psij plugin behind a real tunnel, with every notification it sends collected (and when it arrived)."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from radical_edge_plugins.psij import PsijPlugin

from radical_edge_edge import PluginHost
from radical_edge_tunnel import Tunnel

from .edge_helpers import Reply, call, hub_for

FINAL = ("DONE", "FAILED", "CANCELLED")


@dataclass
class Event:
    topic: str
    data: dict[str, Any]
    received: float  # time.time() when the test got it


@dataclass
class PsijEdge:
    hub: Tunnel
    host: PluginHost
    plugin: PsijPlugin
    events: list[Event] = field(default_factory=list)
    caller: str = "alice"

    async def collect(self) -> None:
        while True:
            for notice in await self.host.events.get_batch():
                self.events.append(Event(notice.topic, json.loads(notice.payload), time.time()))

    async def call(self, method: str, path: str, body: Any = None, *, caller: str | None = None) -> Reply:
        return await call(self.hub, method, f"/psij/{path.lstrip('/')}", body, caller=caller or self.caller)

    async def session(self, *, caller: str | None = None, ttl: float | None = None) -> str:
        reply = await self.call("POST", "register_session", {"ttl": ttl} if ttl else None, caller=caller)
        assert reply.status == 200, reply
        sid = reply.json()["sid"]
        assert isinstance(sid, str)
        return sid

    async def submit(self, sid: str, job_spec: dict[str, Any], executor: str = "local", **extra: Any) -> dict[str, Any]:
        reply = await self.call("POST", f"submit/{sid}", {"job_spec": job_spec, "executor": executor, **extra})
        assert reply.status == 200, reply
        answer = reply.json()
        assert isinstance(answer, dict)
        return answer

    async def status(self, sid: str, job_id: str, **offsets: int) -> dict[str, Any]:
        query = "&".join(f"{k}={v}" for k, v in offsets.items())
        reply = await self.call("GET", f"status/{sid}/{job_id}" + (f"?{query}" if query else ""))
        assert reply.status == 200, reply
        answer = reply.json()
        assert isinstance(answer, dict)
        return answer

    def job_events(self, job_id: str, topic: str = "job_status") -> list[Event]:
        return [e for e in self.events if e.topic == topic and e.data.get("job_id") == job_id]

    def states(self, job_id: str) -> list[str]:
        return [e.data["state"] for e in self.job_events(job_id)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
        try:
            with anyio.fail_after(timeout):
                while not predicate():
                    await anyio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}") from None

    async def wait_state(self, job_id: str, states: tuple[str, ...] = FINAL, timeout: float = 20.0) -> Event:
        await self.wait_for(lambda: any(s in states for s in self.states(job_id)), timeout, f"{job_id} in {states}")
        return next(e for e in self.job_events(job_id) if e.data["state"] in states)


@asynccontextmanager
async def psij_edge(base_dir: Path, **config: Any) -> AsyncIterator[PsijEdge]:
    """A host with the psij plugin (output under ``base_dir``) behind an in-memory tunnel."""
    host = PluginHost("e1")
    plugin = PsijPlugin(base_dir=base_dir, **config)
    await host.add_plugin(plugin)
    async with hub_for(host) as hub:
        edge = PsijEdge(hub, host, plugin)
        async with anyio.create_task_group() as tg:
            tg.start_soon(edge.collect)
            try:
                yield edge
            finally:
                tg.cancel_scope.cancel()
    # every local job that ended has had the output pipe PSI/J leaves open closed (else a ResourceWarning
    # surfaces in whatever test runs when the garbage collector gets to it)
    leaks = [r.job_id for r in plugin.jobs if r.final and r.process is not None]
    assert not leaks, f"local jobs whose PSI/J pipe is still open: {leaks}"
    await anyio.sleep(0.3)  # PSI/J's reaper lets go of finished processes every 0.1 s
    gc.collect()  # a leak warns now, in the test that made it


__all__ = ["FINAL", "Event", "PsijEdge", "psij_edge"]
