"""The SDK's HPC plugin clients (queue_info, psij with ``watch``, rhapsody), blocking and async.

``watch`` is first checked against :class:`ScriptedPsij`, a stand-in whose job the test drives step by
step (output with and without events, duplicate and skipping events, the final state before the tail of
the output), then with the real psij plugin and its local executor.  queue_info runs against the real
Slurm (skipped without one), rhapsody with its concurrent backend.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from fastapi import FastAPI, Request

from radical_edge_client import (
    FINAL_STATES,
    AsyncBridgeClient,
    AsyncPSIJClient,
    AsyncRhapsodyClient,
    BridgeClient,
    JobUpdate,
    PSIJClient,
    RhapsodyClient,
)
from radical_edge_client._watch import JobWatcher
from radical_edge_edge import Plugin

from .client_helpers import TOKEN, Live, TLSFiles, example_plugin, live_system, tls
from .hpc_helpers import psij_plugin, queue_info_plugin, rhapsody_plugin
from .slurm_helpers import Slurm

pytestmark = pytest.mark.anyio
__all__ = ["example_plugin", "tls"]  # fixtures, imported for pytest


# ---------------------------------------------------------------- the watcher's bookkeeping, alone


def test_watcher_keeps_offsets_and_drops_what_it_has() -> None:
    w = JobWatcher("j")
    (out,) = w.from_status({"state": "RUNNING", "stdout": "héllo", "stdout_offset": 6, "stderr": ""})
    assert (out.kind, out.stream, out.data) == ("output", "stdout", "héllo")
    assert w.offsets == {"stdout": 6, "stderr": 0}
    assert w.from_output({"stream": "stdout", "offset": 0, "data": "héllo"}) is None  # had it all
    assert w.from_output({"stream": "stdout", "offset": 7, "data": "x"}) is False  # skips byte 6: re-read
    partly = w.from_output({"stream": "stdout", "offset": 3, "data": "llo\nmore"})  # overlaps what it has
    assert isinstance(partly, JobUpdate)
    assert partly.data == "\nmore"
    assert w.offsets["stdout"] == 11
    assert w.from_output({"stream": "nowhere", "offset": 0, "data": "x"}) is None
    assert w.from_output({"stream": "stderr", "data": "no offset"}) is False


def test_watcher_reports_each_state_once_and_never_goes_back() -> None:
    w = JobWatcher("j")
    assert w.status("PENDING", None, {}) is not None
    assert w.status("PENDING", None, {}) is None
    running = w.status("RUNNING", None, {})
    assert running is not None
    assert not running.final
    assert w.status("PENDING", None, {}) is None  # an old event, from before a status read
    assert w.status("UNKNOWN", None, {}) is not None  # the scheduler lost track for a while ...
    assert w.status("PENDING", None, {}) is None
    assert w.status("RUNNING", None, {}) is not None  # ... and found it again
    done = w.status("DONE", 0, {})
    assert done is not None
    assert (done.final, done.exit_code) == (True, 0)
    assert {"DONE", "FAILED", "CANCELLED"} == FINAL_STATES


# ---------------------------------------------------------------- a psij stand-in the test drives


@dataclass
class ScriptedJob:
    state: str = "PENDING"
    exit_code: int | None = None
    output: dict[str, bytearray] = field(default_factory=lambda: {"stdout": bytearray(), "stderr": bytearray()})


class ScriptedPsij(Plugin):
    """psij's routes and events, for a job the test drives through ``POST drive/{job_id}``."""

    plugin_name = "psij"
    plugin_type = "psij"

    def __init__(self) -> None:
        self.jobs: dict[str, ScriptedJob] = {}
        super().__init__()

    def drive(self, job_id: str, step: dict[str, Any]) -> None:
        job = self.jobs[job_id]
        if "write" in step:
            stream, text = step["write"]
            offset = len(job.output[stream])
            job.output[stream] += text.encode()
            if step.get("notify", True):
                self.notify("job_output", {"job_id": job_id, "stream": stream, "offset": offset, "data": text})
        if "resend" in step:  # an event again (a duplicate)
            stream, offset = step["resend"]
            data = job.output[stream][offset:].decode()
            self.notify("job_output", {"job_id": job_id, "stream": stream, "offset": offset, "data": data})
        if "state" in step:
            job.state, job.exit_code = step["state"], step.get("exit_code")
            if step.get("notify", True):
                self.notify("job_status", {"job_id": job_id, "state": job.state, "exit_code": job.exit_code})

    def routes(self, app: FastAPI) -> None:
        @app.post("/submit/{sid}")
        async def submit(sid: str, request: Request) -> dict[str, Any]:
            job_id = f"j{len(self.jobs) + 1}"
            self.jobs[job_id] = ScriptedJob()
            return {"job_id": job_id, "native_id": "4242"}

        @app.get("/status/{sid}/{job_id}")
        async def status(sid: str, job_id: str, stdout_offset: int = 0, stderr_offset: int = 0) -> dict[str, Any]:
            job = self.jobs[job_id]
            out, err = job.output["stdout"], job.output["stderr"]
            return {
                "job_id": job_id,
                "state": job.state,
                "exit_code": job.exit_code,
                "stdout": out[stdout_offset:].decode(),
                "stderr": err[stderr_offset:].decode(),
                "stdout_offset": len(out),
                "stderr_offset": len(err),
            }

        @app.post("/drive/{job_id}")
        async def drive(job_id: str, request: Request) -> dict[str, bool]:
            for step in await request.json():
                self.drive(job_id, step)
            return {"ok": True}


@pytest.fixture
async def scripted(tls: TLSFiles, example_plugin: str) -> AsyncIterator[Live]:
    async with live_system(tls, extra_plugins=(ScriptedPsij(),)) as system:
        yield system


def joined(updates: list[JobUpdate], stream: str) -> str:
    return "".join(u.data for u in updates if u.kind == "output" and u.stream == stream)


async def test_watch_misses_nothing_and_repeats_nothing(scripted: Live) -> None:
    async with scripted.client() as bridge:
        psij = await (await bridge.get_edge_client("e1")).get_plugin("psij")
        assert isinstance(psij, AsyncPSIJClient)
        job_id = (await psij.submit_job({"executable": "/bin/true"}))["job_id"]

        async def drive(*steps: dict[str, Any]) -> None:
            await psij.post_json(f"drive/{job_id}", json=list(steps))

        # before anyone watches: this comes with the first status read, not as events
        await drive({"write": ["stdout", "a"]}, {"state": "RUNNING"})
        updates: list[JobUpdate] = []
        watch = psij.watch(job_id, poll_interval=60)  # events only: a poll would hide a bug here
        updates.append(await anext(watch))  # subscribed, status read
        updates.append(await anext(watch))
        assert [(u.kind, u.state) for u in updates] == [("output", "RUNNING"), ("status", "RUNNING")]
        await drive(
            {"write": ["stdout", "b"]},
            {"write": ["stdout", "c"], "notify": False},  # an event that never came ...
            {"write": ["stdout", "d"]},  # ... is noticed here: d starts after what the watcher has
            {"resend": ["stdout", 0]},  # everything again: nothing new
            {"write": ["stderr", "oops\n"]},
            {"write": ["stdout", "e"], "notify": False},  # written before the end, never announced
            {"state": "DONE", "exit_code": 0},
        )
        async for update in watch:
            updates.append(update)
    assert joined(updates, "stdout") == "abcde"
    assert joined(updates, "stderr") == "oops\n"
    statuses = [(u.state, u.exit_code) for u in updates if u.kind == "status"]
    assert statuses == [("RUNNING", None), ("DONE", 0)]
    assert updates[-1].final


async def test_watch_polls_when_events_do_not_come_and_ends_on_a_final_job(scripted: Live) -> None:
    async with scripted.client() as bridge:
        psij = await (await bridge.get_edge_client("e1")).get_plugin("psij")
        assert isinstance(psij, AsyncPSIJClient)
        job_id = (await psij.submit_job({"executable": "/bin/true"}))["job_id"]
        updates: list[JobUpdate] = []
        with anyio.fail_after(10):
            async for update in psij.watch(job_id, poll_interval=0.1):
                updates.append(update)
                if update.kind == "status" and update.state == "PENDING":
                    await psij.post_json(
                        f"drive/{job_id}",
                        json=[
                            {"write": ["stdout", "quiet"], "notify": False},
                            {"state": "FAILED", "exit_code": 3, "notify": False},
                        ],
                    )
        assert joined(updates, "stdout") == "quiet"
        assert [(u.state, u.exit_code) for u in updates if u.kind == "status"] == [("PENDING", None), ("FAILED", 3)]
        # a job already final: its output and final state, then the end
        again = [u async for u in psij.watch(job_id)]
        assert [(u.kind, u.data or u.state) for u in again] == [("output", "quiet"), ("status", "FAILED")]
        assert len(bridge._dispatcher._registrations) == 0  # every watch unsubscribed


async def test_blocking_watch_is_an_iterator_and_stops_cleanly(scripted: Live) -> None:
    env = (scripted.url, TOKEN, str(scripted.tls.ca))

    def script() -> tuple[list[tuple[str, str]], int]:
        with BridgeClient(*env) as bridge:
            psij = bridge.get_edge_client("e1").get_plugin("psij")
            assert isinstance(psij, PSIJClient)
            job_id = psij.submit_job({"executable": "/bin/true"})["job_id"]
            psij.post_json(f"drive/{job_id}", json=[{"write": ["stdout", "x"]}, {"state": "RUNNING"}])
            seen = []
            for update in psij.watch(job_id):
                seen.append((update.kind, update.state))
                if update.kind == "status":
                    break  # stop watching a running job: the watch unsubscribes
            return seen, len(bridge._async._dispatcher._registrations)

    seen, registrations = await anyio.to_thread.run_sync(script)
    assert seen == [("output", "RUNNING"), ("status", "RUNNING")]
    assert registrations == 0


# ---------------------------------------------------------------- the real psij plugin (local executor)


@pytest.fixture
async def hpc(tls: TLSFiles, example_plugin: str, tmp_path: Path) -> AsyncIterator[Live]:
    async with live_system(tls, extra_plugins=(psij_plugin(base_dir=tmp_path / "psij"),)) as system:
        yield system


async def _psij(bridge: AsyncBridgeClient) -> AsyncPSIJClient:
    psij = await (await bridge.get_edge_client("e1")).get_plugin("psij")
    assert isinstance(psij, AsyncPSIJClient)
    return psij


SHELL = "echo hi; sleep 0.5; echo err >&2; echo bye"


async def test_psij_local_job_watched_from_submit_to_done(hpc: Live) -> None:
    async with hpc.client() as bridge:
        psij = await _psij(bridge)
        job = await psij.submit_job({"executable": "/bin/sh", "arguments": ["-c", SHELL]}, executor="local")
        assert set(job) >= {"job_id", "native_id"}
        with anyio.fail_after(30):
            updates = [u async for u in psij.watch(job["job_id"])]
        statuses = [u.state for u in updates if u.kind == "status"]
        assert statuses[-1] == "DONE"
        assert "RUNNING" in statuses or statuses == ["DONE"]  # a fast job may be done at the first read
        assert updates[-1].final
        assert updates[-1].exit_code == 0
        assert joined(updates, "stdout") == "hi\nbye\n"
        assert joined(updates, "stderr") == "err\n"
        listed = await psij.list_jobs()
        jobs = listed["jobs"] if isinstance(listed, dict) else listed
        assert job["job_id"] in [j["job_id"] for j in jobs]
        status = await psij.get_job_status(job["job_id"])
        assert (status["state"], status["exit_code"]) == ("DONE", 0)


async def test_psij_failed_job_and_cancelled_job(hpc: Live) -> None:
    async with hpc.client() as bridge:
        psij = await _psij(bridge)
        failed = await psij.submit_job({"executable": "/bin/sh", "arguments": ["-c", "exit 3"]}, executor="local")
        with anyio.fail_after(30):
            last = [u async for u in psij.watch(failed["job_id"])][-1]
        assert (last.state, last.exit_code) == ("FAILED", 3)
        slow = await psij.submit_job({"executable": "/bin/sleep", "arguments": ["30"]}, executor="local")
        with anyio.fail_after(30):
            async for update in psij.watch(slow["job_id"]):
                if update.state == "RUNNING":
                    await psij.cancel_job(slow["job_id"])
                last = update
        assert last.state == "CANCELLED"
        assert last.final


async def test_psij_blocking_watch(hpc: Live) -> None:
    env = (hpc.url, TOKEN, str(hpc.tls.ca))

    def script() -> list[JobUpdate]:
        with BridgeClient(*env) as bridge:
            psij = bridge.get_edge_client("e1").get_plugin("psij")
            assert isinstance(psij, PSIJClient)
            job = psij.submit_job({"executable": "/bin/echo", "arguments": ["blocking"]}, executor="local")
            return list(psij.watch(job["job_id"]))

    updates = await anyio.to_thread.run_sync(script)
    assert joined(updates, "stdout") == "blocking\n"
    assert (updates[-1].state, updates[-1].exit_code) == ("DONE", 0)


async def test_psij_watch_gets_every_byte_when_events_skip_and_reads_are_bounded(
    tls: TLSFiles, example_plugin: str, tmp_path: Path
) -> None:
    """Output faster than the events may carry (the plugin skips ahead) and a status read bounded to 100
    bytes: the watch still gets the whole output, once, in order."""
    plugin = psij_plugin(base_dir=tmp_path / "psij", output_chunk=50, output_backlog=100, max_read=100)
    expected = "".join(f"{i}\n" for i in range(1, 2001))
    async with live_system(tls, extra_plugins=(plugin,)) as system, system.client() as bridge:
        psij = await _psij(bridge)
        script = "seq 1 1000; sleep 1; seq 1001 2000"
        job = await psij.submit_job({"executable": "/bin/sh", "arguments": ["-c", script]}, executor="local")
        with anyio.fail_after(60):
            updates = [u async for u in psij.watch(job["job_id"])]
    assert joined(updates, "stdout") == expected
    assert updates[-1].state == "DONE"


# ---------------------------------------------------------------- queue_info on the real Slurm


async def test_queue_info_client_on_slurm(slurm: Slurm, tls: TLSFiles, example_plugin: str) -> None:
    async with live_system(tls, extra_plugins=(queue_info_plugin(),)) as system, system.client() as bridge:
        from radical_edge_client import AsyncQueueInfoClient  # noqa: PLC0415

        qi = await (await bridge.get_edge_client("e1")).get_plugin("queue_info")
        assert isinstance(qi, AsyncQueueInfoClient)
        assert await qi.backend() == "slurm"
        assert await qi.job_allocation() is None  # the edge does not run inside a job
        queues = (await qi.get_info(force=True))["queues"]
        assert set(queues) >= set(slurm.partitions)
        default = queues[slurm.default_partition]
        assert default["nodes_total"] >= 1
        job_id = await slurm.asbatch("--wrap", "sleep 60", partition=slurm.default_partition, time="2")
        listed = await qi.list_jobs(slurm.default_partition, force=True)
        assert job_id in [str(j["job_id"]) for j in listed["jobs"]]
        everywhere = await qi.list_all_jobs(user="*", force=True)
        assert job_id in [str(j["job_id"]) for j in everywhere["jobs"]]
        assert isinstance((await qi.list_allocations())["allocations"], list)
        await qi.cancel_job(job_id)
        await slurm.await_state(job_id, {"CANCELLED"})


# ---------------------------------------------------------------- rhapsody (concurrent backend)


def _state(task: dict[str, Any]) -> str:
    return str(task.get("state"))


async def test_rhapsody_client_executable_function_and_cancel(tls: TLSFiles, example_plugin: str) -> None:
    async with live_system(tls, extra_plugins=(rhapsody_plugin(),)) as system, system.client() as bridge:
        edge = await bridge.get_edge_client("e1")
        rh = await edge.get_plugin("rhapsody", backends=["concurrent"])
        assert isinstance(rh, AsyncRhapsodyClient)
        assert rh.sid is not None
        assert (await rh.session_status())["status"] == "ready"  # register_session waited for it
        assert (await rh.backends())["backends"]["concurrent"]["available"] is True
        submitted = await rh.submit_tasks(
            [
                {"uid": "exe", "executable": "/bin/echo", "arguments": ["hello"]},
                {"uid": "fn", "function": "math:hypot", "args": [3, 4]},
            ]
        )
        assert [t["uid"] for t in submitted] == ["exe", "fn"]
        with anyio.fail_after(30):
            waited = await rh.wait_tasks(["exe", "fn"])  # until both are final
        assert [(t["uid"], _state(t)) for t in waited] == [("exe", "DONE"), ("fn", "DONE")]
        exe, fn = await rh.get_task("exe"), await rh.get_task("fn")
        assert (_state(exe), exe.get("stdout"), exe.get("exit_code")) == ("DONE", "hello\n", 0)
        assert (_state(fn), fn.get("return_value")) == ("DONE", 5.0)
        assert {t["uid"] for t in await rh.list_tasks()} >= {"exe", "fn"}
        await rh.submit_tasks([{"uid": "slow", "executable": "/bin/sleep", "arguments": ["30"]}])
        assert [_state(t) for t in await rh.wait_tasks(["slow"], timeout=0)] != ["DONE"]  # a snapshot, at once
        await rh.cancel_task("slow")
        with anyio.fail_after(15):
            (slow,) = await rh.wait_tasks(["slow"])
        assert _state(slow) == "CANCELLED"
        await rh.submit_tasks([{"uid": f"s{i}", "executable": "/bin/sleep", "arguments": ["30"]} for i in range(2)])
        assert (await rh.cancel_all())["cancelled"] == 2
        with anyio.fail_after(15):
            assert {_state(t) for t in await rh.wait_tasks(["s0", "s1"])} == {"CANCELLED"}
        assert [t["uid"] for t in await rh.list_tasks(state="cancelled")] == ["slow", "s0", "s1"]


async def test_rhapsody_blocking_client(tls: TLSFiles, example_plugin: str) -> None:
    async with live_system(tls, extra_plugins=(rhapsody_plugin(),)) as system:
        env = (system.url, TOKEN, str(tls.ca))

        def script() -> dict[str, Any]:
            with BridgeClient(*env) as bridge:
                rh = bridge.get_edge_client("e1").get_plugin("rhapsody", backends=["concurrent"])
                assert isinstance(rh, RhapsodyClient)
                (task,) = rh.submit_tasks([{"executable": sys.executable, "arguments": ["-c", "print(6 * 7)"]}])
                (done,) = rh.wait_tasks([task["uid"]], timeout=30)
                return done

        done = await anyio.to_thread.run_sync(script)
    assert (_state(done), done.get("stdout")) == ("DONE", "42\n")
