"""One caller's rhapsody session: its backends, its tasks as plain JSON records, its notifications.

rhapsody's task objects hold futures and are updated in place by the backends; routes never see
them.  Each state change a backend reports is copied into the task's record (a plain dict of JSON
values, bounded in size), and the rhapsody object is let go when the task is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import HTTPException

from radical_edge_edge import Session

from ..scheduler.states import JobState, rhapsody_state
from ._batcher import DEFAULT_MAX_BYTES, NotifyBatcher
from ._spec import TaskRefused, TaskSpec, clip_text, describe_error, encode_value, encoded_size, parse_task

if TYPE_CHECKING:
    from ._batcher import Emit

log = logging.getLogger("radical_edge.plugins.rhapsody")

#: the record's keys that ``list_tasks`` shows (``task/{sid}/{uid}`` and ``wait`` show all)
SUMMARY_KEYS = (
    "uid", "backend", "kind", "executable", "function", "state", "exit_code", "error",
    "submitted", "started", "finished",
)  # fmt: skip
#: a notification carries the return value only when its JSON is at most this long
NOTIFY_VALUE_BYTES = 1024
#: and the error cut to this many characters
NOTIFY_ERROR_CHARS = 512


@dataclass
class Limits:
    """What the edge operator configures (``RhapsodyPlugin`` options)."""

    allow_pickled: bool = False
    max_output_bytes: int = 64 * 1024  # kept of each of stdout and stderr (the end)
    max_return_bytes: int = 64 * 1024  # JSON of a return value (else its repr, cut)
    max_error_chars: int = 8 * 1024
    max_tasks: int = 100_000  # records one session keeps
    max_wait: float = 30.0  # longest bounded wait (the bridge times requests out after 60 s)
    max_processes: int = 256  # programs one session runs at once (the rest wait, PENDING)
    function_workers: int | None = None  # threads for function tasks (ThreadPoolExecutor's default)
    kill_grace: float = 3.0  # SIGTERM to SIGKILL
    notify_max_bytes: int = DEFAULT_MAX_BYTES
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def concurrent_options(self) -> dict[str, Any]:
        return {
            "max_output": self.max_output_bytes,
            "max_return": self.max_return_bytes,
            "max_error": self.max_error_chars,
            "max_processes": self.max_processes,
            "function_workers": self.function_workers,
            "kill_grace": self.kill_grace,
        }


class RhapsodySession(Session):
    """A rhapsody Session with its backends; ``status`` is ``initializing``, ``ready``, ``failed`` or ``closed``."""

    def __init__(
        self,
        sid: str,
        owner: str,
        *,
        ttl: float,
        now: float,
        limits: Limits,
        backends: list[str],
        emit: Emit,
        window: float,
        size: int,
    ) -> None:
        super().__init__(sid, owner, ttl=ttl, now=now)
        self.limits = limits
        self.backend_names = backends
        self.status = "initializing"
        self.error: str | None = None
        self.records: dict[str, dict[str, Any]] = {}
        self.batcher = NotifyBatcher(sid, emit, window=window, size=size, max_bytes=limits.notify_max_bytes)
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._backends: dict[str, Any] = {}
        self._rh: Any = None
        self._work_dir: str | None = None
        self._live: dict[str, Any] = {}  # uid -> rhapsody task, until final
        self._started: set[str] = set()  # uids whose program or function really runs
        self._progress = asyncio.Event()  # set (and replaced) whenever a task becomes final
        self._settled = asyncio.Event()  # init finished, either way
        self._init_task: asyncio.Task[None] | None = None
        self._next = 0

    # ------------------------------------------------------------ life cycle

    def register_reply(self) -> dict[str, Any]:
        return {"status": self.status}

    def describe(self) -> dict[str, Any]:
        return {"sid": self.sid, "status": self.status, "error": self.error, "backends": self.backend_names}

    def start(self) -> None:
        """Start the backends in the background (``session_status`` says when they are ready)."""
        self._init_task = asyncio.create_task(self._initialize(), name=f"rhapsody-init-{self.sid[:8]}")

    async def wait_settled(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await self._settled.wait()

    async def _initialize(self) -> None:
        from . import _backend  # noqa: PLC0415 - imports rhapsody

        started: list[Any] = []
        try:
            for name in self.backend_names:
                backend = await _backend.start_backend(
                    name,
                    on_start=self._on_start,
                    concurrent_options=self.limits.concurrent_options(),
                    options=self.limits.backend_options.get(name, {}),
                )
                started.append(backend)
            self._work_dir = await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="radical-edge-rhapsody-"))
            self._rh = await anyio.to_thread.run_sync(_backend.make_session, started, self._work_dir)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                for backend in started:
                    await _backend.stop_backend(backend, self.limits.kill_grace + 5)
                await self._remove_work_dir()
            if isinstance(exc, Exception):
                self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
                log.warning("rhapsody session %s failed to start: %s", self.sid, self.error)
                self._emit("session_status", self.describe())
            self._settled.set()
            if not isinstance(exc, Exception):
                raise
            return
        for name, backend in zip(self.backend_names, started, strict=True):
            self._backends[name] = backend
            self._observe_backend(backend)
        self.status = "ready"
        self._settled.set()
        self._emit("session_status", self.describe())

    def _observe_backend(self, backend: Any) -> None:
        # a backend has one callback slot, which rhapsody's Session took: chain ours behind it
        theirs = backend._callback_func

        def chained(task: Any, state: Any) -> None:
            theirs(task, state)
            if threading.get_ident() == self._loop_thread:
                self._observe(task, state)
            else:  # Dragon's and RADICAL-Pilot's report from their own threads
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._observe, task, state)

        backend._callback_func = chained

    async def close(self) -> None:
        """Cancel every task (stopping its programs), shut the backends down off the loop, remove the work dir."""
        with anyio.CancelScope(shield=True):  # a caller leaving mid-unregister must not leave processes behind
            await self._close()

    async def _close(self) -> None:
        from . import _backend  # noqa: PLC0415

        if self._init_task is not None and not self._init_task.done():
            self._init_task.cancel()
            with contextlib.suppress(BaseException):
                await self._init_task
        with contextlib.suppress(Exception):
            await self.cancel_all()
        self.status = "closed"
        for backend in self._backends.values():
            await _backend.stop_backend(backend, self.limits.kill_grace + 5)
        self._backends.clear()
        self.batcher.close()
        self._live.clear()
        self._rh = None
        await self._remove_work_dir()

    async def _remove_work_dir(self) -> None:
        if self._work_dir is not None:
            work_dir, self._work_dir = self._work_dir, None
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(work_dir, ignore_errors=True))

    def check_ready(self) -> None:
        """409 while the backends start, 424 if they failed (the session is of no use: register another)."""
        if self.status == "initializing":
            raise HTTPException(409, f"session {self.sid} is still starting its backends; wait for session_status")
        if self.status != "ready":
            raise HTTPException(424, f"session {self.sid} is {self.status}: {self.error or 'no backends'}")

    # ------------------------------------------------------------ tasks

    def _new_uid(self) -> str:
        while True:
            self._next += 1
            uid = f"task.{self._next:06d}"
            if uid not in self.records:
                return uid

    async def submit(self, raw_tasks: list[Any]) -> list[dict[str, Any]]:
        """Check every task first (all or none are submitted), then submit; ``[{uid, state}]`` in order."""
        self.check_ready()
        try:
            specs = [parse_task(raw, allow_pickled=self.limits.allow_pickled) for raw in raw_tasks]
        except TaskRefused as exc:
            raise HTTPException(exc.status, exc.detail) from None
        if len(self.records) + len(specs) > self.limits.max_tasks:
            raise HTTPException(
                429,
                f"a session keeps at most {self.limits.max_tasks} tasks; it has {len(self.records)}: "
                "register another session for more",
            )
        given = [s.uid for s in specs if s.uid is not None]
        clash = sorted({u for u in given if u in self.records or given.count(u) > 1})
        if clash:
            raise HTTPException(409, f"task uid(s) already used in this session: {', '.join(clash[:10])}")
        default = self.backend_names[0]
        for spec in specs:
            if spec.backend is not None and spec.backend not in self._backends:
                raise HTTPException(
                    422, f"backend {spec.backend!r} is not one of this session's: {', '.join(self.backend_names)}"
                )
        from . import _backend  # noqa: PLC0415

        tasks, answer = [], []
        now = time.time()
        for spec in specs:
            uid = spec.uid or self._new_uid()
            backend = spec.backend or default
            self.records[uid] = self._new_record(uid, backend, spec, now)
            task = _backend.make_task(spec, uid, self._backends[backend].name)  # rhapsody's name (dragon_v3: dragon)
            self._live[uid] = task
            tasks.append(task)
            answer.append({"uid": uid, "state": JobState.PENDING.value})
        with anyio.CancelScope(shield=True):  # a caller going away must not leave half a submission
            try:
                futures = await self._rh.submit_tasks(tasks)
            except Exception as exc:
                for task in tasks:
                    self._finalize(self.records[task["uid"]], JobState.FAILED, error=describe_error(exc, 2048))
                raise HTTPException(500, f"rhapsody refused the tasks: {type(exc).__name__}: {exc}") from None
        for future in futures:
            future.add_done_callback(_consume)
        return answer

    def _new_record(self, uid: str, backend: str, spec: TaskSpec, now: float) -> dict[str, Any]:
        return {
            "uid": uid,
            "backend": backend,
            **spec.describe(),
            "state": JobState.PENDING.value,
            "exit_code": None,
            "stdout": None,
            "stderr": None,
            "return_value": None,
            "return_value_is_repr": False,
            "error": None,
            "truncated": [],
            "pid": None,
            "submitted": now,
            "started": None,
            "finished": None,
        }

    def _on_start(self, uid: str, pid: int | None) -> None:
        """(our concurrent backend, on the loop) the task's program or function really started."""
        self._started.add(uid)
        record = self.records.get(uid)
        if record is None or JobState(record["state"]).final:
            return
        record["pid"] = pid
        record["started"] = time.time()
        self._set_state(record, JobState.RUNNING)

    def _observe(self, task: Any, raw_state: Any) -> None:
        """(on the loop) a backend reported a state: copy what it says into the record."""
        uid = task.get("uid") if isinstance(task, dict) else getattr(task, "uid", None)
        record = self.records.get(uid) if isinstance(uid, str) else None
        if record is None or JobState(record["state"]).final:
            return  # final is final (a cancelled function may still report DONE later)
        state = rhapsody_state(raw_state)
        if state is JobState.RUNNING and record["started"] is None:
            if record["backend"] == "concurrent" and uid not in self._started:
                state = JobState.PENDING  # handed to the backend, waiting for a process slot or a thread
            else:
                record["started"] = time.time()
        if state.final:
            self._finalize(record, state, task=task)
        else:
            self._set_state(record, state)

    def _finalize(self, record: dict[str, Any], state: JobState, *, task: Any = None, error: str | None = None) -> None:
        limits = self.limits
        if task is not None:
            data = dict(task)  # a copy: the backend may still touch its object
            record["exit_code"] = data.get("exit_code") if isinstance(data.get("exit_code"), int) else None
            truncated: list[str] = []
            for key in ("stdout", "stderr"):
                value = data.get(key)
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace")
                elif isinstance(value, list):  # multi-rank output
                    value = "\n".join(map(str, value))
                if value is not None and not isinstance(value, str):
                    value = str(value)
                if value is not None:
                    value, cut = clip_text(value, limits.max_output_bytes)
                    if cut or data.get(f"{key}_truncated"):
                        truncated.append(key)
                record[key] = value
            value = data.get("return_value")
            if "return_value_is_repr" in data:  # ours: already encoded, bounded, in the worker thread
                record["return_value"], record["return_value_is_repr"] = value, bool(data["return_value_is_repr"])
            elif value is not None:
                record["return_value"], record["return_value_is_repr"] = encode_value(value, limits.max_return_bytes)
            if record["return_value_is_repr"]:
                truncated.append("return_value")
            record["truncated"] = truncated
            error = data.get("error") if isinstance(data.get("error"), str) else None
            exc = data.get("exception")
            if error is None and isinstance(exc, BaseException):
                error = describe_error(exc, limits.max_error_chars)
        if error is None:
            error = self._default_error(record, state)
        record["error"] = error
        record["finished"] = time.time()
        self._set_state(record, state)
        self._forget(record["uid"])
        self._progress.set()
        self._progress = asyncio.Event()

    @staticmethod
    def _default_error(record: dict[str, Any], state: JobState) -> str | None:
        if state is JobState.CANCELLED:
            if record["kind"] == "function" and record["started"] is not None:
                return "cancelled; a running function cannot be stopped: it finishes in its worker thread"
            return "cancelled"
        if state is JobState.FAILED:
            code = record["exit_code"]
            if isinstance(code, int) and code < 0:
                with contextlib.suppress(ValueError):
                    return f"killed by signal {signal.Signals(-code).name}"
            return f"exit code {code}" if code is not None else "failed"
        return None

    def _forget(self, uid: str) -> None:
        self._live.pop(uid, None)
        self._started.discard(uid)
        tasks = getattr(self._rh, "_tasks", None)  # rhapsody's Session keeps every task forever otherwise
        if isinstance(tasks, dict):
            tasks.pop(uid, None)

    def _set_state(self, record: dict[str, Any], state: JobState) -> None:
        if record["state"] == state.value and not state.final:
            return
        record["state"] = state.value
        item: dict[str, Any] = {"uid": record["uid"], "state": state.value}
        if state.final:
            item["exit_code"] = record["exit_code"]
            item["error"] = clip_text(record["error"], NOTIFY_ERROR_CHARS)[0] if record["error"] else None
            if record["return_value"] is not None:
                if encoded_size(record["return_value"]) <= NOTIFY_VALUE_BYTES:
                    item["return_value"] = record["return_value"]
                    item["return_value_is_repr"] = record["return_value_is_repr"]
                else:
                    item["return_value_omitted"] = True  # too big for an event: GET task/{sid}/{uid}
        self.batcher.add(item)

    def record(self, uid: str) -> dict[str, Any]:
        record = self.records.get(uid)
        if record is None:
            raise HTTPException(404, f"no task {uid} in session {self.sid}")
        return dict(record)

    def summaries(self, state: str | None = None) -> list[dict[str, Any]]:
        return [
            {k: r.get(k) for k in SUMMARY_KEYS if k in r}
            for r in self.records.values()
            if state is None or r["state"] == state
        ]

    async def wait(self, uids: list[str] | None, timeout: float) -> list[dict[str, Any]]:
        """The records of ``uids`` (all if None) once all are final, or as they are after ``timeout`` seconds."""
        wanted = list(self.records) if uids is None else uids
        unknown = [u for u in wanted if u not in self.records]
        if unknown:
            raise HTTPException(404, f"no task(s) {', '.join(unknown[:10])} in session {self.sid}")
        with anyio.move_on_after(min(timeout, self.limits.max_wait)):
            while not all(JobState(self.records[u]["state"]).final for u in wanted):
                await self._progress.wait()
        return [dict(self.records[u]) for u in wanted]

    async def cancel(self, uid: str) -> dict[str, Any]:
        """Cancel ``uid``: for our concurrent backend its program tree is gone when this returns."""
        record = self.record(uid)
        if JobState(record["state"]).final:
            return {"uid": uid, "state": record["state"], "cancelled": False}
        backend = self._backends.get(record["backend"])
        cancelled = False
        with anyio.CancelScope(shield=True):
            if backend is not None:
                try:
                    cancelled = bool(await backend.cancel_task(uid))
                except NotImplementedError:
                    cancelled = False
        record = self.records[uid]
        return {"uid": uid, "state": record["state"], "cancelled": cancelled}

    async def cancel_all(self) -> dict[str, Any]:
        pending = [uid for uid, r in self.records.items() if not JobState(r["state"]).final]
        results = await asyncio.gather(*(self.cancel(uid) for uid in pending), return_exceptions=True)
        done = [r["uid"] for r in results if isinstance(r, dict) and r["cancelled"]]
        return {"cancelled": len(done), "uids": done}


def _consume(future: asyncio.Future[Any]) -> None:
    # rhapsody sets a failed task's exception on its future, which nobody awaits: retrieve it (no log noise)
    if not future.cancelled():
        future.exception()


__all__ = ["Limits", "RhapsodySession", "SUMMARY_KEYS"]
