"""rhapsody: workflow tasks (programs and Python functions) through rhapsody-py.

A session is one rhapsody Session with its backends (``concurrent``, which runs tasks on this host,
by default).  ``register_session`` answers at once with ``status: "initializing"``; the topic
``session_status`` says ``ready`` or ``failed`` (``GET session_status/{sid}`` too), and task
routes answer 409 until then.  Task states are radical-edge's one vocabulary (PENDING, RUNNING,
DONE, FAILED, CANCELLED, ...); results are plain JSON, bounded.  Cancel stops the task's whole
process tree.  Pickled callables are refused unless the edge operator allows them
(``RhapsodyPlugin(allow_pickled=True)`` or ``RADICAL_EDGE_RHAPSODY_ALLOW_PICKLED=1``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from typing import Annotated, Any, ClassVar

import anyio
from fastapi import Body, Depends, FastAPI, HTTPException

from radical_edge_edge import Plugin, Session, current_session

from ._batcher import DEFAULT_SIZE, DEFAULT_WINDOW
from ._session import Limits, RhapsodySession
from ._spec import ALLOW_PICKLED_ENV

#: the backends a session gets when it names none
DEFAULT_BACKENDS = ("concurrent",)
#: the most tasks one submit may carry
MAX_SUBMIT = 10_000


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


async def _rhapsody_session(session: Annotated[Session, Depends(current_session)]) -> RhapsodySession:
    assert isinstance(session, RhapsodySession)
    return session


async def _ready_session(session: Annotated[RhapsodySession, Depends(_rhapsody_session)]) -> RhapsodySession:
    session.check_ready()
    return session


AnySession = Annotated[RhapsodySession, Depends(_rhapsody_session)]
ReadySession = Annotated[RhapsodySession, Depends(_ready_session)]


class RhapsodyPlugin(Plugin):
    """Workflow tasks through rhapsody-py: programs and ``module:function`` calls, cancellable, batched events."""

    plugin_name = "rhapsody"
    version = "0.1.0"
    description = "Workflow tasks through rhapsody: programs and Python functions, with batched status events."
    session_class = RhapsodySession
    ui: ClassVar[dict[str, Any]] = {
        "icon": "🎼",
        "title": "Rhapsody Tasks",
        "description": "Submit programs and Python functions as tasks; watch their states.",
        "refresh_button": True,
        "monitors": [
            {
                "id": "tasks",
                "title": "Tasks",
                "type": "task_list",
                "auto_load": "list_tasks/{sid}",
                "empty_text": "No tasks submitted yet.",
            },
        ],
        "notifications": {"topic": "task_status", "id_field": "uid", "state_field": "state"},
    }

    def __init__(
        self,
        name: str | None = None,
        *,
        allow_pickled: bool | None = None,
        limits: Limits | None = None,
        **kwargs: Any,
    ) -> None:
        """``allow_pickled``: accept pickled callables (they run arbitrary code when loaded); ``None`` reads
        ``RADICAL_EDGE_RHAPSODY_ALLOW_PICKLED``.  ``limits``: output bounds, process and task caps,
        constructor options of the other backends (:class:`Limits`)."""
        allow = _env_flag(ALLOW_PICKLED_ENV) if allow_pickled is None else allow_pickled
        self.limits = dataclasses.replace(limits or Limits(), allow_pickled=allow)
        self._availability: dict[str, dict[str, Any]] | None = None
        self._probe_lock = anyio.Lock()
        super().__init__(name, **kwargs)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if importlib.util.find_spec("rhapsody") is None:
            return "rhapsody-py is not installed (pip install 'radical-edge[hpc]')"
        try:
            import rhapsody  # noqa: F401, PLC0415
        except Exception as exc:
            return f"rhapsody-py cannot be imported: {type(exc).__name__}: {exc}"
        return None

    async def backends(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """Every backend rhapsody knows with ``available`` and ``reason``, tried for real once (then cached)."""
        async with self._probe_lock:
            if self._availability is None or refresh:
                from ._backend import probe_backends  # noqa: PLC0415 - imports rhapsody

                self._availability = await self.run_sync(probe_backends)
            return self._availability

    async def create_session(self, sid: str, owner: str, options: dict[str, Any]) -> Session:
        backends = options.get("backends", list(DEFAULT_BACKENDS))
        if (
            not isinstance(backends, list)
            or not backends
            or not all(isinstance(b, str) for b in backends)
            or len(set(backends)) != len(backends)
        ):
            raise HTTPException(422, "backends must be a non-empty list of distinct backend names")
        known = await self.backends()
        for name in backends:
            if name not in known:
                raise HTTPException(422, f"unknown backend {name!r}; rhapsody knows {', '.join(sorted(known))}")
            if not known[name]["available"]:
                raise HTTPException(422, f"backend {name!r} is not available on this edge: {known[name]['reason']}")
        window = options.get("notify_batch_window", DEFAULT_WINDOW)
        size = options.get("notify_batch_size", DEFAULT_SIZE)
        if isinstance(window, bool) or not isinstance(window, int | float) or not 0 <= window <= 60:
            raise HTTPException(422, "notify_batch_window must be a number of seconds in [0, 60]")
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 100_000:
            raise HTTPException(422, "notify_batch_size must be an integer in [1, 100000]")
        return RhapsodySession(
            sid,
            owner,
            ttl=self._session_ttl(options),
            now=self.sessions.now(),
            limits=self.limits,
            backends=backends,
            emit=self.notify,
            window=float(window),
            size=size,
        )

    async def session_added(self, session: Session) -> None:
        assert isinstance(session, RhapsodySession)
        session.start()

    def routes(self, app: FastAPI) -> None:
        @app.get("/backends")
        async def backends(refresh: bool = False) -> dict[str, Any]:
            """Each backend with ``available`` and, when not, the ``reason`` (tried for real; ``refresh`` re-tries)."""
            return {"backends": await self.backends(refresh), "default": list(DEFAULT_BACKENDS)}

        @app.get("/session_status/{sid}")
        async def session_status(session: AnySession, wait: float = 0.0) -> dict[str, Any]:
            """``{sid, status, error, backends}``; ``wait`` seconds (at most 30) for it to leave ``initializing``."""
            if wait > 0 and math.isfinite(wait):
                await session.wait_settled(min(wait, self.limits.max_wait))
            return session.describe()

        @app.post("/submit/{sid}")
        async def submit(session: ReadySession, body: Annotated[dict[str, Any], Body()]) -> list[dict[str, Any]]:
            """Submit ``{tasks: [...]}`` (or ``{template, uids}``: one task per uid); answers ``[{uid, state}]``."""
            if "template" in body:
                template, uids = body.get("template"), body.get("uids")
                if not isinstance(template, dict) or not isinstance(uids, list):
                    raise HTTPException(422, "a template submission is {template: {...}, uids: [...]}")
                tasks: Any = [{**template, "uid": uid} for uid in uids]
            else:
                tasks = body.get("tasks")
            if not isinstance(tasks, list):
                raise HTTPException(422, "the body is {tasks: [task, ...]}")
            if len(tasks) > MAX_SUBMIT:
                raise HTTPException(422, f"at most {MAX_SUBMIT} tasks per submit; send more in several")
            return await session.submit(tasks)

        @app.post("/wait/{sid}")
        async def wait(
            session: ReadySession, body: Annotated[dict[str, Any] | None, Body()] = None
        ) -> list[dict[str, Any]]:
            """The records of ``uids`` (all tasks if absent) once final, or as they are after ``timeout`` seconds
            (default 0: a snapshot; at most 30)."""
            body = body or {}
            uids, timeout = body.get("uids"), body.get("timeout", 0)
            if uids is not None and (not isinstance(uids, list) or not all(isinstance(u, str) for u in uids)):
                raise HTTPException(422, "uids must be a list of task uids")
            if timeout is None:
                timeout = self.limits.max_wait
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
                raise HTTPException(422, "timeout must be a number of seconds >= 0")
            return await session.wait(uids, float(timeout))

        @app.get("/list_tasks/{sid}")
        async def list_tasks(session: ReadySession, state: str | None = None) -> dict[str, Any]:
            """``{tasks: [...]}``: each task's summary (output: ``task/{sid}/{uid}``), or those in ``state``."""
            return {"tasks": session.summaries(state.upper() if state else None)}

        @app.get("/task/{sid}/{uid}")
        async def task(session: ReadySession, uid: str) -> dict[str, Any]:
            """One task's record: state, exit_code, stdout, stderr, return_value, error, times."""
            return session.record(uid)

        @app.post("/cancel/{sid}/{uid}")
        async def cancel(session: ReadySession, uid: str) -> dict[str, Any]:
            """Cancel one task; its process tree is gone when this answers.  ``{uid, state, cancelled}``."""
            return await session.cancel(uid)

        @app.post("/cancel_all/{sid}")
        async def cancel_all(session: ReadySession) -> dict[str, Any]:
            """Cancel every task that is not final.  ``{cancelled: n, uids: [...]}``."""
            return await session.cancel_all()


__all__ = ["ALLOW_PICKLED_ENV", "Limits", "RhapsodyPlugin", "RhapsodySession"]
