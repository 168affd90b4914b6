"""rhapsody backends: a concurrent backend whose cancel really stops the task, and what is available here.

rhapsody 0.6's ``ConcurrentExecutionBackend`` has three flaws this module designs around:

* ``cancel_task`` cancels the asyncio task but leaves the program running (and its children);
* ``shutdown()`` joins its thread pool synchronously, blocking the event loop;
* it reads a program's whole output into memory and keeps every task forever.

:class:`KillableConcurrentBackend` starts each program itself, as the leader of a new session (its
own process group), keeps only the last ``max_output`` bytes of each stream, and on cancel sends
SIGTERM to the group and to every descendant it can find, then SIGKILL after ``kill_grace``
seconds, and returns once the program is reaped.  Function tasks run in its thread pool; a running
function cannot be stopped (Python threads cannot be killed): its task is reported CANCELLED and
the thread finishes on its own.

``discover_backends()`` says every backend is available even when its package is missing;
:func:`probe_backends` tries each one (its constructor checks its dependencies without starting
anything, except Dragon's, whose constructor starts a runtime: for it the imports are tried).

Importing this module imports rhapsody; the plugin imports it only when rhapsody is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import psutil
import rhapsody
from rhapsody.backends.constants import BackendMainStates
from rhapsody.backends.execution.concurrent import ConcurrentExecutionBackend

from ._spec import FunctionCall, TaskSpec, describe_error, encode_value

log = logging.getLogger("radical_edge.plugins.rhapsody")

#: the backend this plugin runs tasks on itself
CONCURRENT = "concurrent"
#: backends whose constructor starts a runtime: availability is their imports
_IMPORT_PROBES = {
    "dragon": ("dragon", "dragon.workflows.batch"),
    "dragon_v3": ("dragon", "dragon.workflows.batch"),
}

#: told when a task really starts: (uid, pid or None for a function)
OnStart = Callable[[str, "int | None"], None]


# ---------------------------------------------------------------- availability


def probe_backends() -> dict[str, dict[str, Any]]:
    """Every backend rhapsody knows, tried for real: ``{name: {"available": bool, "reason": str | None}}``.

    Blocking (imports, constructors): run it in a worker thread.
    """
    result: dict[str, dict[str, Any]] = {}
    for name in sorted(rhapsody.discover_backends()):  # the names; its True/False says nothing
        reason = _probe(name)
        result[name] = {"available": reason is None, "reason": reason}
    return result


def _probe(name: str) -> str | None:
    try:
        if name in _IMPORT_PROBES:
            for module in _IMPORT_PROBES[name]:
                importlib.import_module(module)
        else:
            backend = rhapsody.get_backend(name)  # checks its dependencies; starts nothing until awaited
            executor = getattr(backend, "executor", None)
            if executor is not None:
                executor.shutdown(wait=False)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# ---------------------------------------------------------------- killing a process tree


def _descendants(pid: int) -> list[Any]:
    with contextlib.suppress(psutil.Error):
        return list(psutil.Process(pid).children(recursive=True))
    return []


def _signal_tree(pid: int, members: list[Any], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # the program leads its own group (start_new_session)
    for proc in members:  # and whatever left the group (setsid, setpgid) but is still below it
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def _alive(members: list[Any]) -> list[Any]:
    alive = []
    for proc in members:
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


async def kill_tree(proc: asyncio.subprocess.Process, grace: float) -> None:
    """Stop ``proc`` and every process below it: SIGTERM, then SIGKILL after ``grace`` seconds.

    Returns once ``proc`` is reaped and its descendants are gone (or after a last SIGKILL to them).
    """
    pid = proc.pid
    members = _descendants(pid)
    if proc.returncode is None or _alive(members):
        _signal_tree(pid, members, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        members = [*_alive(members), *(_descendants(pid) if proc.returncode is None else [])]
        if proc.returncode is not None and not members:
            return
        await asyncio.sleep(0.02)
    members = [*_alive(members), *(_descendants(pid) if proc.returncode is None else [])]
    if proc.returncode is None or members:
        _signal_tree(pid, members, signal.SIGKILL)
    await proc.wait()
    for _ in range(50):  # SIGKILL cannot be caught: they go at once (init reaps the orphans)
        if not _alive(members):
            return
        await asyncio.sleep(0.02)
    log.warning("processes %s of task pid %d survived SIGKILL", [p.pid for p in _alive(members)], pid)


async def _tail(stream: asyncio.StreamReader | None, limit: int) -> tuple[bytes, int]:
    """Read ``stream`` to its end keeping the last ``limit`` bytes; returns them and the total read."""
    if stream is None:
        return b"", 0
    kept = bytearray()
    total = 0
    while chunk := await stream.read(64 * 1024):
        total += len(chunk)
        kept += chunk
        if len(kept) > limit:
            del kept[: len(kept) - limit]
    return bytes(kept), total


# ---------------------------------------------------------------- the backend


class KillableConcurrentBackend(ConcurrentExecutionBackend):  # type: ignore[misc]  # rhapsody is untyped
    """rhapsody's concurrent backend, running programs and functions itself (see the module docstring)."""

    def __init__(
        self,
        *,
        on_start: OnStart,
        max_output: int,
        max_return: int,
        max_error: int,
        max_processes: int,
        function_workers: int | None,
        kill_grace: float,
        name: str = CONCURRENT,
    ) -> None:
        super().__init__(ThreadPoolExecutor(function_workers, thread_name_prefix="rhapsody-task"), name=name)
        self.on_start = on_start
        self.max_output = max_output
        self.max_return = max_return
        self.max_error = max_error
        self.kill_grace = kill_grace
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self._slots = asyncio.Semaphore(max_processes)

    # -- programs

    async def _spawn(self, task: dict[str, Any]) -> asyncio.subprocess.Process:
        kw = task.get("task_backend_specific_kwargs") or {}
        common: dict[str, Any] = {
            "stdin": asyncio.subprocess.DEVNULL,
            "stdout": asyncio.subprocess.PIPE,
            "stderr": asyncio.subprocess.PIPE,
            "cwd": kw.get("cwd"),
            "env": kw.get("env"),
            "start_new_session": True,  # its own process group: cancel stops the whole tree
        }
        arguments = list(task.get("arguments") or [])
        if kw.get("shell"):
            return await asyncio.create_subprocess_shell(" ".join([task["executable"], *arguments]), **common)
        return await asyncio.create_subprocess_exec(task["executable"], *arguments, **common)

    async def _execute_command(self, task: dict[str, Any]) -> tuple[dict[str, Any], str]:
        uid = task["uid"]
        async with self._slots:
            spawn = asyncio.ensure_future(self._spawn(task))
            try:
                proc = await asyncio.shield(spawn)
            except asyncio.CancelledError:
                # cancelled while starting: the program may exist all the same, and must not outlive its task
                with contextlib.suppress(Exception):
                    await asyncio.shield(kill_tree(await spawn, self.kill_grace))
                raise
            except (OSError, ValueError) as exc:  # no such program, not executable, no such cwd
                task.update(stdout="", stderr="", exit_code=None, exception=exc, error=f"{type(exc).__name__}: {exc}")
                return task, "FAILED"
            self.processes[uid] = proc
            self.on_start(uid, proc.pid)
            try:
                (out, out_total), (err, err_total) = await asyncio.gather(
                    _tail(proc.stdout, self.max_output), _tail(proc.stderr, self.max_output)
                )
                code = await proc.wait()
            finally:
                if proc.returncode is None:  # cancelled, or reading failed: stop the tree before letting go
                    await asyncio.shield(kill_tree(proc, self.kill_grace))
                self.processes.pop(uid, None)
        task.update(
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            stdout_truncated=out_total > len(out),
            stderr_truncated=err_total > len(err),
            exit_code=code,
        )
        return task, "DONE" if code == 0 else "FAILED"

    # -- functions

    def _run_function(self, loop: asyncio.AbstractEventLoop, task: dict[str, Any]) -> dict[str, Any]:
        """In a worker thread: run the function, encode its result (bounded) here, off the loop."""
        uid = task["uid"]
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self.on_start, uid, None)
        call = task["function"]
        try:
            if isinstance(call, FunctionCall):
                func, args, kwargs = call.resolve()
            else:
                func, args, kwargs = call, list(task.get("args") or ()), dict(task.get("kwargs") or {})
        except Exception as exc:
            label = getattr(call, "label", repr(call))
            return {"exit_code": 1, "error": f"cannot load {label}: {type(exc).__name__}: {exc}"[: self.max_error]}
        try:
            value = FunctionCall.run(func, args, kwargs)
        except (Exception, SystemExit) as exc:
            return {"exit_code": 1, "error": describe_error(exc, self.max_error)}
        encoded, is_repr = encode_value(value, self.max_return)
        return {"exit_code": 0, "return_value": encoded, "return_value_is_repr": is_repr}

    async def _execute_function(self, task: dict[str, Any]) -> tuple[dict[str, Any], str]:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self.executor, self._run_function, loop, task)
        task.update(stdout=None, stderr=None, **result)
        return task, "DONE" if result["exit_code"] == 0 else "FAILED"

    # -- the task table, cancel, shutdown

    async def _handle_task(self, task: dict[str, Any]) -> None:
        try:
            await super()._handle_task(task)
        finally:
            self.tasks.pop(task["uid"], None)  # rhapsody keeps every task forever otherwise

    async def cancel_task(self, uid: str) -> bool:
        """Cancel ``uid``: its CANCELED state at once, and its program tree stopped before this returns."""
        proc = self.processes.get(uid)
        cancelled = bool(await super().cancel_task(uid))
        if proc is not None:
            await kill_tree(proc, self.kill_grace)
        return cancelled

    async def cancel_all_tasks(self) -> int:
        results = await asyncio.gather(*(self.cancel_task(uid) for uid in list(self.tasks)))
        return sum(results)

    async def shutdown(self) -> None:
        """Cancel every task (stopping its programs), then let the thread pool go without blocking the loop."""
        self._backend_state = BackendMainStates.SHUTDOWN
        await self.cancel_all_tasks()
        self.tasks.clear()
        self.executor.shutdown(wait=False, cancel_futures=True)
        # joining the threads blocks, for as long as a running function takes: off the loop, and bounded
        with anyio.move_on_after(self.kill_grace):
            await anyio.to_thread.run_sync(self.executor.shutdown, True, abandon_on_cancel=True)


# ---------------------------------------------------------------- making backends, sessions and tasks


async def start_backend(
    name: str, *, on_start: OnStart, concurrent_options: dict[str, Any], options: dict[str, Any]
) -> Any:
    """Start backend ``name``: ours for ``concurrent``, rhapsody's own for the others (``options`` are their
    constructor's keyword arguments, set by the edge operator)."""
    if name == CONCURRENT:
        backend: Any = KillableConcurrentBackend(on_start=on_start, **concurrent_options)
    else:
        # constructors may do real work (Dragon starts a runtime): not on the loop
        backend = await anyio.to_thread.run_sync(lambda: rhapsody.get_backend(name, **options))
    if hasattr(backend, "__await__"):
        backend = await backend
    return backend


async def stop_backend(backend: Any, timeout: float) -> None:
    """Shut ``backend`` down; ours never blocks the loop, the others get ``timeout`` seconds."""
    try:
        with anyio.move_on_after(timeout) as scope:
            await backend.shutdown()
        if scope.cancelled_caught:
            log.warning("rhapsody backend %s did not shut down within %.0f s", backend.name, timeout)
    except Exception:
        log.exception("rhapsody backend %s failed to shut down", getattr(backend, "name", backend))


def make_session(backends: list[Any], work_dir: str) -> Any:
    """A rhapsody Session over ``backends`` (it makes ``work_dir/session``)."""
    return rhapsody.Session(backends=backends, uid="session", work_dir=work_dir)


def make_task(spec: TaskSpec, uid: str, backend: str) -> Any:
    """The rhapsody task for ``spec``."""
    if spec.call is not None:
        return rhapsody.ComputeTask(function=spec.call, uid=uid, backend=backend)
    env = None if spec.env is None else {**os.environ, **spec.env}
    kwargs = {"cwd": spec.cwd, "env": env, "shell": spec.shell}
    return rhapsody.ComputeTask(
        executable=spec.executable,
        arguments=spec.arguments,
        uid=uid,
        backend=backend,
        task_backend_specific_kwargs=kwargs,
    )


__all__ = [
    "CONCURRENT",
    "KillableConcurrentBackend",
    "kill_tree",
    "make_session",
    "make_task",
    "probe_backends",
    "start_backend",
    "stop_backend",
]
