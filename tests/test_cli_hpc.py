"""The HPC verbs of `radical-edge` (queues, submit, jobs, cancel), run as a user runs them: a process.

submit/jobs/cancel run against the real psij plugin with its local executor (no Slurm needed);
queues against the real queue_info plugin on the real Slurm (skipped without one).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import anyio
import pytest

from radical_edge_cli._hpc import duration_seconds, exit_status, job_spec, queue_rows
from radical_edge_client import JobUpdate

from .client_helpers import TOKEN, Live, TLSFiles, example_plugin, live_system, tls
from .hpc_helpers import psij_plugin, queue_info_plugin
from .slurm_helpers import Slurm

pytestmark = pytest.mark.anyio
__all__ = ["example_plugin", "tls"]  # fixtures, imported for pytest


# ---------------------------------------------------------------- the pieces, alone


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90 * 60),  # sbatch: a bare number is minutes
        ("5:30", 5 * 60 + 30),
        ("1:00:00", 3600),
        ("2-0", 2 * 86400),
        ("1-2:30", 86400 + 2 * 3600 + 30 * 60),
        ("1-00:00:10", 86410),
        ("45s", 45),
        ("2h", 7200),
        ("1.5d", 129600),
    ],
)
def test_time_limits_as_sbatch_takes_them(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1:2:3:4", "0", "-5", "1-", "h"])
def test_bad_time_limits(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration_seconds(text)


def test_job_spec_of_the_options() -> None:
    args = SimpleNamespace(
        cmd=["sim", "-n", "4"], queue="debug", account="proj", time=600, nodes=2, name="run1", directory="/scratch"
    )
    assert job_spec(args) == {
        "executable": "sim",
        "arguments": ["-n", "4"],
        "name": "run1",
        "directory": "/scratch",
        "attributes": {"queue_name": "debug", "account": "proj", "duration": 600, "node_count": 2},
    }
    bare = SimpleNamespace(cmd=["true"], queue=None, account=None, time=None, nodes=None, name=None, directory=None)
    assert job_spec(bare) == {"executable": "true", "arguments": []}


@pytest.mark.parametrize(
    ("state", "code", "status"),
    [("DONE", 0, 0), ("DONE", None, 0), ("FAILED", 3, 3), ("FAILED", None, 1), ("CANCELLED", None, 1),
     ("CANCELLED", 0, 1), ("FAILED", -15, 143), ("FAILED", 300, 255)],
)  # fmt: skip
def test_exit_status_of_the_final_state(state: str, code: int | None, status: int) -> None:
    assert exit_status(JobUpdate("j", "status", state, code)) == status


def test_queue_table() -> None:
    rows = queue_rows(
        {
            "debug": {"state": "up", "default": True, "nodes_idle": 3, "nodes_total": 4, "cpus_per_node": 64,
                      "mem_per_node_mb": 257000, "gpus_per_node": 0, "time_limit": 30},
            "long": {"state": "up", "nodes_idle": 0, "nodes_total": 10, "cpus_per_node": 128,
                     "mem_per_node_mb": 1536, "time_limit": 2 * 1440 + 90},
            "odd": {"time_limit": "UNLIMITED"},
        }
    )  # fmt: skip
    assert rows[0] == ["QUEUE", "STATE", "NODES(IDLE/TOTAL)", "CPUS/NODE", "MEMORY/NODE", "GPUS/NODE", "TIME LIMIT"]
    assert rows[1] == ["debug*", "up", "3/4", "64", "251G", "0", "0:30:00"]
    assert rows[2] == ["long", "up", "0/10", "128", "1.5G", "-", "2-1:30:00"]
    assert rows[3] == ["odd", "-", "-/-", "-", "-", "-", "UNLIMITED"]


# ---------------------------------------------------------------- as a process


def verb(system: Live, name: str, *args: str, command: tuple[str, ...] = ()) -> list[str]:
    """``radical-edge NAME ... ARGS [-- COMMAND]``: the connection options go before the ``--``."""
    connection = ["--url", system.url, "--token", TOKEN, "--cert", str(system.tls.ca)]
    return [sys.executable, "-m", "radical_edge_cli", name, *connection, *args, *(("--", *command) if command else ())]


async def run(argv: list[str], *, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(timeout):
        return await anyio.run_process(argv, check=False)


@pytest.mark.parametrize("name", ["queues", "submit", "jobs", "cancel"])
async def test_each_verb_has_help(name: str) -> None:
    done = await run([sys.executable, "-m", "radical_edge_cli", name, "--help"])
    assert done.returncode == 0
    text = done.stdout.decode()
    assert text.startswith(f"usage: radical-edge {name}")
    assert "--json" in text


async def test_submit_without_a_command_is_a_usage_error() -> None:
    done = await run([sys.executable, "-m", "radical_edge_cli", "submit", "e1", "sh", "-c", "x"])
    assert done.returncode == 2
    assert "put the command after '--'" in done.stderr.decode()


@pytest.fixture
async def hpc(tls: TLSFiles, example_plugin: str, tmp_path: Path) -> AsyncIterator[Live]:
    async with live_system(tls, extra_plugins=(psij_plugin(base_dir=tmp_path / "psij"),)) as system:
        yield system


async def test_submit_follow_streams_output_and_exits_with_the_jobs_code(hpc: Live) -> None:
    script = "echo hi; sleep 0.3; echo err >&2; exit 3"
    done = await run(verb(hpc, "submit", "e1", "--executor", "local", "--follow", command=("sh", "-c", script)))
    assert done.returncode == 3, done.stderr
    assert done.stdout.decode() == "hi\n"
    assert done.stderr.decode() == "err\n"
    ok = await run(verb(hpc, "submit", "e1", "--executor", "local", "-f", command=("echo", "a", "--", "-b")))
    assert (ok.returncode, ok.stdout.decode(), ok.stderr.decode()) == (0, "a -- -b\n", "")


async def test_submit_follow_json_lines(hpc: Live) -> None:
    done = await run(verb(hpc, "submit", "e1", "--executor", "local", "--follow", "--json", command=("echo", "x")))
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert events[0]["event"] == "submitted"
    assert [e["data"] for e in events if e["event"] == "output"] == ["x\n"]
    assert (events[-1]["event"], events[-1]["state"], events[-1]["exit_code"]) == ("status", "DONE", 0)


async def test_submit_jobs_cancel(hpc: Live) -> None:
    submitted = await run(verb(hpc, "submit", "e1", "--executor", "local", "--name", "nap", command=("sleep", "30")))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.decode().strip()
    assert job_id
    assert "\n" not in job_id
    table = (await run(verb(hpc, "jobs", "e1"))).stdout.decode().splitlines()
    assert table[0].split() == ["JOB", "NATIVE", "ID", "EXECUTOR", "STATE", "EXIT", "COMMAND"]
    (row,) = [line for line in table if line.startswith(job_id)]
    assert "sleep 30" in row
    assert "local" in row
    listed = json.loads((await run(verb(hpc, "jobs", "e1", "--json"))).stdout)
    assert job_id in [j["job_id"] for j in listed]
    cancelled = await run(verb(hpc, "cancel", "e1", job_id))
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.decode() == f"{job_id} CANCELLED\n"
    again = json.loads((await run(verb(hpc, "jobs", "e1", "--json"))).stdout)
    assert {j["job_id"]: j["state"] for j in again}[job_id] == "CANCELLED"


async def test_follow_a_cancelled_job_exits_1(hpc: Live) -> None:
    argv = verb(hpc, "submit", "e1", "--executor", "local", "--follow", command=("sh", "-c", "echo started; sleep 30"))
    async with await anyio.open_process(argv) as proc:
        assert proc.stdout is not None
        with anyio.fail_after(30):
            assert (await proc.stdout.receive()).startswith(b"started")
        jobs = json.loads((await run(verb(hpc, "jobs", "e1", "--json"))).stdout)
        running = [j["job_id"] for j in jobs if j["state"] == "RUNNING"]
        assert len(running) == 1
        assert (await run(verb(hpc, "cancel", "e1", running[0]))).returncode == 0
        with anyio.fail_after(30):
            await proc.wait()
        assert proc.returncode == 1
        assert proc.stderr is not None
        assert b"CANCELLED" in await proc.stderr.receive()


async def test_errors_are_one_line_and_exit_1(hpc: Live) -> None:
    for argv in (
        verb(hpc, "jobs", "nowhere"),
        verb(hpc, "cancel", "e1", "no-such-job"),
        verb(hpc, "queues", "e1"),  # no queue_info on this edge
        verb(hpc, "submit", "e1", "--executor", "local", command=("/no/such/program",)),
    ):
        done = await run(argv)
        err = done.stderr.decode()
        if done.returncode == 0:  # a missing program may be accepted, and fail as a job: that is fine too
            assert argv[-1] == "/no/such/program"
            continue
        assert done.returncode == 1, (argv, err)
        assert err.count("\n") == 1, err
        assert "Traceback" not in err


async def test_queues_table_on_slurm(slurm: Slurm, tls: TLSFiles, example_plugin: str) -> None:
    async with live_system(tls, extra_plugins=(queue_info_plugin(),)) as system:
        done = await run(verb(system, "queues", "e1"))
        assert done.returncode == 0, done.stderr
        lines = done.stdout.decode().splitlines()
        assert lines[0].split()[:3] == ["QUEUE", "STATE", "NODES(IDLE/TOTAL)"]
        names = [line.split()[0] for line in lines[1:]]
        default = slurm.default_partition
        assert f"{default}*" in names
        assert set(slurm.partitions) <= {n.rstrip("*") for n in names}
        info = json.loads((await run(verb(system, "queues", "e1", "--json", "--user", "*", "--force"))).stdout)
        assert default in info["queues"]
        assert info["queues"][default]["default"] is True


async def test_ctrl_c_stops_following_not_the_job(hpc: Live) -> None:
    argv = verb(hpc, "submit", "e1", "--executor", "local", "--follow", command=("sh", "-c", "echo started; sleep 30"))
    async with await anyio.open_process(argv) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        with anyio.fail_after(30):
            assert (await proc.stdout.receive()).startswith(b"started")
        proc.send_signal(signal.SIGINT)
        with anyio.fail_after(30):
            await proc.wait()
        err = (await proc.stderr.receive()).decode()
    assert proc.returncode == 130
    assert "Traceback" not in err
    (job_id,) = [j["job_id"] for j in json.loads((await run(verb(hpc, "jobs", "e1", "--json"))).stdout)]
    assert f"job {job_id} goes on (radical-edge cancel e1 {job_id} stops it)" in err
    assert (await run(verb(hpc, "cancel", "e1", job_id))).stdout.decode() == f"{job_id} CANCELLED\n"
