"""The scheduler layer without a real scheduler: missing commands, timeouts, the coalescing cache,
detection, the allocation, and queue_info over PBS (recorded ``qstat``/``pbsnodes`` output served by
stand-in commands on PATH), all through the plugin host and a real tunnel."""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from radical_edge_plugins.queue_info import QueueInfoPlugin, jobs_changed
from radical_edge_plugins.scheduler import (
    CommandFailed,
    CommandMissing,
    CommandResult,
    CommandTimeout,
    run_command,
)
from radical_edge_plugins.scheduler.allocation import allocation_from_env, with_runtime
from radical_edge_plugins.scheduler.cache import CoalescingCache
from radical_edge_plugins.scheduler.detect import OVERRIDE_ENV, detect_scheduler, make_backend
from radical_edge_plugins.scheduler.pbs import PbsBackend
from radical_edge_plugins.scheduler.slurm import SlurmBackend

from radical_edge_edge import PluginHost, discover

from .edge_helpers import call, hub_for

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "fixtures"


# ---------------------------------------------------------------- commands that are missing, slow, failing


async def test_missing_command_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(CommandMissing, match=r"squeue: command not found"):
        await run_command(["squeue", "--json"])
    with pytest.raises(CommandMissing, match=r"sinfo|scontrol"):
        await SlurmBackend().queues()
    with pytest.raises(CommandMissing, match="qstat"):
        await PbsBackend().jobs()


async def test_missing_command_through_the_plugin_is_503(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slurm configured (RADICAL_EDGE_SCHEDULER=slurm), but its commands are gone from PATH: every route
    that needs them answers 503 with the reason, and the edge goes on serving."""
    monkeypatch.setenv(OVERRIDE_ENV, "slurm")
    monkeypatch.setenv("PATH", "")
    host = PluginHost("e1")
    await host.add_plugin(QueueInfoPlugin())
    async with hub_for(host) as hub:
        assert (await call(hub, "GET", "/queue_info/backend")).json() == {"backend": "slurm"}
        sid = (await call(hub, "POST", "/queue_info/register_session")).json()["sid"]
        for path in (f"get_info/{sid}", f"list_all_jobs/{sid}", f"list_jobs/{sid}/debug"):
            reply = await call(hub, "GET", f"/queue_info/{path}")
            assert reply.status == 503, reply
            assert reply.json()["error"] is True
            assert "command not found" in reply.json()["detail"]
        reply = await call(hub, "POST", f"/queue_info/cancel/{sid}/123")
        assert reply.status == 503
        assert (await call(hub, "GET", "/queue_info/health")).json()["status"] == "ok"


async def test_timeout_kills_and_reports() -> None:
    sleep = shutil.which("sleep")
    assert sleep
    with anyio.fail_after(5):
        with pytest.raises(CommandTimeout, match=r"no answer within 0\.2 s"):
            await run_command([sleep, "10"], timeout=0.2)


class Scripted:
    """A stand-in ``run_command``: answers from a table (``argv[0]`` -> output or exception), counts calls."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: Counter[str] = Counter()

    async def __call__(self, argv: Sequence[str], **options: Any) -> CommandResult:
        self.calls[argv[0]] += 1
        await anyio.sleep(0.05)
        answer = self.answers[argv[0]]
        if isinstance(answer, BaseException):
            raise answer
        return CommandResult(list(argv), 0, answer, "")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (CommandTimeout("squeue: no answer within 30 s"), 504),
        (CommandFailed(["squeue"], 1, "", "slurm_load_jobs error: Unable to contact slurm controller"), 502),
    ],
)
async def test_scheduler_errors_become_http_errors(error: Exception, status: int) -> None:
    plugin = QueueInfoPlugin(backend=SlurmBackend(run=Scripted({"squeue": error})))
    host = PluginHost("e1")
    await host.add_plugin(plugin)
    async with hub_for(host) as hub:
        sid = (await call(hub, "POST", "/queue_info/register_session")).json()["sid"]
        reply = await call(hub, "GET", f"/queue_info/list_all_jobs/{sid}")
        assert reply.status == status
        assert str(error) in reply.json()["detail"]


async def test_unreadable_answer_is_502() -> None:
    plugin = QueueInfoPlugin(backend=SlurmBackend(run=Scripted({"squeue": "{not json"})))
    host = PluginHost("e1")
    await host.add_plugin(plugin)
    async with hub_for(host) as hub:
        sid = (await call(hub, "POST", "/queue_info/register_session")).json()["sid"]
        reply = await call(hub, "GET", f"/queue_info/list_all_jobs/{sid}")
        assert reply.status == 502
        assert "could not be read" in reply.json()["detail"]


async def test_json_falls_back_to_text_once() -> None:
    """A Slurm without the JSON plugins: ``--json`` fails, the text format answers, and from then on
    only the text format is asked."""
    text = (FIXTURES / "slurm-22.05" / "squeue-running.txt").read_text()
    calls: list[list[str]] = []

    async def run(argv: Sequence[str], **options: Any) -> CommandResult:
        calls.append(list(argv))
        if "--json" in argv:
            raise CommandFailed(argv, 1, "", "squeue: unrecognized option '--json'")
        return CommandResult(list(argv), 0, text, "")

    backend = SlurmBackend(run=run)
    first = await backend.jobs()
    second = await backend.jobs()
    assert first == second
    assert len(first) == 15
    assert [c[1] for c in calls] == ["--json", "-h", "-h"]


# ---------------------------------------------------------------- the cache


async def test_cache_coalesces_concurrent_callers() -> None:
    cache = CoalescingCache()
    started = 0
    release = anyio.Event()

    async def fetch() -> int:
        nonlocal started
        started += 1
        await release.wait()
        return started

    results: list[int] = []

    async def ask(force: bool) -> None:
        results.append(await cache.get("k", fetch, ttl=60, force=force))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(ask, i % 2 == 0)  # force=True callers join the running fetch too
        await anyio.sleep(0.05)
        release.set()
    assert results == [1] * 20
    assert cache.fetches["k"] == 1
    assert await cache.get("k", fetch, ttl=60) == 1  # fresh: from the cache
    assert started == 1
    assert await cache.get("k", fetch, ttl=60, force=True) == 2  # force: fetched again
    assert await cache.get("k", fetch, ttl=0) == 3  # stale
    cache.invalidate("k")
    assert cache.age("k") is None
    assert await cache.get("k", fetch, ttl=60) == 4


async def test_cache_shares_errors_and_survives_a_cancelled_leader() -> None:
    cache = CoalescingCache()

    async def broken() -> int:
        await anyio.sleep(0.05)
        raise CommandFailed(["sinfo"], 1, "", "down")

    errors: list[BaseException] = []

    async def ask() -> None:
        try:
            await cache.get("k", broken, ttl=60)
        except CommandFailed as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(ask)
    assert len(errors) == 5
    assert cache.fetches["k"] == 1
    assert cache.peek("k") is None  # failures are not cached

    gate = anyio.Event()
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await anyio.sleep_forever()  # the first fetcher's client goes away
        await gate.wait()
        return "answer"

    got: list[str] = []
    leader = anyio.CancelScope()

    async def lead() -> None:
        with leader:
            await cache.get("j", slow, ttl=60)

    async def follow() -> None:
        got.append(await cache.get("j", slow, ttl=60))

    async with anyio.create_task_group() as tg:
        tg.start_soon(lead)
        await anyio.sleep(0.02)
        tg.start_soon(follow)
        await anyio.sleep(0.02)
        leader.cancel()  # the follower takes over and fetches
        gate.set()
    assert got == ["answer"]
    assert calls == 2


async def test_cache_update_listener_sees_old_and_new() -> None:
    seen: list[tuple[str, Any, Any]] = []
    cache = CoalescingCache(on_update=lambda key, old, new: seen.append((key, old, new)))
    values = iter([1, 2])

    async def fetch() -> int:
        return next(values)

    await cache.get("k", fetch, ttl=0)
    await cache.get("k", fetch, ttl=0)
    assert seen == [("k", None, 1), ("k", 1, 2)]


def test_jobs_changed_event() -> None:
    def job(job_id: str, state: str, node_list: str | None = None) -> dict[str, Any]:
        return {"job_id": job_id, "user": "u", "partition": "p", "state": state, "node_list": node_list}

    assert jobs_changed("slurm", [job("1", "PENDING")], [job("1", "PENDING")]) is None
    event = jobs_changed(
        "slurm", [job("1", "PENDING"), job("2", "RUNNING")], [job("1", "RUNNING", "n1"), job("3", "PENDING")]
    )
    assert event == {
        "kind": "jobs",
        "backend": "slurm",
        "queues": ["p"],
        "added": [{"job_id": "3", "user": "u", "partition": "p", "state": "PENDING"}],
        "removed": [{"job_id": "2", "user": "u", "partition": "p", "state": "RUNNING"}],
        "changed": [{"job_id": "1", "user": "u", "partition": "p", "state": "RUNNING", "previous": "PENDING"}],
        "truncated": False,
    }


# ---------------------------------------------------------------- detection and the allocation


def test_detect_scheduler() -> None:
    def which_of(*names: str) -> Any:
        return lambda name: f"/usr/bin/{name}" if name in names else None

    assert detect_scheduler({}, which_of("sinfo", "squeue", "qstat", "pbsnodes")) == "slurm"  # Slurm's qstat wrapper
    assert detect_scheduler({}, which_of("qstat", "pbsnodes")) == "pbs"
    assert detect_scheduler({}, which_of("qstat")) == "none"
    assert detect_scheduler({}, which_of()) == "none"
    assert detect_scheduler({OVERRIDE_ENV: "PBS"}, which_of("sinfo", "squeue")) == "pbs"
    assert make_backend("none") is None
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_backend("lsf")


async def test_allocation_from_the_environment() -> None:
    assert allocation_from_env({}) is None
    slurm_env = {
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_PARTITION": "gpu",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_NODELIST": "node[01-02]",
        "SLURM_JOB_CPUS_PER_NODE": "64(x2)",
        "SLURM_GPUS_PER_NODE": "a100:4",
        "SLURM_JOB_ACCOUNT": "astro",
        "SLURM_JOB_NAME": "edge",
    }
    allocation = allocation_from_env(slurm_env)
    assert allocation == {
        "scheduler": "slurm",
        "job_id": "77",
        "partition": "gpu",
        "n_nodes": 2,
        "nodelist": "node[01-02]",
        "cpus_per_node": 64,
        "gpus_per_node": 4,
        "account": "astro",
        "job_name": "edge",
        "runtime": None,
    }
    backend = SlurmBackend(run=Scripted({"squeue": "1:30:00\n"}))
    assert (await with_runtime(allocation, backend))["runtime"] == 5400  # type: ignore[index]
    failing = SlurmBackend(run=Scripted({"squeue": CommandFailed(["squeue"], 1, "", "Invalid job id")}))
    assert (await with_runtime(allocation, failing))["runtime"] is None  # type: ignore[index]

    nodefile = ["cn001"] * 36 + ["cn002"] * 36
    pbs_env = {"PBS_JOBID": "101.pbs01", "PBS_QUEUE": "workq", "PBS_NODEFILE": "/x", "PBS_JOBNAME": "sim"}
    assert allocation_from_env(pbs_env, read_lines=lambda path: nodefile) == {
        "scheduler": "pbs",
        "job_id": "101.pbs01",
        "partition": "workq",
        "n_nodes": 2,
        "nodelist": "cn001,cn002",
        "cpus_per_node": 36,
        "gpus_per_node": None,
        "account": None,
        "job_name": "sim",
        "runtime": None,
    }


# ---------------------------------------------------------------- queue_info over PBS (stand-in commands)


@pytest.fixture
def pbs_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``qstat``, ``pbsnodes`` and ``qdel`` on PATH answering with the recorded samples (copies in
    ``tmp_path``, which a test may change); ``qdel`` writes its arguments to ``qdel.log``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("qstat-Bf.txt", "qstat-Qf.txt", "qstat-f.txt", "pbsnodes-a.txt"):
        shutil.copy(FIXTURES / "pbs" / name, tmp_path / name)
    scripts = {
        "qstat": f'case "$1" in -Bf) cat {tmp_path}/qstat-Bf.txt;; -Qf) cat {tmp_path}/qstat-Qf.txt;; '
        f'-f) cat {tmp_path}/qstat-f.txt;; *) echo "qstat: bad option $1" >&2; exit 2;; esac',
        "pbsnodes": f"cat {tmp_path}/pbsnodes-a.txt",
        "qdel": f'echo "$@" >> {tmp_path}/qdel.log',
    }
    for name, body in scripts.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.delenv(OVERRIDE_ENV, raising=False)
    if shutil.which("sinfo", path=f"{bin_dir}:/usr/bin:/bin"):
        monkeypatch.setenv(OVERRIDE_ENV, "pbs")  # this machine has Slurm in /usr/bin too
    return tmp_path


class CountingRun:
    """``run_command``, counting each distinct command line."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def __call__(self, argv: Sequence[str], **options: Any) -> CommandResult:
        self.calls[" ".join(argv)] += 1
        return await run_command(argv, **options)


async def test_queue_info_over_pbs(pbs_path: Path) -> None:
    assert detect_scheduler() == "pbs"
    run = CountingRun()
    plugin = QueueInfoPlugin(run=run, user="alice", watch_interval=3600)  # no watcher refresh counted
    host = PluginHost("e1")
    await host.add_plugin(plugin)
    async with hub_for(host) as hub:
        assert (await call(hub, "GET", "/queue_info/backend")).json() == {"backend": "pbs"}
        sid = (await call(hub, "POST", "/queue_info/register_session")).json()["sid"]

        replies: list[Any] = []

        async def get_info() -> None:
            replies.append(await call(hub, "GET", f"/queue_info/get_info/{sid}"))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(get_info)
        assert {r.status for r in replies} == {200}
        assert run.calls == {"qstat -Bf": 1, "qstat -Qf": 1, "pbsnodes -a": 1}
        queues = replies[0].json()["queues"]
        assert list(queues) == ["workq", "gpu", "maint", "routeq"]
        assert queues["gpu"]["gpus_per_node"] == 4
        assert queues["workq"]["default"] is True

        mine = (await call(hub, "GET", f"/queue_info/list_all_jobs/{sid}")).json()["jobs"]
        assert [j["job_id"] for j in mine] == ["101.pbs01", "102.pbs01", "104.pbs01", "105.pbs01"]  # alice's
        everybody = (await call(hub, "GET", f"/queue_info/list_all_jobs/{sid}?user=*")).json()["jobs"]
        assert len(everybody) == 6
        bobs = (await call(hub, "GET", f"/queue_info/list_jobs/{sid}/workq?user=bob")).json()["jobs"]
        assert [j["job_id"] for j in bobs] == ["103[].pbs01", "103[3].pbs01"]
        assert (await call(hub, "GET", f"/queue_info/list_jobs/{sid}/nope")).status == 404
        assert (await call(hub, "GET", f"/queue_info/list_all_jobs/{sid}?user=a%20b")).status == 422
        assert (await call(hub, "GET", f"/queue_info/list_allocations/{sid}")).json() == {"allocations": []}

        reply = await call(hub, "POST", f"/queue_info/cancel/{sid}/101")  # without the server suffix
        assert (reply.status, reply.json()) == (200, {"job_id": "101", "status": "CANCELLED"})
        assert (pbs_path / "qdel.log").read_text() == "101\n"
        reply = await call(hub, "POST", f"/queue_info/cancel/{sid}/103[3].pbs01")
        assert reply.status == 403
        assert "belongs to bob" in reply.json()["detail"]
        assert (await call(hub, "POST", f"/queue_info/cancel/{sid}/104.pbs01")).status == 409  # already failed
        assert (await call(hub, "POST", f"/queue_info/cancel/{sid}/999")).status == 404
        assert (await call(hub, "POST", f"/queue_info/cancel/{sid}/-x")).status == 422  # never an option to qdel
        assert (pbs_path / "qdel.log").read_text() == "101\n"


async def test_queue_changed_is_pushed(pbs_path: Path) -> None:
    """A job that appears is pushed as ``queue_changed`` by the watcher (no client polls)."""
    jobs_file = pbs_path / "qstat-f.txt"
    full = jobs_file.read_text()
    first_job_end = full.index("Job Id: 102")
    jobs_file.write_text(full[:first_job_end])  # only 101 at first
    plugin = QueueInfoPlugin(user="alice", watch_interval=0.1)
    host = PluginHost("e1")
    await host.add_plugin(plugin)
    async with hub_for(host) as hub:
        sid = (await call(hub, "POST", "/queue_info/register_session")).json()["sid"]
        assert len((await call(hub, "GET", f"/queue_info/list_all_jobs/{sid}")).json()["jobs"]) == 1
        jobs_file.write_text(full)
        with anyio.fail_after(10):
            while True:
                notices = await host.events.get_batch()
                events = [json.loads(n.payload) for n in notices if n.topic == "queue_changed"]
                if events:
                    break
        (event,) = events
        assert event["kind"] == "jobs"
        assert [j["job_id"] for j in event["added"]] == [
            "102.pbs01",
            "103[].pbs01",
            "103[3].pbs01",
            "104.pbs01",
            "105.pbs01",
        ]
        assert event["removed"] == event["changed"] == []
        assert event["queues"] == ["gpu", "workq"]


def test_plugin_unavailable_without_a_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv(OVERRIDE_ENV, raising=False)
    reason = QueueInfoPlugin.unavailable_reason()
    assert reason is not None
    assert "no batch system found" in reason


def test_registered_as_an_entry_point() -> None:
    eps = discover()
    assert "queue_info" in eps, f"queue_info not among {sorted(eps)}: is the project installed (pip install -e .)?"
    assert eps["queue_info"].load() is QueueInfoPlugin
    assert sys.modules[QueueInfoPlugin.__module__].__name__ == "radical_edge_plugins.queue_info"
