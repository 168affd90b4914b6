"""The rhapsody plugin with real rhapsody-py (the concurrent backend): through the plugin host, and once
through a real bridge and edge over TLS."""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import pickle
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import psutil
import pytest
from radical_edge_plugins.rhapsody import ALLOW_PICKLED_ENV, Limits, RhapsodyPlugin, _backend
from radical_edge_plugins.rhapsody._batcher import NotifyBatcher
from radical_edge_plugins.rhapsody._spec import TaskRefused, parse_task
from radical_edge_plugins.scheduler.states import JobState, rhapsody_state

from radical_edge_edge import PluginHost
from radical_edge_tunnel import Tunnel

from .client_helpers import TLSFiles, example_plugin, live_system, tls, wait_for
from .edge_helpers import call, hub_for

pytestmark = pytest.mark.anyio

__all__ = ["example_plugin", "tls"]  # fixtures

THIS = __name__  # importable by path: the function tasks below name "tests.test_plugin_rhapsody:..."


# ---------------------------------------------------------------- functions the tasks call


def add(a: int, b: int = 0) -> dict[str, int]:
    return {"sum": a + b}


def boom(message: str) -> None:
    raise ValueError(message)


def a_set() -> set[int]:
    return {1, 2, 3}


async def coro(x: int) -> int:
    await anyio.sleep(0)
    return x * 2


def slow_function(seconds: float) -> str:
    threading.Event().wait(seconds)
    return "slept"


# ---------------------------------------------------------------- helpers


class Rig:
    """A plugin host with the rhapsody plugin behind a tunnel, and the notifications it sent."""

    def __init__(self, host: PluginHost, hub: Tunnel, plugin: RhapsodyPlugin) -> None:
        self.host = host
        self.hub = hub
        self.plugin = plugin
        self.events: list[tuple[str, Any]] = []

    async def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        return await call(self.hub, method, f"/rhapsody/{path}", body, **kwargs)

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        reply = await self.call(method, path, body)
        assert reply.status == 200, reply
        return reply.json()

    async def session(self, **options: Any) -> str:
        answer = await self.ok("POST", "register_session", options)
        assert answer["status"] == "initializing"
        status = await self.ok("GET", f"session_status/{answer['sid']}?wait=10")
        assert status["status"] == "ready", status
        return str(answer["sid"])

    async def submit(self, sid: str, *tasks: dict[str, Any]) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = await self.ok("POST", f"submit/{sid}", {"tasks": list(tasks)})
        return answer

    async def wait(self, sid: str, uids: list[str], timeout: float = 20) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = await self.ok("POST", f"wait/{sid}", {"uids": uids, "timeout": timeout})
        return answer

    async def collect(self, seconds: float = 0.0) -> list[tuple[str, Any]]:
        """Take the notifications sent so far (waiting up to ``seconds`` for more)."""
        with anyio.move_on_after(seconds):
            while True:
                for notice in await self.host.events.get_batch():
                    self.events.append((notice.topic, json.loads(notice.payload)))
        if not seconds:
            while len(self.host.events):
                for notice in await self.host.events.get_batch():
                    self.events.append((notice.topic, json.loads(notice.payload)))
        return self.events

    def task_items(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for topic, data in self.events:
            if topic == "task_status":
                items.append({k: v for k, v in data.items() if k != "sid"})
            elif topic == "task_status_batch":
                items.extend(data["tasks"])
        return items


@asynccontextmanager
async def rig(**options: Any) -> AsyncIterator[Rig]:
    host = PluginHost("e1")
    plugin = RhapsodyPlugin(**options)
    await host.add_plugin(plugin)
    async with hub_for(host) as hub:
        yield Rig(host, hub, plugin)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def pickled(obj: Any) -> str:
    return "cloudpickle::" + base64.b64encode(pickle.dumps(obj)).decode()


# ---------------------------------------------------------------- the pure parts


def test_rhapsody_states_map_to_the_one_vocabulary() -> None:
    assert rhapsody_state("RUNNING") is JobState.RUNNING
    assert rhapsody_state("DONE") is JobState.DONE
    assert rhapsody_state("FAILED") is JobState.FAILED
    assert rhapsody_state("CANCELED") is JobState.CANCELLED
    assert rhapsody_state("COMPLETED") is JobState.DONE
    assert rhapsody_state("PENDING") is JobState.PENDING
    assert rhapsody_state("AGENT_EXECUTING") is JobState.RUNNING
    assert rhapsody_state("TMGR_SCHEDULING") is JobState.PENDING
    assert rhapsody_state(None) is JobState.PENDING
    assert rhapsody_state("SOMETHING_NEW") is JobState.UNKNOWN
    assert rhapsody_state(42) is JobState.UNKNOWN
    from rhapsody.backends.constants import TasksMainStates  # noqa: PLC0415

    assert {rhapsody_state(s) for s in TasksMainStates} == {
        JobState.DONE,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.RUNNING,
    }


@pytest.mark.parametrize(
    ("task", "status", "words"),
    [
        ("echo", 422, "JSON object"),
        ({}, 422, "exactly one"),
        ({"executable": "/bin/true", "function": "math:sqrt"}, 422, "exactly one"),
        ({"executable": "/bin/true", "argumnets": []}, 422, "unknown field(s) argumnets"),
        ({"executable": "/bin/true", "arguments": "-l"}, 422, "list of strings"),
        ({"executable": "/bin/true", "env": {"A": 1}}, 422, "env"),
        ({"uid": "a/b", "executable": "/bin/true"}, 422, "uid"),
        ({"function": "os.system"}, 422, "import path"),
        ({"function": "math:sqrt", "args": {"x": 1}}, 422, "args must be a list"),
        ({"function": pickled(math.sqrt)}, 403, "RADICAL_EDGE_RHAPSODY_ALLOW_PICKLED"),
        ({"function": "math:sqrt", "_pickled_fields": ["args"], "args": pickled([4])}, 403, "allow_pickled=True"),
    ],
)
def test_task_descriptions_are_checked(task: Any, status: int, words: str) -> None:
    with pytest.raises(TaskRefused) as caught:
        parse_task(task, allow_pickled=False)
    assert caught.value.status == status
    assert words in caught.value.detail


def test_pickled_fields_when_allowed() -> None:
    spec = parse_task({"function": pickled(add), "_pickled_fields": ["function"], "args": [2, 3]}, allow_pickled=True)
    assert spec.call is not None
    assert spec.call() == {"sum": 5}
    with pytest.raises(TaskRefused, match="base64"):
        parse_task({"function": "cloudpickle::***", "_pickled_fields": ["function"]}, allow_pickled=True)


async def test_the_batcher_flushes_on_window_and_size_and_bytes() -> None:
    sent: list[tuple[str, Any]] = []
    batcher = NotifyBatcher("s", lambda topic, data: sent.append((topic, data)), window=0.05, size=3, max_bytes=2048)
    batcher.add({"uid": "a", "state": "DONE"})
    assert sent == []
    await anyio.sleep(0.15)
    assert sent == [("task_status", {"sid": "s", "uid": "a", "state": "DONE"})]
    for i in range(7):
        batcher.add({"uid": f"t{i}", "state": "DONE"})
    assert [len(d["tasks"]) for _, d in sent[1:]] == [3, 3]  # the size cap flushed at once
    await anyio.sleep(0.15)
    assert sent[-1] == ("task_status", {"sid": "s", "uid": "t6", "state": "DONE"})
    sent.clear()
    for i in range(3):
        batcher.add({"uid": f"big{i}", "state": "DONE", "error": "x" * 900})  # three do not fit in 2 KiB
    assert [d.get("tasks", [d])[0]["uid"] for _, d in sent] == ["big0", "big2"]
    assert [len(d["tasks"]) for _, d in sent[:1]] == [2]
    assert sent[1][0] == "task_status"


def test_unavailable_without_rhapsody(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RhapsodyPlugin.unavailable_reason() is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rhapsody" else real(name, *a))
    assert RhapsodyPlugin.unavailable_reason() == "rhapsody-py is not installed (pip install 'radical-edge[hpc]')"


# ---------------------------------------------------------------- backends


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


async def test_backends_are_tried_for_real() -> None:
    async with rig() as r:
        report = await r.ok("GET", "backends")
        backends = report["backends"]
        assert report["default"] == ["concurrent"]
        assert backends["concurrent"] == {"available": True, "reason": None}
        for name, module in [("dask", "dask.distributed"), ("radical_pilot", "radical.pilot"), ("dragon", "dragon")]:
            if _installed(module.split(".")[0]):
                continue
            assert backends[name]["available"] is False
            assert backends[name]["reason"], name
        if not _installed("dask"):
            assert "Dask" in backends["dask"]["reason"]
            # rhapsody itself claims otherwise
            import rhapsody  # noqa: PLC0415

            assert rhapsody.discover_backends()["dask"] is True
            reply = await r.call("POST", "register_session", {"backends": ["dask"]})
            assert reply.status == 422
            assert "not available on this edge" in reply.json()["detail"]
        reply = await r.call("POST", "register_session", {"backends": ["nonesuch"]})
        assert (reply.status, "unknown backend" in reply.json()["detail"]) == (422, True)
        reply = await r.call("POST", "register_session", {"notify_batch_size": 0})
        assert reply.status == 422


# ---------------------------------------------------------------- tasks


async def test_programs_done_and_failed() -> None:
    async with rig() as r:
        sid = await r.session()
        acks = await r.submit(
            sid,
            {"executable": "/bin/echo", "arguments": ["hello", "world"]},
            {"uid": "bad", "executable": "/bin/sh", "arguments": ["-c", "echo oops >&2; exit 3"]},
            {
                "uid": "env",
                "executable": "/bin/sh",
                "arguments": ["-c", "echo $GREETING; pwd"],
                "env": {"GREETING": "hi"},
                "cwd": "/tmp",
            },
            {"uid": "missing", "executable": "/no/such/program"},
        )
        assert acks[0] == {"uid": "task.000001", "state": "PENDING"}
        assert [a["uid"] for a in acks[1:]] == ["bad", "env", "missing"]
        done, bad, env, missing = await r.wait(sid, [a["uid"] for a in acks])
        assert (done["state"], done["exit_code"], done["stdout"], done["stderr"]) == ("DONE", 0, "hello world\n", "")
        assert done["error"] is None
        assert done["pid"] > 0
        assert done["started"] >= done["submitted"]
        assert done["finished"] >= done["started"]
        assert (bad["state"], bad["exit_code"], bad["stderr"], bad["error"]) == ("FAILED", 3, "oops\n", "exit code 3")
        assert (env["state"], env["stdout"]) == ("DONE", "hi\n/tmp\n")
        assert (missing["state"], missing["exit_code"], missing["started"]) == ("FAILED", None, None)
        assert missing["error"].startswith("FileNotFoundError")
        json.dumps([done, bad, env, missing])  # plain JSON, no rhapsody objects
        listed = await r.ok("GET", f"list_tasks/{sid}")
        assert [t["uid"] for t in listed["tasks"]] == ["task.000001", "bad", "env", "missing"]
        assert "stdout" not in listed["tasks"][0]
        assert [t["uid"] for t in (await r.ok("GET", f"list_tasks/{sid}?state=failed"))["tasks"]] == ["bad", "missing"]
        assert (await r.ok("GET", f"task/{sid}/bad"))["stderr"] == "oops\n"
        assert (await r.call("GET", f"task/{sid}/nope")).status == 404
        # a uid twice is refused, and nothing of that submission runs
        reply = await r.call(
            "POST",
            f"submit/{sid}",
            {"tasks": [{"uid": "new", "executable": "true"}, {"uid": "bad", "executable": "true"}]},
        )
        assert (reply.status, "bad" in reply.json()["detail"]) == (409, True)
        assert (await r.call("GET", f"task/{sid}/new")).status == 404


async def test_template_submission() -> None:
    async with rig() as r:
        sid = await r.session()
        template = {"function": f"{THIS}:add", "args": [1], "kwargs": {"b": 1}}
        acks = await r.ok("POST", f"submit/{sid}", {"template": template, "uids": ["a", "b"]})
        assert acks == [{"uid": "a", "state": "PENDING"}, {"uid": "b", "state": "PENDING"}]
        assert [t["return_value"] for t in await r.wait(sid, ["a", "b"])] == [{"sum": 2}, {"sum": 2}]
        assert (await r.call("POST", f"submit/{sid}", {"template": template})).status == 422


async def test_output_is_bounded() -> None:
    async with rig(limits=Limits(max_output_bytes=1000)) as r:
        sid = await r.session()
        [ack] = await r.submit(sid, {"executable": "/bin/sh", "arguments": ["-c", "seq 1 100000; echo end"]})
        [task] = await r.wait(sid, [ack["uid"]])
        assert task["state"] == "DONE"
        assert len(task["stdout"]) == 1000
        assert task["stdout"].endswith("100000\nend\n")
        assert task["truncated"] == ["stdout"]


async def test_function_tasks() -> None:
    async with rig() as r:
        sid = await r.session()
        acks = await r.submit(
            sid,
            {"function": "math:sqrt", "args": [16]},
            {"function": f"{THIS}:add", "args": [2], "kwargs": {"b": 40}},
            {"function": f"{THIS}:boom", "args": ["no luck"]},
            {"function": f"{THIS}:a_set"},
            {"function": f"{THIS}:coro", "args": [21]},
            {"function": "no_such_module_here:f"},
        )
        sqrt, added, failed, a_set_, awaited, missing = await r.wait(sid, [a["uid"] for a in acks])
        assert (sqrt["state"], sqrt["return_value"], sqrt["exit_code"]) == ("DONE", 4.0, 0)
        assert (sqrt["kind"], sqrt["function"]) == ("function", "math:sqrt")
        assert added["return_value"] == {"sum": 42}
        assert (failed["state"], failed["exit_code"]) == ("FAILED", 1)
        assert failed["error"].endswith("ValueError: no luck")
        assert "in boom" in failed["error"]
        assert "_backend.py" not in failed["error"]  # the task's own traceback, not the plugin's
        assert (a_set_["state"], a_set_["return_value"], a_set_["return_value_is_repr"]) == ("DONE", "{1, 2, 3}", True)
        assert awaited["return_value"] == 42
        assert missing["state"] == "FAILED"
        assert (
            missing["error"]
            == "cannot load no_such_module_here:f: ModuleNotFoundError: No module named 'no_such_module_here'"
        )


async def test_pickles_refused_by_default_and_accepted_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    task = {"function": pickled(add), "_pickled_fields": ["function"], "args": [1, 2]}
    monkeypatch.delenv(ALLOW_PICKLED_ENV, raising=False)
    async with rig() as r:
        sid = await r.session()
        reply = await r.call("POST", f"submit/{sid}", {"tasks": [{"executable": "/bin/true"}, task]})
        assert reply.status == 403
        assert "allow_pickled=True" in reply.json()["detail"]
        assert ALLOW_PICKLED_ENV in reply.json()["detail"]
        assert (await r.ok("GET", f"list_tasks/{sid}"))["tasks"] == []  # all or nothing
    async with rig(allow_pickled=True) as r:
        sid = await r.session()
        [ack] = await r.submit(sid, task)
        [done] = await r.wait(sid, [ack["uid"]])
        assert (done["state"], done["return_value"], done["function"]) == ("DONE", {"sum": 3}, "<pickled>")
    monkeypatch.setenv(ALLOW_PICKLED_ENV, "1")
    assert RhapsodyPlugin().limits.allow_pickled is True
    assert RhapsodyPlugin(allow_pickled=False).limits.allow_pickled is False


# ---------------------------------------------------------------- cancel


async def test_cancel_kills_the_process_tree() -> None:
    async with rig() as r:
        sid = await r.session()
        # a shell with a child in the background and one in the foreground, and one that left the group
        script = "sleep 30 & setsid sleep 31 & sleep 32; wait"
        await r.submit(sid, {"uid": "s", "executable": "/bin/sh", "arguments": ["-c", script]})
        with anyio.fail_after(10):
            while True:
                task = await r.ok("GET", f"task/{sid}/s")
                if task["pid"] and len(psutil.Process(task["pid"]).children(recursive=True)) >= 3:
                    break
                await anyio.sleep(0.05)
        pid = task["pid"]
        tree = [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
        assert task["state"] == "RUNNING"
        answer = await r.ok("POST", f"cancel/{sid}/s")
        assert answer == {"uid": "s", "state": "CANCELLED", "cancelled": True}
        assert all(gone(p) for p in tree), [p for p in tree if not gone(p)]
        record = await r.ok("GET", f"task/{sid}/s")
        assert (record["state"], record["error"]) == ("CANCELLED", "cancelled")
        # cancelling again, or a final task, changes nothing
        assert await r.ok("POST", f"cancel/{sid}/s") == {"uid": "s", "state": "CANCELLED", "cancelled": False}
        await r.collect(0.5)
        assert [i["state"] for i in r.task_items() if i["uid"] == "s"] == ["RUNNING", "CANCELLED"]


async def test_cancel_all_and_pending_tasks() -> None:
    async with rig(limits=Limits(max_processes=2)) as r:
        sid = await r.session()
        [quick] = await r.submit(sid, {"executable": "/bin/true"})
        await r.wait(sid, [quick["uid"]])
        acks = await r.submit(sid, *({"executable": "sleep", "arguments": ["30"]} for _ in range(3)))
        uids = [a["uid"] for a in acks]
        with anyio.fail_after(10):
            while [t["state"] for t in await r.wait(sid, uids, timeout=0)] != ["RUNNING", "RUNNING", "PENDING"]:
                await anyio.sleep(0.05)
        tasks = await r.wait(sid, uids, timeout=0.2)  # a bounded wait returns what there is
        pids = [t["pid"] for t in tasks[:2]]
        assert tasks[2]["pid"] is None  # the third waits for a process slot
        answer = await r.ok("POST", f"cancel_all/{sid}")
        assert answer == {"cancelled": 3, "uids": uids}
        assert all(gone(p) for p in pids)
        assert [t["state"] for t in await r.wait(sid, uids, timeout=0)] == ["CANCELLED"] * 3
        assert (await r.ok("GET", f"task/{sid}/{quick['uid']}"))["state"] == "DONE"
        assert await r.ok("POST", f"cancel_all/{sid}") == {"cancelled": 0, "uids": []}


async def test_a_running_function_is_reported_cancelled() -> None:
    async with rig() as r:
        sid = await r.session()
        [ack] = await r.submit(sid, {"function": f"{THIS}:slow_function", "args": [0.5]})
        with anyio.fail_after(10):
            while (await r.ok("GET", f"task/{sid}/{ack['uid']}"))["state"] != "RUNNING":
                await anyio.sleep(0.02)
        assert (await r.ok("POST", f"cancel/{sid}/{ack['uid']}"))["state"] == "CANCELLED"
        await anyio.sleep(0.7)  # the thread finishes; the task stays cancelled
        record = await r.ok("GET", f"task/{sid}/{ack['uid']}")
        assert record["state"] == "CANCELLED"
        assert "cannot be stopped" in record["error"]


async def test_closing_the_session_kills_its_tasks() -> None:
    async with rig() as r:
        sid = await r.session()
        [ack] = await r.submit(sid, {"executable": "sleep", "arguments": ["30"]})
        with anyio.fail_after(10):
            while not (pid := (await r.ok("GET", f"task/{sid}/{ack['uid']}"))["pid"]):
                await anyio.sleep(0.02)
        assert await r.ok("POST", f"unregister_session/{sid}") == {"ok": True}
        assert gone(pid)
        await r.collect(0.5)
        assert r.task_items()[-1] == {
            "uid": ack["uid"],
            "state": "CANCELLED",
            "exit_code": None,
            "error": "cancelled",
        }


# ---------------------------------------------------------------- notifications


async def test_status_events_are_batched() -> None:
    async with rig() as r:
        sid = await r.session(notify_batch_window=2.0)
        await r.collect()
        acks = await r.submit(sid, *({"function": f"{THIS}:add", "args": [i]} for i in range(5)))
        await r.wait(sid, [a["uid"] for a in acks])
        assert not any(topic.startswith("task_status") for topic, _ in await r.collect())  # the window is open
        with anyio.fail_after(5):
            while not any(topic == "task_status_batch" for topic, _ in await r.collect(0.1)):
                pass
        batches = [data for topic, data in r.events if topic.startswith("task_status")]
        assert len(batches) == 1  # ten changes within the window: one event
        assert batches[0]["sid"] == sid
        done = [t for t in batches[0]["tasks"] if t["state"] == "DONE"]
        assert sorted(t["uid"] for t in done) == sorted(a["uid"] for a in acks)
        assert done[0] == {
            "uid": done[0]["uid"],
            "state": "DONE",
            "exit_code": 0,
            "error": None,
            "return_value": {"sum": int(done[0]["uid"][-1]) - 1},
            "return_value_is_repr": False,
        }
        assert (
            "session_status",
            {"sid": sid, "status": "ready", "error": None, "backends": ["concurrent"]},
        ) in r.events

        # the size cap: a long window, three changes a batch
        sid = await r.session(notify_batch_window=30, notify_batch_size=3)
        r.events.clear()
        await r.collect()
        r.events.clear()
        acks = await r.submit(sid, *({"function": "math:sqrt", "args": [i]} for i in range(7)))
        await r.wait(sid, [a["uid"] for a in acks])
        await r.collect(0.3)
        sizes = [len(data["tasks"]) for topic, data in r.events if topic == "task_status_batch"]
        assert sizes == [3, 3, 3, 3]  # 14 changes (RUNNING, DONE each): 12 sent, 2 wait for the window
        await r.ok("POST", f"unregister_session/{sid}")  # closing flushes them
        await r.collect(0.3)
        sizes = [len(data["tasks"]) for topic, data in r.events if topic == "task_status_batch"]
        assert sizes == [3, 3, 3, 3, 2]


# ---------------------------------------------------------------- session start-up


async def test_calls_before_ready_get_409_and_a_failed_start_424(monkeypatch: pytest.MonkeyPatch) -> None:
    release = anyio.Event()
    real = _backend.start_backend

    async def slow_start(name: str, **kwargs: Any) -> Any:
        await release.wait()
        if name == "noop":
            raise RuntimeError("the noop backend refused to start")
        return await real(name, **kwargs)

    monkeypatch.setattr(_backend, "start_backend", slow_start)
    async with rig() as r:
        answer = await r.ok("POST", "register_session", {})
        sid = answer["sid"]
        assert answer == {"sid": sid, "status": "initializing"}
        for method, path in [("POST", f"submit/{sid}"), ("GET", f"list_tasks/{sid}"), ("POST", f"cancel_all/{sid}")]:
            reply = await r.call(method, path, {"tasks": []} if method == "POST" else None)
            assert reply.status == 409, reply
            assert "still starting" in reply.json()["detail"]
        assert (await r.ok("GET", f"session_status/{sid}"))["status"] == "initializing"
        assert (await r.ok("POST", "register_session", {"sid": sid}))["status"] == "initializing"
        release.set()
        assert (await r.ok("GET", f"session_status/{sid}?wait=10"))["status"] == "ready"
        assert await r.ok("GET", f"list_tasks/{sid}") == {"tasks": []}

        failing = (await r.ok("POST", "register_session", {"backends": ["noop"]}))["sid"]
        status = await r.ok("GET", f"session_status/{failing}?wait=10")
        assert status == {
            "sid": failing,
            "status": "failed",
            "error": "RuntimeError: the noop backend refused to start",
            "backends": ["noop"],
        }
        reply = await r.call("GET", f"list_tasks/{failing}")
        assert reply.status == 424
        assert "refused to start" in reply.json()["detail"]
        await r.collect(0.3)
        assert ("session_status", status) in r.events


# ---------------------------------------------------------------- through a real bridge and edge


async def test_through_a_bridge_over_tls(tls: TLSFiles, example_plugin: str) -> None:
    async with live_system(tls, extra_plugins=(RhapsodyPlugin(),)) as live, live.client() as bridge:
        events: list[tuple[str, Any]] = []

        async def on_event(edge: str, plugin: str, topic: str, data: Any) -> None:
            events.append((topic, data))

        await bridge.register_callback("e1", "rhapsody", None, on_event)
        sid = (await bridge.request("POST", "/e1/rhapsody/register_session", json={})).json()["sid"]
        await wait_for(
            lambda: (
                ("session_status", {"sid": sid, "status": "ready", "error": None, "backends": ["concurrent"]}) in events
            )
        )
        tasks = [
            {"uid": "echo", "executable": "/bin/echo", "arguments": ["over", "tls"]},
            {"uid": "sleep", "executable": "sleep", "arguments": ["30"]},
        ]
        acks = (await bridge.request("POST", f"/e1/rhapsody/submit/{sid}", json={"tasks": tasks})).json()
        assert acks == [{"uid": "echo", "state": "PENDING"}, {"uid": "sleep", "state": "PENDING"}]
        [echo] = (
            await bridge.request("POST", f"/e1/rhapsody/wait/{sid}", json={"uids": ["echo"], "timeout": 10})
        ).json()
        assert (echo["state"], echo["stdout"]) == ("DONE", "over tls\n")
        cancelled = (await bridge.request("POST", f"/e1/rhapsody/cancel/{sid}/sleep")).json()
        assert cancelled == {"uid": "sleep", "state": "CANCELLED", "cancelled": True}
        record = (await bridge.request("GET", f"/e1/rhapsody/task/{sid}/sleep")).json()
        if record["pid"] is not None:
            assert gone(record["pid"])

        def changes() -> list[tuple[str, str]]:
            out = []
            for topic, data in events:
                items = data["tasks"] if topic == "task_status_batch" else [data] if topic == "task_status" else []
                out += [(i["uid"], i["state"]) for i in items]
            return out

        await wait_for(lambda: ("sleep", "CANCELLED") in changes() and ("echo", "DONE") in changes())
        await bridge.request("POST", f"/e1/rhapsody/unregister_session/{sid}")
