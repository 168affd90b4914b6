"""The one job-state vocabulary of radical-edge: every scheduler's and PSI/J's states map to these.

The same seven words, spelled the same, in queue_info, psij, rhapsody, the SDK and
the portal.  Anything a mapping does not know becomes ``UNKNOWN`` (never an
exception, never a guess), so a new scheduler state can never wedge a job.
"""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    PENDING = "PENDING"  # waiting: queued, configuring, held by dependency/priority
    RUNNING = "RUNNING"  # running (incl. completing, suspended-but-allocated)
    DONE = "DONE"  # finished with exit code 0
    FAILED = "FAILED"  # finished badly: non-zero exit, node failure, timeout, out of memory, boot failure
    CANCELLED = "CANCELLED"  # cancelled by a user or an administrator
    HELD = "HELD"  # held: will not start until released
    UNKNOWN = "UNKNOWN"  # the scheduler said something this vocabulary does not know

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})

#: Slurm job states (long names and the compact codes of ``squeue -t``/``%t``)
_SLURM = {
    "PENDING": JobState.PENDING,
    "PD": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,
    "CF": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "RQ": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "RF": JobState.PENDING,
    "REQUEUE_HOLD": JobState.HELD,
    "RH": JobState.HELD,
    "RESV_DEL_HOLD": JobState.HELD,
    "RD": JobState.HELD,
    "RUNNING": JobState.RUNNING,
    "R": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "CG": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "SO": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "SI": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "RS": JobState.RUNNING,
    "SUSPENDED": JobState.RUNNING,
    "S": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "ST": JobState.RUNNING,
    "COMPLETED": JobState.DONE,
    "CD": JobState.DONE,
    "CANCELLED": JobState.CANCELLED,
    "CA": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "RV": JobState.CANCELLED,
    "FAILED": JobState.FAILED,
    "F": JobState.FAILED,
    "TIMEOUT": JobState.FAILED,
    "TO": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "NF": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "OOM": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "BF": JobState.FAILED,
    "DEADLINE": JobState.FAILED,
    "DL": JobState.FAILED,
    "PREEMPTED": JobState.FAILED,
    "PR": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
    "SE": JobState.FAILED,
}

#: PBS job states (``job_state`` of ``qstat -f``)
_PBS = {
    "Q": JobState.PENDING,
    "W": JobState.PENDING,  # waiting for its start time
    "T": JobState.PENDING,  # being moved
    "B": JobState.RUNNING,  # array with a subjob running
    "R": JobState.RUNNING,
    "E": JobState.RUNNING,  # exiting
    "S": JobState.RUNNING,
    "U": JobState.RUNNING,
    "H": JobState.HELD,
    "F": JobState.DONE,  # finished: the exit status decides (see pbs_state)
    "X": JobState.DONE,  # finished subjob
    "M": JobState.PENDING,  # moved to another server
}

#: PSI/J's JobState names
_PSIJ = {
    "NEW": JobState.PENDING,
    "QUEUED": JobState.PENDING,
    "ACTIVE": JobState.RUNNING,
    "COMPLETED": JobState.DONE,
    "FAILED": JobState.FAILED,
    "CANCELED": JobState.CANCELLED,
}


#: rhapsody task states: its concurrent/dask/dragon/orbit backends report RUNNING, DONE, FAILED and
#: CANCELED (dragon also PENDING, orbit also COMPLETED); its RADICAL-Pilot backend passes RP's own states
_RHAPSODY = {
    "PENDING": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "DONE": JobState.DONE,
    "COMPLETED": JobState.DONE,
    "FAILED": JobState.FAILED,
    "CANCELED": JobState.CANCELLED,
    "CANCELLED": JobState.CANCELLED,
    # RADICAL-Pilot: everything before the executable runs is waiting, staging out is still running
    "NEW": JobState.PENDING,
    "TMGR_SCHEDULING_PENDING": JobState.PENDING,
    "TMGR_SCHEDULING": JobState.PENDING,
    "TMGR_STAGING_INPUT_PENDING": JobState.PENDING,
    "TMGR_STAGING_INPUT": JobState.PENDING,
    "AGENT_STAGING_INPUT_PENDING": JobState.PENDING,
    "AGENT_STAGING_INPUT": JobState.PENDING,
    "AGENT_SCHEDULING_PENDING": JobState.PENDING,
    "AGENT_SCHEDULING": JobState.PENDING,
    "AGENT_EXECUTING_PENDING": JobState.PENDING,
    "AGENT_EXECUTING": JobState.RUNNING,
    "AGENT_STAGING_OUTPUT_PENDING": JobState.RUNNING,
    "AGENT_STAGING_OUTPUT": JobState.RUNNING,
    "TMGR_STAGING_OUTPUT_PENDING": JobState.RUNNING,
    "TMGR_STAGING_OUTPUT": JobState.RUNNING,
}


#: Slurm reasons (``%r``, ``state_reason``) of a pending job that is held: it will not start until released
SLURM_HOLD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin"})


def slurm_state(raw: object, reason: object = None) -> JobState:
    """A Slurm state: a string (``"RUNNING"``, ``"R"``, ``"CANCELLED by 0"``) or, in Slurm 23.02+
    JSON, a list of flags whose first entry is the base state.

    Slurm reports a held job as PENDING with the reason ``JobHeldUser``/``JobHeldAdmin``; give
    ``reason`` to get HELD for it.
    """
    if isinstance(raw, list):
        raw = raw[0] if raw else ""
    if not isinstance(raw, str):
        return JobState.UNKNOWN
    word = raw.strip().split(" ", 1)[0].rstrip("+").upper()
    state = _SLURM.get(word, JobState.UNKNOWN)
    if state is JobState.PENDING and isinstance(reason, str) and reason.strip() in SLURM_HOLD_REASONS:
        return JobState.HELD
    return state


def pbs_state(raw: object, exit_status: int | None = None) -> JobState:
    """A PBS ``job_state`` letter; a finished job is DONE for exit 0, CANCELLED for PBS's
    kill codes (265, 271), FAILED otherwise."""
    if not isinstance(raw, str):
        return JobState.UNKNOWN
    state = _PBS.get(raw.strip().upper(), JobState.UNKNOWN)
    if state is JobState.DONE and exit_status not in (None, 0):
        return JobState.CANCELLED if exit_status in (265, 271) else JobState.FAILED
    return state


def psij_state(raw: object) -> JobState:
    """A PSI/J JobState (or its name)."""
    name = getattr(raw, "name", raw)
    return _PSIJ.get(str(name).upper(), JobState.UNKNOWN) if name is not None else JobState.UNKNOWN


def rhapsody_state(raw: object) -> JobState:
    """A rhapsody task state (a string, or an enum such as ``TasksMainStates``); ``None``, the state
    of a task no backend has taken yet, is PENDING."""
    if raw is None:
        return JobState.PENDING
    name = getattr(raw, "value", raw)
    return _RHAPSODY.get(name.strip().upper(), JobState.UNKNOWN) if isinstance(name, str) else JobState.UNKNOWN


__all__ = ["SLURM_HOLD_REASONS", "JobState", "pbs_state", "psij_state", "rhapsody_state", "slurm_state"]
