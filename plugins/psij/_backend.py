"""Everything that touches psij-python (blocking calls: run them in a worker thread).

* one executor per name, made once and shared: ``JobExecutor.get_instance`` makes
  a new one on every call, and every batch executor starts its own polling thread;
* batch executors poll the queue every ``poll_interval`` seconds (PSI/J's default
  is 30), so a state change reaches the user within about that;
* each batch executor's ``parse_status_output`` is wrapped to record whether its
  polls succeed: PSI/J swallows parse failures (an ``squeue`` line it does not
  understand fails every poll and its jobs never move) and the plugin then
  reconciles with the scheduler instead (see ``_reconcile``);
* PSI/J's exceptions become :class:`SubmitFailed` with a message fit for the user
  (a missing ``sbatch`` raises a bare ``FileNotFoundError`` in PSI/J).
"""

from __future__ import annotations

import importlib.util
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psij
from psij.executors.batch.batch_scheduler_executor import BatchSchedulerExecutor, BatchSchedulerExecutorConfig
from typeguard import TypeCheckError

from ._spec import ParsedSpec, SpecError

#: the commands each batch executor runs (all must be on PATH)
COMMANDS = {
    "slurm": ("sbatch", "squeue", "scancel"),
    "pbs": ("qsub", "qstat", "qdel"),
    "pbs_classic": ("qsub", "qstat", "qdel"),
    "cobalt": ("qsub", "qstat", "qdel"),
    "lsf": ("bsub", "bjobs", "bkill"),
    "flux": ("flux",),
}
#: executors this plugin does not offer (radical.pilot's needs a whole pilot system behind it)
EXCLUDED = frozenset({"rp"})
#: what PSI/J says when it gives up on all its jobs because its poll failed (not the job's fault)
LOST_PREFIXES = ("Failed to poll for job status", "Error updating job statuses", "Failed to update job status")


class SubmitFailed(Exception):
    """The job could not be submitted; ``str()`` is the reason (PSI/J's or the scheduler's words)."""


def executor_names() -> list[str]:
    """The executors psij-python provides here (minus :data:`EXCLUDED`)."""
    return sorted(set(psij.JobExecutor.get_executor_names()) - EXCLUDED)


def missing_commands(name: str) -> list[str]:
    return [c for c in COMMANDS.get(name, ()) if shutil.which(c) is None]


def detect_default() -> str:
    """The batch system of this host (slurm, pbs, lsf, flux) or ``local``."""
    for name, probe in (("slurm", "sbatch"), ("pbs", "qsub"), ("lsf", "bsub")):
        if shutil.which(probe):
            return name
    if shutil.which("flux") and importlib.util.find_spec("flux") is not None:
        return "flux"
    return "local"


def _message(exc: BaseException) -> str:
    """PSI/J's exceptions keep their text in ``message`` (``str()`` may be empty) and the cause in ``exception``."""
    text = str(getattr(exc, "message", "") or exc).strip()
    cause = getattr(exc, "exception", None)
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}" if text else str(cause)
    return text or type(exc).__name__


@dataclass
class PollHealth:
    """Whether an executor's queue polls work (monotonic times of the last good and the last failed one)."""

    last_ok: float = 0.0
    last_error: float = 0.0
    error: str = ""

    @property
    def degraded(self) -> bool:
        return self.last_error > self.last_ok


class Executors:
    """One PSI/J executor per name, made on first use with the plugin's configuration."""

    def __init__(self, work_dir: Path, poll_interval: float, on_status: Callable[[Any, Any], None]) -> None:
        self.work_dir = work_dir
        self.poll_interval = poll_interval
        self._on_status = on_status
        self._lock = threading.Lock()
        self._executors: dict[str, Any] = {}
        self.health: dict[str, PollHealth] = {}

    def get(self, name: str) -> Any:
        """The executor ``name`` (blocking: may start its polling thread). Raises :class:`SubmitFailed`."""
        with self._lock:
            executor = self._executors.get(name)
            if executor is not None:
                return executor
            if name not in executor_names():
                raise SubmitFailed(f"unknown executor {name!r} (available: {', '.join(executor_names())})")
            missing = missing_commands(name)
            if missing:
                raise SubmitFailed(
                    f"executor {name!r} cannot work on this host: {', '.join(missing)} not found on PATH"
                )
            executor = self._make(name)
            self._executors[name] = executor
            return executor

    def _make(self, name: str) -> Any:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config: Any
        if name in COMMANDS and name != "flux":
            config = BatchSchedulerExecutorConfig(
                work_directory=self.work_dir,
                queue_polling_interval=max(1, round(self.poll_interval)),
                initial_queue_polling_delay=0,
            )
        else:
            config = psij.JobExecutorConfig(work_directory=self.work_dir)
        try:
            executor = psij.JobExecutor.get_instance(name, config=config)
        except Exception as exc:  # flux without its Python package: "Unable to load executor flux"
            raise SubmitFailed(f"executor {name!r} cannot be loaded: {_message(exc)}") from None
        executor.set_job_status_callback(self._on_status)
        if isinstance(executor, BatchSchedulerExecutor):
            self._watch_polls(name, executor)
        return executor

    def _watch_polls(self, name: str, executor: Any) -> None:
        health = self.health.setdefault(name, PollHealth())
        parse = executor.parse_status_output

        def parse_and_record(exit_code: int, out: str) -> Any:
            try:
                result = parse(exit_code, out)
            except Exception as exc:
                health.last_error = time.monotonic()
                health.error = f"{type(exc).__name__}: {exc}"[:500]
                raise
            health.last_ok = time.monotonic()
            return result

        executor.parse_status_output = parse_and_record

    def made(self, name: str) -> Any:
        """The executor ``name`` if it has been made, else ``None`` (never blocks)."""
        with self._lock:
            return self._executors.get(name)

    def degraded(self, name: str) -> bool:
        health = self.health.get(name)
        return health is not None and health.degraded

    def script_dir(self, name: str) -> Path:
        """Where a batch executor keeps its job scripts and ``<native_id>.ec|.out`` files."""
        return self.work_dir / name


def build_spec(parsed: ParsedSpec, stdout_path: Path, stderr_path: Path) -> Any:
    """A PSI/J JobSpec of ``parsed``; PSI/J's own checks raise :class:`SpecError` with its message."""
    try:
        attributes = psij.JobAttributes(
            queue_name=parsed.queue_name,
            account=parsed.account,
            reservation_id=parsed.reservation_id,
            custom_attributes=dict(parsed.custom_attributes) or None,
        )
        if parsed.duration is not None:
            attributes.duration = parsed.duration
        resources = psij.ResourceSpecV1(**parsed.resources) if parsed.resources else None
        return psij.JobSpec(
            executable=parsed.executable,
            arguments=list(parsed.arguments),
            directory=Path(parsed.directory) if parsed.directory else None,
            name=parsed.name,
            inherit_environment=parsed.inherit_environment,
            environment=dict(parsed.environment) if parsed.environment is not None else None,
            stdin_path=Path(parsed.stdin_path) if parsed.stdin_path else None,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            resources=resources,
            attributes=attributes,
            pre_launch=Path(parsed.pre_launch) if parsed.pre_launch else None,
            post_launch=Path(parsed.post_launch) if parsed.post_launch else None,
            launcher=parsed.launcher,
        )
    except (psij.InvalidJobException, TypeCheckError, TypeError, ValueError) as exc:
        raise SpecError(_message(exc)) from None


def new_job() -> Any:
    return psij.Job()


def submit(executor: Any, job: Any) -> None:
    """``executor.submit(job)`` with PSI/J's failures as :class:`SpecError` (the spec's fault) or
    :class:`SubmitFailed` (the scheduler refused: its message)."""
    try:
        executor.submit(job)
    except psij.InvalidJobException as exc:
        raise SpecError(_message(exc)) from None
    except psij.SubmitException as exc:
        raise SubmitFailed(_message(exc)) from None
    except FileNotFoundError as exc:  # PSI/J runs the submit command bare
        raise SubmitFailed(f"{executor.name}: command not found: {exc.filename or exc}") from None
    except OSError as exc:
        raise SubmitFailed(f"{executor.name}: {exc}") from None


def local_process(executor: Any, job: Any) -> Any:
    """The ``Popen`` PSI/J's local executor started for ``job``, or ``None``.

    PSI/J reads its launcher's output pipe when the process ends but never closes
    it, so every local job leaves an open pipe behind until the ``Popen`` is
    collected (with a ``ResourceWarning``).  The plugin keeps the process and
    closes the pipe with :func:`release_local` once PSI/J is done with it.
    This looks at PSI/J's private bookkeeping: if that changes, nothing is done.
    """
    entries = getattr(getattr(executor, "_reaper", None), "_jobs", None)
    entry = entries.get(job) if isinstance(entries, dict) else None
    return getattr(entry, "process", None)


def release_later(executor: Any, pending: list[tuple[Any, Any]], poll: float = 0.2) -> threading.Thread:
    """Close the pipes of ``pending`` (job, process) pairs from a daemon thread, each once PSI/J's reaper has
    let go of its job: for the jobs still running when the plugin stops.  Otherwise the reaper drops the last
    reference when the job ends and the pipe is closed by the garbage collector, with a ``ResourceWarning``."""

    def run() -> None:
        left = pending
        while left:
            left = [(job, process) for job, process in left if not release_local(executor, job, process)]
            if left:
                time.sleep(poll)

    thread = threading.Thread(target=run, name="psij-release-pipes", daemon=True)
    thread.start()
    return thread


def release_local(executor: Any, job: Any, process: Any) -> bool:
    """Close ``process``'s output pipe once PSI/J's reaper has let go of ``job``; whether that is done."""
    reaper = getattr(executor, "_reaper", None)
    entries = getattr(reaper, "_jobs", None)
    lock = getattr(reaper, "_lock", None)
    if not isinstance(entries, dict) or lock is None:
        return True
    with lock:
        if job in entries:
            return False  # the reaper still polls it (and reads that pipe when it ends)
    stream = getattr(process, "stdout", None)
    if stream is not None:
        stream.close()
    return True


def cancel(job: Any) -> None:
    """``job.cancel()``; a failure raises :class:`SubmitFailed` with the scheduler's message."""
    try:
        job.cancel()
    except psij.SubmitException as exc:
        raise SubmitFailed(_message(exc)) from None
    except OSError as exc:
        raise SubmitFailed(str(exc)) from None


__all__ = [
    "COMMANDS",
    "LOST_PREFIXES",
    "Executors",
    "PollHealth",
    "SubmitFailed",
    "build_spec",
    "cancel",
    "detect_default",
    "executor_names",
    "local_process",
    "missing_commands",
    "new_job",
    "release_later",
    "release_local",
    "submit",
]
