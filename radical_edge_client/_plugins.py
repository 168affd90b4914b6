"""Clients of the built-in plugins, with the method names radical.edge users know.

They need no server-side code: each is a thin layer over the plugin's routes
(see ``PARITY.md``).  :meth:`AsyncEdgeClient.get_plugin` picks the class by the
plugin's ``type`` in the edge's manifest.  Their blocking forms
(``radical_edge_client.SysInfoClient``, ...) are derived from them.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, ClassVar

import anyio

from ._client import AsyncPluginClient, register_plugin_client
from ._errors import BridgeProtocolError, ChildEdgeFailed, HTTPError, expect_dict
from ._events import EventGap
from ._http import quote_segment
from ._staging import AsyncStagingClient
from ._watch import FINAL_STATES, JobUpdate, watch_job

#: the longest wait one rhapsody request asks for (the plugin's bound; the bridge times requests out at 60 s)
_MAX_WAIT = 30.0


def _query(user: str | None, force: bool) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if user is not None:
        params["user"] = user
    if force:
        params["force"] = True
    return params


@register_plugin_client
class AsyncSysInfoClient(AsyncPluginClient):
    """The ``sysinfo`` plugin: what the edge's host is and how busy it is."""

    plugin_type: ClassVar[str] = "sysinfo"

    async def get_metrics(self) -> dict[str, Any]:
        """``{system, cpu, memory, disks, network, gpus}``, measured now."""
        return expect_dict(await self.get_json(self.session_path("metrics")), "sysinfo metrics")

    async def homedir(self) -> str:
        """The home directory of the account the edge runs as."""
        answer = expect_dict(await self.get_json("homedir"), "sysinfo homedir")
        return str(answer["homedir"])

    async def host_role(self) -> dict[str, Any]:
        """``{role: bridge|login|compute, scheduler, job_id}``."""
        return expect_dict(await self.get_json("host_role"), "sysinfo host_role")


@register_plugin_client
class AsyncQueueInfoClient(AsyncPluginClient):
    """The ``queue_info`` plugin: queues, jobs and allocations of the batch system.

    ``user`` defaults to the edge's user (``"*"``: everyone); ``force`` skips the plugin's cache.
    """

    plugin_type: ClassVar[str] = "queue_info"

    async def backend(self) -> str:
        """``slurm``, ``pbs`` or ``none``."""
        answer = await self.get_json("backend")
        return str(answer.get("backend") if isinstance(answer, dict) else answer)

    async def job_allocation(self) -> dict[str, Any] | None:
        """The allocation the edge runs inside, or ``None``."""
        answer = await self.get_json("job_allocation")
        if isinstance(answer, dict) and set(answer) == {"allocation"}:
            answer = answer["allocation"]
        return answer if isinstance(answer, dict) else None

    async def get_info(self, *, user: str | None = None, force: bool = False) -> dict[str, Any]:
        """``{queues: {NAME: {state, time_limit, nodes_total, ...}}}``."""
        return expect_dict(await self.get_json(self.session_path("get_info"), params=_query(user, force)), "get_info")

    async def list_jobs(self, queue: str, *, user: str | None = None, force: bool = False) -> dict[str, Any]:
        """``{jobs: [...]}`` of one queue."""
        path = f"{self.session_path('list_jobs')}/{quote_segment(queue)}"
        return expect_dict(await self.get_json(path, params=_query(user, force)), "list_jobs")

    async def list_all_jobs(self, *, user: str | None = None, force: bool = False) -> dict[str, Any]:
        """``{jobs: [...]}`` of every queue."""
        path = self.session_path("list_all_jobs")
        return expect_dict(await self.get_json(path, params=_query(user, force)), "list_all_jobs")

    async def list_allocations(self, *, user: str | None = None, force: bool = False) -> dict[str, Any]:
        """``{allocations: [{account, user, fairshare, qos, ...}]}``."""
        path = self.session_path("list_allocations")
        return expect_dict(await self.get_json(path, params=_query(user, force)), "list_allocations")

    async def cancel_job(self, job_id: str) -> Any:
        """Cancel a batch job."""
        return await self.post_json(f"{self.session_path('cancel')}/{quote_segment(str(job_id))}")


@register_plugin_client
class AsyncPSIJClient(AsyncPluginClient):
    """The ``psij`` plugin: batch jobs through PSI/J (local, slurm, pbs, lsf, flux executors)."""

    plugin_type: ClassVar[str] = "psij"

    async def submit_job(
        self, job_spec: dict[str, Any], executor: str | None = "local", *, stream_output: bool | None = None
    ) -> dict[str, Any]:
        """Submit ``job_spec``: ``{executable, arguments, directory, environment, name, attributes: {duration
        (seconds), queue_name, account, reservation_id, node_count, custom_attributes}, resources: {...},
        custom_attributes}``.

        ``executor`` is ``local``, ``slurm``, ``pbs``, ``lsf`` or ``flux``
        (``None``: the edge's default, its batch system if it has one).
        ``stream_output=False`` asks the plugin not to send ``job_output``
        events for this job.  Returns ``{job_id, native_id, ...}``.
        """
        body: dict[str, Any] = {"job_spec": job_spec}
        if executor is not None:
            body["executor"] = executor
        if stream_output is not None:
            body["stream_output"] = stream_output
        return expect_dict(await self.post_json(self.session_path("submit"), json=body), "psij submit")

    async def executors(self) -> dict[str, Any]:
        """``{executors: [...], default}``: the executors that can be chosen on this edge."""
        return expect_dict(await self.get_json("executors"), "psij executors")

    async def get_job_status(self, job_id: str, *, stdout_offset: int = 0, stderr_offset: int = 0) -> dict[str, Any]:
        """State, exit code and the new stdout/stderr text from those offsets (with the new offsets)."""
        path = f"{self.session_path('status')}/{quote_segment(str(job_id))}"
        params = {"stdout_offset": stdout_offset, "stderr_offset": stderr_offset}
        return expect_dict(await self.get_json(path, params=params), "psij status")

    async def list_jobs(self) -> Any:
        """``{jobs: [{job_id, native_id, executor, state, exit_code, executable, arguments, name, ...}]}``: the
        caller's jobs, from any of its sessions."""
        return await self.get_json(self.session_path("list_jobs"))

    async def cancel_job(self, job_id: str) -> Any:
        """Cancel a job: ``{job_id, native_id, state, cancelled}`` (it is reported ``CANCELLED`` from now on,
        unless it had ended already)."""
        return await self.post_json(f"{self.session_path('cancel')}/{quote_segment(str(job_id))}")

    def watch(self, job_id: str, *, poll_interval: float = 5.0) -> AsyncGenerator[JobUpdate, None]:
        """Follow a job: its status changes and its output as it comes, ending after its final state.

        The first update is the current status (with the output so far before
        it), so a job watched right after :meth:`submit_job` misses nothing.
        Updates come from the plugin's ``job_status`` and ``job_output``
        events; every ``poll_interval`` seconds without one (and after an
        event gap) the status is read instead.  The last update is the final
        status (``update.final``: ``DONE``, ``FAILED`` or ``CANCELLED``, with
        ``exit_code``)::

            async for update in psij.watch(job["job_id"]):
                if update.kind == "output":
                    print(update.data, end="")
                elif update.final:
                    print("exit code", update.exit_code)

        Blocking: ``for update in psij.watch(job_id): ...``.
        """
        job_id = str(job_id)

        async def read_status(job: str, stdout_offset: int, stderr_offset: int) -> dict[str, Any]:
            return await self.get_job_status(job, stdout_offset=stdout_offset, stderr_offset=stderr_offset)

        async def subscribe(callback: Callable[..., Any], on_gap: Callable[[EventGap], Any]) -> None:
            await self.register_notification_callback(callback, on_gap=on_gap)

        async def unsubscribe(callback: Callable[..., Any]) -> None:
            await self.unregister_notification_callback(callback)

        return watch_job(job_id, read_status, subscribe, unsubscribe, poll_interval=poll_interval)

    async def submit_tunneled(
        self,
        job_spec: dict[str, Any] | None = None,
        executor: str | None = None,
        *,
        plugins: str | Sequence[str] = "sysinfo",
        via: str | None = None,
        ssh_options: Sequence[str] = (),
        stream_output: bool | None = None,
    ) -> dict[str, Any]:
        """Start a child edge ``{edge}.{n}`` in a batch job; it dials this edge's bridge and serves ``plugins``.

        ``job_spec`` is as for :meth:`submit_job` without ``executable``/``arguments`` (the job runs the
        edge): ``attributes``, ``resources``, ``environment``...  ``via``: the login host compute nodes
        reach the bridge through (an SSH local forward; ``ssh_options`` are ssh's arguments, e.g.
        ``["-p", "2222", "-i", "~/.ssh/id_edge"]``).  Returns ``{job_id, native_id, executor, edge,
        state}``; wait for it with :meth:`wait_child_edge`.
        """
        body: dict[str, Any] = {"job_spec": dict(job_spec or {})}
        if executor is not None:
            body["executor"] = executor
        body["plugins"] = plugins if isinstance(plugins, str) else ",".join(plugins)
        if via is not None:
            body["tunnel"] = {"via": via, "ssh_options": list(ssh_options)}
        if stream_output is not None:
            body["stream_output"] = stream_output
        return expect_dict(
            await self.post_json(self.session_path("submit_tunneled"), json=body), "psij submit_tunneled"
        )

    async def tunnel_status(self, edge_name: str) -> dict[str, Any]:
        """A child edge: ``{edge, job_id, native_id, state (pending|active|failed|done), job_state, exit_code,
        reason, stdout_tail, stderr_tail, ...}``."""
        return expect_dict(await self.get_json(f"tunnel_status/{quote_segment(str(edge_name))}"), "psij tunnel_status")

    async def wait_child_edge(
        self, edge_name: str, *, timeout: float | None = 600.0, poll_interval: float = 0.5
    ) -> dict[str, Any]:
        """Wait until the child edge is in the bridge's topology; returns its ``tunnel_status``.

        Raises :class:`ChildEdgeFailed` (with the job's state, exit code and output tails) as soon as
        its ``tunnel_status`` is ``failed`` or ``done`` -- its job ended -- and ``TimeoutError`` after
        ``timeout`` seconds (None: no limit).
        """
        edge_name = str(edge_name)
        with anyio.fail_after(timeout):
            while True:
                status = await self.tunnel_status(edge_name)
                if status.get("state") in ("failed", "done"):
                    raise ChildEdgeFailed(status)
                if edge_name in await self.bridge.list_edges():
                    return status
                await anyio.sleep(poll_interval)


@register_plugin_client
class AsyncRhapsodyClient(AsyncPluginClient):
    """The ``rhapsody`` plugin: workflow tasks (executables and Python functions) through rhapsody-py.

    A task is ``{"executable": ..., "arguments": [...]}`` or
    ``{"function": "module:name", "args": [...], "kwargs": {...}}`` (and
    rhapsody's other task fields).  The session is made with its backends:
    ``edge.get_plugin("rhapsody", backends=["concurrent"])``.
    """

    plugin_type: ClassVar[str] = "rhapsody"

    async def register_session(
        self,
        /,
        backends: Sequence[str] | None = None,
        *,
        notify_batch_window: float | None = None,
        notify_batch_size: int | None = None,
        ready_timeout: float = 120.0,
        **options: Any,
    ) -> str:
        """Register a session whose tasks run on ``backends`` (the plugin's default, ``concurrent``, if ``None``).

        Returns once the session is ready: the plugin starts the backends
        after it answers (its ``session_status`` says ``ready`` or
        ``failed``).  Backends that fail to start raise
        :class:`~radical_edge_client.HTTPError` (the session is unregistered);
        ones not ready within ``ready_timeout`` seconds raise :class:`TimeoutError`.
        ``notify_batch_window`` (seconds) and ``notify_batch_size`` bound how
        task state changes are batched into ``task_status_batch`` events.
        """
        body: dict[str, Any] = dict(options)
        if backends is not None:
            body["backends"] = list(backends)
        if notify_batch_window is not None:
            body["notify_batch_window"] = notify_batch_window
        if notify_batch_size is not None:
            body["notify_batch_size"] = notify_batch_size
        answer = expect_dict(await self.post_json("register_session", json=body or None), "register_session")
        sid = answer.get("sid")
        if not isinstance(sid, str):
            raise BridgeProtocolError(f"POST {self.namespace}/register_session: no 'sid' in the answer")
        self.sid = sid
        status = answer
        with anyio.fail_after(ready_timeout if math.isfinite(ready_timeout) else None):
            while status.get("status", "ready") == "initializing":
                status = await self.session_status(wait=_MAX_WAIT)
        if status.get("status") == "failed":
            why = status.get("error") or "its backends did not start"
            await self.unregister_session()
            raise HTTPError(f"rhapsody session {sid} failed: {why}", 500)
        return sid

    async def session_status(self, *, wait: float = 0.0) -> dict[str, Any]:
        """``{sid, status: initializing|ready|failed, error, backends}``; ``wait`` seconds (at most 30) for the
        session to leave ``initializing``."""
        params = {"wait": wait} if wait else None
        timeout = None if not wait else wait + self.bridge.timeout
        answer = await self.get_json(self.session_path("session_status"), params=params, timeout=timeout)
        return expect_dict(answer, "rhapsody session_status")

    async def backends(self, *, refresh: bool = False) -> dict[str, Any]:
        """``{backends: {NAME: {available, reason}}, default: [...]}``: what this edge can run tasks on."""
        answer = await self.get_json("backends", params={"refresh": True} if refresh else None)
        return expect_dict(answer, "rhapsody backends")

    async def submit_tasks(self, tasks: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Submit ``tasks``; returns ``[{uid, state}]`` in the same order."""
        answer = await self.post_json(self.session_path("submit"), json={"tasks": list(tasks)})
        return _expect_list(answer, "rhapsody submit", key="tasks")

    async def wait_tasks(
        self, uids: Sequence[str] | None = None, *, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """The records of tasks ``uids`` (all of the session's if ``None``) once all are final.

        ``timeout`` bounds the wait (``None``: until they are final; ``0``: the
        records as they are now); after it the records are returned as they
        are then (check their ``state``).
        """
        body: dict[str, Any] = {}
        if uids is not None:
            body["uids"] = list(uids)
        deadline = math.inf if timeout is None else anyio.current_time() + max(timeout, 0.0)
        while True:
            left = deadline - anyio.current_time()
            body["timeout"] = max(0.0, min(left, _MAX_WAIT))
            answer = await self.post_json(
                self.session_path("wait"), json=body, timeout=body["timeout"] + self.bridge.timeout
            )
            tasks = _expect_list(answer, "rhapsody wait", key="tasks")
            if all(t.get("state") in FINAL_STATES for t in tasks) or deadline - anyio.current_time() <= 0:
                return tasks

    async def list_tasks(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every task of this session (or those in ``state``), without their output (:meth:`get_task` has it)."""
        params = {"state": state} if state else None
        answer = await self.get_json(self.session_path("list_tasks"), params=params)
        return _expect_list(answer, "rhapsody list_tasks", key="tasks")

    async def get_task(self, uid: str) -> dict[str, Any]:
        """One task's record: state, exit_code, stdout, stderr, return_value, error, times."""
        path = f"{self.session_path('task')}/{quote_segment(str(uid))}"
        return expect_dict(await self.get_json(path), "rhapsody task")

    async def cancel_task(self, uid: str) -> dict[str, Any]:
        """Cancel one task (its process tree is gone when this returns): ``{uid, state, cancelled}``."""
        answer = await self.post_json(f"{self.session_path('cancel')}/{quote_segment(str(uid))}")
        return expect_dict(answer, "rhapsody cancel")

    async def cancel_all(self) -> dict[str, Any]:
        """Cancel every task of this session that is not final: ``{cancelled: n, uids: [...]}``."""
        return expect_dict(await self.post_json(self.session_path("cancel_all")), "rhapsody cancel_all")


def _expect_list(value: Any, where: str, *, key: str) -> list[dict[str, Any]]:
    """A list answer, or the list under ``key`` of an object answer."""
    if isinstance(value, dict) and isinstance(value.get(key), list):
        value = value[key]
    if not isinstance(value, list):
        raise BridgeProtocolError(f"{where}: expected a JSON list, got {type(value).__name__}")
    return value


__all__ = [
    "AsyncPSIJClient",
    "AsyncQueueInfoClient",
    "AsyncRhapsodyClient",
    "AsyncStagingClient",
    "AsyncSysInfoClient",
    "JobUpdate",
]
