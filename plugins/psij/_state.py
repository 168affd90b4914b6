"""One state machine per job: every transition is applied and announced exactly once, in one place.

Three sources move a job: PSI/J's status callbacks (on PSI/J's threads), the
reconcile loop (the scheduler's own word, on the event loop) and a cancel (a
route).  They all go through :meth:`JobTable.advance`, which holds one lock,
drops what is not a transition (the same state again, a step backwards, anything
after a final state), turns a final state that follows a cancel into
``CANCELLED``, records the change and emits the ``job_status`` event, still
under the lock, so events leave in the order the transitions happened.

States are the one vocabulary of radical-edge (:class:`JobState`).  Their order:
``PENDING``/``HELD`` (a job may move between these two), then ``RUNNING``, then
the final states.  ``UNKNOWN`` (the scheduler said something the vocabulary does
not know) may be entered from any live state and does not count as progress: a
job that was ``RUNNING`` may go ``UNKNOWN`` and back to ``RUNNING``, never to
``PENDING``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..scheduler import JobState

#: how far along each state is; a job never moves to a lower rank than it reached
_RANK = {
    JobState.PENDING: 0,
    JobState.HELD: 0,
    JobState.RUNNING: 1,
    JobState.DONE: 2,
    JobState.FAILED: 2,
    JobState.CANCELLED: 2,
}


@dataclass(eq=False)
class JobRecord:
    """What the plugin knows about one job (kept at plugin level: it outlives the session that made it)."""

    job_id: str
    owner: str
    sid: str
    executor: str
    executable: str
    arguments: list[str]
    name: str | None
    stdout_path: Path
    stderr_path: Path
    stream_output: bool = True
    submitted_at: float = field(default_factory=time.time)
    native_id: str | None = None
    #: the PSI/J Job object (for cancel), set once submitted
    psij_job: Any = None
    #: local executor: the process PSI/J started (its output pipe is closed once PSI/J is done with it)
    process: Any = None

    state: JobState | None = None
    exit_code: int | None = None
    message: str | None = None
    updated_at: float = field(default_factory=time.time)
    #: monotonic time of the last transition (or of the submit)
    changed_at: float = field(default_factory=time.monotonic)
    history: list[dict[str, Any]] = field(default_factory=list)
    rank: int = -1

    cancel_requested: bool = False
    #: PSI/J has stopped tracking the job (its poll failed it wholesale); only reconcile moves it now
    psij_lost: bool = False
    #: monotonic time of the last reconcile, and since when the scheduler has said "final" without PSI/J agreeing
    last_reconcile: float = 0.0
    final_seen_at: float | None = None
    #: consecutive reconciles in which the scheduler did not know the job
    missing: int = 0

    @property
    def final(self) -> bool:
        return self.state is not None and self.state.final

    def summary(self) -> dict[str, Any]:
        """The job as ``list_jobs`` shows it."""
        return {
            "job_id": self.job_id,
            "native_id": self.native_id,
            "executor": self.executor,
            "state": self.state.value if self.state else JobState.PENDING.value,
            "exit_code": self.exit_code,
            "message": self.message,
            "executable": self.executable,
            "arguments": list(self.arguments),
            "name": self.name,
            "submitted": self.submitted_at,
            "updated": self.updated_at,
            "sid": self.sid,
        }


#: ``emit(record, previous_state, source)`` announces a transition (called under the table's lock)
Emit = Callable[[JobRecord, "JobState | None", str], None]


class JobTable:
    """The plugin's jobs by id, and the one place their states change."""

    def __init__(self, emit: Emit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._emit = emit
        self._clock = clock
        self._lock = threading.RLock()
        self._jobs: dict[str, JobRecord] = {}

    # ------------------------------------------------------------ the table

    def add(self, record: JobRecord) -> None:
        with self._lock:
            if record.job_id in self._jobs:
                raise ValueError(f"job {record.job_id} already known")
            record.changed_at = self._clock()
            self._jobs[record.job_id] = record

    def discard(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._jobs.get(job_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def __iter__(self) -> Iterator[JobRecord]:
        with self._lock:
            return iter(list(self._jobs.values()))

    def owned_by(self, owner: str) -> list[JobRecord]:
        with self._lock:
            return sorted((r for r in self._jobs.values() if r.owner == owner), key=lambda r: r.submitted_at)

    def live(self) -> list[JobRecord]:
        """The jobs not in a final state."""
        with self._lock:
            return [r for r in self._jobs.values() if not r.final]

    # ------------------------------------------------------------ transitions

    def advance(
        self,
        record: JobRecord,
        state: JobState,
        *,
        exit_code: int | None = None,
        message: str | None = None,
        source: str = "psij",
    ) -> bool:
        """Move ``record`` to ``state`` if that is a transition; emit it. Returns whether it was one."""
        with self._lock:
            if record.final:
                return False
            if record.cancel_requested and state.final:
                state = JobState.CANCELLED
            if state is record.state:
                return False
            if state is not JobState.UNKNOWN and _RANK[state] < record.rank:
                return False  # never backwards (e.g. a late QUEUED after RUNNING)
            previous = record.state
            record.state = state
            if state is not JobState.UNKNOWN:
                record.rank = _RANK[state]
            if exit_code is not None:
                record.exit_code = exit_code
            record.message = message
            record.changed_at = self._clock()
            record.updated_at = time.time()
            record.final_seen_at = None
            record.history.append({"state": state.value, "time": record.updated_at, "source": source})
            self._emit(record, previous, source)
            return True

    def request_cancel(self, record: JobRecord) -> bool:
        """Remember that the user cancelled the job (a final state reported later becomes CANCELLED).

        Returns ``False`` if the job is already final (nothing to cancel).
        """
        with self._lock:
            if record.final:
                return False
            record.cancel_requested = True
            return True

    def withdraw_cancel(self, record: JobRecord) -> None:
        """The cancel could not be delivered: the job's own final state counts again."""
        with self._lock:
            if not record.final:
                record.cancel_requested = False


__all__ = ["Emit", "JobRecord", "JobTable"]
