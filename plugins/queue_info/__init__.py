"""queue_info: the batch system of this machine (Slurm or PBS): queues, jobs, allocations, cancel.

Every session and client of the edge shares one cache (:class:`~radical_edge_plugins.scheduler.cache.
CoalescingCache`): N clients asking at once cause one scheduler call, and ``?force=true`` skips the
cache's age check (it still joins a call already running).  While any session is open a watcher
refreshes the job list every ``watch_interval`` seconds and pushes ``queue_changed`` when jobs
appear, leave or change state, so clients need not poll.

``?user=`` selects whose jobs (and allocations, and which queues) are shown: by default the user
the edge runs as, ``*`` for everybody.

Cancelling: only jobs of the user the edge runs as, also when the edge runs as root.  Callers are
bridge identities, not Unix users, so an edge started as root (or a Slurm operator) must not become
a way to kill everybody's jobs.  A site that wants that sets ``cancel_others=True`` (or the
environment variable ``RADICAL_EDGE_QUEUE_INFO_CANCEL_OTHERS=1``); the scheduler's own permission
check still applies on top.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio
from fastapi import FastAPI, HTTPException

from radical_edge_edge import CurrentSession, Plugin

from ..scheduler import (
    CommandFailed,
    CommandMissing,
    CommandTimeout,
    JobState,
    SchedulerError,
)
from ..scheduler.allocation import allocation_from_env, with_runtime
from ..scheduler.cache import CoalescingCache
from ..scheduler.detect import Backend, detect_scheduler, make_backend
from ..scheduler.run import Runner, run_command

log = logging.getLogger("radical_edge.queue_info")

#: environment variable that lets the edge cancel other users' jobs (``1``)
CANCEL_OTHERS_ENV = "RADICAL_EDGE_QUEUE_INFO_CANCEL_OTHERS"
#: at most this many jobs per list in one ``queue_changed`` event (``truncated`` says when cut)
EVENT_LIST_LIMIT = 100

_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@\-]{0,63}$")


def edge_user() -> str:
    """The user this process runs as (never ``os.getlogin()``: it fails without a terminal)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return os.environ.get("USER") or str(os.geteuid())


@dataclass(frozen=True)
class _Failed:
    """A cached failure of an optional query (allocations without accounting)."""

    error: SchedulerError


@contextlib.contextmanager
def scheduler_errors(what: str) -> Iterator[None]:
    """The scheduler's failures as HTTP errors: missing command 503, timeout 504, refusal or an answer
    that cannot be read 502 (the edge works; the scheduler behind it did not answer usefully)."""
    try:
        yield
    except CommandMissing as exc:
        raise HTTPException(503, f"{what}: {exc}") from None
    except CommandTimeout as exc:
        raise HTTPException(504, f"{what}: {exc}") from None
    except SchedulerError as exc:  # CommandFailed and the rest
        raise HTTPException(502, f"{what}: {exc}") from None
    except ValueError as exc:
        log.exception("%s: unreadable scheduler output", what)
        raise HTTPException(502, f"{what}: the scheduler's answer could not be read ({exc})") from None


def _job_signature(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(j["job_id"]): j for j in jobs}


def jobs_changed(backend: str, old: list[dict[str, Any]], new: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``queue_changed`` event for two job lists, ``None`` if no job came, went or changed state."""
    before, after = _job_signature(old), _job_signature(new)
    added = [after[k] for k in after if k not in before]
    removed = [before[k] for k in before if k not in after]
    changed = [
        (before[k], after[k])
        for k in after
        if k in before and (before[k]["state"], before[k]["node_list"]) != (after[k]["state"], after[k]["node_list"])
    ]
    if not (added or removed or changed):
        return None

    def brief(job: dict[str, Any]) -> dict[str, Any]:
        return {k: job[k] for k in ("job_id", "user", "partition", "state")}

    queues = sorted({str(j["partition"]) for j in added + removed + [n for _, n in changed] if j["partition"]})
    return {
        "kind": "jobs",
        "backend": backend,
        "queues": queues,
        "added": [brief(j) for j in added[:EVENT_LIST_LIMIT]],
        "removed": [brief(j) for j in removed[:EVENT_LIST_LIMIT]],
        "changed": [{**brief(n), "previous": o["state"]} for o, n in changed[:EVENT_LIST_LIMIT]],
        "truncated": max(len(added), len(removed), len(changed)) > EVENT_LIST_LIMIT,
    }


def queues_changed(backend: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``queue_changed`` event for two queue maps (state or node counts), ``None`` if alike."""
    keys = ("state", "nodes_total", "nodes_available", "nodes_idle")
    names = sorted(
        name
        for name in set(old) | set(new)
        if name not in old or name not in new or any(old[name][k] != new[name][k] for k in keys)
    )
    return {"kind": "queues", "backend": backend, "queues": names} if names else None


class QueueInfoPlugin(Plugin):
    """Queues, jobs and allocations of the batch system (Slurm or PBS) of the edge's machine."""

    plugin_name = "queue_info"
    version = "0.1.0"
    description = "Batch queues (Slurm partitions, PBS queues) with their limits, jobs, allocations; cancel jobs."
    ui: ClassVar[dict[str, Any]] = {
        "icon": "📋",
        "title": "Queue Info",
        "description": "Partitions, jobs and allocations of this machine's batch system.",
        "refresh_button": True,
        "auto_load": "get_info/{sid}",
        "monitors": [
            {"id": "queues", "title": "Partitions / Queues", "type": "table", "auto_load": "get_info/{sid}"},
            {
                "id": "jobs",
                "title": "My jobs",
                "type": "table",
                "auto_load": "list_all_jobs/{sid}",
                "empty_text": "No jobs.",
            },
            {"id": "allocations", "title": "Allocations", "type": "table", "auto_load": "list_allocations/{sid}"},
        ],
        "notifications": {"topic": "queue_changed", "id_field": "kind", "state_field": "queues"},
    }

    def __init__(
        self,
        name: str | None = None,
        *,
        scheduler: str | None = None,
        backend: Backend | None = None,
        run: Runner = run_command,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        cancel_others: bool | None = None,
        info_ttl: float = 60.0,
        jobs_ttl: float = 10.0,
        allocations_ttl: float = 300.0,
        watch_interval: float = 10.0,
        **kwargs: Any,
    ) -> None:
        """``scheduler`` (``slurm``, ``pbs``, ``none``; found on PATH by default) or a ready ``backend``;
        ``run`` runs its commands and ``env`` is their environment (e.g. another ``SLURM_CONF``)."""
        if backend is None:
            backend = make_backend(scheduler or detect_scheduler(), run=run, env=env)
        self.backend = backend
        #: the user the edge runs as (found in :meth:`startup`: a directory lookup may block)
        self.user = user or ""
        if cancel_others is None:
            cancel_others = os.environ.get(CANCEL_OTHERS_ENV, "").strip().lower() in ("1", "true", "yes")
        self.cancel_others = cancel_others
        self.info_ttl, self.jobs_ttl, self.allocations_ttl = info_ttl, jobs_ttl, allocations_ttl
        self.watch_interval = watch_interval
        self.cache = CoalescingCache(on_update=self._updated)
        super().__init__(name, **kwargs)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if detect_scheduler() == "none":
            return "no batch system found: neither Slurm (sinfo, squeue) nor PBS (qstat, pbsnodes) is on PATH"
        return None

    async def startup(self) -> None:
        if not self.user:
            self.user = await self.run_sync(edge_user)
        if self.backend is not None:
            self.start_background(self._watch)

    # ------------------------------------------------------------ shared, cached answers

    def _backend(self) -> Backend:
        if self.backend is None:
            raise HTTPException(503, "no batch system on this edge (neither Slurm nor PBS found)")
        return self.backend

    async def jobs(self, *, force: bool = False, ttl: float | None = None) -> list[dict[str, Any]]:
        """Every job the scheduler lists (all users), from the shared cache."""
        backend = self._backend()
        with scheduler_errors("listing jobs"):
            return await self.cache.get("jobs", backend.jobs, ttl=self.jobs_ttl if ttl is None else ttl, force=force)

    async def queues(self, *, force: bool = False) -> dict[str, dict[str, Any]]:
        backend = self._backend()
        with scheduler_errors("reading queues"):
            return await self.cache.get("queues", backend.queues, ttl=self.info_ttl, force=force)

    async def _allocations(self, force: bool) -> list[dict[str, Any]] | _Failed:
        backend = self._backend()

        async def fetch() -> list[dict[str, Any]] | _Failed:
            try:
                return await backend.allocations()
            except (CommandFailed, CommandMissing) as exc:  # e.g. no accounting: remembered, briefly
                return _Failed(exc)

        ttl = self.jobs_ttl if isinstance(self.cache.peek("allocations"), _Failed) else self.allocations_ttl
        with scheduler_errors("reading allocations"):
            return await self.cache.get("allocations", fetch, ttl=ttl, force=force)

    async def allocations(self, *, force: bool = False) -> list[dict[str, Any]]:
        result = await self._allocations(force)
        if isinstance(result, _Failed):
            with scheduler_errors("reading allocations"):
                raise result.error
        return result

    def _updated(self, key: str, old: Any, new: Any) -> None:
        """Cache listener: publish ``queue_changed`` when the jobs or queues differ from the last answer."""
        if old is None or self.backend is None:
            return
        event = None
        if key == "jobs":
            event = jobs_changed(self.backend.name, old, new)
        elif key == "queues":
            event = queues_changed(self.backend.name, old, new)
        if event is not None:
            self.notify("queue_changed", event)

    async def _watch(self) -> None:
        """While anybody has a session, refresh the job list every ``watch_interval`` s (pushes changes)."""
        last_error = ""
        while True:
            await anyio.sleep(self.watch_interval)
            if not len(self.sessions):
                continue
            try:
                await self.jobs(ttl=self.watch_interval)
                last_error = ""
            except HTTPException as exc:
                if exc.detail != last_error:  # log a failure once, not every interval
                    log.warning("queue watcher: %s", exc.detail)
                    last_error = str(exc.detail)

    # ------------------------------------------------------------ filters

    def _whose(self, user: str | None) -> str | None:
        """The user a ``?user=`` selects: the edge's by default, ``None`` (everybody) for ``*``."""
        if user is None or user == "":
            return self.user
        if user == "*":
            return None
        if not _USER.match(user):
            raise HTTPException(422, f"not a user name: {user!r} (give a name, or * for all users)")
        return user

    async def _visible(self, user: str | None, force: bool) -> tuple[set[str] | None, set[str]] | None:
        """``(partitions or None for all, accounts)`` ``user`` may use, from the associations; ``None``
        when they cannot say (no accounting, no PBS equivalent, the user has none)."""
        if user is None or self._backend().name != "slurm":
            return None
        rows = await self._allocations(force)
        if isinstance(rows, _Failed):
            return None
        mine = [r for r in rows if r["user"] == user]
        if not mine:
            return None
        partitions = None if any(r["partition"] is None for r in mine) else {str(r["partition"]) for r in mine}
        return partitions, {str(r["account"]) for r in mine}

    @staticmethod
    def _matches(job: Mapping[str, Any], wanted: str) -> bool:
        """``wanted`` names this job: its id, its id without the PBS server, or its whole array."""
        job_id = str(job["job_id"])
        return wanted in (job_id, job_id.split(".", 1)[0], job["array_job_id"])

    # ------------------------------------------------------------ routes

    def routes(self, app: FastAPI) -> None:
        @app.get("/backend")
        async def backend() -> dict[str, str]:
            """The batch system: ``slurm``, ``pbs`` or ``none``."""
            return {"backend": self.backend.name if self.backend is not None else "none"}

        @app.get("/job_allocation")
        async def job_allocation() -> dict[str, Any]:
            """The allocation (batch job) the edge runs inside, or ``null`` on a login node."""
            allocation = await self.run_sync(allocation_from_env)
            return {"allocation": await with_runtime(allocation, self.backend)}

        @app.get("/get_info/{sid}")
        async def get_info(session: CurrentSession, user: str | None = None, force: bool = False) -> dict[str, Any]:
            """Queues with their limits and nodes; by default those the edge's user may use (``user=*``: all)."""
            whose = self._whose(user)
            queues = await self.queues(force=force)
            visible = await self._visible(whose, force)
            if visible is not None:
                partitions, accounts = visible
                queues = {
                    name: q
                    for name, q in queues.items()
                    if (partitions is None or name in partitions)
                    and (q["allow_accounts"] is None or accounts & set(q["allow_accounts"]))
                }
            return {"queues": queues}

        @app.get("/list_jobs/{sid}/{queue}")
        async def list_jobs(
            session: CurrentSession, queue: str, user: str | None = None, force: bool = False
        ) -> dict[str, Any]:
            """Jobs in one queue: the edge user's by default, ``user=*`` for everybody's."""
            whose = self._whose(user)
            queues = await self.queues()
            if queue not in queues:
                raise HTTPException(404, f"no queue {queue!r} (queues: {', '.join(sorted(queues))})")
            jobs = await self.jobs(force=force)
            return {"jobs": [j for j in jobs if j["partition"] == queue and whose in (None, j["user"])]}

        @app.get("/list_all_jobs/{sid}")
        async def list_all_jobs(
            session: CurrentSession, user: str | None = None, force: bool = False
        ) -> dict[str, Any]:
            """Jobs in every queue: the edge user's by default, ``user=*`` for everybody's."""
            whose = self._whose(user)
            jobs = await self.jobs(force=force)
            return {"jobs": [j for j in jobs if whose in (None, j["user"])]}

        @app.get("/list_allocations/{sid}")
        async def list_allocations(
            session: CurrentSession, user: str | None = None, force: bool = False
        ) -> dict[str, Any]:
            """Accounts and their limits (Slurm associations): the user's rows and their accounts' rows."""
            whose = self._whose(user)
            rows = await self.allocations(force=force)
            if whose is not None:
                accounts = {r["account"] for r in rows if r["user"] == whose}
                rows = [r for r in rows if r["user"] == whose or (r["user"] is None and r["account"] in accounts)]
            return {"allocations": rows}

        @app.post("/cancel/{sid}/{job_id}")
        async def cancel(session: CurrentSession, job_id: str) -> dict[str, Any]:
            """Cancel a job (or a whole array) of the edge's user."""
            backend = self._backend()
            if not backend.valid_job_id(job_id):
                raise HTTPException(422, f"not a {backend.name} job id: {job_id!r}")
            jobs = [j for j in await self.jobs(force=True) if self._matches(j, job_id)]
            if not jobs:
                raise HTTPException(404, f"no job {job_id} in the queue (finished jobs leave it after a while)")
            strangers = sorted({str(j["user"]) for j in jobs if j["user"] != self.user})
            if strangers and not self.cancel_others:
                raise HTTPException(
                    403,
                    f"job {job_id} belongs to {', '.join(strangers)}: this edge cancels only jobs of {self.user}",
                )
            if all(JobState(j["state"]).final for j in jobs):
                raise HTTPException(409, f"job {job_id} has already ended ({jobs[0]['state']})")
            try:
                with scheduler_errors(f"cancelling job {job_id}"):
                    await backend.cancel(job_id)
            finally:
                self.cache.invalidate("jobs")
            return {"job_id": job_id, "status": JobState.CANCELLED.value}


__all__ = ["CANCEL_OTHERS_ENV", "QueueInfoPlugin", "edge_user", "jobs_changed", "queues_changed", "scheduler_errors"]
