"""PBS (PBS Pro / OpenPBS, Torque's look-alike output): parsers of ``qstat -Qf``, ``qstat -Bf``,
``qstat -f`` and ``pbsnodes -a`` text, and the backend that runs them.

The ``-f`` formats are blocks: a header line (``Queue: workq``, ``Job Id: 12.server``,
``Server: pbs01``; for ``pbsnodes -a`` just the node name), then indented ``name = value``
attributes.  PBS wraps a long value onto continuation lines that start with a tab.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import anyio

from .records import (
    UNLIMITED,
    Node,
    Partition,
    duration_seconds,
    job_record,
    limit_minutes,
    memory_mb,
    queue_records,
    to_int,
)
from .run import CommandBackend
from .states import pbs_state

_ATTRIBUTE = re.compile(r"^\s+([A-Za-z_][\w.]*)\s=\s?(.*)$")


def blocks(text: str, header: re.Pattern[str] | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """``(name, {attribute: value})`` for each block.  ``header`` matches a block's first line and
    captures its name; without it, any unindented line starts a block (``pbsnodes -a``)."""
    name: str | None = None
    attrs: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            if name is not None:
                yield name, attrs
            match = header.match(line) if header else None
            name = match.group(1).strip() if match else (line.strip() if header is None else None)
            attrs, last = {}, None
            continue
        if name is None:
            continue
        if line.startswith("\t") and last is not None:  # a wrapped value goes on
            attrs[last] += line.strip()
            continue
        attribute = _ATTRIBUTE.match(line)
        if attribute:
            last = attribute.group(1)
            attrs[last] = attribute.group(2).strip()
        elif last is not None:
            attrs[last] += line.strip()
    if name is not None:
        yield name, attrs


def pbs_time(text: str | None) -> int | None:
    """Unix seconds of a PBS timestamp (``Mon Dec  1 10:00:00 2025``, local time, or epoch seconds)."""
    if not text:
        return None
    if text.strip().isdigit():
        return int(text)
    try:
        return int(time.mktime(time.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y")))
    except ValueError:
        return None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "t", "1", "yes", "y")


def _max_per_user(attrs: Mapping[str, str]) -> int | None:
    """``max_run = [u:PBS_GENERIC=10]`` (PBS Pro) or ``max_user_run = 10`` (Torque, old PBS)."""
    match = re.search(r"u:PBS_GENERIC=(\d+)", attrs.get("max_run", ""))
    if match:
        return int(match.group(1))
    return to_int(attrs.get("max_user_run"))


def queue_state(attrs: Mapping[str, str]) -> str:
    """Slurm's partition words: ``enabled`` = accepts jobs, ``started`` = runs them."""
    enabled, started = _truthy(attrs.get("enabled")), _truthy(attrs.get("started"))
    if enabled and started:
        return "UP"
    if started:
        return "DRAIN"  # runs what it has, takes nothing new
    if enabled:
        return "DOWN"  # takes jobs, runs none
    return "INACTIVE"


def parse_qstat_queues(text: str, default_queue: str | None = None) -> list[Partition]:
    """The queues of ``qstat -Qf`` (``default_queue`` from :func:`parse_qstat_server`)."""
    parts = []
    for name, attrs in blocks(text, re.compile(r"^Queue:\s*(\S+)")):
        default_walltime = attrs.get("resources_default.walltime")
        parts.append(
            Partition(
                name=name,
                state=queue_state(attrs),
                time_limit=limit_minutes(attrs.get("resources_max.walltime")),
                default=name == default_queue,
                max_jobs_per_user=_max_per_user(attrs),
                extra={
                    "default_time": limit_minutes(default_walltime) if default_walltime else None,
                    "max_nodes": to_int(attrs.get("resources_max.nodect")) or UNLIMITED,
                    "total_cpus": None,
                    "qos": None,
                    "allow_accounts": None,
                    "allow_qos": None,
                },
                runs_jobs=attrs.get("queue_type", "Execution").lower().startswith("e"),
            )
        )
    return parts


def parse_qstat_server(text: str) -> dict[str, str]:
    """The server attributes of ``qstat -Bf`` (``default_queue``, ``pbs_version``...)."""
    for _, attrs in blocks(text, re.compile(r"^Server:\s*(\S+)")):
        return attrs
    return {}


#: pbsnodes ``state`` words mapped to Slurm's node words: (base state, flag)
_NODE_STATES = {
    "free": ("IDLE", ""),
    "job-busy": ("ALLOCATED", ""),
    "job-exclusive": ("ALLOCATED", ""),
    "job-sharing": ("MIXED", ""),
    "resv-exclusive": ("ALLOCATED", "RESERVED"),
    "busy": ("ALLOCATED", ""),
    "down": ("DOWN", ""),
    "offline": ("IDLE", "DRAIN"),
    "state-unknown": ("UNKNOWN", ""),
    "unknown": ("UNKNOWN", ""),
    "unresolvable": ("DOWN", "NOT_RESPONDING"),
    "stale": ("DOWN", "NOT_RESPONDING"),
    "provisioning": ("IDLE", "POWERING_UP"),
    "wait-provisioning": ("IDLE", "POWERING_UP"),
    "maintenance": ("IDLE", "MAINTENANCE"),
    "sleep": ("IDLE", "POWERED_DOWN"),
    "initializing": ("UNKNOWN", ""),
}


def node_state(text: str, cpus: int | None, assigned_cpus: int | None) -> tuple[str, frozenset[str]]:
    """``(base, flags)`` of a pbsnodes ``state`` (``free``, ``job-busy``, ``down,offline``); a free
    node running jobs on some of its CPUs is MIXED."""
    base, flags = "", set()
    for word in (w.strip().lower() for w in text.split(",") if w.strip()):
        b, flag = _NODE_STATES.get(word, ("UNKNOWN", ""))
        if flag:
            flags.add(flag)
        if not base or b in ("DOWN", "UNKNOWN"):
            base = b
    if base == "IDLE" and assigned_cpus and (cpus is None or assigned_cpus < cpus):
        base = "MIXED"
    elif base == "IDLE" and assigned_cpus and cpus is not None and assigned_cpus >= cpus:
        base = "ALLOCATED"
    return base or "UNKNOWN", frozenset(flags)


def parse_pbsnodes(text: str) -> list[Node]:
    """The nodes of ``pbsnodes -a`` (PBS Pro ``resources_available.*``, or Torque ``np``/``gpus``/``properties``)."""
    nodes = []
    for name, attrs in blocks(text):
        cpus = to_int(attrs.get("resources_available.ncpus")) or to_int(attrs.get("pcpus")) or to_int(attrs.get("np"))
        assigned = to_int(attrs.get("resources_assigned.ncpus"))
        if assigned is None and attrs.get("jobs"):  # Torque: one "core/job" entry per used core
            assigned = len([j for j in attrs["jobs"].split(",") if j.strip()])
        base, flags = node_state(attrs.get("state", ""), cpus, assigned)
        queues = attrs.get("queue") or attrs.get("resources_available.Qlist") or ""
        features = attrs.get("properties") or attrs.get("resources_available.features") or ""
        memory = attrs.get("resources_available.mem")
        if memory is None:  # Torque: physmem=...kb inside status
            match = re.search(r"physmem=(\d+\w*)", attrs.get("status", ""))
            memory = match.group(1) if match else None
        nodes.append(
            Node(
                name=name,
                state=base,
                flags=flags,
                partitions=tuple(q.strip() for q in queues.split(",") if q.strip()),
                cpus=cpus,
                mem_mb=memory_mb(memory),
                gpus=to_int(attrs.get("resources_available.ngpus")) or to_int(attrs.get("gpus")) or 0,
                features=tuple(f.strip() for f in features.split(",") if f.strip()),
            )
        )
    return nodes


def _variable(variables: str, name: str) -> str | None:
    match = re.search(rf"(?:^|,){re.escape(name)}=((?:\\,|[^,])*)", variables)
    return match.group(1).replace("\\,", ",") if match else None


def _strip_host(path: str | None) -> str | None:
    """``login1:/home/a/job.o12`` -> ``/home/a/job.o12``."""
    if not path:
        return None
    host, sep, rest = path.partition(":")
    return rest if sep and "/" not in host else path


def _exec_nodes(exec_host: str | None) -> list[str]:
    """``node01/0*4+node02/0*4`` (PBS Pro) or ``node01/0+node01/1`` (Torque) -> ``[node01, node02]``."""
    seen: dict[str, None] = {}
    for part in (exec_host or "").split("+"):
        host = part.split("/", 1)[0].strip()
        if host:
            seen[host] = None
    return list(seen)


_ARRAY = re.compile(r"^(\d+)\[(\d*)\](.*)$")


def parse_qstat_jobs(text: str, *, now: float | None = None) -> list[dict[str, Any]]:
    """The jobs of ``qstat -f`` as job records."""
    clock = time.time() if now is None else now
    jobs = []
    for job_id, a in blocks(text, re.compile(r"^Job Id:\s*(\S+)")):
        exit_status = to_int(a.get("Exit_status"))
        state = pbs_state(a.get("job_state"), exit_status)
        array_job_id = array_task_id = None
        array = _ARRAY.match(job_id)
        if array:
            array_job_id = array.group(1)
            array_task_id = array.group(2) or a.get("array_indices_submitted")
        nodes = _exec_nodes(a.get("exec_host"))
        start = pbs_time(a.get("stime"))
        used = duration_seconds(a.get("resources_used.walltime"))
        if used is None:
            used = max(0, int(clock) - start) if start and state.value == "RUNNING" else 0
        variables = a.get("Variable_List", "")
        select_nodes = re.findall(r"(?:^|\+)(\d+):", a.get("Resource_List.select", ""))
        jobs.append(
            job_record(
                job_id=job_id,
                job_name=a.get("Job_Name"),
                user=(a.get("Job_Owner") or "").split("@", 1)[0] or None,
                partition=a.get("queue"),
                state=state.value,
                nodes=to_int(a.get("Resource_List.nodect")) or (sum(map(int, select_nodes)) or None),
                cpus=to_int(a.get("Resource_List.ncpus")),
                time_limit=limit_minutes(a.get("Resource_List.walltime")),
                time_used=used,
                submit_time=pbs_time(a.get("ctime") or a.get("qtime")),
                start_time=start,
                priority=to_int(a.get("Priority")),
                account=a.get("Account_Name") or a.get("project"),
                node_list=",".join(nodes) or None,
                native_state=a.get("job_state"),
                reason=a.get("comment"),
                qos=None,
                dependency=a.get("depend"),
                work_dir=_variable(variables, "PBS_O_WORKDIR") or a.get("jobdir") or a.get("init_work_dir"),
                stdout=_strip_host(a.get("Output_Path")),
                stderr=_strip_host(a.get("Error_Path")),
                exit_code=exit_status if state.final and exit_status is not None and exit_status >= 0 else None,
                exit_signal=exit_status - 256 if exit_status is not None and exit_status > 256 else None,
                array_job_id=array_job_id,
                array_task_id=array_task_id,
                end_time=pbs_time(a.get("mtime")) if state.final else None,
            )
        )
    return jobs


#: a job id ``qdel`` may be given: ``123``, ``123.server``, ``123[]``, ``123[4].server.domain``
PBS_JOB_ID = re.compile(r"^[0-9]+(\[[0-9]*\])?(\.[A-Za-z0-9][A-Za-z0-9.\-]*)?$")


class PbsBackend(CommandBackend):
    """Runs PBS's commands (through ``run``, no shell) and parses their text."""

    name = "pbs"

    async def jobs(self) -> list[dict[str, Any]]:
        out, now = (await self.command("qstat", "-f")).stdout, self.clock()
        return await anyio.to_thread.run_sync(lambda: parse_qstat_jobs(out, now=now))  # a long text: off the loop

    async def queues(self) -> dict[str, dict[str, Any]]:
        server = await self.command("qstat", "-Bf", check=False)
        default = parse_qstat_server(server.stdout).get("default_queue") if server.returncode == 0 else None
        queues = (await self.command("qstat", "-Qf")).stdout
        nodes = (await self.command("pbsnodes", "-a")).stdout
        return await anyio.to_thread.run_sync(
            lambda: queue_records(parse_qstat_queues(queues, default), parse_pbsnodes(nodes))
        )

    async def allocations(self) -> list[dict[str, Any]]:
        """PBS has no standard allocation database (sites use sbank and the like): none."""
        return []

    def valid_job_id(self, job_id: str) -> bool:
        return bool(PBS_JOB_ID.match(job_id))

    async def cancel(self, job_id: str) -> None:
        if not self.valid_job_id(job_id):
            raise ValueError(f"not a PBS job id: {job_id!r}")
        await self.command("qdel", job_id)

    async def time_limit(self, job_id: str) -> int | None:
        if not self.valid_job_id(job_id):
            return None
        jobs = parse_qstat_jobs((await self.command("qstat", "-f", job_id)).stdout)
        limit = jobs[0]["time_limit"] if jobs else None
        return limit * 60 if isinstance(limit, int) else None


__all__ = [
    "PBS_JOB_ID",
    "PbsBackend",
    "blocks",
    "node_state",
    "parse_pbsnodes",
    "parse_qstat_jobs",
    "parse_qstat_queues",
    "parse_qstat_server",
    "pbs_time",
    "queue_state",
]
