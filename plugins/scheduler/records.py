"""The shapes every backend produces: job records, queue records, allocation records, nodes.

One place for the field lists, so Slurm (JSON or text, any version) and PBS answer with the same keys
in the same order, and the units are the same everywhere:

* times of day are Unix seconds (``submit_time``, ``start_time``), ``None`` when unknown;
* ``time_limit`` is minutes, or ``"UNLIMITED"``; ``time_used`` is seconds;
* memory is MB; ``state`` is a :class:`~.states.JobState` word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: the job record's keys, in order (radical.edge's fields first, then the detail users asked for)
JOB_FIELDS = (
    "job_id",
    "job_name",
    "user",
    "partition",
    "state",
    "nodes",
    "cpus",
    "time_limit",
    "time_used",
    "submit_time",
    "start_time",
    "priority",
    "account",
    "node_list",
    # the detail
    "native_state",
    "reason",
    "qos",
    "dependency",
    "work_dir",
    "stdout",
    "stderr",
    "exit_code",
    "exit_signal",
    "array_job_id",
    "array_task_id",
    "end_time",
)

#: a queue (Slurm partition, PBS queue) record's keys, in order
QUEUE_FIELDS = (
    "name",
    "state",
    "time_limit",
    "default",
    "nodes_total",
    "nodes_available",
    "nodes_idle",
    "cpus_per_node",
    "mem_per_node_mb",
    "gpus_per_node",
    "max_jobs_per_user",
    "features",
    # the detail
    "default_time",
    "max_nodes",
    "total_cpus",
    "qos",
    "allow_accounts",
    "allow_qos",
)

#: an allocation (Slurm association) record's keys, in order
ALLOCATION_FIELDS = (
    "account",
    "user",
    "fairshare",
    "qos",
    "max_jobs",
    "max_submit",
    "max_wall",
    "grp_tres",
    "allocated_node_hours",
    "used_node_hours",
    "remaining_node_hours",
    # the detail
    "cluster",
    "partition",
    "default_qos",
    "max_tres",
    "max_tres_per_node",
    "grp_jobs",
    "grp_submit",
    "grp_wall",
)

UNLIMITED = "UNLIMITED"


def record(fields: tuple[str, ...], values: Mapping[str, Any]) -> dict[str, Any]:
    """A record with exactly ``fields`` (missing ones ``None``); an unknown key is a programming error."""
    extra = set(values) - set(fields)
    if extra:
        raise KeyError(f"not a field of this record: {sorted(extra)}")
    return {name: values.get(name) for name in fields}


def job_record(**values: Any) -> dict[str, Any]:
    return record(JOB_FIELDS, values)


def allocation_record(**values: Any) -> dict[str, Any]:
    return record(ALLOCATION_FIELDS, values)


# ---------------------------------------------------------------- nodes and queues

#: node state flags (Slurm's words, PBS's mapped onto them) that make a node unusable for new jobs
UNAVAILABLE = frozenset(
    {
        "DOWN",
        "DRAIN",
        "DRAINED",
        "DRAINING",
        "FAIL",
        "FAILING",
        "FUTURE",
        "MAINTENANCE",
        "NOT_RESPONDING",
        "REBOOT_ISSUED",
        "REBOOT_REQUESTED",
        "INVALID",
        "INVALID_REG",
        "UNKNOWN",
        "POWER_DOWN",
        "POWERING_DOWN",
        "BLOCKED",
    }
)
#: flags that keep an available node from counting as idle (it cannot start a job right now)
NOT_IDLE = frozenset({"POWERED_DOWN", "POWERING_UP", "RESERVED", "COMPLETING", "PLANNED"})


@dataclass(frozen=True)
class Node:
    """One compute node as a scheduler reports it.  ``state`` is the base state (``IDLE``, ``MIXED``,
    ``ALLOCATED``, ``DOWN``...), ``flags`` the rest (``DRAIN``, ``NOT_RESPONDING``...); ``partitions``
    empty means "not tied to a queue" (PBS nodes serving every queue without nodes of its own)."""

    name: str
    state: str
    flags: frozenset[str] = frozenset()
    partitions: tuple[str, ...] = ()
    cpus: int | None = None
    mem_mb: int | None = None
    gpus: int = 0
    features: tuple[str, ...] = ()

    @property
    def available(self) -> bool:
        return self.state not in UNAVAILABLE and not (self.flags & UNAVAILABLE)

    @property
    def idle(self) -> bool:
        return self.available and self.state == "IDLE" and not (self.flags & NOT_IDLE)


@dataclass(frozen=True)
class Partition:
    """A queue's own settings (Slurm partition, PBS queue), before its nodes are counted."""

    name: str
    state: str
    time_limit: int | str  # minutes or UNLIMITED
    default: bool = False
    max_jobs_per_user: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the detail fields of QUEUE_FIELDS
    runs_jobs: bool = True  # False: a queue that only passes jobs on (a PBS routing queue) has no nodes


def queue_records(partitions: Iterable[Partition], nodes: Iterable[Node]) -> dict[str, dict[str, Any]]:
    """``{name: queue record}``: each partition with its nodes counted (a node in two partitions counts
    in both).  Nodes without partitions serve every queue that has no nodes of its own (PBS)."""
    parts = list(partitions)
    members: dict[str, dict[str, Node]] = {p.name: {} for p in parts}
    loose: dict[str, Node] = {}
    for node in nodes:
        if not node.partitions:
            loose[node.name] = node
        for name in node.partitions:
            if name in members:
                members[name][node.name] = node
    queues: dict[str, dict[str, Any]] = {}
    for part in parts:
        mine = list((members[part.name] or loose).values()) if part.runs_jobs else []
        features = sorted({f for n in mine for f in n.features})
        values: dict[str, Any] = {
            "name": part.name,
            "state": part.state,
            "time_limit": part.time_limit,
            "default": part.default,
            "nodes_total": len(mine),
            "nodes_available": sum(n.available for n in mine),
            "nodes_idle": sum(n.idle for n in mine),
            "cpus_per_node": max((n.cpus for n in mine if n.cpus is not None), default=None),
            "mem_per_node_mb": max((n.mem_mb for n in mine if n.mem_mb is not None), default=None),
            "gpus_per_node": max((n.gpus for n in mine), default=0),
            "max_jobs_per_user": part.max_jobs_per_user,
            "features": features,
            **part.extra,
        }
        queues[part.name] = record(QUEUE_FIELDS, values)
    return queues


# ---------------------------------------------------------------- small parsers shared by the backends


def to_int(value: Any) -> int | None:
    """An integer from a number or numeric text; ``None`` for anything else (``""``, ``N/A``, ``(null)``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def duration_seconds(text: str | None) -> int | None:
    """Seconds of a scheduler duration: ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``, a bare number of
    minutes (Slurm's convention); ``None`` for unlimited or unknown."""
    if text is None:
        return None
    s = text.strip().upper()
    if s in ("", "UNLIMITED", "INFINITE", "NONE", "N/A", "NOT_SET", "INVALID", "(NULL)"):
        return None
    days = 0
    if "-" in s:
        head, s = s.split("-", 1)
        if not head.isdigit():
            return None
        days = int(head)
        parts = s.split(":")
        if not all(p.isdigit() for p in parts) or len(parts) > 3:
            return None
        h, m, sec = ([*map(int, parts), 0, 0])[:3]
        return days * 86400 + h * 3600 + m * 60 + sec
    parts = s.split(":")
    if not all(p.isdigit() for p in parts):
        return None
    if len(parts) == 1:
        return int(parts[0]) * 60
    if len(parts) == 2:
        return int(parts[0]) * 60 + int(parts[1])
    if len(parts) == 3:
        return int(parts[0]) * 3600 + int(parts[1]) * 60 + int(parts[2])
    return None


def limit_minutes(text: str | None) -> int | str:
    """A time limit in minutes (rounded up), or :data:`UNLIMITED`."""
    seconds = duration_seconds(text)
    return UNLIMITED if seconds is None else -(-seconds // 60)


_MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]?)(b|w)?$")


def memory_mb(text: str | None) -> int | None:
    """MB from ``18078`` or ``18078M`` (Slurm: a bare number is MB), ``257gb``, ``263597kb``, ``1tb``,
    ``1073741824b`` (PBS: a bare ``b`` is bytes)."""
    if not text:
        return None
    match = _MEMORY.match(text.strip().lower())
    if match is None:
        return None
    number, unit, suffix = match.groups()
    if not unit:
        unit = "" if suffix is None else "b"
    factor = {"b": 1 / 2**20, "k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024**2, "p": 1024**3}[unit]
    return int(float(number) * factor)


__all__ = [
    "ALLOCATION_FIELDS",
    "JOB_FIELDS",
    "NOT_IDLE",
    "QUEUE_FIELDS",
    "UNAVAILABLE",
    "UNLIMITED",
    "Node",
    "Partition",
    "allocation_record",
    "duration_seconds",
    "job_record",
    "limit_minutes",
    "memory_mb",
    "queue_records",
    "record",
    "to_int",
]
