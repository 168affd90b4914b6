"""The psij plugin: real jobs through PSI/J's local executor and the machine's real Slurm, behind a real tunnel.

Local jobs: states, exit codes, output (status and live ``job_output`` events),
``job_status`` exactly once per transition, cancel (the process is gone), invalid
specs, records outliving their session, the cleanup policy.  Slurm (skipped
without one, failed under ``RADICAL_EDGE_REQUIRE_SLURM=1``): a job's states
reach the user within about 2 s of Slurm's, a 2-node request reaches Slurm as 2
nodes, Slurm's refusal is a 422 with its words, cancel, and a job PSI/J cannot
follow (its squeue parsing fails) is still reported right through the reconcile.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from radical_edge_plugins.psij import PsijPlugin
from radical_edge_plugins.psij._output import decode, read_from, tail
from radical_edge_plugins.psij._reconcile import parse_sacct, parse_squeue
from radical_edge_plugins.psij._spec import SpecError, parse_duration, parse_spec
from radical_edge_plugins.psij._state import JobRecord, JobTable
from radical_edge_plugins.scheduler import JobState

from radical_edge_edge import discover

from .psij_helpers import FINAL, PsijEdge, psij_edge
from .slurm_helpers import Slurm

pytestmark = pytest.mark.anyio

SH = "/bin/sh"


def sh(script: str, **spec: Any) -> dict[str, Any]:
    return {"executable": SH, "arguments": ["-c", script], **spec}


async def finished(edge: PsijEdge, sid: str, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    await edge.wait_state(job_id, FINAL, timeout)
    return await edge.status(sid, job_id)


# ---------------------------------------------------------------- local executor


def test_registered_as_an_entry_point() -> None:
    eps = discover()
    assert "psij" in eps, f"psij not among {sorted(eps)}: is the project installed (pip install -e .)?"
    assert eps["psij"].load() is PsijPlugin


async def test_local_job_done_with_output_and_one_event_per_transition(tmp_path: Path) -> None:
    async with psij_edge(tmp_path) as edge:
        sid = await edge.session()
        job = await edge.submit(sid, {"executable": "/bin/echo", "arguments": ["hello", "world"]})
        assert set(job) == {"job_id", "native_id", "executor", "state"}
        assert job["executor"] == "local"
        assert job["native_id"].isdigit()  # the pid
        status = await finished(edge, sid, job["job_id"])
        assert status["state"] == "DONE"
        assert status["exit_code"] == 0
        assert status["stdout"] == "hello world\n"
        assert status["stderr"] == ""
        assert (status["stdout_offset"], status["stderr_offset"]) == (12, 0)
        await anyio.sleep(0.5)  # nothing more may come
        assert edge.states(job["job_id"]) == ["PENDING", "RUNNING", "DONE"]
        done = edge.job_events(job["job_id"])[-1].data
        assert done["exit_code"] == 0
        assert done["previous"] == "RUNNING"
        assert done["native_id"] == job["native_id"]
        assert [h["state"] for h in status["history"]] == ["PENDING", "RUNNING", "DONE"]

        listed = (await edge.call("GET", f"list_jobs/{sid}")).json()["jobs"]
        assert [(j["job_id"], j["state"], j["exit_code"], j["executable"]) for j in listed] == [
            (job["job_id"], "DONE", 0, "/bin/echo")
        ]
        assert listed[0]["arguments"] == ["hello", "world"]
        executors = (await edge.call("GET", "executors")).json()
        assert "local" in executors["executors"]
        assert executors["default"] in executors["executors"]
        # the output files are the plugin's, under its directory for this edge
        assert Path(status["metadata"]["stdout_path"]) == tmp_path / "e1" / f"{job['job_id']}.out"


async def test_local_job_failing_reports_its_exit_code(tmp_path: Path) -> None:
    async with psij_edge(tmp_path) as edge:
        sid = await edge.session()
        job = await edge.submit(sid, sh("echo out; echo oops >&2; exit 3"))
        status = await finished(edge, sid, job["job_id"])
        assert (status["state"], status["exit_code"]) == ("FAILED", 3)
        assert (status["stdout"], status["stderr"]) == ("out\n", "oops\n")
        await anyio.sleep(0.5)
        assert edge.states(job["job_id"]) == ["PENDING", "RUNNING", "FAILED"]
        assert edge.job_events(job["job_id"])[-1].data["exit_code"] == 3

        # a missing executable still submits (PSI/J's local executor) and fails with 127
        job = await edge.submit(sid, {"executable": str(tmp_path / "no-such-program")})
        status = await finished(edge, sid, job["job_id"])
        assert (status["state"], status["exit_code"]) == ("FAILED", 127)


async def test_job_output_events_arrive_while_the_job_runs(tmp_path: Path) -> None:
    script = "for i in 1 2 3 4 5; do echo line $i; echo err $i >&2; sleep 0.4; done; printf 'caf\\303\\251'"
    async with psij_edge(tmp_path, output_interval=0.2) as edge:
        sid = await edge.session()
        job = await edge.submit(sid, sh(script))
        final = await edge.wait_state(job["job_id"])
        assert final.data["state"] == "DONE"
        before_end = [e for e in edge.job_events(job["job_id"], "job_output") if e.received < final.received]
        assert len(before_end) >= 3, "output must arrive while the job runs, not only at its end"
        assert before_end[0].received < final.received - 1.0

        expected = {
            "stdout": "".join(f"line {i}\n" for i in range(1, 6)) + "café",
            "stderr": "".join(f"err {i}\n" for i in range(1, 6)),
        }

        def joined(stream: str) -> str:
            return "".join(
                e.data["data"] for e in edge.job_events(job["job_id"], "job_output") if e.data["stream"] == stream
            )

        await edge.wait_for(lambda: joined("stdout") == expected["stdout"], 5, "all of stdout in events")
        await edge.wait_for(lambda: joined("stderr") == expected["stderr"], 5, "all of stderr in events")
        for stream in ("stdout", "stderr"):
            offset = 0
            for e in edge.job_events(job["job_id"], "job_output"):
                if e.data["stream"] == stream:
                    assert e.data["offset"] == offset  # contiguous, byte offsets
                    assert e.data["size"] == len(e.data["data"].encode())
                    offset += e.data["size"]

        # the status route reads from any byte offset
        status = await edge.status(sid, job["job_id"], stdout_offset=7)
        assert status["stdout"] == expected["stdout"].encode()[7:].decode()
        assert status["stdout_offset"] == len(expected["stdout"].encode())

        # no output events when the submit asks for none
        quiet = await edge.submit(sid, sh("echo x; sleep 0.5"), stream_output=False)
        await edge.wait_state(quiet["job_id"])
        await anyio.sleep(0.5)
        assert edge.job_events(quiet["job_id"], "job_output") == []


async def test_cancel_kills_the_process_and_stays_cancelled(tmp_path: Path) -> None:
    async with psij_edge(tmp_path) as edge:
        sid = await edge.session()
        job = await edge.submit(sid, sh("sleep 30"))
        pid = int(job["native_id"])
        await edge.wait_state(job["job_id"], ("RUNNING",))
        assert psutil.pid_exists(pid)
        reply = await edge.call("POST", f"cancel/{sid}/{job['job_id']}")
        assert reply.status == 200, reply
        assert reply.json() == {
            "job_id": job["job_id"],
            "native_id": job["native_id"],
            "state": "CANCELLED",
            "cancelled": True,
        }

        def gone() -> bool:
            try:
                return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        await edge.wait_for(gone, 5, f"process {pid} to end")
        await anyio.sleep(1.0)  # the reaper's FAILED/CANCELED after the kill must not show
        assert edge.states(job["job_id"]) == ["PENDING", "RUNNING", "CANCELLED"]
        assert (await edge.status(sid, job["job_id"]))["state"] == "CANCELLED"
        # cancelling a final job changes nothing
        again = (await edge.call("POST", f"cancel/{sid}/{job['job_id']}")).json()
        assert (again["state"], again["cancelled"]) == ("CANCELLED", False)
        done = await edge.submit(sid, {"executable": "/bin/true"})
        await edge.wait_state(done["job_id"])
        late = (await edge.call("POST", f"cancel/{sid}/{done['job_id']}")).json()
        assert (late["state"], late["cancelled"]) == ("DONE", False)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"job_spec": {"arguments": ["x"]}, "executor": "local"}, "executable is required"),
        ({"job_spec": {"executable": ""}, "executor": "local"}, "executable is required"),
        ({"job_spec": {"executable": "/bin/true"}, "executor": "nope"}, "unknown executor 'nope' (available:"),
        (
            {"job_spec": {"executable": "/bin/true", "attributes": {"duration": "soon"}}, "executor": "local"},
            "duration",
        ),
        ({"job_spec": {"executable": "/bin/true", "attributes": {"duration": -5}}, "executor": "local"}, "duration"),
        ({"job_spec": {"executable": "/bin/true", "attributes": {"colour": "red"}}, "executor": "local"}, "colour"),
        ({"job_spec": {"executable": "/bin/true", "arguments": "-c x"}, "executor": "local"}, "list of strings"),
        ({"job_spec": {"executable": "/bin/true", "nodes": 2}}, "unknown job_spec field(s) 'nodes'"),
        ({"job_spec": {"executable": "/bin/true", "resources": {"node_count": 0}}}, "positive integer"),
        ({"job_spec": {"executable": "/bin/true", "custom_attributes": {"constraint": "x"}}}, "scheduler prefix"),
        # PSI/J's own check, in its words
        (
            {
                "job_spec": {
                    "executable": "/bin/true",
                    "resources": {"node_count": 2, "processes_per_node": 2, "process_count": 3},
                }
            },
            "process_count",
        ),
        ({"job_spec": {"executable": "/bin/true", "directory": "/no/such/dir"}}, "No such file or directory"),
        ({"job_spec": "echo hi"}, "job_spec must be an object"),
        ({"job_spec": {"executable": "/bin/true"}, "what": 1}, "unknown field(s) 'what'"),
    ],
)
async def test_invalid_specs_are_422_with_the_reason(tmp_path: Path, body: dict[str, Any], expected: str) -> None:
    async with psij_edge(tmp_path) as edge:
        sid = await edge.session()
        body.setdefault("executor", "local")
        reply = await edge.call("POST", f"submit/{sid}", body)
        assert reply.status == 422, reply
        assert expected in str(reply.json()["detail"]), reply
        assert len(edge.plugin.jobs) == 0
        assert edge.events == []


async def test_records_outlive_the_session_and_belong_to_their_caller(tmp_path: Path) -> None:
    async with psij_edge(tmp_path, session_ttl=0.3) as edge:
        sid = await edge.session()
        job = await edge.submit(sid, sh("sleep 1.5; echo late"))
        await anyio.sleep(1.0)  # the session expires (and is closed by the plugin's cleanup) while the job runs
        assert (await edge.call("GET", f"list_jobs/{sid}")).status == 410
        final = await edge.wait_state(job["job_id"])
        assert final.data["state"] == "DONE"

        new = await edge.session()
        listed = (await edge.call("GET", f"list_jobs/{new}")).json()["jobs"]
        assert [j["job_id"] for j in listed] == [job["job_id"]]
        status = await edge.status(new, job["job_id"])
        assert (status["state"], status["stdout"]) == ("DONE", "late\n")

        bob = await edge.session(caller="bob")
        assert (await edge.call("GET", f"list_jobs/{bob}", caller="bob")).json() == {"jobs": []}
        for path in (f"status/{bob}/{job['job_id']}",):
            assert (await edge.call("GET", path, caller="bob")).status == 404
        assert (await edge.call("POST", f"cancel/{bob}/{job['job_id']}", caller="bob")).status == 404
        assert (await edge.call("GET", f"status/{new}/{job['job_id']}?stdout_offset=-1")).status == 422
        # upstream clients send empty offsets
        empty = await edge.call("GET", f"status/{new}/{job['job_id']}?stdout_offset=&stderr_offset=")
        assert (empty.status, empty.json()["stdout"]) == (200, "late\n")


async def test_a_job_still_running_when_the_plugin_stops_has_its_pipe_closed_when_it_ends(tmp_path: Path) -> None:
    """PSI/J never closes its launcher's output pipe: the plugin does, also for a job that outlives the plugin
    (else the garbage collector closes it later, with a ResourceWarning, in whatever code runs then)."""
    async with psij_edge(tmp_path) as edge:
        sid = await edge.session()
        job = await edge.submit(sid, sh("sleep 1"))
        record = edge.plugin.jobs.get(job["job_id"])
        assert record is not None
        process = record.process
        assert process is not None
    assert process.poll() is None  # the plugin stopped with the job running
    assert not process.stdout.closed
    with anyio.fail_after(15):
        while not process.stdout.closed:
            await anyio.sleep(0.1)
    assert process.poll() == 0


async def test_cleanup_policy(tmp_path: Path) -> None:
    async with psij_edge(tmp_path, keep_days=1) as edge:
        sid = await edge.session()
        job = await edge.submit(sid, sh("sleep 5"))
        done = await edge.submit(sid, {"executable": "/bin/echo", "arguments": ["x"]})
        await edge.wait_state(done["job_id"])
        finished_record = edge.plugin.jobs.get(done["job_id"])
        assert finished_record is not None
        await edge.wait_for(lambda: finished_record.process is None, 5, "PSI/J's pipe of the finished job closed")
        out_dir = tmp_path / "e1"
        old = time.time() - 2 * 86400
        stale = [out_dir / "0ld-job.out", out_dir / "0ld-job.err", out_dir / "work" / "slurm" / "12.ec"]
        for path in stale:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("old")
        live = edge.plugin.jobs.get(job["job_id"])
        assert live is not None
        live.stdout_path.write_text("quiet for days, but the job still runs")
        for path in [*stale, live.stdout_path]:
            os.utime(path, (old, old))
        finished_record.updated_at = old  # final two days ago: forgotten

        removed = await edge.plugin.run_sync(edge.plugin.cleanup)
        assert sorted(removed) == sorted(stale)
        assert live.stdout_path.exists()
        assert edge.plugin.jobs.get(done["job_id"]) is None
        assert edge.plugin.jobs.get(job["job_id"]) is live
        assert (await edge.call("POST", f"cancel/{sid}/{job['job_id']}")).json()["state"] == "CANCELLED"


# ---------------------------------------------------------------- the pieces


def test_spec_forms_users_write() -> None:
    spec = parse_spec(
        {
            "executable": "/bin/app",
            "arguments": ["-n", 4, 1.5],
            "environment": {"OMP_NUM_THREADS": 8},
            "attributes": {
                "duration": "100",
                "queue_name": "debug",
                "project_name": "myproj",
                "node_count": 2,  # radical.edge's place: must not be lost
                "custom_attributes": {"slurm.constraint": "gpu"},
                "slurm.qos": "high",
            },
            "custom_attributes": {"pbs.l": "filesystems=home"},
        }
    )
    assert spec.arguments == ["-n", "4", "1.5"]
    assert spec.environment == {"OMP_NUM_THREADS": "8"}
    assert spec.duration == timedelta(seconds=100)
    assert (spec.queue_name, spec.account) == ("debug", "myproj")
    assert spec.resources == {"node_count": 2}
    assert spec.custom_attributes == {"slurm.constraint": "gpu", "slurm.qos": "high", "pbs.l": "filesystems=home"}
    orbit = parse_spec(
        {"executable": "x", "resources": {"node_count": 2, "processes_per_node": 4, "exclusive_node_use": True}}
    )
    assert orbit.resources == {"node_count": 2, "processes_per_node": 4, "exclusive_node_use": True}
    with pytest.raises(SpecError, match="node_count is given twice"):
        parse_spec({"executable": "x", "attributes": {"node_count": 2}, "resources": {"node_count": 3}})
    with pytest.raises(SpecError, match="control characters"):
        parse_spec({"executable": "x", "attributes": {"account": "a\n#SBATCH --x"}})
    with pytest.raises(SpecError, match="control characters"):
        parse_spec({"executable": "x", "custom_attributes": {"slurm.comment": "a\nrm -rf ~"}})


def test_durations() -> None:
    assert parse_duration(90) == timedelta(seconds=90)
    assert parse_duration(1.5) == timedelta(seconds=1.5)
    assert parse_duration("100") == timedelta(seconds=100)
    assert parse_duration("01:30:00") == timedelta(hours=1, minutes=30)
    assert parse_duration("2-00:00:10") == timedelta(days=2, seconds=10)
    assert parse_duration("2h") == timedelta(hours=2)
    for bad in ("soon", "", 0, -1, "01:99:00", True, None, float("nan"), 10**9):
        with pytest.raises(SpecError):
            parse_duration(bad)


def test_output_text_keeps_byte_offsets() -> None:
    assert decode("café".encode()[:4], complete=False) == ("caf", 3)  # the é waits for its second byte
    assert decode("café".encode(), complete=False) == ("café", 5)
    assert decode("café".encode(), complete=True) == ("café", 5)
    assert decode(b"a\xffb\xc3", complete=True) == ("a?b?", 4)  # not UTF-8: one '?' per byte
    assert decode("日本".encode()[:4], complete=False) == ("日", 3)


def test_tail_and_read(tmp_path: Path) -> None:
    path = tmp_path / "f.out"
    assert read_from(path, 0, 10, complete=False) == ("", 0)
    assert tail(path, 0, 10, 100, complete=False) is None
    path.write_bytes(b"x" * 500)
    first = tail(path, 0, 10, 100, complete=False)
    assert first is not None
    # 500 bytes wait but only 100 may lag: the oldest are skipped, the event says how many
    assert (first.offset, first.size, first.skipped) == (490, 10, 490)
    second = tail(path, 0, 200, 1000, complete=False)
    assert second is not None
    assert (second.offset, second.size, second.skipped) == (0, 200, 0)
    assert read_from(path, 495, 100, complete=True) == ("xxxxx", 500)


def test_state_machine_emits_each_transition_once() -> None:
    emitted: list[tuple[str, str | None, str]] = []

    def emit(record: JobRecord, previous: JobState | None, source: str) -> None:
        assert record.state is not None
        emitted.append((record.state.value, previous.value if previous else None, source))

    table = JobTable(emit)
    rec = JobRecord("j1", "alice", "s", "slurm", "x", [], None, Path("o"), Path("e"))
    table.add(rec)
    assert table.advance(rec, JobState.PENDING)
    assert not table.advance(rec, JobState.PENDING, source="scheduler")  # callback + poll: once
    assert table.advance(rec, JobState.HELD, source="scheduler")
    assert table.advance(rec, JobState.PENDING, source="scheduler")  # released
    assert table.advance(rec, JobState.RUNNING)
    assert not table.advance(rec, JobState.PENDING)  # never backwards
    assert not table.advance(rec, JobState.HELD)
    assert table.advance(rec, JobState.UNKNOWN, message="squeue: WEIRD", source="scheduler")
    assert not table.advance(rec, JobState.PENDING)  # UNKNOWN does not reset the progress
    assert table.advance(rec, JobState.RUNNING)
    assert table.request_cancel(rec)
    assert table.advance(rec, JobState.DONE, exit_code=0)  # after a cancel, a final state is CANCELLED
    assert rec.state is JobState.CANCELLED
    assert not table.advance(rec, JobState.FAILED, exit_code=1)  # and sticks
    assert not table.request_cancel(rec)
    assert emitted == [
        ("PENDING", None, "psij"),
        ("HELD", "PENDING", "scheduler"),
        ("PENDING", "HELD", "scheduler"),
        ("RUNNING", "PENDING", "psij"),
        ("UNKNOWN", "RUNNING", "scheduler"),
        ("RUNNING", "UNKNOWN", "psij"),
        ("CANCELLED", "RUNNING", "psij"),
    ]


def test_scheduler_output_is_read_line_by_line() -> None:
    text = (
        "6|PENDING|Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions\n"
        "7|PENDING|JobHeldUser\n"
        "8|RUNNING|None\n"
        "garbage\n"
        "9|OUT_OF_MEMORY|OutOfMemory\n"
        "10|FROBNICATED|None\n"
    )
    views = parse_squeue(text)
    assert {k: v.state for k, v in views.items()} == {
        "6": JobState.PENDING,
        "7": JobState.HELD,
        "8": JobState.RUNNING,
        "9": JobState.FAILED,
        "10": JobState.UNKNOWN,
    }
    assert views["6"].message().startswith("squeue: PENDING (Nodes required")
    sacct = parse_sacct("11|COMPLETED|0:0\n12|CANCELLED by 0|0:15\n13|FAILED|3:0\n")
    assert {k: (v.state, v.exit_code) for k, v in sacct.items()} == {
        "11": (JobState.DONE, 0),
        "12": (JobState.CANCELLED, 0),
        "13": (JobState.FAILED, 3),
    }


# ---------------------------------------------------------------- Slurm


def _sacct_times(job: str) -> dict[str, float | None]:
    """Slurm's Start and End of a job (epoch seconds; whole seconds, as accounting keeps them)."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", job, "-o", "Start,End"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0]
    fields = out.strip().split("|") if out.strip() else ["", ""]

    def epoch(text: str) -> float | None:
        try:
            return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()
        except ValueError:
            return None

    return {"start": epoch(fields[0]), "end": epoch(fields[1] if len(fields) > 1 else "")}


def _scontrol(job: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=False).stdout


async def test_slurm_job_states_reach_the_user_within_2_s(tmp_path: Path, slurm: Slurm) -> None:
    slurm.require_accounting()
    async with psij_edge(tmp_path) as edge:
        sid = await edge.session()
        job = await edge.submit(
            sid,
            sh("echo start; sleep 2; echo end", attributes={"duration": 120, "queue_name": slurm.default_partition}),
            executor="slurm",
        )
        slurm.submitted.append(job["native_id"])
        await edge.wait_state(job["job_id"], FINAL, timeout=120)  # the 2 shared cores may be busy a while
        status = await edge.status(sid, job["job_id"])
        assert (status["state"], status["exit_code"]) == ("DONE", 0)
        assert status["stdout"] == "start\nend\n"
        await anyio.sleep(1.5)
        assert edge.states(job["job_id"]) == ["PENDING", "RUNNING", "DONE"]

        times = await anyio.to_thread.run_sync(_sacct_times, job["native_id"])
        assert times["start"] is not None, times
        assert times["end"] is not None, times
        running, done = edge.job_events(job["job_id"])[1:]
        # Slurm records whole seconds: an event within 2 s of the change arrives before start/end + 3
        assert running.received - times["start"] < 3.0, (running.received, times)
        assert done.received - times["end"] < 3.0, (done.received, times)
        outputs = edge.job_events(job["job_id"], "job_output")
        assert outputs
        assert outputs[0].received < done.received  # "start" was seen while it ran


async def test_slurm_two_node_request_reaches_sbatch(tmp_path: Path, slurm: Slurm) -> None:
    async with psij_edge(tmp_path) as edge:
        sid = await edge.session()
        # radical.edge's form (attributes.node_count, which it silently dropped) and radical.orbit's (resources)
        forms = [
            {"attributes": {"node_count": 2, "duration": 60}},
            {"resources": {"node_count": 2}, "attributes": {"duration": 60}},
        ]
        for form in forms:
            job = await edge.submit(sid, sh("hostname", **form), executor="slurm")
            slurm.submitted.append(job["native_id"])
            info = await anyio.to_thread.run_sync(_scontrol, job["native_id"])
            # one node here: Slurm keeps it pending (PartitionNodeLimit), but it asked for 2
            assert "NumNodes=2" in info, info
            reply = await edge.call("POST", f"cancel/{sid}/{job['job_id']}")
            assert reply.json()["state"] == "CANCELLED"


async def test_slurm_refusal_is_422_with_slurms_words(tmp_path: Path, slurm: Slurm) -> None:
    async with psij_edge(tmp_path) as edge:
        sid = await edge.session()
        cases = [
            ({"account": "no-such-account-xyz"}, "Invalid account"),
            ({"queue_name": "no-such-partition"}, "invalid partition"),
        ]
        for attributes, words in cases:
            reply = await edge.call(
                "POST",
                f"submit/{sid}",
                {"job_spec": {"executable": "/bin/true", "attributes": attributes}, "executor": "slurm"},
            )
            assert reply.status == 422, reply
            assert words.lower() in reply.json()["detail"].lower(), reply
            assert "sbatch" in reply.json()["detail"]
        assert len(edge.plugin.jobs) == 0
        # the account that exists is accepted
        job = await edge.submit(
            sid, {"executable": "/bin/true", "attributes": {"account": "myproj", "duration": 60}}, executor="slurm"
        )
        slurm.submitted.append(job["native_id"])
        assert "Account=myproj" in await anyio.to_thread.run_sync(_scontrol, job["native_id"])
        await edge.call("POST", f"cancel/{sid}/{job['job_id']}")


async def test_missing_scheduler_commands_are_422(
    tmp_path: Path, slurm: Slurm, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with psij_edge(tmp_path) as edge:
        sid = await edge.session()
        await anyio.to_thread.run_sync(edge.plugin.executors.get, "slurm")  # made while sbatch is there
        empty = tmp_path / "empty-bin"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))
        # PSI/J itself runs a bare "sbatch": a FileNotFoundError, here a 422 that names the command
        reply = await edge.call("POST", f"submit/{sid}", {"job_spec": {"executable": "/bin/true"}, "executor": "slurm"})
        assert reply.status == 422, reply
        assert "command not found: sbatch" in reply.json()["detail"]
        # an executor not made yet is refused before PSI/J is asked
        reply = await edge.call("POST", f"submit/{sid}", {"job_spec": {"executable": "/bin/true"}, "executor": "pbs"})
        assert reply.status == 422, reply
        assert "qsub, qstat, qdel not found on PATH" in reply.json()["detail"]
        assert len(edge.plugin.jobs) == 0


async def test_slurm_cancel(tmp_path: Path, slurm: Slurm) -> None:
    async with psij_edge(tmp_path) as edge:
        sid = await edge.session()
        job = await edge.submit(sid, sh("sleep 60", attributes={"duration": 120}), executor="slurm")
        slurm.submitted.append(job["native_id"])
        await edge.wait_state(job["job_id"], ("RUNNING",), timeout=60)
        reply = await edge.call("POST", f"cancel/{sid}/{job['job_id']}")
        assert (reply.status, reply.json()["state"]) == (200, "CANCELLED"), reply
        assert await slurm.await_state(job["native_id"], {"CANCELLED"}, timeout=20) == "CANCELLED"
        await anyio.sleep(2.5)  # PSI/J's poll sees CA; the reconcile may look too: nothing new may be announced
        assert edge.states(job["job_id"]) == ["PENDING", "RUNNING", "CANCELLED"]


async def test_slurm_job_psij_cannot_parse_is_reconciled(
    tmp_path: Path, slurm: Slurm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PSI/J's squeue parsing asserts every state and reason is in its tables: one it does not know fails
    every poll and the job would stay QUEUED forever.  Here its state table rejects everything (as for an
    unknown state) while Slurm runs the job for real; the plugin reports what Slurm says, with the exit code."""
    slurm.require_accounting()
    async with psij_edge(tmp_path) as edge:
        executor = await anyio.to_thread.run_sync(edge.plugin.executors.get, "slurm")

        def unknown(state: str) -> Any:
            raise AssertionError(f"state {state!r} not in PSI/J's table")

        monkeypatch.setattr(executor, "_get_state", unknown)
        sid = await edge.session()
        job = await edge.submit(sid, sh("echo hi; sleep 2; exit 3", attributes={"duration": 120}), executor="slurm")
        slurm.submitted.append(job["native_id"])
        final = await edge.wait_state(job["job_id"], FINAL, timeout=120)
        assert (final.data["state"], final.data["exit_code"], final.data["source"]) == ("FAILED", 3, "scheduler")
        events = edge.job_events(job["job_id"])
        assert [e.data["state"] for e in events] == ["PENDING", "RUNNING", "FAILED"]
        assert events[1].data["source"] == "scheduler"
        assert edge.plugin.executors.degraded("slurm")
        status = await edge.status(sid, job["job_id"])
        assert (status["state"], status["exit_code"], status["stdout"]) == ("FAILED", 3, "hi\n")
        times = await anyio.to_thread.run_sync(_sacct_times, job["native_id"])
        assert times["end"] is not None
        assert final.received - times["end"] < 3.0, (final.received, times)


async def test_reconcile_against_real_squeue_and_sacct(tmp_path: Path, slurm: Slurm) -> None:
    """A job PSI/J lost (its poll failed it wholesale) is followed through the scheduler alone."""
    slurm.require_accounting()
    async with psij_edge(tmp_path, stale_after=1.0) as edge:
        native = await slurm.asbatch("--wrap", "sleep 1", time="1", output="/dev/null")
        record = JobRecord("lost-1", "alice", "s", "slurm", "sleep", ["1"], None, tmp_path / "o", tmp_path / "e")
        record.native_id = native
        edge.plugin.jobs.add(record)
        edge.plugin.jobs.advance(record, JobState.PENDING, source="submit")
        record.psij_lost = True
        await edge.wait_state("lost-1", FINAL, timeout=60)
        assert edge.states("lost-1")[-1] == "DONE"
        assert record.exit_code == 0
        assert {e.data["source"] for e in edge.job_events("lost-1")[1:]} == {"scheduler"}


async def test_an_idle_session_expires(tmp_path: Path) -> None:
    """psij's own periodic work must not take the place of Plugin's session expiry (it once shadowed the
    loop that expires sessions, so they never did): an idle session is gone after its TTL."""
    async with psij_edge(tmp_path, session_ttl=0.3) as edge:
        sid = await edge.session()
        assert (await edge.call("GET", f"list_jobs/{sid}")).status == 200
        # collected by the expiry loop itself (nothing touches the session meanwhile)
        gone = lambda: all(session.sid != sid for session in edge.plugin.sessions)  # noqa: E731
        await edge.wait_for(gone, timeout=5, what="the expiry loop to collect the session")
        assert (await edge.call("GET", f"list_jobs/{sid}")).status == 410
