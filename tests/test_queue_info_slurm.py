"""queue_info against the real Slurm of this machine (the ``slurm`` fixture: skipped with the reason when
there is none, failed instead under RADICAL_EDGE_REQUIRE_SLURM=1), through the plugin host and a real
tunnel, and once through a real bridge and edge over TLS.  Every job submitted here is cancelled at the end."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from radical_edge_plugins.queue_info import QueueInfoPlugin
from radical_edge_plugins.scheduler import CommandResult, JobState, run_command
from radical_edge_plugins.scheduler.records import JOB_FIELDS, QUEUE_FIELDS, duration_seconds

from radical_edge_edge import PluginHost
from radical_edge_tunnel import Tunnel

from .client_helpers import TLSFiles, example_plugin, live_system, tls
from .edge_helpers import call, hub_for
from .slurm_helpers import Slurm, run

__all__ = ["example_plugin", "tls"]  # fixtures, imported for pytest

pytestmark = pytest.mark.anyio

VOCABULARY = {s.value for s in JobState}


class CountingRun:
    """``run_command``, counting the commands run (by program name)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def __call__(self, argv: Sequence[str], **options: Any) -> CommandResult:
        self.calls[argv[0]] += 1
        return await run_command(argv, **options)


@contextlib.asynccontextmanager
async def queue_info(**options: Any) -> AsyncIterator[tuple[Tunnel, QueueInfoPlugin, PluginHost, str]]:
    """queue_info on a plugin host behind a tunnel; yields (hub, plugin, host, a session id)."""
    plugin = QueueInfoPlugin(**options)
    host = PluginHost("e1")
    await host.add_plugin(plugin)
    async with hub_for(host) as hub:
        reply = await call(hub, "POST", "/queue_info/register_session")
        assert reply.status == 200, reply
        yield hub, plugin, host, reply.json()["sid"]


async def get(hub: Tunnel, path: str) -> Any:
    reply = await call(hub, "GET", f"/queue_info/{path}")
    assert reply.status == 200, reply
    return reply.json()


def find(jobs: list[dict[str, Any]], job_id: str) -> dict[str, Any] | None:
    return next((j for j in jobs if j["job_id"] == job_id), None)


async def wait_job(hub: Tunnel, sid: str, job_id: str, states: set[str], timeout: float = 30) -> dict[str, Any]:
    """Poll ``list_all_jobs?force=true`` until the job is in one of ``states``."""
    job = None
    with anyio.fail_after(timeout):
        while True:
            job = find((await get(hub, f"list_all_jobs/{sid}?force=true"))["jobs"], job_id)
            if job is not None and job["state"] in states:
                return job
            await anyio.sleep(0.3)


# ---------------------------------------------------------------- what the cluster is


async def test_partitions_match_sinfo(slurm: Slurm) -> None:
    async with queue_info() as (hub, plugin, _, sid):
        assert await get(hub, "backend") == {"backend": "slurm"}
        queues = (await get(hub, f"get_info/{sid}?user=*"))["queues"]
    assert plugin.backend is not None

    sinfo = run("sinfo", "-h", "-o", "%P|%a|%l|%D|%c|%m").stdout.split()
    expected = {}
    for line in sinfo:
        name, avail, limit, nodes, cpus, mem = line.split("|")
        expected[name.rstrip("*")] = (name.endswith("*"), avail.upper(), limit, int(nodes), int(cpus.rstrip("+")), mem)
    assert set(queues) == set(expected) == set(slurm.partitions)
    for name, (default, avail, limit, nodes, cpus, mem) in expected.items():
        q = queues[name]
        assert list(q) == list(QUEUE_FIELDS)
        assert q["default"] is default
        assert q["state"] == avail
        seconds = duration_seconds(limit)
        assert q["time_limit"] == (seconds // 60 if seconds is not None else "UNLIMITED")
        assert q["nodes_total"] == nodes
        assert q["cpus_per_node"] == cpus
        assert q["mem_per_node_mb"] == int(mem.rstrip("+"))
        assert 0 <= q["nodes_idle"] <= q["nodes_available"] <= q["nodes_total"]
        assert q["gpus_per_node"] == 0
        assert isinstance(q["features"], list)
    assert queues[slurm.default_partition]["default"] is True


async def test_allocations_match_sacctmgr(slurm: Slurm) -> None:
    slurm.require_accounting()
    assoc = run("sacctmgr", "-P", "-n", "show", "assoc", "format=Account,User,Share,QOS").stdout.split()
    expected = {tuple(line.split("|")[:2]) for line in assoc}
    async with queue_info() as (hub, _, _, sid):
        everything = (await get(hub, f"list_allocations/{sid}?user=*"))["allocations"]
        mine = (await get(hub, f"list_allocations/{sid}"))["allocations"]
    assert {(a["account"], a["user"] or "") for a in everything} == expected
    assert all(isinstance(a["fairshare"], int) for a in everything)
    my_accounts = {a["account"] for a in everything if a["user"] == slurm.user}
    assert {(a["account"], a["user"]) for a in mine} == {(a, slurm.user) for a in my_accounts} | {
        (a, None) for a in my_accounts
    }
    if "myproj" in {a for a, _ in expected}:  # scripts/slurm-up --accounting
        assert "myproj" in my_accounts


# ---------------------------------------------------------------- jobs


async def test_job_detail_then_cancel_through_the_plugin(slurm: Slurm, tmp_path: Path) -> None:
    account = (
        ["--account=myproj"]
        if slurm.accounting
        and "myproj" in run("sacctmgr", "-n", "-P", "show", "account", "format=account").stdout.split()
        else []
    )
    first = await slurm.asbatch(
        *account,
        "--wrap",
        "sleep 120",
        name="qi-test-run",
        partition=slurm.default_partition,
        time="2",
        chdir=str(tmp_path),
        output=str(tmp_path / "%x-%j.out"),
        error=str(tmp_path / "%x-%j.err"),
    )
    second = await slurm.asbatch(
        *account,
        "--wrap",
        "true",
        name="qi-test-dep",
        partition=slurm.partitions[-1],
        time="1",
        dependency=f"afterok:{first}",
        chdir=str(tmp_path),
    )
    async with queue_info() as (hub, _, _, sid):
        job = await wait_job(hub, sid, first, {"PENDING", "RUNNING"})
        assert list(job) == list(JOB_FIELDS)
        assert job["state"] in VOCABULARY
        assert (job["job_name"], job["user"], job["partition"]) == ("qi-test-run", slurm.user, slurm.default_partition)
        assert job["time_limit"] == 2
        assert job["work_dir"] == str(tmp_path)
        assert job["stdout"] == str(tmp_path / f"qi-test-run-{first}.out")
        assert job["stderr"] == str(tmp_path / f"qi-test-run-{first}.err")
        assert job["qos"]
        assert job["submit_time"] is not None
        if account:
            assert job["account"] == "myproj"
        assert (job["exit_code"], job["array_job_id"], job["array_task_id"]) == (None, None, None)

        dep = find((await get(hub, f"list_jobs/{sid}/{slurm.partitions[-1]}"))["jobs"], second)
        assert dep is not None
        assert (dep["state"], dep["reason"]) == ("PENDING", "Dependency")
        assert dep["dependency"] == f"afterok:{first}(unfulfilled)"
        assert dep["stdout"] == str(tmp_path / f"slurm-{second}.out")
        assert find((await get(hub, f"list_jobs/{sid}/{slurm.default_partition}"))["jobs"], first) is not None

        reply = await call(hub, "POST", f"/queue_info/cancel/{sid}/{first}")
        assert (reply.status, reply.json()) == (200, {"job_id": first, "status": "CANCELLED"})
        cancelled = await wait_job(hub, sid, first, {"CANCELLED"})
        assert cancelled["native_state"] == "CANCELLED"
        assert slurm.state(first) == "CANCELLED"
        again = await call(hub, "POST", f"/queue_info/cancel/{sid}/{first}")
        assert again.status == 409
        assert "already ended (CANCELLED)" in again.json()["detail"]
        dep = await wait_job(hub, sid, second, {"PENDING"})
        assert dep["reason"] in ("Dependency", "DependencyNeverSatisfied")  # the next scheduler pass decides
        assert (await call(hub, "POST", f"/queue_info/cancel/{sid}/--me")).status == 422


async def test_array_job_fields(slurm: Slurm) -> None:
    array = await slurm.asbatch("--array=1-3", "--hold", "--wrap", "true", name="qi-test-array", time="1")
    async with queue_info() as (hub, _, _, sid):
        job = await wait_job(hub, sid, f"{array}_[1-3]", {"HELD"})
        assert (job["array_job_id"], job["array_task_id"], job["reason"]) == (array, "1-3", "JobHeldUser")
        assert job["stdout"].endswith(f"/slurm-{array}_%a.out")
        reply = await call(hub, "POST", f"/queue_info/cancel/{sid}/{array}")  # the whole array
        assert reply.status == 200, reply
        await wait_job(hub, sid, f"{array}_[1-3]", {"CANCELLED"})


async def test_user_filter(slurm: Slurm) -> None:
    job_id = await slurm.asbatch("--hold", "--wrap", "true", name="qi-test-user", time="1")
    async with queue_info() as (hub, _, _, sid):
        mine = (await get(hub, f"list_all_jobs/{sid}"))["jobs"]
        assert find(mine, job_id) is not None
        assert {j["user"] for j in mine} == {slurm.user}  # default: the edge's user
        everybody = (await get(hub, f"list_all_jobs/{sid}?user=*"))["jobs"]
        assert {j["job_id"] for j in mine} <= {j["job_id"] for j in everybody}
        assert (await get(hub, f"list_all_jobs/{sid}?user=nobody"))["jobs"] == []

    # an edge running as another user: it lists that user's jobs by default and cancels none of ours
    async with queue_info(user="nobody") as (hub, _, _, sid):
        assert find((await get(hub, f"list_all_jobs/{sid}"))["jobs"], job_id) is None
        theirs = (await get(hub, f"list_all_jobs/{sid}?user={slurm.user}"))["jobs"]
        assert find(theirs, job_id) is not None
        assert find((await get(hub, f"list_jobs/{sid}/{slurm.default_partition}?user=*"))["jobs"], job_id) is not None
        reply = await call(hub, "POST", f"/queue_info/cancel/{sid}/{job_id}")
        assert reply.status == 403
        assert f"belongs to {slurm.user}" in reply.json()["detail"]
        assert slurm.state(job_id) == "PENDING"


# ---------------------------------------------------------------- one cache, pushed changes


async def test_concurrent_get_info_is_one_scheduler_call(slurm: Slurm) -> None:
    counting = CountingRun()
    async with queue_info(run=counting, watch_interval=3600) as (hub, _, _, sid):  # no watcher refresh counted
        replies: list[Any] = []

        async def ask() -> None:
            replies.append(await call(hub, "GET", f"/queue_info/get_info/{sid}"))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(ask)
        assert [r.status for r in replies] == [200] * 20
        assert len({json.dumps(r.json(), sort_keys=True) for r in replies}) == 1
        # one call of each command get_info needs (partitions, nodes, and the associations for ?user=)
        assert set(counting.calls) <= {"scontrol", "sinfo", "sacctmgr"}
        assert {"scontrol", "sinfo"} <= set(counting.calls)
        assert set(counting.calls.values()) == {1}, counting.calls

        counting.calls.clear()
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(ask)
        assert counting.calls == {}  # within the TTL: from the cache
        await call(hub, "GET", f"/queue_info/get_info/{sid}?force=true&user=*")
        assert counting.calls == {"scontrol": 1, "sinfo": 1}  # force: asked again


async def test_queue_changed_pushed_when_a_job_appears(slurm: Slurm) -> None:
    async with queue_info(watch_interval=0.3) as (hub, _, host, sid):
        await get(hub, f"list_all_jobs/{sid}")  # the baseline
        job_id = await slurm.asbatch("--hold", "--wrap", "true", name="qi-test-event", time="1")
        with anyio.fail_after(15):
            added: list[dict[str, Any]] = []
            while not any(j["job_id"] == job_id for j in added):
                for notice in await host.events.get_batch():
                    event = json.loads(notice.payload)
                    assert (notice.plugin, notice.topic) == ("queue_info", "queue_changed")
                    if event["kind"] == "jobs":
                        added += event["added"]
        job = next(j for j in added if j["job_id"] == job_id)
        assert job == {"job_id": job_id, "user": slurm.user, "partition": slurm.default_partition, "state": "HELD"}


# ---------------------------------------------------------------- a real bridge and edge, over TLS


async def test_through_bridge_and_edge_over_tls(slurm: Slurm, tls: TLSFiles, example_plugin: str) -> None:
    plugin = QueueInfoPlugin(watch_interval=0.3)
    async with live_system(tls, extra_plugins=(plugin,)) as system, system.client() as bridge:
        edge = await bridge.get_edge_client("e1")
        assert (await edge.list_plugins())["queue_info"]["enabled"] is True
        qi = await edge.get_plugin("queue_info")
        assert await qi.get_json("backend") == {"backend": "slurm"}
        info = await qi.get_json(f"get_info/{qi.sid}", params={"user": "*"})
        assert set(info["queues"]) == set(slurm.partitions)
        assert set(await qi.get_json("job_allocation")) == {"allocation"}

        events: list[dict[str, Any]] = []
        got_it = anyio.Event()

        async def on_event(edge_name: str, plugin_name: str, topic: str, data: Any) -> None:
            events.append(data)
            if any(j["job_id"] == job_id for e in events for j in e.get("added", [])):
                got_it.set()

        await qi.register_notification_callback(on_event, "queue_changed")
        await qi.get_json(f"list_all_jobs/{qi.sid}")  # the baseline
        job_id = await slurm.asbatch("--hold", "--wrap", "true", name="qi-test-tls", time="1")
        with anyio.fail_after(15):
            await got_it.wait()

        jobs = (await qi.get_json(f"list_all_jobs/{qi.sid}", params={"force": "true"}))["jobs"]
        job = find(jobs, job_id)
        assert job is not None
        assert (job["state"], job["reason"]) == ("HELD", "JobHeldUser")
        assert await qi.post_json(f"cancel/{qi.sid}/{job_id}") == {"job_id": job_id, "status": "CANCELLED"}
        with anyio.fail_after(15):
            while job["state"] != "CANCELLED":
                await anyio.sleep(0.3)
                job = find((await qi.get_json(f"list_all_jobs/{qi.sid}", params={"force": "true"}))["jobs"], job_id)
                assert job is not None
