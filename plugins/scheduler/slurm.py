"""Slurm: parsers (pure functions of what the commands print) and the backend that runs the commands.

What each Slurm version gives (see ``../shared/HPC-FACTS.md`` section 5):

* ``squeue --json`` / ``sinfo --json`` exist from 21.08 on.  22.05 (openapi v0.0.38) answers
  ``{jobs: [...]}`` with plain scalars and ``job_state`` a string, and ``sinfo --json`` lists
  **nodes** (``{nodes: [...]}``).  23.02+ (data_parser v0.0.39...v0.0.42) wraps numbers as
  ``{set, infinite, number}``, makes ``job_state`` a list of flags and answers ``sinfo --json`` with
  ``{sinfo: [...]}`` records per partition and node state.  ``--json`` ignores ``-p``/``--user``: the
  backend fetches everything once and the caller filters.
* ``scontrol`` and ``sacctmgr`` have no ``--json`` in 22.05, and their parsable text is the same in
  every version: ``scontrol -o show partition``, ``sacctmgr -P -n``.
* Without the JSON plugins (a site may not install them) the backend falls back to text:
  ``squeue -O`` and ``sinfo -o`` with a separator no name can contain.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import anyio

from .records import (
    UNLIMITED,
    Node,
    Partition,
    allocation_record,
    duration_seconds,
    job_record,
    limit_minutes,
    memory_mb,
    queue_records,
    to_int,
)
from .run import DEFAULT_TIMEOUT, CommandBackend, CommandFailed, Runner, run_command
from .states import JobState, slurm_state

log = logging.getLogger("radical_edge.scheduler")

T = TypeVar("T")

#: field separator of the text formats: the ASCII unit separator, which no name, path or reason contains
SEP = "\x1f"
#: Slurm's NO_VAL / INFINITE for 32-bit numbers in 22.05 JSON
_NO_VAL = 0xFFFFFFFE


# ---------------------------------------------------------------- JSON values


def unwrap(value: Any) -> Any:
    """The number of a 23.02+ ``{set, infinite, number}`` wrapper (``None`` when unset or infinite);
    anything else unchanged."""
    if isinstance(value, Mapping) and "number" in value:
        if value.get("infinite") or not value.get("set", True):
            return None
        return value.get("number")
    return value


def _number(value: Any) -> int | None:
    n = to_int(unwrap(value))
    return None if n is None or n >= _NO_VAL else n


def _epoch(value: Any) -> int | None:
    n = _number(value)
    return n if n else None  # Slurm says 0 for "not yet" / "unknown"


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return None if value in ("", "(null)", "None", "N/A") else value


def _first_word(value: Any) -> str | None:
    if isinstance(value, list):
        return str(value[0]) if value else None
    return _text(value)


def decode_exit(value: Any) -> tuple[int | None, int | None]:
    """``(exit code, signal)`` from a job's ``exit_code``: 22.05's raw wait status (``768`` is exit 3,
    ``15`` is signal 15) or 23.02+'s ``{status, return_code, signal: {id (signal_id in 23.02), name}}``,
    numbers plain or wrapped."""
    if isinstance(value, Mapping) and ("return_code" in value or "status" in value):
        code = _number(value.get("return_code"))
        signal = value.get("signal")
        sig = _number(signal.get("id", signal.get("signal_id"))) if isinstance(signal, Mapping) else None
        return code, sig or None
    raw = _number(value)
    if raw is None:
        return None, None
    if raw & 0x7F:
        return (raw >> 8) & 0xFF, raw & 0x7F
    return (raw >> 8) & 0xFF, None


# ---------------------------------------------------------------- output paths

_PATTERN = re.compile(r"%(\d*)([AaJjNnstux%])")


def expand_path(
    pattern: str | None,
    *,
    job_id: str | None,
    array_job_id: str | None = None,
    array_task_id: str | None = None,
    user: str | None = None,
    name: str | None = None,
    node_list: str | None = None,
) -> str | None:
    """A Slurm output file name with its ``%j``, ``%A``, ``%a``, ``%u``, ``%x``, ``%N``... filled in (as
    the job will have it); a placeholder whose value is not known (``%a`` of a whole array) stays."""
    if not pattern:
        return None
    first_node = node_list.split(",", 1)[0] if node_list else None
    if first_node and "[" in first_node:
        first_node = None  # a compressed host list: the first name is not spelled out
    values = {
        "A": array_job_id or job_id,
        "a": array_task_id if array_task_id and array_task_id.isdigit() else None,
        "J": job_id,
        "j": job_id,
        "u": user,
        "x": name,
        "N": first_node,
        "n": "0",
        "t": "0",
        "s": "batch",
    }

    def fill(match: re.Match[str]) -> str:
        width, key = match.groups()
        if key == "%":
            return "%"
        value = values.get(key)
        if value is None:
            return match.group(0)
        return value.zfill(int(width)) if width and value.isdigit() else value

    return _PATTERN.sub(fill, pattern)


def _paths(
    raw_out: Any, raw_err: Any, *, batch: bool, work_dir: str | None, ids: dict[str, str | None]
) -> tuple[str | None, str | None]:
    """stdout/stderr of a job; Slurm leaves them empty for the defaults (``slurm-%j.out`` in the work
    dir, ``slurm-%A_%a.out`` for array tasks, stderr with stdout)."""
    out = _text(raw_out)
    err = _text(raw_err)
    if out is None and batch and work_dir:
        out = f"{work_dir}/slurm-%A_%a.out" if ids.get("array_job_id") else f"{work_dir}/slurm-%j.out"
    if err is None:
        err = out
    return expand_path(out, **ids), expand_path(err, **ids)


# ---------------------------------------------------------------- jobs: squeue --json (any version)


def _job_ids(job_id: Any, array_job: Any, task: Any, task_string: Any) -> tuple[str, str | None, str | None]:
    """``(job_id as squeue prints it, array_job_id, array_task_id)``: ``5_1`` for a task of array 5,
    ``5_[2-3]`` for its tasks still pending as one record."""
    array = _number(array_job)
    task_id = _number(task)
    pending_tasks = (_text(task_string) or "").strip("[]")
    if array and task_id is not None:
        return f"{array}_{task_id}", str(array), str(task_id)
    if array and pending_tasks:
        return f"{array}_[{pending_tasks}]", str(array), pending_tasks
    return str(_number(job_id)), None, None


def _time_used(state: JobState, start: int | None, end: int | None, now: float) -> int:
    if start is None:
        return 0
    if state is JobState.RUNNING:
        return max(0, int(now) - start)
    if state.final and end is not None:
        return max(0, end - start)
    return 0


def job_from_json(job: Mapping[str, Any], *, now: float) -> dict[str, Any]:
    """One job of ``squeue --json`` (22.05 scalars or 23.02+ wrappers) as a job record."""
    job_id, array_job_id, array_task_id = _job_ids(
        job.get("job_id"), job.get("array_job_id"), job.get("array_task_id"), job.get("array_task_string")
    )
    reason = _text(job.get("state_reason"))
    state = slurm_state(job.get("job_state"), reason)
    start, end = _epoch(job.get("start_time")), _epoch(job.get("end_time"))
    limit = _number(job.get("time_limit"))
    user, name, nodes = _text(job.get("user_name")), _text(job.get("name")), _text(job.get("nodes"))
    work_dir = _text(job.get("current_working_directory"))
    ids = {
        "job_id": str(_number(job.get("job_id"))),
        "array_job_id": array_job_id,
        "array_task_id": array_task_id,
        "user": user,
        "name": name,
        "node_list": nodes,
    }
    stdout, stderr = _paths(
        job.get("standard_output"),
        job.get("standard_error"),
        batch=bool(job.get("batch_flag", True)),
        work_dir=work_dir,
        ids=ids,
    )
    code, signal = decode_exit(job.get("exit_code")) if state.final else (None, None)
    return job_record(
        job_id=job_id,
        job_name=name,
        user=user,
        partition=_text(job.get("partition")),
        state=state.value,
        nodes=_number(job.get("node_count")),
        cpus=_number(job.get("cpus")),
        time_limit=UNLIMITED if limit is None else limit,
        time_used=_time_used(state, start, end, now),
        submit_time=_epoch(job.get("submit_time")),
        start_time=start,
        priority=_number(job.get("priority")),
        account=_text(job.get("account")),
        node_list=nodes,
        native_state=_first_word(job.get("job_state")),
        reason=reason,
        qos=_text(job.get("qos")),
        dependency=_text(job.get("dependency")),
        work_dir=work_dir,
        stdout=stdout,
        stderr=stderr,
        exit_code=code,
        exit_signal=signal,
        array_job_id=array_job_id,
        array_task_id=array_task_id,
        end_time=end if state.final else None,
    )


def parse_squeue_json(text: str | Mapping[str, Any], *, now: float | None = None) -> list[dict[str, Any]]:
    """Every job of ``squeue --json`` (``ValueError`` if it is not that document)."""
    data = json.loads(text) if isinstance(text, str) else text
    if not isinstance(data, Mapping) or not isinstance(data.get("jobs"), list):
        raise ValueError("not the output of squeue --json: no 'jobs' list")
    clock = time.time() if now is None else now
    return [job_from_json(job, now=clock) for job in data["jobs"] if isinstance(job, Mapping)]


# ---------------------------------------------------------------- jobs: squeue -O text (fallback)

#: (record key, squeue -O field) in the order of the text format
SQUEUE_FIELDS = (
    ("job_id", "JobArrayID"),
    ("native_id", "JobID"),
    ("array_job_id", "ArrayJobID"),
    ("array_task_id", "ArrayTaskID"),
    ("job_name", "Name"),
    ("user", "UserName"),
    ("partition", "Partition"),
    ("state", "State"),
    ("reason", "Reason"),
    ("nodes", "NumNodes"),
    ("cpus", "NumCPUs"),
    ("time_limit", "TimeLimit"),
    ("time_used", "TimeUsed"),
    ("submit_time", "SubmitTime"),
    ("start_time", "StartTime"),
    ("end_time", "EndTime"),
    ("priority", "PriorityLong"),
    ("account", "Account"),
    ("node_list", "NodeList"),
    ("qos", "QOS"),
    ("dependency", "Dependency"),
    ("work_dir", "WorkDir"),
    ("stdout", "STDOUT"),
    ("stderr", "STDERR"),
)
#: ``squeue`` arguments of the text format: every job (finished ones too, like --json), no header
SQUEUE_TEXT_ARGS = ("-h", "-a", "-t", "all", "-O", ",".join(f"{field}:{SEP}" for _, field in SQUEUE_FIELDS))


def slurm_time(text: str | None) -> int | None:
    """Unix seconds of a Slurm timestamp (``2026-12-01T15:43:19``, local time); ``None`` for N/A."""
    value = _text(text)
    if value is None or value in ("Unknown", "NONE"):
        return None
    try:
        return int(time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None


def parse_squeue_text(text: str) -> list[dict[str, Any]]:
    """Every job of ``squeue`` with :data:`SQUEUE_TEXT_ARGS` (no exit codes: the text has none)."""
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = line.split(SEP)
        if len(cells) < len(SQUEUE_FIELDS):
            raise ValueError(f"squeue line with {len(cells)} fields, expected {len(SQUEUE_FIELDS)}: {line!r}")
        raw = {key: cells[i].strip() for i, (key, _) in enumerate(SQUEUE_FIELDS)}
        task = _text(raw["array_task_id"])
        array_job_id = _text(raw["array_job_id"]) if task else None
        array_task_id = task.strip("[]") if task else None
        reason = _text(raw["reason"])
        state = slurm_state(raw["state"], reason)
        start = slurm_time(raw["start_time"])
        ids = {
            "job_id": raw["native_id"],
            "array_job_id": array_job_id,
            "array_task_id": array_task_id,
            "user": _text(raw["user"]),
            "name": _text(raw["job_name"]),
            "node_list": _text(raw["node_list"]),
        }
        limit = raw["time_limit"]
        stdout, stderr = _text(raw["stdout"]), _text(raw["stderr"])
        if array_job_id and raw["work_dir"]:
            # squeue prints an array task's default output as slurm-<own id>.out; Slurm writes slurm-%A_%a.out
            wrong = f"{raw['work_dir']}/slurm-{raw['native_id']}.out"
            stdout, stderr = (f"{raw['work_dir']}/slurm-%A_%a.out" if p == wrong else p for p in (stdout, stderr))
        jobs.append(
            job_record(
                job_id=raw["job_id"],
                job_name=_text(raw["job_name"]),
                user=_text(raw["user"]),
                partition=_text(raw["partition"]),
                state=state.value,
                nodes=to_int(raw["nodes"]),
                cpus=to_int(raw["cpus"]),
                time_limit=limit_minutes(limit),
                time_used=duration_seconds(raw["time_used"]) or 0,
                submit_time=slurm_time(raw["submit_time"]),
                start_time=start,
                priority=to_int(raw["priority"]),
                account=_text(raw["account"]),
                node_list=_text(raw["node_list"]),
                native_state=_text(raw["state"]),
                reason=reason,
                qos=_text(raw["qos"]),
                dependency=_text(raw["dependency"]),
                work_dir=_text(raw["work_dir"]),
                stdout=expand_path(stdout, **ids),
                stderr=expand_path(stderr, **ids),
                exit_code=None,
                exit_signal=None,
                array_job_id=array_job_id,
                array_task_id=array_task_id,
                end_time=slurm_time(raw["end_time"]) if state.final else None,
            )
        )
    return jobs


# ---------------------------------------------------------------- nodes: sinfo --json / sinfo -o

#: sinfo -o letters (one line per node and partition): name, partition, state, CPUs, memory, GRES, features
SINFO_TEXT_ARGS = ("-h", "-N", "-o", SEP.join(["%N", "%R", "%T", "%c", "%m", "%G", "%b"]) + SEP)

_STATE_SUFFIX = {
    "*": "NOT_RESPONDING",
    "~": "POWERED_DOWN",
    "#": "POWERING_UP",
    "%": "POWERING_DOWN",
    "!": "POWER_DOWN",
    "$": "MAINTENANCE",
    "@": "REBOOT_REQUESTED",
    "^": "REBOOT_ISSUED",
    "-": "PLANNED",
}
#: sinfo's long words that are a base state plus a flag
_STATE_WORDS = {
    "DRAINED": ("IDLE", "DRAIN"),
    "DRAIN": ("IDLE", "DRAIN"),
    "DRAINING": ("ALLOCATED", "DRAIN"),
    "MAINT": ("IDLE", "MAINTENANCE"),
    "INVAL": ("UNKNOWN", "INVALID"),
    "FAILING": ("ALLOCATED", "FAIL"),
    "FAIL": ("IDLE", "FAIL"),
    "ALLOC": ("ALLOCATED", ""),
    "MIX": ("MIXED", ""),
    "COMP": ("IDLE", "COMPLETING"),
    "COMPLETING": ("IDLE", "COMPLETING"),
    "RESV": ("IDLE", "RESERVED"),
    "RESERVED": ("IDLE", "RESERVED"),
    "PLND": ("IDLE", "PLANNED"),
    "PLANNED": ("IDLE", "PLANNED"),
    "POWER_DOWN": ("IDLE", "POWERED_DOWN"),
    "POWERED_DOWN": ("IDLE", "POWERED_DOWN"),
    "POWERING_UP": ("IDLE", "POWERING_UP"),
    "REBOOT_ISSUED": ("IDLE", "REBOOT_ISSUED"),
}


def node_state(words: str | Sequence[str], flags: Sequence[str] = ()) -> tuple[str, frozenset[str]]:
    """``(base state, flags)`` of a node from sinfo's ``%T`` (``idle~``, ``drained``, ``down*``), 22.05
    JSON (``"mixed"`` plus ``state_flags``) or 23.02+ JSON (``["IDLE", "DRAIN"]``)."""
    parts = [words] if isinstance(words, str) else list(words)
    found = {str(f).upper() for f in flags if f}
    base = ""
    for i, part in enumerate(parts):
        word = str(part).strip().upper()
        while word and (word[-1] in _STATE_SUFFIX or word[-1] == "+"):
            if word[-1] in _STATE_SUFFIX:
                found.add(_STATE_SUFFIX[word[-1]])
            word = word[:-1]
        if i > 0:  # 23.02+ lists: the base state, then its flags
            if word:
                found.add(word)
            continue
        if word in _STATE_WORDS:
            word, flag = _STATE_WORDS[word]
            if flag:
                found.add(flag)
        base = word
    return base or "UNKNOWN", frozenset(found)


def gpu_count(gres: Any) -> int:
    """GPUs in a GRES string: ``gpu:4``, ``gpu:a100:4(S:0-1)``, ``gpu:a100:2,gpu:v100:2`` (sums), ``(null)``."""
    text = _text(gres)
    if text is None:
        return 0
    total = 0
    for item in re.sub(r"\([^)]*\)", "", text).split(","):
        fields = item.strip().split(":")
        if fields[0] != "gpu":
            continue
        count = to_int(fields[-1]) if len(fields) > 1 else 1
        total += count if count is not None else 1
    return total


def _features(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v) for v in value if v)
    text = _text(value)
    return tuple(f for f in text.split(",") if f) if text else ()


def nodes_from_json(text: str | Mapping[str, Any]) -> list[Node]:
    """The nodes of ``sinfo --json``: 22.05's ``{nodes: [...]}`` or 23.02+'s ``{sinfo: [...]}`` (records
    of a partition and a node state, naming their nodes)."""
    data = json.loads(text) if isinstance(text, str) else text
    if not isinstance(data, Mapping):
        raise ValueError("not the output of sinfo --json")
    if isinstance(data.get("sinfo"), list):
        return _nodes_from_sinfo_records(data["sinfo"])
    if isinstance(data.get("nodes"), list):
        nodes = []
        for n in data["nodes"]:
            if not isinstance(n, Mapping) or not _text(n.get("name")):
                continue
            state = n.get("state")
            base, flags = node_state(state if isinstance(state, list) else str(state or ""), n.get("state_flags") or ())
            nodes.append(
                Node(
                    name=str(n["name"]),
                    state=base,
                    flags=flags,
                    partitions=tuple(str(p) for p in n.get("partitions") or ()),
                    cpus=_number(n.get("cpus")),
                    mem_mb=_number(n.get("real_memory")),
                    gpus=gpu_count(n.get("gres")),
                    features=_features(n.get("active_features", n.get("features"))),
                )
            )
        return nodes
    raise ValueError("not the output of sinfo --json: neither 'sinfo' nor 'nodes'")


def _nodes_from_sinfo_records(records: list[Any]) -> list[Node]:
    by_name: dict[str, Node] = {}
    for rec in records:
        if not isinstance(rec, Mapping):
            continue
        partition = rec.get("partition") or {}
        pname = _text(partition.get("name")) if isinstance(partition, Mapping) else None
        names = (rec.get("nodes") or {}).get("nodes") or (rec.get("nodes") or {}).get("hostnames") or []
        base, flags = node_state((rec.get("node") or {}).get("state") or ["UNKNOWN"])
        cpus = rec.get("cpus") or {}
        memory = rec.get("memory") or {}
        features = rec.get("features") or {}
        gres = rec.get("gres") or {}
        for name in names:
            old = by_name.get(name)
            parts = (*old.partitions, pname) if old and pname and pname not in old.partitions else None
            if old is not None:
                if parts:
                    by_name[name] = replace(old, partitions=parts)
                continue
            by_name[name] = Node(
                name=name,
                state=base,
                flags=flags,
                partitions=(pname,) if pname else (),
                cpus=_number(cpus.get("maximum")),
                mem_mb=_number(memory.get("maximum")),
                gpus=gpu_count(gres.get("total")),
                features=_features(features.get("active", features.get("total"))),
            )
    return list(by_name.values())


def nodes_from_text(text: str) -> list[Node]:
    """The nodes of ``sinfo`` with :data:`SINFO_TEXT_ARGS` (one line per node and partition)."""
    by_name: dict[str, Node] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(SEP)]
        if len(cells) < 7:
            raise ValueError(f"sinfo line with {len(cells)} fields, expected 7: {line!r}")
        name, partition, state, cpus, mem, gres, features = cells[:7]
        old = by_name.get(name)
        if old is not None:
            if partition and partition not in old.partitions:
                by_name[name] = replace(old, partitions=(*old.partitions, partition))
            continue
        base, flags = node_state(state)
        by_name[name] = Node(
            name=name,
            state=base,
            flags=flags,
            partitions=(partition,) if partition else (),
            cpus=to_int(cpus),
            mem_mb=memory_mb(mem),
            gpus=gpu_count(gres),
            features=_features(features),
        )
    return list(by_name.values())


# ---------------------------------------------------------------- partitions: scontrol -o show partition


def key_values(line: str) -> dict[str, str]:
    """``Key=Value`` pairs of one ``scontrol -o`` line (a value may itself contain ``=``)."""
    pairs: dict[str, str] = {}
    last = None
    for token in line.split():
        key, eq, value = token.partition("=")
        if eq and key and re.fullmatch(r"[A-Za-z][A-Za-z0-9_:/]*", key):
            pairs[key] = value
            last = key
        elif last is not None:  # a value with a space in it
            pairs[last] += " " + token
    return pairs


def _limit(value: str | None) -> int | str | None:
    if value is None:
        return None
    if value.upper() == "UNLIMITED":
        return UNLIMITED
    return to_int(value)


def _names(value: str | None) -> list[str] | None:
    """``ALL`` (or unset) is ``None``: no restriction."""
    if value is None or value.upper() in ("ALL", "", "(NULL)"):
        return None
    return [v for v in value.split(",") if v]


def parse_scontrol_partitions(text: str, qos_max_jobs: Mapping[str, int | None] | None = None) -> list[Partition]:
    """The partitions of ``scontrol -o show partition``; ``qos_max_jobs`` (``{qos: MaxJobsPerUser}``)
    gives ``max_jobs_per_user`` for partitions with a QOS of their own."""
    parts = []
    for line in text.splitlines():
        kv = key_values(line)
        name = kv.get("PartitionName")
        if not name:
            continue
        qos = _text(kv.get("QoS"))
        default_time = kv.get("DefaultTime")
        parts.append(
            Partition(
                name=name,
                state=kv.get("State", "UNKNOWN").upper(),
                time_limit=limit_minutes(kv.get("MaxTime")),
                default=kv.get("Default", "NO").upper() == "YES",
                max_jobs_per_user=(qos_max_jobs or {}).get(qos) if qos else None,
                extra={
                    "default_time": None if default_time in (None, "NONE") else limit_minutes(default_time),
                    "max_nodes": _limit(kv.get("MaxNodes")),
                    "total_cpus": to_int(kv.get("TotalCPUs")),
                    "qos": qos,
                    "allow_accounts": _names(kv.get("AllowAccounts")),
                    "allow_qos": _names(kv.get("AllowQos")),
                },
            )
        )
    return parts


def partition_qos(partitions: Sequence[Partition]) -> set[str]:
    return {p.extra["qos"] for p in partitions if p.extra.get("qos")}


#: sacctmgr show qos: name and MaxJobsPerUser
SACCTMGR_QOS_ARGS = ("-P", "-n", "show", "qos", "format=Name,MaxJobsPU")


def parse_qos_max_jobs(text: str) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for line in text.splitlines():
        name, _, max_jobs = line.partition("|")
        if name:
            out[name] = to_int(max_jobs)
    return out


# ---------------------------------------------------------------- associations: sacctmgr -P -n show assoc

#: (record key, sacctmgr format field), in the order of the format
SACCTMGR_FIELDS = (
    ("cluster", "Cluster"),
    ("account", "Account"),
    ("user", "User"),
    ("partition", "Partition"),
    ("fairshare", "Share"),
    ("max_jobs", "MaxJobs"),
    ("max_submit", "MaxSubmit"),
    ("max_wall", "MaxWall"),
    ("max_tres", "MaxTRES"),
    ("max_tres_per_node", "MaxTRESPerNode"),
    ("grp_jobs", "GrpJobs"),
    ("grp_submit", "GrpSubmit"),
    ("grp_wall", "GrpWall"),
    ("grp_tres", "GrpTRES"),
    ("qos", "QOS"),
    ("default_qos", "DefaultQOS"),
)
SACCTMGR_ASSOC_ARGS = ("-P", "-n", "show", "assoc", "format=" + ",".join(f for _, f in SACCTMGR_FIELDS))


def _wall_minutes(text: str) -> int | None:
    seconds = duration_seconds(text) if text else None
    return None if seconds is None else -(-seconds // 60)


def parse_sacctmgr_assoc(text: str) -> list[dict[str, Any]]:
    """The associations of ``sacctmgr`` with :data:`SACCTMGR_ASSOC_ARGS` as allocation records (an
    account's own row has ``user`` ``None``; walls in minutes)."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = line.split("|")
        if len(cells) < len(SACCTMGR_FIELDS):
            raise ValueError(f"sacctmgr line with {len(cells)} fields, expected {len(SACCTMGR_FIELDS)}: {line!r}")
        raw = {key: cells[i].strip() for i, (key, _) in enumerate(SACCTMGR_FIELDS)}
        share = raw["fairshare"]
        rows.append(
            allocation_record(
                cluster=raw["cluster"] or None,
                account=raw["account"],
                user=raw["user"] or None,
                partition=raw["partition"] or None,
                fairshare=to_int(share) if to_int(share) is not None else (share or None),
                qos=raw["qos"] or None,
                default_qos=raw["default_qos"] or None,
                max_jobs=to_int(raw["max_jobs"]),
                max_submit=to_int(raw["max_submit"]),
                max_wall=_wall_minutes(raw["max_wall"]),
                max_tres=raw["max_tres"] or None,
                max_tres_per_node=raw["max_tres_per_node"] or None,
                grp_jobs=to_int(raw["grp_jobs"]),
                grp_submit=to_int(raw["grp_submit"]),
                grp_wall=_wall_minutes(raw["grp_wall"]),
                grp_tres=raw["grp_tres"] or None,
            )
        )
    return rows


# ---------------------------------------------------------------- the backend

#: a job id ``scancel`` may be given: ``123``, ``123_4``, ``123_[1-3]``, ``123+1`` (het job); never an option
SLURM_JOB_ID = re.compile(r"^[0-9]+(_[0-9]+|_\[[0-9,\-%]+\]|\+[0-9]+)?$")


class SlurmBackend(CommandBackend):
    """Runs Slurm's commands (through ``run``, no shell, each with ``timeout``) and parses them.

    ``env`` is the environment of every command (e.g. ``SLURM_CONF`` for another cluster).  JSON is
    used where this Slurm has it; the first failure of ``--json`` that text can answer switches that
    command to text for good.
    """

    name = "slurm"

    def __init__(
        self,
        *,
        run: Runner = run_command,
        env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(run=run, env=env, timeout=timeout, clock=clock)
        self.json: dict[str, bool] = {"squeue": True, "sinfo": True}

    async def _fetch(
        self,
        cmd: str,
        text_args: Sequence[str],
        from_json: Callable[[str], T],
        from_text: Callable[[str], T],
    ) -> T:
        """``cmd --json`` parsed by ``from_json`` or, where that fails (no JSON plugin, a shape this code
        does not know), ``cmd TEXT_ARGS`` parsed by ``from_text``; parsing runs in a worker thread (a big
        cluster's answer takes a while)."""
        if self.json[cmd]:
            try:
                out = (await self.command(cmd, "--json")).stdout
                return await anyio.to_thread.run_sync(from_json, out)
            except (CommandFailed, ValueError) as exc:
                json_error: Exception = exc
            text = await self.command(cmd, *text_args)  # if this fails too, its error is the answer
            result = await anyio.to_thread.run_sync(from_text, text.stdout)
            log.warning("%s --json failed (%s): using its text output from now on", cmd, json_error)
            self.json[cmd] = False
            return result
        out = (await self.command(cmd, *text_args)).stdout
        return await anyio.to_thread.run_sync(from_text, out)

    async def jobs(self) -> list[dict[str, Any]]:
        """Every job Slurm still knows (finished ones for ``MinJobAge``), of every user."""
        now = self.clock()
        return await self._fetch(
            "squeue", SQUEUE_TEXT_ARGS, lambda out: parse_squeue_json(out, now=now), parse_squeue_text
        )

    async def nodes(self) -> list[Node]:
        return await self._fetch("sinfo", SINFO_TEXT_ARGS, nodes_from_json, nodes_from_text)

    async def queues(self) -> dict[str, dict[str, Any]]:
        """``{partition: queue record}``: ``scontrol -o show partition`` with the nodes of ``sinfo``."""
        text = (await self.command("scontrol", "-o", "show", "partition")).stdout
        partitions = parse_scontrol_partitions(text)
        if partition_qos(partitions):  # their MaxJobsPerUser: parsed again with it
            qos = await self.command("sacctmgr", *SACCTMGR_QOS_ARGS, check=False)
            if qos.returncode == 0:
                partitions = parse_scontrol_partitions(text, parse_qos_max_jobs(qos.stdout))
        return queue_records(partitions, await self.nodes())

    async def allocations(self) -> list[dict[str, Any]]:
        """Every association (account and user rows) of ``sacctmgr``; fails without accounting."""
        out = (await self.command("sacctmgr", *SACCTMGR_ASSOC_ARGS)).stdout
        return await anyio.to_thread.run_sync(parse_sacctmgr_assoc, out)

    def valid_job_id(self, job_id: str) -> bool:
        return bool(SLURM_JOB_ID.match(job_id))

    async def cancel(self, job_id: str) -> None:
        if not self.valid_job_id(job_id):
            raise ValueError(f"not a Slurm job id: {job_id!r}")
        await self.command("scancel", job_id)

    async def time_limit(self, job_id: str) -> int | None:
        """Seconds of the job's time limit (``None``: unlimited or unknown)."""
        if not self.valid_job_id(job_id):
            return None
        out = await self.command("squeue", "-h", "-j", job_id, "-o", "%l")
        return duration_seconds(out.stdout.strip().splitlines()[0] if out.stdout.strip() else None)


__all__ = [
    "SACCTMGR_ASSOC_ARGS",
    "SACCTMGR_FIELDS",
    "SACCTMGR_QOS_ARGS",
    "SEP",
    "SINFO_TEXT_ARGS",
    "SLURM_JOB_ID",
    "SQUEUE_FIELDS",
    "SQUEUE_TEXT_ARGS",
    "SlurmBackend",
    "decode_exit",
    "expand_path",
    "gpu_count",
    "job_from_json",
    "key_values",
    "node_state",
    "nodes_from_json",
    "nodes_from_text",
    "parse_qos_max_jobs",
    "parse_sacctmgr_assoc",
    "parse_scontrol_partitions",
    "parse_squeue_json",
    "parse_squeue_text",
    "slurm_time",
    "unwrap",
]
