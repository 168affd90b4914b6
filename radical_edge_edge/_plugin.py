"""The plugin base class: one FastAPI application per plugin, with sessions and notifications.

A plugin subclasses :class:`Plugin`, sets ``plugin_name`` and ``version``,
and adds its routes in :meth:`Plugin.routes`.  Every plugin has the routes
users of radical.edge rely on: ``POST register_session``,
``POST unregister_session/{sid}``, ``GET list_sessions``, ``GET version``,
``GET health`` and ``GET ui_config``.  See ``docs/plugins.md``.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, ParamSpec, TypeVar

import anyio
import anyio.abc
from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from radical_edge_proto import profile
from radical_edge_proto.profile import error_envelope

from ._sessions import DEFAULT_TTL, Session, SessionError, SessionStore

if TYPE_CHECKING:
    from radical_edge_tunnel import BridgeSettings

log = logging.getLogger("radical_edge.edge")

P = ParamSpec("P")
T = TypeVar("T")

#: what a plugin (mount) name may look like (the profile's grammar: the bridge checks manifests with it)
PLUGIN_NAME = profile.PLUGIN_NAME
#: the header the bridge sets to the authenticated caller's identity
CALLER_HEADER = profile.CALLER_HEADER.decode()
#: longest time-to-live a caller may ask for in register_session (seconds)
MAX_SESSION_TTL = 7 * 24 * 3600.0

NotifySink = Callable[[str, str, Any], None]


def check_plugin_name(name: str) -> str:
    if (reason := profile.plugin_name_error(name)) is not None:
        raise ValueError(reason)
    return name


def _envelope_response(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(jsonable_encoder(error_envelope(status, detail)), status_code=status, headers=headers)


def install_error_envelope(app: FastAPI) -> None:
    """Make ``app`` answer every error with the radical-edge JSON envelope.

    HTTP errors keep their status, validation errors are 422 with the list of
    problems as ``detail``, unexpected exceptions are 500 (and logged).
    """

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return _envelope_response(exc.status_code, exc.detail, dict(exc.headers) if exc.headers else None)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _envelope_response(422, exc.errors())

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _envelope_response(500, f"internal error in the plugin: {type(exc).__name__}: {exc}")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)


class Plugin:
    """Base class of radical-edge plugins.

    Class attributes a subclass sets:

    ``plugin_name``
        the default mount name (``/{edge}/{plugin_name}/...``); the entry point name overrides it
    ``plugin_type``
        what kind of plugin this is (manifest ``type``); defaults to ``plugin_name``
    ``version``, ``description``
        shown in the manifest, ``version`` and ``health``
    ``session_class``
        the :class:`Session` subclass :meth:`create_session` makes
    ``session_ttl``
        idle seconds before a session expires (default one hour)
    ``ui``
        the portal's UI description (``icon``, ``title``, ``forms``, ``monitors``, ``notifications``, ...)

    The instance has ``app`` (its FastAPI application), ``sessions`` (a
    :class:`SessionStore`) and ``name`` (where it is mounted).
    """

    plugin_name: ClassVar[str] = ""
    plugin_type: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"
    description: ClassVar[str] = ""
    session_class: ClassVar[type[Session]] = Session
    session_ttl: ClassVar[float] = DEFAULT_TTL
    ui: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        name: str | None = None,
        *,
        session_ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = check_plugin_name(name or self.plugin_name or type(self).__name__.lower())
        self.edge_name = ""
        #: (host) returns the bridge settings of the edge this plugin runs in (see :attr:`bridge_settings`)
        self._bridge_settings: Callable[[], BridgeSettings | None] | None = None
        self.started_at = clock()
        self.clock = clock
        self.sessions = SessionStore(ttl=session_ttl or self.session_ttl, clock=clock)
        self.notifications_dropped = 0
        self._sink: NotifySink | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self.app = FastAPI(
            title=f"{self.name} plugin",
            version=self.version,
            description=self.description or (type(self).__doc__ or "").strip(),
            lifespan=self._lifespan,
        )
        self.app.state.radical_edge_plugin = self
        install_error_envelope(self.app)
        self._base_routes(self.app)
        self.routes(self.app)

    # ------------------------------------------------------------ hooks for subclasses

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this plugin cannot work on this host (e.g. no scheduler found), or ``None``.

        A plugin that says why is reported in the manifest as not enabled, with the reason.
        """
        return None

    def routes(self, app: FastAPI) -> None:
        """Add the plugin's own routes to ``app`` (paths relative to the plugin, e.g. ``/metrics/{sid}``)."""

    async def startup(self) -> None:
        """Called once in the event loop before the first request."""

    async def shutdown(self) -> None:
        """Called once when the plugin is removed or the edge stops (after its sessions are closed)."""

    async def create_session(self, sid: str, owner: str, options: dict[str, Any]) -> Session:
        """Make the session object for a ``register_session`` call (``options`` is its JSON body)."""
        return self.session_class(sid, owner, ttl=self._session_ttl(options), now=self.sessions.now())

    async def session_added(self, session: Session) -> None:
        """Called once a new session is stored (after :meth:`create_session`): start its background work here,
        so a session refused for quota never starts any."""

    def ui_config(self) -> dict[str, Any]:
        """The UI description the portal renders; by default built from ``ui``."""
        config: dict[str, Any] = {"icon": "🔌", "title": self.name, "description": self.description}
        config.update(self.ui)
        return config

    # ------------------------------------------------------------ tools for subclasses

    def notify(self, topic: str, data: Any) -> None:
        """Send a notification (becomes an EVENT frame to the bridge, then SSE to clients).

        Callable from any thread and from the event loop; never blocks.
        ``data`` must be JSON-encodable (else ``TypeError``/``ValueError`` here).
        """
        if self._sink is None:
            json.dumps(data, allow_nan=False)  # the same check as when attached
            self.notifications_dropped += 1
            log.warning("plugin %s is not attached to an edge: notification %r dropped", self.name, topic)
            return
        self._sink(self.name, topic, data)

    async def session(self, sid: str, request: Request) -> Session:
        """The caller's live session ``sid``, for ``Depends(self.session)`` in a route.

        Raises the HTTP error (404 unknown, 410 expired, 403 not the caller's).
        """
        try:
            return self.sessions.get(sid, caller_of(request))
        except SessionError as exc:
            raise HTTPException(exc.status, exc.detail) from None

    async def run_sync(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking ``func`` in a worker thread, so the event loop (and the heartbeat) never stall."""
        return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))

    def start_background(self, func: Callable[[], Awaitable[Any]], *, name: str | None = None) -> None:
        """Run ``func()`` as a task for as long as the plugin runs (a watcher, a poller).

        Call it from :meth:`startup` or later.  The task is cancelled when the plugin stops, before
        :meth:`shutdown`; an exception it raises is logged and ends only that task, never the plugin.
        """
        if self._task_group is None:
            raise RuntimeError(f"plugin {self.name}: background tasks start in startup() or later, while it runs")
        self._task_group.start_soon(self._background, func, name=name or getattr(func, "__name__", None))

    async def _background(self, func: Callable[[], Awaitable[Any]]) -> None:
        try:
            await func()
        except Exception:
            log.exception("plugin %s: background task %r failed", self.name, getattr(func, "__name__", func))

    # ------------------------------------------------------------ host interface

    def attach(self, edge_name: str, sink: NotifySink) -> None:
        """(host) Bind the plugin to an edge: where it is mounted and where notifications go."""
        self.edge_name = edge_name
        self._sink = sink

    def detach(self) -> None:
        self._sink = None

    @property
    def bridge_settings(self) -> BridgeSettings | None:
        """How the edge this plugin runs in reaches its bridge (URL, CA file, token or token file), or None
        (not mounted yet, or an edge with a custom connector).  For plugins that start programs which dial
        the same bridge (the psij plugin's child edges); never send the token itself anywhere."""
        return self._bridge_settings() if self._bridge_settings is not None else None

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "plugin": self.name,
            "version": self.version,
            "uptime_seconds": round(self.clock() - self.started_at, 3),
            "active_sessions": len(self.sessions),
        }

    @property
    def type_name(self) -> str:
        return self.plugin_type or self.plugin_name or self.name

    # ------------------------------------------------------------ internals

    def _session_ttl(self, options: dict[str, Any]) -> float:
        ttl = options.get("ttl")
        if ttl is None:
            return self.sessions.ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_SESSION_TTL:
            raise HTTPException(422, f"ttl must be a number of seconds in (0, {MAX_SESSION_TTL:.0f}]")
        return float(ttl)

    async def _close(self, session: Session, why: str) -> None:
        try:
            await session.close()
        except Exception:
            log.exception("plugin %s: closing session %s (%s) failed", self.name, session.sid, why)

    async def _cleanup_loop(self) -> None:
        interval = min(60.0, max(self.sessions.ttl / 4, 0.05))
        while True:
            await anyio.sleep(interval)
            for session in self.sessions.expire():
                log.info("plugin %s: session %s expired", self.name, session.sid)
                await self._close(session, "expired")

    @asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            try:
                await self.startup()
            except BaseException:
                self._task_group = None
                raise
            tg.start_soon(self._cleanup_loop)
            try:
                yield
            finally:
                self._task_group = None
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    for session in self.sessions.clear():
                        await self._close(session, "shutdown")
                    await self.shutdown()

    def _base_routes(self, app: FastAPI) -> None:
        plugin = self

        @app.post("/register_session", tags=["session"])
        async def register_session(
            request: Request, options: Annotated[dict[str, Any] | None, Body()] = None
        ) -> dict[str, Any]:
            """Create a session (optional body: ``{"ttl": seconds}``), or renew yours with ``{"sid": ...}``."""
            options = options or {}
            caller = caller_of(request)
            sid = options.get("sid")
            if sid is not None:
                session = await plugin.session(str(sid), request)
                return {**session.register_reply(), "sid": session.sid}
            session = await plugin.create_session(SessionStore.new_id(), caller, options)
            try:
                plugin.sessions.add(session)
            except SessionError as exc:
                await plugin._close(session, "refused")
                raise HTTPException(exc.status, exc.detail) from None
            await plugin.session_added(session)
            return {**session.register_reply(), "sid": session.sid}

        @app.post("/unregister_session/{sid}", tags=["session"])
        async def unregister_session(sid: str, request: Request) -> dict[str, bool]:
            """Close a session and release what it holds."""
            try:
                session = plugin.sessions.remove(sid, caller_of(request))
            except SessionError as exc:
                raise HTTPException(exc.status, exc.detail) from None
            await plugin._close(session, "unregistered")
            return {"ok": True}

        @app.get("/list_sessions", tags=["session"])
        async def list_sessions(request: Request) -> dict[str, list[str]]:
            """The caller's live sessions."""
            return {"sessions": plugin.sessions.owned_by(caller_of(request))}

        @app.get("/version", tags=["plugin"])
        async def version() -> dict[str, str]:
            return {"version": plugin.version}

        @app.get("/health", tags=["plugin"])
        async def health() -> dict[str, Any]:
            return plugin.health()

        @app.get("/ui_config", tags=["plugin"])
        async def ui_config() -> dict[str, Any]:
            return {"plugin": plugin.name, "version": plugin.version, "ui": plugin.ui_config()}


def caller_of(request: Request) -> str:
    """The authenticated caller the bridge named in ``x-radical-caller`` ("" when called directly).

    The bridge appends its header after anything the client sent, so the last one is the bridge's.
    """
    values = request.headers.getlist(CALLER_HEADER)
    return values[-1] if values else ""


async def current_session(sid: str, request: Request) -> Session:
    """FastAPI dependency: the caller's live session ``sid`` of the plugin serving the request."""
    plugin: Plugin = request.app.state.radical_edge_plugin
    return await plugin.session(sid, request)


#: Annotate a route parameter with this to get the caller's session for the ``{sid}`` path parameter
#: (404 unknown, 410 expired, 403 another caller's).  For a Session subclass write
#: ``Annotated[MySession, Depends(current_session)]``.
CurrentSession = Annotated[Session, Depends(current_session)]
