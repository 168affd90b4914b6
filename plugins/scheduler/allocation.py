"""The batch allocation the edge runs inside (a Slurm or PBS job), from its environment.

``None`` on a login node.  The environment says nearly everything; the job's time limit comes
from the scheduler (``squeue -j ID -o %l``, ``qstat -f ID``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .detect import Backend
from .records import to_int
from .run import SchedulerError

log = logging.getLogger("radical_edge.scheduler")

#: the allocation record's keys
ALLOCATION_KEYS = (
    "scheduler",
    "job_id",
    "partition",
    "n_nodes",
    "nodelist",
    "cpus_per_node",
    "gpus_per_node",
    "account",
    "job_name",
    "runtime",
)


def _first_int(text: str | None) -> int | None:
    """``4(x2),2`` -> 4; ``a100:4`` -> 4 (the last number of the first item)."""
    if not text:
        return None
    numbers = re.findall(r"\d+", text.split(",", 1)[0].split("(", 1)[0])
    return int(numbers[-1]) if numbers else None


def _read_lines(path: str) -> list[str]:
    try:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError:
        return []


def allocation_from_env(
    env: Mapping[str, str] | None = None, read_lines: Callable[[str], list[str]] = _read_lines
) -> dict[str, Any] | None:
    """The allocation described by ``env`` (Slurm's ``SLURM_*`` or PBS's ``PBS_*`` variables), with
    ``runtime`` still ``None``; ``None`` outside a batch job.  (Reads ``PBS_NODEFILE``: blocking.)"""
    env = os.environ if env is None else env
    if env.get("SLURM_JOB_ID"):
        return {
            "scheduler": "slurm",
            "job_id": env["SLURM_JOB_ID"],
            "partition": env.get("SLURM_JOB_PARTITION"),
            "n_nodes": to_int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")),
            "nodelist": env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST"),
            "cpus_per_node": to_int(env.get("SLURM_CPUS_ON_NODE")) or _first_int(env.get("SLURM_JOB_CPUS_PER_NODE")),
            "gpus_per_node": to_int(env.get("SLURM_GPUS_ON_NODE")) or _first_int(env.get("SLURM_GPUS_PER_NODE")),
            "account": env.get("SLURM_JOB_ACCOUNT"),
            "job_name": env.get("SLURM_JOB_NAME"),
            "runtime": None,
        }
    if env.get("PBS_JOBID"):
        hosts = read_lines(env["PBS_NODEFILE"]) if env.get("PBS_NODEFILE") else []
        unique = list(dict.fromkeys(hosts))
        return {
            "scheduler": "pbs",
            "job_id": env["PBS_JOBID"],
            "partition": env.get("PBS_QUEUE"),
            "n_nodes": len(unique) or None,
            "nodelist": ",".join(unique) or None,
            "cpus_per_node": to_int(env.get("NCPUS")) or (hosts.count(unique[0]) if unique else None),
            "gpus_per_node": to_int(env.get("NGPUS")),
            "account": env.get("PBS_ACCOUNT"),
            "job_name": env.get("PBS_JOBNAME"),
            "runtime": None,
        }
    return None


async def with_runtime(allocation: dict[str, Any] | None, backend: Backend | None) -> dict[str, Any] | None:
    """``allocation`` with ``runtime`` (the job's time limit in seconds) asked of the scheduler; it
    stays ``None`` when the scheduler cannot say (logged, not an error: the rest is still true)."""
    if allocation is None or backend is None or backend.name != allocation["scheduler"]:
        return allocation
    try:
        runtime = await backend.time_limit(str(allocation["job_id"]))
    except SchedulerError as exc:
        log.warning("time limit of job %s: %s", allocation["job_id"], exc)
        runtime = None
    return {**allocation, "runtime": runtime}


__all__ = ["ALLOCATION_KEYS", "allocation_from_env", "with_runtime"]
