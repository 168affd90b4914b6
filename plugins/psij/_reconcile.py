"""Asking the scheduler itself what became of jobs PSI/J has stopped moving.

PSI/J's Slurm executor parses ``squeue`` strictly: one line it does not
understand (a reason with spaces such as "Nodes required for job are DOWN,
DRAINED or ...", a failure reason missing from its table) fails the whole poll,
every poll, and its jobs stay QUEUED forever.  When its ``squeue`` cannot run it
fails every job at once.  The plugin then asks Slurm directly:
``squeue -h -t all -j IDS -o %i|%T|%r`` (the controller's current word, parsed
line by line) and, for jobs squeue no longer lists or that ended,
``sacct -X -n -P -j IDS -o JobID,State,ExitCode`` (the accounting record).

The exit code of a finished job is the one PSI/J's job script wrote to
``<work_dir>/<native_id>.ec`` when that file is still there: the batch script
itself always ends with status 0, so Slurm's ExitCode is the command's only
when the script was killed (timeout, cancel, node failure).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from ..scheduler import JobState, SchedulerError, run_command, slurm_state

#: seconds a reconcile query may take
QUERY_TIMEOUT = 20.0


@dataclass(frozen=True)
class SchedulerView:
    """What the scheduler says about one job."""

    state: JobState
    raw: str  # the scheduler's own word ("RUNNING", "CANCELLED by 0", "TIMEOUT")
    reason: str | None = None
    exit_code: int | None = None
    source: str = "squeue"

    def message(self) -> str:
        text = f"{self.source}: {self.raw}"
        if self.reason and self.reason != "None":
            text += f" ({self.reason})"
        return text


def parse_squeue(text: str) -> dict[str, SchedulerView]:
    """``squeue -h -t all -o %i|%T|%r`` output, line by line (a line it cannot read is skipped, not fatal)."""
    views: dict[str, SchedulerView] = {}
    for line in text.splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) < 2 or not parts[0]:
            continue
        job_id, raw = parts[0].strip(), parts[1].strip()
        reason = parts[2].strip() if len(parts) > 2 else None
        state = slurm_state(raw, reason)  # PENDING with a hold reason is HELD
        views[job_id] = SchedulerView(state, raw, reason, None, "squeue")
    return views


def _exit_code(text: str) -> int | None:
    code, _, _signal = text.strip().partition(":")
    try:
        return int(code)
    except ValueError:
        return None


def parse_sacct(text: str) -> dict[str, SchedulerView]:
    """``sacct -X -n -P -o JobID,State,ExitCode`` output."""
    views: dict[str, SchedulerView] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0]:
            continue
        job_id, raw, code = parts[0].strip(), parts[1].strip(), parts[2]
        views[job_id] = SchedulerView(slurm_state(raw), raw, None, _exit_code(code), "sacct")
    return views


async def query_slurm(native_ids: Collection[str]) -> dict[str, SchedulerView]:
    """What Slurm says about ``native_ids`` (ids it does not know are left out)."""
    ids = sorted({i for i in native_ids if i})
    if not ids:
        return {}
    views: dict[str, SchedulerView] = {}
    with contextlib.suppress(SchedulerError):
        # exit status 1 when none of the ids is known any more: no rows, not an error
        done = await run_command(
            ["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T|%r"], timeout=QUERY_TIMEOUT, check=False
        )
        views.update((k, v) for k, v in parse_squeue(done.stdout).items() if k in ids)
    ask = [i for i in ids if i not in views or views[i].state.final or views[i].state is JobState.UNKNOWN]
    if ask:
        with contextlib.suppress(SchedulerError):
            done = await run_command(
                ["sacct", "-X", "-n", "-P", "-j", ",".join(ask), "-o", "JobID,State,ExitCode"],
                timeout=QUERY_TIMEOUT,
                check=False,
            )
            for job_id, view in parse_sacct(done.stdout).items():
                if job_id not in ask:
                    continue
                current = views.get(job_id)
                if current is None or current.state is JobState.UNKNOWN or view.state is current.state:
                    views[job_id] = view  # the accounting record has the exit code
    return views


def read_exit_code_file(path: Path) -> int | None:
    """The exit code PSI/J's job script wrote (``None`` if the file is missing or unreadable)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


#: the executors whose jobs the plugin can reconcile, and how
QUERIES = {"slurm": query_slurm}

__all__ = ["QUERIES", "SchedulerView", "parse_sacct", "parse_squeue", "query_slurm", "read_exit_code_file"]
