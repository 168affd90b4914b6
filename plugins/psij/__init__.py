"""psij: run jobs through PSI/J executors (local, slurm, pbs, lsf, flux) and follow them live.

Routes (relative to ``/{edge}/psij/``; the session ones need a session of the caller):

``POST submit/{sid}``
    body ``{"job_spec": {...}, "executor": "slurm", "stream_output": true}`` (see ``_spec``;
    ``executor`` defaults to this host's batch system, else ``local``) -> ``{job_id, native_id,
    executor, state}``.  422 with PSI/J's or the scheduler's words for a job that cannot be
    submitted (no executable, unknown executor, bad duration, unknown account or partition...).
``GET status/{sid}/{job_id}?stdout_offset=0&stderr_offset=0``
    -> ``{job_id, native_id, executor, state, exit_code, message, time, submitted, history,
    metadata, stdout, stderr, stdout_offset, stderr_offset}``: the output from those byte offsets
    (at most ``max_read`` bytes each) and the offsets after it.
``GET list_jobs/{sid}``
    -> ``{jobs: [{job_id, native_id, executor, state, exit_code, message, executable, arguments,
    name, submitted, updated, sid}]}``: the caller's jobs, from any of its sessions.
``POST cancel/{sid}/{job_id}``
    -> ``{job_id, native_id, state, cancelled}``; a cancelled job is reported CANCELLED even if the
    scheduler later says it completed or failed.
``GET executors``
    -> ``{executors: [...], default}``: what can be chosen here.
``POST submit_tunneled/{sid}``
    body ``{"job_spec": {attributes, resources...; no executable}, "executor": ..., "plugins": "sysinfo",
    "tunnel": {"via": "login-host", "ssh_options": [...]}}`` -> ``{job_id, native_id, executor, edge, state}``:
    a job that runs a child edge ``{this edge}.{n}`` dialling this edge's bridge (through an SSH local
    forward via ``tunnel.via`` when given).  See ``_children``.
``GET tunnel_status/{edge}``
    -> ``{edge, job_id, native_id, executor, via, state (pending|active|failed|done), job_state,
    exit_code, reason, registered, updated, stdout_tail, stderr_tail}``.

Notifications: ``job_status`` ``{job_id, native_id, executor, state, previous, exit_code, message,
time, source}`` once per state change (``source``: ``psij``, ``scheduler`` when the reconcile
found it, ``cancel``); ``job_output`` ``{job_id, stream, offset, data, size[, skipped]}`` with new
output while the job runs (``offset``: byte offset of ``data`` in that stream; ``size``: its bytes);
``tunnel_status`` (the answer of ``tunnel_status``) on each change of a child edge's state.

Job records belong to the plugin, not to the session: a job goes on, and stays visible to its
caller, after the session that submitted it expired.  Output files and the cleanup policy: see
:class:`PsijPlugin` and ``docs/psij.md``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, ClassVar

import anyio
import anyio.abc
from fastapi import Body, FastAPI, HTTPException, Query, Request

from radical_edge_edge import CurrentSession, Plugin, Session, caller_of
from radical_edge_proto import edge_name_error
from radical_edge_tunnel import BridgeSettings

from ..scheduler import JobState, psij_state
from . import _children, _output
from ._children import ChildError, ChildRecord
from ._reconcile import QUERIES, SchedulerView, read_exit_code_file
from ._spec import ParsedSpec, SpecError, parse_spec
from ._state import JobRecord, JobTable

log = logging.getLogger("radical_edge.plugins.psij")

#: environment variables an edge operator may set
DIR_ENV = "RADICAL_EDGE_PSIJ_DIR"
KEEP_DAYS_ENV = "RADICAL_EDGE_PSIJ_KEEP_DAYS"
#: the longest message kept with a state (PSI/J puts launcher output there)
MAX_MESSAGE = 4000
_SUBMIT_KEYS = frozenset({"job_spec", "executor", "stream_output"})


def _env_float(name: str) -> float | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        log.warning("%s=%r is not a number: ignored", name, value)
        return None


class PsijPlugin(Plugin):
    """Jobs through PSI/J, with live state and output.

    Configuration (keyword arguments; the environment variables apply when an argument is not given):

    ``base_dir`` (``$RADICAL_EDGE_PSIJ_DIR``, default ``~/.radical/edge/psij``, ``~`` being ``$HOME``)
        output goes to ``<base_dir>/<edge>/<job_id>.out|.err``, PSI/J's job scripts to
        ``<base_dir>/<edge>/work/<executor>/``.  For batch jobs it must be on a file system the
        compute nodes share (home directories usually are).
    ``keep_days`` (``$RADICAL_EDGE_PSIJ_KEEP_DAYS``, default 7)
        cleanup, at start and then every ``cleanup_interval`` seconds (a day): files in those
        directories not written for ``keep_days`` days are deleted unless their job is still live,
        and records of final jobs that old are forgotten.  0 deletes final jobs' files at the next
        cleanup.  At most ``max_records`` jobs are remembered (the oldest final ones go first).
    ``default_executor``
        the executor of a submit that names none (default: the host's batch system, else ``local``).
    ``poll_interval`` (1 s)
        how often PSI/J's batch executors poll the queue (PSI/J's default is 30 s).
    ``stale_after`` (15 s), ``reconcile_tick`` (1 s), ``final_grace`` (3 s)
        a batch job PSI/J has not moved for ``stale_after`` seconds is checked with the scheduler
        itself (Slurm: ``squeue``/``sacct``) and what the scheduler says is reported; while PSI/J's
        polls fail, every ``reconcile_tick``.  When the scheduler says "finished" but PSI/J is healthy,
        PSI/J gets ``final_grace`` seconds to report it (with the exit code) first.
    ``output_interval`` (0.5 s), ``output_chunk`` (64 KiB), ``output_backlog`` (1 MiB)
        ``job_output`` events: how often the output files of running jobs are read, the most bytes
        per event (one event per stream and interval), and how far the events may lag before the
        oldest output is skipped (``status`` still reads all of it).
    ``max_read`` (4 MiB)
        the most bytes per stream one ``status`` call returns.
    ``child_bridge`` (default: the bridge of the edge this plugin runs in, :attr:`Plugin.bridge_settings`)
        the bridge child edges (``submit_tunneled``) dial; ``child_tick`` (0.25 s): how often their
        jobs and ready files are checked.
    """

    plugin_name = "psij"
    version = "0.1.0"
    description = "Submit and follow jobs through PSI/J executors (local, slurm, pbs, lsf, flux)."
    ui: ClassVar[dict[str, Any]] = {
        "icon": "🚀",
        "title": "PSI/J Jobs",
        "refresh_button": True,
        "auto_load": "list_jobs/{sid}",
        "forms": [
            {
                "id": "submit",
                "title": "Submit a job",
                "layout": "grid",
                "fields": [
                    {"name": "executable", "type": "text", "label": "Executable", "default": "/bin/hostname"},
                    {"name": "arguments", "type": "text", "label": "Arguments (space separated)", "default": ""},
                    {"name": "executor", "type": "text", "label": "Executor (local, slurm, pbs...)", "default": ""},
                    {"name": "queue_name", "type": "text", "label": "Queue / partition", "default": ""},
                    {"name": "account", "type": "text", "label": "Account", "default": ""},
                    {"name": "duration", "type": "text", "label": "Duration (s or HH:MM:SS)", "default": "600"},
                    {"name": "node_count", "type": "number", "label": "Nodes", "default": 1},
                ],
                "submit": {"label": "Submit", "endpoint": "submit/{sid}"},
            }
        ],
        "monitors": [
            {"id": "jobs", "title": "Jobs", "type": "table", "auto_load": "list_jobs/{sid}", "empty_text": "No jobs"}
        ],
        "notifications": {"topic": "job_status", "id_field": "job_id", "state_field": "state"},
    }

    def __init__(
        self,
        name: str | None = None,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        keep_days: float | None = None,
        default_executor: str | None = None,
        poll_interval: float = 1.0,
        stale_after: float = 15.0,
        reconcile_tick: float = 1.0,
        final_grace: float = 3.0,
        output_interval: float = 0.5,
        output_chunk: int = 64 * 1024,
        output_backlog: int = 1024 * 1024,
        max_read: int = 4 * 1024 * 1024,
        cleanup_interval: float = 86400.0,
        max_records: int = 10_000,
        child_bridge: BridgeSettings | None = None,
        child_tick: float = 0.25,
        **kwargs: Any,
    ) -> None:
        from . import _backend  # noqa: PLC0415 - psij is optional: imported when the plugin is made

        self._backend = _backend
        env_dir = os.environ.get(DIR_ENV, "").strip()
        self.base_dir = Path(base_dir or env_dir or Path.home() / ".radical" / "edge" / "psij").expanduser()
        days = keep_days if keep_days is not None else _env_float(KEEP_DAYS_ENV)
        self.keep_days = 7.0 if days is None else days
        if not (self.keep_days >= 0 and math.isfinite(self.keep_days)):
            raise ValueError("keep_days must be a number >= 0")
        if output_chunk < 1 or output_backlog < output_chunk or max_read < 1:
            raise ValueError("output_chunk must be >= 1, output_backlog >= output_chunk, max_read >= 1")
        self.default_executor = default_executor
        self.poll_interval = poll_interval
        self.stale_after = stale_after
        self.reconcile_tick = reconcile_tick
        self.final_grace = final_grace
        self.output_interval = output_interval
        self.output_chunk = output_chunk
        self.output_backlog = output_backlog
        self.max_read = max_read
        self.cleanup_interval = cleanup_interval
        self.max_records = max_records
        self.jobs = JobTable(self._emit)
        self.child_bridge = child_bridge
        self.child_tick = child_tick
        #: child edges by name
        self.children: dict[str, ChildRecord] = {}
        self._child_seq = 0
        self._child_lock = threading.Lock()
        #: set at start: this edge's output directory and PSI/J's work directory
        self.output_dir = self.base_dir / "edge"
        self.executors = _backend.Executors(self.output_dir / "work", poll_interval, self._on_psij_status)
        self._tg: anyio.abc.TaskGroup | None = None
        super().__init__(name, **kwargs)
        self._wrap_lifespan()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if importlib.util.find_spec("psij") is None:
            return "psij-python is not installed (pip install 'radical-edge[hpc]')"
        return None

    # ------------------------------------------------------------ life cycle

    def _wrap_lifespan(self) -> None:
        """Run the plugin's background tasks (reconcile, cleanup, output tailers) in a task group that
        lives as long as the application: around the base class's lifespan (startup .. shutdown)."""
        inner = self.app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[Any]:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                try:
                    async with inner(app) as state:
                        yield state
                finally:
                    self._tg = None
                    tg.cancel_scope.cancel()

        self.app.router.lifespan_context = lifespan

    async def startup(self) -> None:
        edge = self.edge_name or "edge"
        self.output_dir = self.base_dir / edge
        self.executors.work_dir = self.output_dir / "work"
        await self.run_sync(self.output_dir.mkdir, parents=True, exist_ok=True)
        await self.run_sync(self.cleanup)
        await self.run_sync(self.executor_default)
        self._child_seq = max(self._child_seq, await self.run_sync(_children.last_number, self.children_dir, edge))
        assert self._tg is not None, "the psij plugin's lifespan runs its background tasks"
        # (not named _cleanup_loop & co: Plugin's own _cleanup_loop expires the sessions)
        self._tg.start_soon(self._repeat, "reconcile", lambda: self.reconcile_tick, self.reconcile)
        self._tg.start_soon(self._repeat, "cleanup", lambda: self.cleanup_interval, lambda: self.run_sync(self.cleanup))
        self._tg.start_soon(self._repeat, "checking the child edges", lambda: self.child_tick, self.check_children)
        log.info(
            "psij: output in %s, kept %g days; default executor %s",
            self.output_dir,
            self.keep_days,
            self.executor_default(),
        )

    async def shutdown(self) -> None:
        # close the pipes PSI/J leaves open for local jobs that ended (the companion tasks are cancelled by
        # now); jobs still running keep going: the edge stopping does not cancel them
        local = self.executors.made("local")
        if local is None:
            return
        with anyio.move_on_after(3):
            while left := [r for r in self.jobs if r.process is not None and r.final]:
                for record in left:
                    if self._backend.release_local(local, record.psij_job, record.process):
                        record.process = None
                await anyio.sleep(0.05)
        # the rest (still running, or not let go by PSI/J yet) are closed when PSI/J is done with them
        pending = [(r.psij_job, r.process) for r in self.jobs if r.process is not None]
        if pending:
            self._backend.release_later(local, pending)

    @property
    def children_dir(self) -> Path:
        """Where the child edges' launch configs, token copies and ready files are."""
        return self.output_dir / "children"

    def executor_default(self) -> str:
        """The executor of a submit that names none (the host's batch system is looked up once)."""
        if self.default_executor is None:
            self.default_executor = self._backend.detect_default()
        return self.default_executor

    # ------------------------------------------------------------ the state machine's outputs

    def _emit(self, record: JobRecord, previous: JobState | None, source: str) -> None:
        """Announce a transition (called by the job table, under its lock, from any thread)."""
        assert record.state is not None
        self.notify(
            "job_status",
            {
                "job_id": record.job_id,
                "native_id": record.native_id,
                "executor": record.executor,
                "state": record.state.value,
                "previous": previous.value if previous else None,
                "exit_code": record.exit_code,
                "message": record.message,
                "time": record.updated_at,
                "source": source,
            },
        )

    def _on_psij_status(self, job: Any, status: Any) -> None:
        """PSI/J's status callback (its threads: the caller of submit/cancel, the reaper, the poller)."""
        record = self.jobs.get(str(job.id))
        if record is None:
            return  # a job whose submit failed
        if record.native_id is None and job.native_id is not None:
            record.native_id = str(job.native_id)
        if record.executor == "local" and record.process is None:
            # now, while PSI/J's reaper still holds the process (a quick job is gone from it soon after)
            record.process = self._backend.local_process(job.executor, job)
        state = psij_state(status.state)
        message = status.message
        if isinstance(message, str):
            message = message[:MAX_MESSAGE]
        if (
            state is JobState.FAILED
            and record.executor in QUERIES
            and isinstance(message, str)
            and message.startswith(self._backend.LOST_PREFIXES)
        ):
            # PSI/J's poll failed and it gave up on every job: not this job's end. Ask the scheduler.
            record.psij_lost = True
            log.warning(
                "psij: PSI/J lost track of job %s (%s): reconciling with the scheduler",
                record.job_id,
                message.splitlines()[0],
            )
            return
        exit_code = status.exit_code if isinstance(status.exit_code, int) else None
        self.jobs.advance(record, state, exit_code=exit_code, message=message or None, source="psij")

    # ------------------------------------------------------------ submit / cancel

    def _submit_blocking(
        self, session: Session, spec: ParsedSpec, executor_name: str, stream_output: bool
    ) -> JobRecord:
        backend = self._backend
        executor = self.executors.get(executor_name)
        job = backend.new_job()
        job_id = str(job.id)
        stdout = Path(spec.stdout_path).expanduser() if spec.stdout_path else self.output_dir / f"{job_id}.out"
        stderr = Path(spec.stderr_path).expanduser() if spec.stderr_path else self.output_dir / f"{job_id}.err"
        job.spec = backend.build_spec(spec, stdout, stderr)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        record = JobRecord(
            job_id=job_id,
            owner=session.owner,
            sid=session.sid,
            executor=executor_name,
            executable=spec.executable,
            arguments=list(spec.arguments),
            name=spec.name,
            stdout_path=stdout,
            stderr_path=stderr,
            stream_output=stream_output,
            psij_job=job,
        )
        self.jobs.add(record)  # before submit: the local executor reports QUEUED and ACTIVE inside it
        try:
            backend.submit(executor, job)
        except BaseException:
            self.jobs.discard(job_id)
            raise
        if job.native_id is not None:
            record.native_id = str(job.native_id)
        if executor_name == "local" and record.process is None:
            record.process = backend.local_process(executor, job)
        return record

    def _record(self, session: Session, job_id: str) -> JobRecord:
        record = self.jobs.get(job_id)
        if record is None or record.owner != session.owner:
            raise HTTPException(404, f"no job {job_id!r}")
        return record

    # ------------------------------------------------------------ background tasks

    async def _follow(self, record: JobRecord) -> None:
        """A job's companion task: its ``job_output`` events (if wanted), then what PSI/J leaves open."""
        if record.stream_output:
            await self._tail(record)
        if record.process is not None:
            local = await self.run_sync(self.executors.get, "local")
            while not (record.final and self._backend.release_local(local, record.psij_job, record.process)):
                await anyio.sleep(0.2)
            record.process = None

    async def _tail(self, record: JobRecord) -> None:
        """Send ``job_output`` events with what the job writes, until it is final and all is sent."""
        offsets = {"stdout": 0, "stderr": 0}
        paths = {"stdout": record.stdout_path, "stderr": record.stderr_path}

        def read(final: bool) -> list[tuple[str, _output.Chunk]]:
            found = []
            for stream, path in paths.items():
                chunk = _output.tail(path, offsets[stream], self.output_chunk, self.output_backlog, complete=final)
                if chunk is not None:
                    offsets[stream] = chunk.offset + chunk.size
                    found.append((stream, chunk))
            return found

        while True:
            final = record.final
            if final or record.state in (JobState.RUNNING, JobState.UNKNOWN):
                rounds = self.output_backlog // self.output_chunk + 2 if final else 1
                for _ in range(rounds):
                    chunks = await anyio.to_thread.run_sync(read, final)
                    for stream, chunk in chunks:
                        event: dict[str, Any] = {
                            "job_id": record.job_id,
                            "stream": stream,
                            "offset": chunk.offset,
                            "data": chunk.data,
                            "size": chunk.size,
                        }
                        if chunk.skipped:
                            event["skipped"] = chunk.skipped
                        self.notify("job_output", event)
                    if not chunks:
                        break
            if final:
                return
            await anyio.sleep(self.output_interval)

    def _due(self, record: JobRecord, now: float) -> bool:
        if record.native_id is None:
            return False
        if record.psij_lost or record.final_seen_at is not None or self.executors.degraded(record.executor):
            return now - record.last_reconcile >= self.reconcile_tick * 0.9
        return now - max(record.changed_at, record.last_reconcile) >= self.stale_after

    async def reconcile(self) -> None:
        """Check the jobs PSI/J has not moved for a while (or cannot move) with the scheduler."""
        now = time.monotonic()
        due: dict[str, list[JobRecord]] = {}
        for record in self.jobs.live():
            if record.executor in QUERIES and self._due(record, now):
                due.setdefault(record.executor, []).append(record)
        for executor, records in due.items():
            views = await QUERIES[executor]([r.native_id for r in records if r.native_id])
            for record in records:
                record.last_reconcile = time.monotonic()
                view = views.get(record.native_id or "")
                if view is None:
                    record.missing += 1
                    if record.missing >= 3 and (record.psij_lost or self.executors.degraded(executor)):
                        self.jobs.advance(
                            record,
                            JobState.UNKNOWN,
                            message=f"the scheduler does not know job {record.native_id} (any more)",
                            source="scheduler",
                        )
                    continue
                record.missing = 0
                await self._apply(record, view, executor)

    async def _apply(self, record: JobRecord, view: SchedulerView, executor: str) -> None:
        state, exit_code = view.state, view.exit_code
        if state is record.state:
            record.final_seen_at = None
            return
        if state.final:
            ec_file = self.executors.script_dir(executor) / f"{record.native_id}.ec"
            written = await self.run_sync(read_exit_code_file, ec_file)
            if written is not None:
                exit_code = written
                if state is JobState.DONE and written != 0:
                    state = JobState.FAILED
            elif state is not JobState.CANCELLED and (
                exit_code is None or not (record.psij_lost or self.executors.degraded(executor))
            ):
                # PSI/J polls fine and may be reading that file this moment: let it report first; or
                # squeue says it ended and accounting has not caught up yet (no exit code): ask again
                now = time.monotonic()
                if record.final_seen_at is None:
                    record.final_seen_at = now
                    return
                if now - record.final_seen_at < self.final_grace:
                    return
            if state is JobState.CANCELLED:
                exit_code = None
        if self.jobs.advance(record, state, exit_code=exit_code, message=view.message(), source="scheduler"):
            log.info("psij: job %s (%s %s) reconciled: %s", record.job_id, executor, record.native_id, view.message())

    @staticmethod
    async def _repeat(what: str, interval: Callable[[], float], work: Callable[[], Awaitable[Any]]) -> None:
        """``work()`` every ``interval()`` seconds until cancelled; a failure is logged, the loop goes on."""
        while True:
            await anyio.sleep(interval())
            try:
                await work()
            except Exception:
                log.exception("psij: %s failed", what)

    def cleanup(self) -> list[Path]:
        """Apply the cleanup policy now (blocking); returns the files deleted."""
        keep_seconds = self.keep_days * 86400.0
        now = time.time()
        keep: set[Path] = set()
        for child in list(self.children.values()):
            if not child.final:
                keep.update(p for p in (child.config_file, child.ready_file, child.token_copy) if p is not None)
        for record in self.jobs:
            if not record.final:
                keep.update((record.stdout_path, record.stderr_path))
            elif now - record.updated_at > keep_seconds and record.process is None:
                self.jobs.discard(record.job_id)
        finals = sorted((r for r in self.jobs if r.final and r.process is None), key=lambda r: r.updated_at)
        for record in finals[: max(0, len(self.jobs) - self.max_records)]:
            self.jobs.discard(record.job_id)
        removed = _output.cleanup([self.output_dir], keep_seconds, keep, now)
        if removed:
            log.info("psij: cleanup deleted %d file(s) older than %g days", len(removed), self.keep_days)
        return removed

    # ------------------------------------------------------------ child edges

    def _next_child(self) -> str:
        with self._child_lock:
            self._child_seq += 1
            return f"{self.edge_name or 'edge'}.{self._child_seq}"

    def _prepare_child(
        self, name: str, settings: BridgeSettings, plugins: str, tunnel: dict[str, Any] | None
    ) -> tuple[Path, Path, Path | None]:
        """Write the child's launch config (and a 0600 token copy when the token is not in a file);
        returns ``(config, ready_file, token_copy)``."""
        directory = self.children_dir
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        token_copy: Path | None = None
        if settings.token_file is not None:
            token_file = settings.token_file
        else:
            token_file = directory / f"{name}.token"
            token = settings.current_token()
            if token:
                _children.write_private(token_file, token + "\n")
                token_copy = token_file
            else:
                token_file.unlink(missing_ok=True)
        ready = directory / f"{name}.ready"
        ready.unlink(missing_ok=True)
        config = directory / f"{name}.json"
        _children.write_json(
            config,
            {
                "name": name,
                "url": settings.url,
                "cert": settings.cert,
                "tls_server_name": settings.tls_server_name,
                "token_file": os.fspath(token_file),
                "plugins": plugins,
                "ready_file": os.fspath(ready),
                "tunnel": tunnel,
            },
        )
        return config, ready, token_copy

    def _settle_child(self, child: ChildRecord, ready: bool) -> None:
        """Move a child on if its ready file or its job says so (blocking: reads its output when final)."""
        with self._child_lock:  # the loop and a tunnel_status call may both look at it: announce once
            self._settle_child_locked(child, ready)

    def _settle_child_locked(self, child: ChildRecord, ready: bool) -> None:
        change = child.next_state(ready)
        if ready and child.registered_at is None:
            child.registered_at = time.time()
        if change is None:
            return
        state, reason = change
        if state in _children.FINAL_STATES:
            child.stdout_tail = _children.tail(child.job.stdout_path)
            child.stderr_tail = _children.tail(child.job.stderr_path)
            if child.token_copy is not None:
                child.token_copy.unlink(missing_ok=True)
        child.state, child.reason, child.updated = state, reason, time.time()
        log.info("psij: child edge %s is %s%s", child.edge, state, f": {reason}" if reason else "")
        self.notify("tunnel_status", child.status())

    async def check_children(self) -> None:
        """Check the live child edges now (their ready files and jobs); announce changes."""
        for child in list(self.children.values()):
            if not child.final:
                ready = await self.run_sync(child.ready_file.exists)
                await self.run_sync(self._settle_child, child, ready)

    def _submit_options(self, body: dict[str, Any]) -> tuple[str, bool]:
        """A submit body's ``executor`` (default: :meth:`executor_default`) and ``stream_output`` (default: true)."""
        executor = body.get("executor") or self.executor_default()
        if not isinstance(executor, str):
            raise HTTPException(422, "executor must be a name like 'local' or 'slurm'")
        stream_output = body.get("stream_output", True)
        if not isinstance(stream_output, bool):
            raise HTTPException(422, "stream_output must be true or false")
        return executor, stream_output

    def _follow_submitted(self, record: JobRecord) -> None:
        """A job just submitted: PENDING unless PSI/J has said more already, and followed from now on."""
        if record.state is None:
            self.jobs.advance(record, JobState.PENDING, source="submit")
        if self._tg is not None:
            self._tg.start_soon(self._follow, record)

    async def submit_child(self, session: Session, body: dict[str, Any]) -> dict[str, Any]:
        """The ``submit_tunneled`` route's work (HTTP errors as :class:`HTTPException`)."""
        if self._tg is None:
            raise HTTPException(503, "the psij plugin is not running")
        try:
            spec_in, plugins, tunnel = _children.check_body(body)
        except ChildError as exc:
            raise HTTPException(422, str(exc)) from None
        executor, stream_output = self._submit_options(body)
        settings = self.child_bridge or self.bridge_settings
        if settings is None:
            raise HTTPException(409, "this edge does not dial a bridge by URL: it cannot tell a child edge where to go")
        if settings.insecure_skip_tls_verify:
            raise HTTPException(409, "this edge does not verify the bridge's TLS certificate: no child edge is started")
        name = self._next_child()
        reason = edge_name_error(name)
        if reason is not None:
            raise HTTPException(422, f"the child edge name is not valid: {reason}")
        existing = self.children.get(name)
        if existing is not None and not existing.final:
            raise HTTPException(409, f"the child edge {name!r} is live (job {existing.job.job_id})")
        config, ready, token_copy = await self.run_sync(self._prepare_child, name, settings, plugins, tunnel)
        spec_in["executable"] = sys.executable
        spec_in["arguments"] = ["-m", f"{__name__}._launch", os.fspath(config)]
        spec_in.setdefault("name", f"edge-{name}")
        try:
            spec = parse_spec(spec_in)
            record = await self.run_sync(self._submit_blocking, session, spec, executor, stream_output)
        except (SpecError, self._backend.SubmitFailed) as exc:
            if token_copy is not None:
                token_copy.unlink(missing_ok=True)
            raise HTTPException(422, str(exc)) from None
        self._follow_submitted(record)
        child = ChildRecord(
            edge=name,
            owner=session.owner,
            sid=session.sid,
            job=record,
            ready_file=ready,
            config_file=config,
            token_copy=token_copy,
            via=tunnel["via"] if tunnel else None,
        )
        self.children[name] = child
        self.notify("tunnel_status", child.status())
        log.info("psij: child edge %s: job %s (%s %s)", name, record.job_id, executor, record.native_id)
        return {
            "job_id": record.job_id,
            "native_id": record.native_id,
            "executor": executor,
            "edge": name,
            "state": child.state,
        }

    # ------------------------------------------------------------ routes

    def routes(self, app: FastAPI) -> None:
        plugin = self

        @app.get("/executors", tags=["psij"])
        async def executors() -> dict[str, Any]:
            """The executors that can be chosen on this host, and the default."""
            backend = plugin._backend

            def usable() -> list[str]:
                return [n for n in backend.executor_names() if not backend.missing_commands(n)]

            return {"executors": await plugin.run_sync(usable), "default": plugin.executor_default()}

        @app.post("/submit/{sid}", tags=["psij"])
        async def submit(session: CurrentSession, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
            """Submit ``{job_spec, executor, stream_output}``; answers ``{job_id, native_id, executor, state}``."""
            unknown = sorted(set(body) - _SUBMIT_KEYS)
            if unknown:
                raise HTTPException(
                    422, f"unknown field(s) {', '.join(map(repr, unknown))} (known: job_spec, executor, stream_output)"
                )
            executor, stream_output = plugin._submit_options(body)
            if plugin._tg is None:
                raise HTTPException(503, "the psij plugin is not running")
            try:
                spec = parse_spec(body.get("job_spec"))
                record = await plugin.run_sync(plugin._submit_blocking, session, spec, executor, stream_output)
            except (SpecError, plugin._backend.SubmitFailed) as exc:
                raise HTTPException(422, str(exc)) from None
            plugin._follow_submitted(record)
            state = record.state or JobState.PENDING
            return {"job_id": record.job_id, "native_id": record.native_id, "executor": executor, "state": state.value}

        @app.post("/submit_tunneled/{sid}", tags=["psij"])
        async def submit_tunneled(session: CurrentSession, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
            """Start a child edge ``{edge}.{n}`` in a job: ``{job_spec, executor, plugins, tunnel}``;
            answers ``{job_id, native_id, executor, edge, state}``."""
            return await plugin.submit_child(session, body)

        @app.get("/tunnel_status/{edge_name}", tags=["psij"])
        async def tunnel_status(edge_name: str, request: Request) -> dict[str, Any]:
            """A child edge: ``pending``, ``active`` (registered), ``failed`` or ``done``, with its job's state
            (and the tails of its output once final)."""
            child = plugin.children.get(edge_name)
            if child is None or child.owner != caller_of(request):
                raise HTTPException(404, f"no child edge {edge_name!r}")
            if not child.final:
                ready = await plugin.run_sync(child.ready_file.exists)
                await plugin.run_sync(plugin._settle_child, child, ready)
            return child.status()

        @app.get("/status/{sid}/{job_id}", tags=["psij"])
        async def status(
            session: CurrentSession,
            job_id: str,
            stdout_offset: Annotated[str, Query(pattern=r"^[0-9]*$", description="byte offset (empty: 0)")] = "",
            stderr_offset: Annotated[str, Query(pattern=r"^[0-9]*$", description="byte offset (empty: 0)")] = "",
        ) -> dict[str, Any]:
            """State, exit code, and the output from the given byte offsets (with the offsets after it)."""
            record = plugin._record(session, job_id)
            complete = record.final
            out, out_end = await plugin.run_sync(
                _output.read_from, record.stdout_path, int(stdout_offset or 0), plugin.max_read, complete=complete
            )
            err, err_end = await plugin.run_sync(
                _output.read_from, record.stderr_path, int(stderr_offset or 0), plugin.max_read, complete=complete
            )
            answer = record.summary()
            answer.update(
                time=record.updated_at,
                history=list(record.history),
                metadata={
                    "native_id": record.native_id,
                    "cancel_requested": record.cancel_requested,
                    "tracked_by": "scheduler" if record.psij_lost else "psij",
                    "stdout_path": str(record.stdout_path),
                    "stderr_path": str(record.stderr_path),
                },
                stdout=out,
                stderr=err,
                stdout_offset=out_end,
                stderr_offset=err_end,
            )
            return answer

        @app.get("/list_jobs/{sid}", tags=["psij"])
        async def list_jobs(session: CurrentSession) -> dict[str, Any]:
            """The caller's jobs (from all its sessions, expired ones too)."""
            return {"jobs": [r.summary() for r in plugin.jobs.owned_by(session.owner)]}

        @app.post("/cancel/{sid}/{job_id}", tags=["psij"])
        async def cancel(session: CurrentSession, job_id: str) -> dict[str, Any]:
            """Cancel a job; it is reported CANCELLED from now on (unless it had already ended)."""
            record = plugin._record(session, job_id)
            if not plugin.jobs.request_cancel(record):
                assert record.state is not None
                return {
                    "job_id": job_id,
                    "native_id": record.native_id,
                    "state": record.state.value,
                    "cancelled": False,
                }
            if record.psij_job is None:
                plugin.jobs.withdraw_cancel(record)
                raise HTTPException(409, f"job {job_id!r} was not submitted by this edge: it cannot be cancelled here")
            try:
                await plugin.run_sync(plugin._backend.cancel, record.psij_job)
            except plugin._backend.SubmitFailed as exc:
                if not record.final:
                    plugin.jobs.withdraw_cancel(record)
                    raise HTTPException(502, f"cancel failed: {exc}") from None
            plugin.jobs.advance(record, JobState.CANCELLED, message="cancelled by the user", source="cancel")
            assert record.state is not None
            return {
                "job_id": job_id,
                "native_id": record.native_id,
                "state": record.state.value,
                "cancelled": record.state is JobState.CANCELLED,
            }


__all__ = ["PsijPlugin"]
