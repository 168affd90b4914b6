"""Which batch system this host has (Slurm, PBS, none), and the backend that talks to it."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from .pbs import PbsBackend
from .run import DEFAULT_TIMEOUT, Runner, run_command
from .slurm import SlurmBackend

#: set to ``slurm``, ``pbs`` or ``none`` to override what :func:`detect_scheduler` finds
OVERRIDE_ENV = "RADICAL_EDGE_SCHEDULER"

SchedulerName = Literal["slurm", "pbs", "none"]


class Backend(Protocol):
    """What every scheduler backend does (the records are those of :mod:`.records`)."""

    name: str

    async def jobs(self) -> list[dict[str, Any]]:
        """Every job the scheduler lists, of every user."""

    async def queues(self) -> dict[str, dict[str, Any]]:
        """``{queue: queue record}``."""

    async def allocations(self) -> list[dict[str, Any]]:
        """Accounts/associations and their limits."""

    def valid_job_id(self, job_id: str) -> bool:
        """Whether ``job_id`` is a job id of this scheduler (never an option, never a pattern)."""

    async def cancel(self, job_id: str) -> None:
        """Cancel the job (``ValueError`` for an invalid id, ``SchedulerError`` when refused)."""

    async def time_limit(self, job_id: str) -> int | None:
        """Seconds of a job's time limit, ``None`` if unlimited or unknown."""


def detect_scheduler(
    env: Mapping[str, str] | None = None, which: Callable[[str], str | None] = shutil.which
) -> SchedulerName:
    """``slurm`` if Slurm's clients are on PATH, else ``pbs`` for PBS's, else ``none``.

    Slurm is checked first: Slurm sites often install a ``qstat`` compatibility wrapper.  The
    environment variable ``RADICAL_EDGE_SCHEDULER`` overrides the search.
    """
    env = os.environ if env is None else env
    forced = env.get(OVERRIDE_ENV, "").strip().lower()
    if forced in ("slurm", "pbs", "none"):
        return forced  # type: ignore[return-value]
    if which("sinfo") and which("squeue"):
        return "slurm"
    if which("qstat") and which("pbsnodes"):
        return "pbs"
    return "none"


def make_backend(
    name: str,
    *,
    run: Runner = run_command,
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    clock: Callable[[], float] = time.time,
) -> Backend | None:
    """The backend for ``name`` (``slurm``, ``pbs``), ``None`` for ``none``."""
    if name == "slurm":
        return SlurmBackend(run=run, env=env, timeout=timeout, clock=clock)
    if name == "pbs":
        return PbsBackend(run=run, env=env, timeout=timeout, clock=clock)
    if name == "none":
        return None
    raise ValueError(f"unknown scheduler {name!r} (slurm, pbs or none)")


__all__ = ["OVERRIDE_ENV", "Backend", "SchedulerName", "detect_scheduler", "make_backend"]
