"""The scheduler layer's parsers, field by field, on recorded output (tests/fixtures/).

* ``slurm-22.05/``: real output of this machine's Slurm 22.05.8, captured with jobs running, pending on a
  dependency, held, an array (one task running, the rest throttled), failed (exit 3), cancelled (signal 15).
  ``squeue-running.json`` and ``squeue-running.txt`` were taken at the same moment, so JSON and text are
  checked against each other too.
* ``slurm-23.02/``, ``slurm-24.11/``: written from the Slurm REST/OpenAPI docs (data_parser v0.0.39 and
  v0.0.42): ``{set, infinite, number}`` wrappers, ``job_state`` lists, ``sinfo --json`` as ``{sinfo: [...]}``.
* ``pbs/``: ``qstat -Qf``, ``qstat -Bf``, ``qstat -f`` and ``pbsnodes -a`` text (see its README).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from radical_edge_plugins.scheduler import JobState, pbs, slurm, slurm_state
from radical_edge_plugins.scheduler.records import (
    JOB_FIELDS,
    QUEUE_FIELDS,
    Node,
    Partition,
    duration_seconds,
    limit_minutes,
    memory_mb,
    queue_records,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """The text samples carry local times of the machine they came from (UTC)."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


def by_id(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    assert all(list(j) == list(JOB_FIELDS) for j in jobs), "every record has exactly the job fields, in order"
    return {j["job_id"]: j for j in jobs}


# ---------------------------------------------------------------- Slurm 22.05: real output


def test_squeue_json_22_05_field_by_field() -> None:
    jobs = by_id(slurm.parse_squeue_json(fixture("slurm-22.05/squeue-running.json"), now=1796140125))
    assert set(jobs) == {
        "2",
        "3",
        "4",
        "5_1",
        "5_[2-3]",
        "6",
        "7",
        "8",
        "10",
        "11",
        "12",
        "13",
        "14",
        "15_0",
        "15_[1-2%1]",
    }

    run = jobs["14"]  # sbatch -p batch -J qi-text-run -t 15 -o '/tmp/qi-capture/%x-%j.out' --wrap 'sleep 600'
    assert run == {
        "job_id": "14",
        "job_name": "qi-text-run",
        "user": "root",
        "partition": "batch",
        "state": "RUNNING",
        "nodes": 1,
        "cpus": 1,
        "time_limit": 15,
        "time_used": 4,
        "submit_time": 1796140121,
        "start_time": 1796140121,
        "priority": 4294901750,
        "account": "root",
        "node_list": "vm",
        "native_state": "RUNNING",
        "reason": None,
        "qos": "normal",
        "dependency": None,
        "work_dir": "/tmp/qi-capture",
        "stdout": "/tmp/qi-capture/qi-text-run-14.out",  # %x and %j filled in, as Slurm names the file
        "stderr": "/tmp/qi-capture/qi-text-run-14.out",
        "exit_code": None,
        "exit_signal": None,
        "array_job_id": None,
        "array_task_id": None,
        "end_time": None,
    }

    dep = jobs["3"]  # -d afterok:2, and 2 was cancelled
    assert (dep["state"], dep["reason"], dep["dependency"]) == (
        "PENDING",
        "DependencyNeverSatisfied",
        "afterok:2(failed)",
    )
    assert (dep["start_time"], dep["node_list"], dep["time_limit"]) == (None, None, 10)
    assert dep["stdout"] == dep["stderr"] == "/tmp/qi-capture/slurm-3.out"  # the default, which JSON leaves empty

    held = jobs["4"]  # sbatch -H
    assert (held["state"], held["native_state"], held["reason"], held["priority"]) == (
        "HELD",
        "PENDING",
        "JobHeldUser",
        0,
    )

    task = jobs["15_0"]  # sbatch -a 0-2%1: task 0 runs, 1-2 wait for the throttle
    assert (task["state"], task["array_job_id"], task["array_task_id"]) == ("RUNNING", "15", "0")
    assert task["stdout"] == "/tmp/qi-capture/slurm-15_0.out"  # slurm-%A_%a.out: the file Slurm wrote
    rest = jobs["15_[1-2%1]"]
    assert (rest["state"], rest["reason"], rest["array_job_id"], rest["array_task_id"]) == (
        "PENDING",
        "JobArrayTaskLimit",
        "15",
        "1-2%1",
    )

    failed = jobs["6"]  # --wrap 'exit 3'
    assert (failed["state"], failed["exit_code"], failed["exit_signal"], failed["reason"]) == (
        "FAILED",
        3,
        None,
        "NonZeroExitCode",
    )
    assert failed["end_time"] == 1796139878

    cancelled = jobs["2"]  # running, then scancel: killed by SIGTERM
    assert (cancelled["state"], cancelled["exit_code"], cancelled["exit_signal"]) == ("CANCELLED", 0, 15)
    assert cancelled["time_used"] == 75  # start to end, not to now
    assert (cancelled["stdout"], cancelled["stderr"]) == ("/tmp/qi-capture/run-2.out", "/tmp/qi-capture/run-2.err")

    assert jobs["10"]["state"] == "DONE"
    assert jobs["10"]["exit_code"] == 0
    assert jobs["7"]["state"] == "CANCELLED"  # cancelled while held
    assert jobs["7"]["cpus"] is None  # 22.05 gives no CPU count for a job that never started


def test_squeue_text_22_05_agrees_with_json() -> None:
    """The text fallback (``squeue -O``), captured at the same moment as the JSON, gives the same records
    except what the text cannot carry (exit codes) or what changes with the clock."""
    from_json = by_id(slurm.parse_squeue_json(fixture("slurm-22.05/squeue-running.json"), now=1796140125))
    from_text = by_id(slurm.parse_squeue_text(fixture("slurm-22.05/squeue-running.txt")))
    assert set(from_text) == set(from_json)
    for job_id, job in from_json.items():
        text = from_text[job_id]
        for name in JOB_FIELDS:
            if name in ("exit_code", "exit_signal"):
                assert text[name] is None
            elif name == "cpus" and job[name] is None:
                assert text[name] is not None  # the text says what was asked for
            else:
                assert text[name] == job[name], (job_id, name)


def test_sinfo_22_05_nodes_json_and_text() -> None:
    (node,) = slurm.nodes_from_json(fixture("slurm-22.05/sinfo.json"))
    assert node == Node(name="vm", state="ALLOCATED", partitions=("debug", "batch"), cpus=2, mem_mb=18078)
    assert slurm.nodes_from_text(fixture("slurm-22.05/sinfo.txt")) == [node]


def test_scontrol_partitions_and_queue_records_22_05() -> None:
    parts = slurm.parse_scontrol_partitions(fixture("slurm-22.05/scontrol-partition.txt"))
    assert [p.name for p in parts] == ["debug", "batch"]
    debug, batch = parts
    assert (debug.state, debug.time_limit, debug.default) == ("UP", 30, True)
    assert (batch.state, batch.time_limit, batch.default) == ("UP", 120, False)
    assert debug.extra == {
        "default_time": None,
        "max_nodes": "UNLIMITED",
        "total_cpus": 2,
        "qos": None,
        "allow_accounts": None,
        "allow_qos": None,
    }
    queues = queue_records(parts, slurm.nodes_from_json(fixture("slurm-22.05/sinfo.json")))
    assert list(queues["debug"]) == list(QUEUE_FIELDS)
    assert {k: queues["debug"][k] for k in QUEUE_FIELDS[:12]} == {
        "name": "debug",
        "state": "UP",
        "time_limit": 30,
        "default": True,
        "nodes_total": 1,
        "nodes_available": 1,
        "nodes_idle": 0,  # allocated
        "cpus_per_node": 2,
        "mem_per_node_mb": 18078,
        "gpus_per_node": 0,
        "max_jobs_per_user": None,
        "features": [],
    }


def test_partition_limits_and_qos() -> None:
    line = (
        "PartitionName=gpu AllowGroups=ALL AllowAccounts=astro,chem AllowQos=high,normal Default=NO QoS=gpuqos "
        "DefaultTime=01:00:00 MaxNodes=4 MaxTime=2-00:00:00 State=DRAIN TotalCPUs=256 TotalNodes=4 "
        "JobDefaults=(null) TRES=cpu=256,mem=1000G,node=4,billing=256,gres/gpu=16"
    )
    (part,) = slurm.parse_scontrol_partitions(line, slurm.parse_qos_max_jobs("normal|\ngpuqos|5\n"))
    assert (part.name, part.state, part.time_limit, part.max_jobs_per_user) == ("gpu", "DRAIN", 2880, 5)
    assert part.extra == {
        "default_time": 60,
        "max_nodes": 4,
        "total_cpus": 256,
        "qos": "gpuqos",
        "allow_accounts": ["astro", "chem"],
        "allow_qos": ["high", "normal"],
    }
    assert slurm.parse_scontrol_partitions(line.replace("MaxTime=2-00:00:00", "MaxTime=UNLIMITED"))[0].time_limit == (
        "UNLIMITED"
    )


def test_sacctmgr_associations_22_05() -> None:
    rows = slurm.parse_sacctmgr_assoc(fixture("slurm-22.05/sacctmgr-assoc.txt"))
    assert [(r["cluster"], r["account"], r["user"]) for r in rows] == [
        ("test", "root", None),
        ("test", "root", "root"),
        ("test", "myproj", None),
        ("test", "myproj", "root"),
    ]
    assert rows[3] == {
        "account": "myproj",
        "user": "root",
        "fairshare": 1,
        "qos": "normal",
        "max_jobs": None,
        "max_submit": None,
        "max_wall": None,
        "grp_tres": None,
        "allocated_node_hours": None,
        "used_node_hours": None,
        "remaining_node_hours": None,
        "cluster": "test",
        "partition": None,
        "default_qos": None,
        "max_tres": None,
        "max_tres_per_node": None,
        "grp_jobs": None,
        "grp_submit": None,
        "grp_wall": None,
    }
    (limited,) = slurm.parse_sacctmgr_assoc(
        "frontier|astro|alice|gpu|parent|10|50|2-00:00:00|cpu=512,gres/gpu=8|gres/gpu=4|20|100|30-00:00:00|cpu=4096|normal,high|normal\n"
    )
    assert {k: limited[k] for k in ("fairshare", "max_jobs", "max_submit", "max_wall", "max_tres", "grp_wall")} == {
        "fairshare": "parent",
        "max_jobs": 10,
        "max_submit": 50,
        "max_wall": 2880,
        "max_tres": "cpu=512,gres/gpu=8",
        "grp_wall": 43200,
    }
    assert (limited["qos"], limited["default_qos"], limited["partition"]) == ("normal,high", "normal", "gpu")


# ---------------------------------------------------------------- Slurm 23.02 / 24.11: from the docs


@pytest.mark.parametrize("version", ["23.02", "24.11"])
def test_squeue_json_newer_shapes(version: str) -> None:
    jobs = by_id(slurm.parse_squeue_json(fixture(f"slurm-{version}/squeue.json"), now=1733050360))
    assert list(jobs) == ["1001", "1002", "1003", "2000_3", "2000_[4-9%2]", "1004", "1005", "1006"]

    big = jobs["1001"]
    assert {k: big[k] for k in JOB_FIELDS[:14]} == {
        "job_id": "1001",
        "job_name": "sim-big",
        "user": "alice",
        "partition": "gpu",
        "state": "RUNNING",
        "nodes": 2,
        "cpus": 128,
        "time_limit": 120,
        "time_used": 300,
        "submit_time": 1733050000,
        "start_time": 1733050060,
        "priority": 4294901700,
        "account": "astro",
        "node_list": "node[01-02]",
    }
    assert (big["qos"], big["work_dir"], big["stdout"], big["stderr"]) == (
        "high",
        "/lustre/alice/sim",
        "/lustre/alice/sim/sim-big.1001.out",
        "/lustre/alice/sim/sim-big.1001.err",
    )
    assert (big["exit_code"], big["end_time"]) == (None, None)  # not finished: no exit code yet

    assert jobs["1002"]["dependency"] == "afterok:1001(unfulfilled)"
    assert (jobs["1002"]["state"], jobs["1002"]["start_time"]) == ("PENDING", None)  # {set, number: 0}: not known
    held = jobs["1003"]
    assert (held["state"], held["user"], held["account"], held["time_limit"]) == ("HELD", "bob", "chem", "UNLIMITED")
    assert held["stdout"] == "/home/bob/slurm-1003.out"

    assert (jobs["2000_3"]["array_job_id"], jobs["2000_3"]["array_task_id"]) == ("2000", "3")
    assert jobs["2000_[4-9%2]"]["array_task_id"] == "4-9%2"
    assert jobs["2000_[4-9%2]"]["stdout"] == "/home/alice/sweep/slurm-2000_%a.out"  # %a: one file per task

    assert (jobs["1004"]["state"], jobs["1004"]["exit_code"], jobs["1004"]["exit_signal"]) == ("FAILED", 2, None)
    assert (jobs["1005"]["state"], jobs["1005"]["exit_code"], jobs["1005"]["exit_signal"]) == ("CANCELLED", 0, 15)
    assert (jobs["1006"]["state"], jobs["1006"]["native_state"], jobs["1006"]["time_used"]) == ("DONE", "COMPLETED", 60)


@pytest.mark.parametrize("version", ["23.02", "24.11"])
def test_sinfo_json_newer_shape(version: str) -> None:
    nodes = {n.name: n for n in slurm.nodes_from_json(fixture(f"slurm-{version}/sinfo.json"))}
    assert nodes["node01"] == Node(
        name="node01",
        state="MIXED",
        partitions=("gpu", "batch"),
        cpus=64,
        mem_mb=257000,
        gpus=4,
        features=("epyc", "a100"),
    )
    assert nodes["node03"].idle
    if version == "24.11":
        assert nodes["node04"].flags == {"DRAIN"}
        assert not nodes["node04"].available
        assert nodes["node05"].flags == {"NOT_RESPONDING"}
        assert (nodes["node06"].available, nodes["node06"].idle) == (True, False)  # powered down: boots on demand
        parts = [
            Partition("gpu", "UP", 120),
            Partition("batch", "UP", 1440, default=True),
            Partition("debug", "UP", "UNLIMITED"),
        ]
        queues = queue_records(parts, nodes.values())
        counts = {n: (q["nodes_total"], q["nodes_available"], q["nodes_idle"]) for n, q in queues.items()}
        assert counts == {"gpu": (2, 2, 0), "batch": (4, 3, 1), "debug": (3, 1, 0)}
        assert (queues["gpu"]["gpus_per_node"], queues["gpu"]["cpus_per_node"], queues["gpu"]["features"]) == (
            4,
            64,
            ["a100", "epyc"],
        )
        assert (queues["batch"]["cpus_per_node"], queues["batch"]["mem_per_node_mb"]) == (128, 515000)


# ---------------------------------------------------------------- PBS


def test_pbs_queues_and_nodes() -> None:
    server = pbs.parse_qstat_server(fixture("pbs/qstat-Bf.txt"))
    assert (server["default_queue"], server["pbs_version"]) == ("workq", "22.05.11")
    parts = pbs.parse_qstat_queues(fixture("pbs/qstat-Qf.txt"), server["default_queue"])
    assert [(p.name, p.state, p.time_limit, p.default, p.max_jobs_per_user) for p in parts] == [
        ("workq", "UP", 1440, True, 10),
        ("gpu", "UP", 360, False, None),
        ("maint", "DRAIN", "UNLIMITED", False, 2),  # enabled = False: takes no new jobs
        ("routeq", "DOWN", "UNLIMITED", False, None),  # started = False
    ]
    assert (parts[0].extra["default_time"], parts[1].extra["max_nodes"]) == (60, 2)

    nodes = {n.name: n for n in pbs.parse_pbsnodes(fixture("pbs/pbsnodes-a.txt"))}
    assert nodes["cn001"] == Node(name="cn001", state="ALLOCATED", cpus=36, mem_mb=196608)
    assert nodes["cn002"].state == "MIXED"  # free, 8 of 36 CPUs assigned
    assert (nodes["cn003"].state, nodes["cn003"].flags, nodes["cn003"].mem_mb) == ("DOWN", {"DRAIN"}, 196608)
    assert nodes["gn001"] == Node(name="gn001", state="IDLE", partitions=("gpu",), cpus=64, mem_mb=515000, gpus=4)

    queues = queue_records(parts, nodes.values())
    counts = {n: (q["nodes_total"], q["nodes_available"], q["nodes_idle"]) for n, q in queues.items()}
    # gn001 belongs to gpu; the others serve every queue without nodes of its own; a routing queue has none
    assert counts == {"workq": (3, 2, 0), "gpu": (1, 1, 1), "maint": (3, 2, 0), "routeq": (0, 0, 0)}
    assert (queues["gpu"]["gpus_per_node"], queues["workq"]["mem_per_node_mb"]) == (4, 196608)


def test_torque_pbsnodes() -> None:
    nodes = {n.name: n for n in pbs.parse_pbsnodes(fixture("pbs/pbsnodes-torque.txt"))}
    assert nodes["node01"] == Node(
        name="node01", state="IDLE", cpus=16, mem_mb=65843524 // 1024, gpus=2, features=("haswell", "ib")
    )
    assert nodes["node02"].state == "ALLOCATED"  # job-exclusive


def test_pbs_jobs_field_by_field() -> None:
    jobs = by_id(pbs.parse_qstat_jobs(fixture("pbs/qstat-f.txt"), now=0))
    assert list(jobs) == ["101.pbs01", "102.pbs01", "103[].pbs01", "103[3].pbs01", "104.pbs01", "105.pbs01"]
    assert jobs["101.pbs01"] == {
        "job_id": "101.pbs01",
        "job_name": "sim",
        "user": "alice",
        "partition": "workq",
        "state": "RUNNING",
        "nodes": 1,
        "cpus": 36,
        "time_limit": 120,
        "time_used": 1070,  # resources_used.walltime 00:17:50
        "submit_time": 1733047200,  # ctime Sun Dec  1 10:00:00 2024
        "start_time": 1733047330,
        "priority": 0,
        "account": "astro",
        "node_list": "cn001",
        "native_state": "R",
        "reason": "Job run at Sun Dec 01 at 10:02 on (cn001:ncpus=36:mem=4194304kb)",
        "qos": None,
        "dependency": None,
        "work_dir": "/home/alice/sim",  # PBS_O_WORKDIR, from a Variable_List wrapped over five lines
        "stdout": "/home/alice/sim/sim.o101",
        "stderr": "/home/alice/sim/sim.e101",
        "exit_code": None,
        "exit_signal": None,
        "array_job_id": None,
        "array_task_id": None,
        "end_time": None,
    }
    post = jobs["102.pbs01"]
    assert (post["state"], post["dependency"], post["reason"]) == (
        "HELD",
        "afterok:101.pbs01@pbs01",
        "Job held by afterok dependency on 101.pbs01",
    )
    array = jobs["103[].pbs01"]
    assert (array["state"], array["array_job_id"], array["array_task_id"]) == ("RUNNING", "103", "1-10")
    assert array["work_dir"] == "/home/bob/runs,2024"  # an escaped comma inside a variable
    task = jobs["103[3].pbs01"]
    assert (task["array_job_id"], task["array_task_id"], task["node_list"], task["time_used"]) == (
        "103",
        "3",
        "cn002",
        300,
    )
    bad = jobs["104.pbs01"]
    assert (bad["state"], bad["exit_code"], bad["nodes"], bad["node_list"], bad["end_time"]) == (
        "FAILED",
        2,
        2,
        "gn001,gn002",
        1733040102,
    )
    killed = jobs["105.pbs01"]
    assert (killed["state"], killed["exit_code"], killed["exit_signal"]) == ("CANCELLED", 271, 15)


def test_pbs_blocks_keep_wrapped_values_whole() -> None:
    text = "Job Id: 1.s\n    Variable_List = A=1,\n\tB=2,C=\n\t3\n    queue = q\n"
    assert list(pbs.blocks(text, pbs.re.compile(r"^Job Id:\s*(\S+)"))) == [
        ("1.s", {"Variable_List": "A=1,B=2,C=3", "queue": "q"})
    ]


# ---------------------------------------------------------------- the small pieces


def test_durations_and_limits() -> None:
    assert [
        duration_seconds(s) for s in ("30:00", "2:00:00", "1-00:00:00", "1-12", "45", "0:05", "UNLIMITED", "N/A", "x")
    ] == [
        1800,
        7200,
        86400,
        129600,
        2700,
        5,
        None,
        None,
        None,
    ]
    assert [limit_minutes(s) for s in ("00:30:00", "02:00:00", "00:00:30", "INFINITE")] == [30, 120, 1, "UNLIMITED"]
    assert [memory_mb(s) for s in ("18078", "18078M", "257gb", "263597kb", "1tb", "1073741824b", "", "lots")] == [
        18078,
        18078,
        263168,
        257,
        1048576,
        1024,
        None,
        None,
    ]


def test_gres_gpu_counts() -> None:
    cases = {
        "gpu:4": 4,
        "gpu:a100:4(S:0-1)": 4,
        "gpu:a100:2,gpu:v100:2": 4,
        "gpu": 1,
        "(null)": 0,
        "": 0,
        "shard:8,gpu:mi250:8(S:0-7)": 8,
    }
    assert {g: slurm.gpu_count(g) for g in cases} == cases


def test_node_states() -> None:
    assert slurm.node_state("idle~") == ("IDLE", {"POWERED_DOWN"})
    assert slurm.node_state("drained") == ("IDLE", {"DRAIN"})
    assert slurm.node_state("draining") == ("ALLOCATED", {"DRAIN"})
    assert slurm.node_state("down*") == ("DOWN", {"NOT_RESPONDING"})
    assert slurm.node_state("mixed", ["DRAIN"]) == ("MIXED", {"DRAIN"})
    assert slurm.node_state(["IDLE", "DRAIN"]) == ("IDLE", {"DRAIN"})
    assert not Node("n", "IDLE", frozenset({"DRAIN"})).available
    assert Node("n", "MIXED").available
    assert not Node("n", "MIXED").idle


def test_exit_codes_and_states() -> None:
    assert slurm.decode_exit(768) == (3, None)
    assert slurm.decode_exit(15) == (0, 15)
    assert slurm.decode_exit(0) == (0, None)
    assert slurm.decode_exit(
        {
            "status": ["SIGNALED"],
            "return_code": {"set": True, "infinite": False, "number": 0},
            "signal": {"id": {"set": True, "infinite": False, "number": 9}, "name": "KILL"},
        }
    ) == (0, 9)
    assert slurm_state("PENDING", "JobHeldAdmin") is JobState.HELD
    assert slurm_state("PENDING", "Resources") is JobState.PENDING
    assert slurm_state(["RUNNING"], "JobHeldUser") is JobState.RUNNING


def test_output_path_patterns() -> None:
    ids = {
        "job_id": "42",
        "array_job_id": "40",
        "array_task_id": "2",
        "user": "ann",
        "name": "fit",
        "node_list": "c1,c2",
    }
    assert slurm.expand_path("/o/%x-%A_%a.%u.%N.%j.%%.out", **ids) == "/o/fit-40_2.ann.c1.42.%.out"
    assert slurm.expand_path("/o/%4j-%3a.out", **ids) == "/o/0042-002.out"
    assert slurm.expand_path("/o/%a.out", job_id="40", array_job_id="40", array_task_id="1-3") == "/o/%a.out"
    assert slurm.expand_path("", job_id="1") is None


def test_unreadable_output_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="squeue --json"):
        slurm.parse_squeue_json('{"nodes": []}')
    with pytest.raises(ValueError, match="sinfo --json"):
        slurm.nodes_from_json("[]")
    with pytest.raises(ValueError, match="fields"):
        slurm.parse_squeue_text("1\x1f2\n")
    with pytest.raises(ValueError, match="fields"):
        slurm.parse_sacctmgr_assoc("a|b\n")
