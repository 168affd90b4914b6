"""The async SDK: :class:`AsyncBridgeClient`, :class:`AsyncEdgeClient` and :class:`AsyncPluginClient`.

.. code-block:: python

    import anyio
    from radical_edge_client import AsyncBridgeClient

    async def main() -> None:
        async with AsyncBridgeClient() as bridge:     # RADICAL_BRIDGE_URL / _TOKEN / _CERT
            print(await bridge.list_edges())
            edge = await bridge.get_edge_client("hpc1")
            sysinfo = await edge.get_plugin("sysinfo")  # registers a session
            print(await sysinfo.get_metrics())

    anyio.run(main)

Everything goes over one WebSocket to the bridge's ``/connect`` endpoint;
concurrent calls are multiplexed on it, events are pushed on it, and it is
re-established (with resumed events) when it breaks.
"""

from __future__ import annotations

import logging
import math
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, ClassVar, TypeVar

import anyio
import anyio.abc

from radical_edge_proto import Limits
from radical_edge_tunnel import resolve_settings

from . import _http
from ._errors import (
    BridgeProtocolError,
    BridgeUnavailable,
    EdgeNotFound,
    EdgeUnavailable,
    PluginNotFound,
    RadicalEdgeError,
)
from ._events import Dispatcher, GapCallback, NotificationCallback, TopologyCallback
from ._http import BodySource, Headers, Params, Response, StreamResponse
from ._link import Backoff, Link

log = logging.getLogger("radical_edge.client")

P = TypeVar("P", bound="AsyncPluginClient")

#: default time to wait for an answer's head (longer than the bridge's own 60 s, whose 504 is clearer)
DEFAULT_TIMEOUT = 120.0


class _Background:
    """The client's background tasks: a task group whose children each run in their own cancel scope.

    Closing the client cancels those scopes, never the task group's own scope,
    so code running inside ``async with AsyncBridgeClient()`` is not cancelled by a
    ``close()``.
    """

    def __init__(self) -> None:
        self.tg: anyio.abc.TaskGroup | None = None
        self.owner: int | None = None
        self.stopped = False
        self._scopes: set[anyio.CancelScope] = set()

    async def open(self) -> None:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self.tg = tg
        self.owner = anyio.get_current_task().id

    async def start(self, fn: Callable[..., Awaitable[None]]) -> None:
        assert self.tg is not None
        await self.tg.start(self._guard, fn)

    def spawn(self, fn: Callable[[], Awaitable[None]], name: str) -> None:
        if self.tg is None or self.stopped:
            raise BridgeUnavailable("the client is closed")
        self.tg.start_soon(self._guard_soon, fn, name=name)

    async def _guard(
        self, fn: Callable[..., Awaitable[None]], *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            if self.stopped:
                scope.cancel()
            try:
                await fn(task_status=task_status)
            finally:
                self._scopes.discard(scope)

    async def _guard_soon(self, fn: Callable[[], Awaitable[None]]) -> None:
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            if self.stopped:
                scope.cancel()
            try:
                await fn()
            finally:
                self._scopes.discard(scope)

    def stop(self) -> None:
        self.stopped = True
        for scope in list(self._scopes):
            scope.cancel()

    async def join(self) -> None:
        """Wait for the (stopped) tasks and leave the task group, if this is the task that opened it."""
        if self.tg is not None and anyio.get_current_task().id == self.owner:
            tg, self.tg = self.tg, None
            await tg.__aexit__(None, None, None)


class AsyncBridgeClient:
    """Async client of a radical-edge bridge, for ``async with`` (blocking: ``radical_edge_client.BridgeClient``).

    ``url``, ``token`` and ``cert`` (the CA file that signed the bridge's
    certificate) default to ``RADICAL_BRIDGE_URL``, ``RADICAL_BRIDGE_TOKEN``
    (else the token file ``~/.radical/edge/bridge.token``, or ``token_file``)
    and ``RADICAL_BRIDGE_CERT`` (else the system's trust store).  TLS is
    always verified; ``insecure_skip_tls_verify=True`` turns that off (never
    do this outside a throw-away test: anyone on the path can then read the
    token and all traffic).

    ``timeout`` is the default time to wait for an answer (``math.inf`` for
    none); ``connect_timeout`` how long a call waits for the connection while
    the client reconnects; ``backoff`` the reconnect delays;
    ``max_pending_events`` how many events may wait for slow callbacks.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        cert: str | os.PathLike[str] | None = None,
        *,
        token_file: str | os.PathLike[str] | None = None,
        insecure_skip_tls_verify: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = 10.0,
        backoff: Backoff | None = None,
        max_pending_events: int = 10_000,
        name: str = "radical-edge-client",
        limits: Limits | None = None,
    ) -> None:
        if token is not None and cert is None and _looks_like_a_ca_file(token):
            # radical.edge's client was BridgeClient(url, cert): here the second argument is the token
            raise ValueError(f"{token!r} looks like a CA file, not a token: pass it as cert=...")
        # ValueError (no or bad URL, missing CA file), InsecureFileError (a PermissionError: a token
        # file others can read, with the chmod to run), OSError (a token file that cannot be read)
        settings = resolve_settings(
            url, token, cert, token_file=token_file, insecure_skip_tls_verify=insecure_skip_tls_verify
        )
        self.url = settings.url
        self.timeout = timeout
        self._dispatcher = Dispatcher(max_pending_events)
        self._link = Link(
            settings,
            dispatcher=self._dispatcher,
            name=name,
            connect_timeout=connect_timeout,
            backoff=backoff,
            limits=limits,
        )
        self._bg = _Background()
        self._opened = False
        self._closed = False
        self._in_context = False
        self._plugins: weakref.WeakSet[AsyncPluginClient] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, state={self.state!r})"

    # ------------------------------------------------------------ lifecycle

    async def connect(self) -> AsyncBridgeClient:
        """Connect now (``async with`` does this); raises :class:`AuthError`, :class:`BridgeUnavailable`, ...

        After a successful connect the client reconnects by itself until
        :meth:`close`.  Without ``async with``, call :meth:`close` from the
        task that called :meth:`connect`, outside any cancel scope or task
        group entered after it (on asyncio, a :meth:`close` from another task,
        e.g. a later notebook cell, works too).
        """
        if self._closed:
            raise BridgeUnavailable("the client is closed")
        if self._opened:
            return self
        await self._bg.open()
        self._link.attach(self._bg.spawn)
        try:
            await self._bg.start(self._dispatcher.run)
            await self._bg.start(self._link.run)
        except BaseException:
            self._closed = True
            self._bg.stop()
            await self._bg.join()  # not under a scope of its own: the task group's scope must be innermost
            raise
        self._opened = True
        return self

    async def close(self) -> None:
        """Unregister the sessions this client made (best effort), close the connection, stop the callbacks.

        Calls in flight raise :class:`BridgeUnavailable`; so does every later call.
        """
        await self._shutdown()
        if not self._in_context:
            await self._bg.join()  # not under a scope of its own: the task group's scope must be innermost

    async def _shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            with anyio.move_on_after(5, shield=True):
                await self._release_sessions()
                await self._link.close()
            self._bg.stop()

    async def __aenter__(self) -> AsyncBridgeClient:
        self._in_context = True
        try:
            return await self.connect()
        except BaseException:
            self._in_context = False
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # a close() inside the block (perhaps nested in other scopes) only shut things down;
        # the task group is left here, where it was entered
        await self._shutdown()
        self._in_context = False
        await self._bg.join()

    async def _release_sessions(self) -> None:
        for plugin in list(self._plugins):
            if plugin.sid is not None and self._link.connected:
                with anyio.move_on_after(2):
                    try:
                        await plugin.unregister_session()
                    except RadicalEdgeError as exc:
                        log.debug("unregistering session %s of %s failed: %s", plugin.sid, plugin.namespace, exc)

    def _check_open(self) -> None:
        if self._closed:
            raise BridgeUnavailable("the client is closed")
        if not self._opened:
            raise RuntimeError(
                "the client is not connected: use 'async with AsyncBridgeClient() as client' or connect()"
            )

    @property
    def connected(self) -> bool:
        """Whether the connection to the bridge is up right now."""
        return self._link.connected

    @property
    def state(self) -> str:
        """``connecting``, ``connected``, ``waiting`` (to reconnect), ``failed`` or ``closed``."""
        return self._link.state

    @property
    def stats(self) -> dict[str, int]:
        """Counters: connections made, events delivered, duplicates dropped, events dropped for overflow."""
        return {
            "connections": self._link.connections,
            "events_delivered": self._dispatcher.delivered,
            "duplicates_dropped": self._link.duplicates,
            "events_overflowed": self._dispatcher.overflowed,
            "callback_errors": self._dispatcher.callback_errors,
        }

    # ------------------------------------------------------------ raw requests

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: BodySource | None = None,
        params: Params | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send a request to ``path`` on the bridge (``/edges``, ``/e1/sysinfo/homedir``, ...); read the whole answer.

        ``json`` is sent as JSON, ``data`` as is (bytes, a file object, an
        iterator of bytes: see :mod:`radical_edge_client._http`).  Error
        statuses raise the matching :class:`RadicalEdgeError`.
        """
        self._check_open()
        body, implied = _http.encode_body(json, data)
        return await _http.fetch(
            self._link,
            method.upper(),
            _http.build_target(path, params),
            headers=implied + _http.header_list(headers),
            body=body,
            timeout=self._timeout(timeout),
        )

    def stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: BodySource | None = None,
        params: Params | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """Like :meth:`request`, but the answer's body is read by the caller::

        async with client.stream("GET", "/e1/files/blob") as answer:
            await answer.download("blob.bin")
        """
        return self._stream(method, path, json=json, data=data, params=params, headers=headers, timeout=timeout)

    @asynccontextmanager
    async def _stream(
        self,
        method: str,
        path: str,
        *,
        json: Any,
        data: BodySource | None,
        params: Params | None,
        headers: Headers | None,
        timeout: float | None,
    ) -> AsyncIterator[StreamResponse]:
        self._check_open()
        body, implied = _http.encode_body(json, data)
        async with _http.request_stream(
            self._link,
            method.upper(),
            _http.build_target(path, params),
            headers=implied + _http.header_list(headers),
            body=body,
            timeout=self._timeout(timeout),
        ) as answer:
            yield answer

    def _timeout(self, timeout: float | None) -> float | None:
        value = self.timeout if timeout is None else timeout
        return None if math.isinf(value) else value

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self.request(method, path, **kwargs)).json()

    # ------------------------------------------------------------ management API

    async def topology(self) -> dict[str, Any]:
        """The bridge's view (``POST /edge/list``): ``{"bridge": {...}, "edges": {NAME: {"endpoint", "plugins"}}}``."""
        answer = await self._json("POST", "/edge/list")
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict):
            raise BridgeProtocolError("POST /edge/list: no 'data' object in the answer")
        return data

    async def list_edges(self) -> list[str]:
        """The names of the edges connected now."""
        edges = (await self.topology()).get("edges", {})
        return sorted(n for n, e in edges.items() if (e.get("endpoint") or {}).get("connected", True))

    async def edges(self) -> list[dict[str, Any]]:
        """Every edge the bridge knows (``GET /edges``): ``[{"name", "plugins", "connected", "plugin_count"}]``."""
        answer = await self._json("GET", "/edges")
        edges = answer.get("edges") if isinstance(answer, dict) else None
        if not isinstance(edges, list):
            raise BridgeProtocolError("GET /edges: no 'edges' list in the answer")
        return edges

    async def health(self) -> dict[str, Any]:
        """``GET /healthz`` of the bridge."""
        answer = await self._json("GET", "/healthz")
        return answer if isinstance(answer, dict) else {"status": answer}

    async def get_edge_client(self, name: str) -> AsyncEdgeClient:
        """A client for edge ``name``; :class:`EdgeNotFound` if the bridge does not know it."""
        self._check_open()
        edges = (await self.topology()).get("edges", {})
        if name not in edges:
            known = ", ".join(sorted(edges)) or "none"
            raise EdgeNotFound(f"unknown edge {name!r} (known: {known})", 404)
        return AsyncEdgeClient(self, name)

    async def disconnect_edge(self, name: str) -> None:
        """Tell edge ``name`` to shut down (it does not reconnect); :class:`EdgeNotFound` if unknown."""
        await self.request("POST", f"/edge/disconnect/{_http.quote_segment(name)}")

    # ------------------------------------------------------------ events

    async def register_callback(
        self,
        edge_id: str | None = None,
        plugin_name: str | None = None,
        topic: str | None = None,
        callback: NotificationCallback | None = None,
        *,
        on_gap: GapCallback | None = None,
    ) -> None:
        """Call ``callback(edge, plugin, topic, data)`` for each matching notification (``None`` = any).

        Returns once the bridge delivers events to this client; every event
        published after that reaches the callback exactly once, across
        reconnections and bridge restarts (within the bridge's replay window).
        When events may have been missed, the callback is called once with
        ``("bridge", "bridge", "gap", gap)`` where ``gap`` is an
        :class:`~radical_edge_client.EventGap` (or ``on_gap(gap)`` is called
        instead, if given).  Plain functions run in a worker thread, one call at
        a time and in order; coroutine functions are awaited in the event loop.
        """
        self._check_open()
        if callback is None:
            raise TypeError("callback is required: callback(edge, plugin, topic, data)")
        self._dispatcher.add(edge_id, plugin_name, topic, callback, on_gap)
        await self._link.want_events()

    async def unregister_callback(
        self,
        edge_id: str | None = None,
        plugin_name: str | None = None,
        topic: str | None = None,
        callback: NotificationCallback | None = None,
    ) -> None:
        """Remove a callback registered with the same arguments."""
        if callback is not None:
            self._dispatcher.remove(edge_id, plugin_name, topic, callback)

    async def register_topology_callback(self, callback: TopologyCallback) -> None:
        """Call ``callback(edges)`` whenever edges connect, disconnect or change plugins.

        ``edges`` maps each edge name to ``{"endpoint": {"connected", ...}, "plugins": {...}}``.
        """
        self._check_open()
        self._dispatcher.add_topology(callback)
        await self._link.want_events()

    async def unregister_topology_callback(self, callback: TopologyCallback) -> None:
        self._dispatcher.remove_topology(callback)

    def _track(self, plugin: AsyncPluginClient) -> None:
        self._plugins.add(plugin)


class _Scoped:
    """Requests relative to a prefix (an edge, or a plugin on an edge): one implementation for both."""

    bridge: AsyncBridgeClient

    def _path(self, path: str) -> str:
        raise NotImplementedError

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: BodySource | None = None,
        params: Params | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> Response:
        """A request to ``path`` relative to this edge or plugin (e.g. ``f"metrics/{sid}"``); the whole answer."""
        return await self.bridge.request(
            method, self._path(path), json=json, data=data, params=params, headers=headers, timeout=timeout
        )

    def stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: BodySource | None = None,
        params: Params | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """Like :meth:`request`, with the answer's body read by the caller (chunks, or ``download``)."""
        return self.bridge.stream(
            method, self._path(path), json=json, data=data, params=params, headers=headers, timeout=timeout
        )


class AsyncEdgeClient(_Scoped):
    """One edge, through the bridge: its plugins and raw requests to ``/{edge}/...``."""

    def __init__(self, bridge: AsyncBridgeClient, name: str) -> None:
        self.bridge = bridge
        self.name = name
        self._base = "/" + _http.quote_segment(name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    async def _entry(self) -> dict[str, Any]:
        edges = (await self.bridge.topology()).get("edges", {})
        entry = edges.get(self.name)
        if not isinstance(entry, dict):
            raise EdgeNotFound(f"unknown edge {self.name!r}", 404)
        return entry

    async def list_plugins(self) -> dict[str, dict[str, Any]]:
        """Every plugin of this edge, enabled or not: ``{NAME: {"type", "namespace", "version", "enabled", ...}}``."""
        plugins = (await self._entry()).get("plugins", {})
        return plugins if isinstance(plugins, dict) else {}

    async def get_plugin(self, /, name: str, *, session: bool = True, **session_options: Any) -> AsyncPluginClient:
        """A client for plugin ``name``, of the class registered for its type (e.g. :class:`AsyncSysInfoClient`).

        With ``session`` (the default) a session is registered first, with
        ``session_options`` as its JSON body (e.g. ``ttl=600``).  Raises
        :class:`EdgeNotFound`, :class:`EdgeUnavailable` (not connected) or
        :class:`PluginNotFound` (absent, or failed to load: status 503).
        """
        entry = await self._entry()
        if not (entry.get("endpoint") or {}).get("connected", True):
            raise EdgeUnavailable(f"edge {self.name!r} is not connected", 503)
        plugins = entry.get("plugins") or {}
        info = plugins.get(name)
        if not isinstance(info, dict):
            known = ", ".join(sorted(plugins)) or "none"
            raise PluginNotFound(f"no plugin {name!r} on edge {self.name!r} (it has: {known})", 404)
        if info.get("enabled") is False:
            why = info.get("error") or "disabled"
            raise PluginNotFound(f"plugin {name!r} on edge {self.name!r} is not available: {why}", 503)
        cls = plugin_client_class(str(info.get("type") or name))
        client = cls(self, name, info)
        if session:
            await client.register_session(**session_options)
        return client

    async def openapi(self) -> dict[str, Any]:
        """The edge's merged OpenAPI document (every plugin's routes)."""
        doc = (await self.request("GET", "openapi.json")).json()
        return doc if isinstance(doc, dict) else {}

    def _path(self, path: str) -> str:
        return f"{self._base}/{path.lstrip('/')}"


class AsyncPluginClient(_Scoped):
    """One plugin on one edge: its session and its routes (relative to ``/{edge}/{plugin}/``).

    Made by :meth:`AsyncEdgeClient.get_plugin`; subclasses add the plugin's own
    methods (:class:`AsyncSysInfoClient`, ...).  Generic use::

        hello = await edge.get_plugin("hello")
        greeting = await hello.get_json(f"greet/{hello.sid}", params={"name": "Ada"})
    """

    #: the plugin type this class is for (the manifest's ``type``)
    plugin_type: ClassVar[str] = ""

    def __init__(self, edge: AsyncEdgeClient, name: str, info: dict[str, Any] | None = None) -> None:
        self.edge = edge
        self.bridge = edge.bridge
        self.name = name
        self.info = info or {}
        self.sid: str | None = None
        self._base = f"/{_http.quote_segment(edge.name)}/{_http.quote_segment(name)}"
        self.bridge._track(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.namespace!r}, sid={self.sid!r})"

    @property
    def namespace(self) -> str:
        """``/{edge}/{plugin}``."""
        return f"/{self.edge.name}/{self.name}"

    @property
    def edge_name(self) -> str:
        return self.edge.name

    # ------------------------------------------------------------ sessions

    async def register_session(self, /, **options: Any) -> str:
        """Register a session (``options`` is the JSON body, e.g. ``ttl=600``); returns and keeps its id."""
        answer = await self.post_json("register_session", json=options or None)
        sid = answer.get("sid") if isinstance(answer, dict) else None
        if not isinstance(sid, str):
            raise BridgeProtocolError(f"POST {self._base}/register_session: no 'sid' in the answer")
        self.sid = sid
        return sid

    async def unregister_session(self) -> None:
        """Close the session (the plugin releases what it holds)."""
        if self.sid is not None:
            sid, self.sid = self.sid, None
            await self.post_json(f"unregister_session/{_http.quote_segment(sid)}")

    async def close(self) -> None:
        """Unregister the session, if any."""
        await self.unregister_session()

    def session_path(self, route: str) -> str:
        """``route/{sid}``; raises ``RuntimeError`` when there is no session."""
        if self.sid is None:
            raise RuntimeError(f"{self.namespace}: no session (call register_session() first)")
        return f"{route.rstrip('/')}/{_http.quote_segment(self.sid)}"

    # ------------------------------------------------------------ every plugin has these

    async def health(self) -> dict[str, Any]:
        """``{status, plugin, version, uptime_seconds, active_sessions}``."""
        return _dict_or_empty(await self.get_json("health"))

    async def version(self) -> str:
        return str(_dict_or_empty(await self.get_json("version")).get("version"))

    async def ui_config(self) -> dict[str, Any]:
        return _dict_or_empty(await self.get_json("ui_config"))

    async def list_sessions(self) -> list[str]:
        """This caller's live sessions with the plugin."""
        return list(_dict_or_empty(await self.get_json("list_sessions")).get("sessions", []))

    # ------------------------------------------------------------ requests

    async def get_json(self, path: str, *, params: Params | None = None, timeout: float | None = None) -> Any:
        """``GET path`` and return the parsed JSON answer."""
        return (await self.request("GET", path, params=params, timeout=timeout)).json()

    async def post_json(
        self,
        path: str,
        *,
        json: Any = None,
        data: BodySource | None = None,
        params: Params | None = None,
        timeout: float | None = None,
    ) -> Any:
        """``POST path`` and return the parsed JSON answer (``None`` for an empty one)."""
        answer = await self.request("POST", path, json=json, data=data, params=params, timeout=timeout)
        return answer.json() if answer.content else None

    async def upload(
        self,
        path: str,
        source: BodySource,
        *,
        method: str = "POST",
        params: Params | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Stream ``source`` (a file object, an async iterator of bytes, bytes) as the body of ``method path``."""
        return await self.request(method, path, data=source, params=params, headers=headers, timeout=timeout)

    async def download(
        self,
        path: str,
        dest: Any,
        *,
        method: str = "GET",
        params: Params | None = None,
        json: Any = None,
        timeout: float | None = None,
    ) -> int:
        """Stream the answer of ``method path`` into ``dest`` (a path or a binary file); returns the byte count."""
        async with self.stream(method, path, params=params, json=json, timeout=timeout) as answer:
            return await answer.download(dest)

    # ------------------------------------------------------------ notifications

    async def register_notification_callback(
        self, callback: NotificationCallback, topic: str | None = None, *, on_gap: GapCallback | None = None
    ) -> None:
        """``callback(edge, plugin, topic, data)`` for this plugin's notifications (of ``topic``, or all)."""
        await self.bridge.register_callback(self.edge.name, self.name, topic, callback, on_gap=on_gap)

    async def unregister_notification_callback(self, callback: NotificationCallback, topic: str | None = None) -> None:
        await self.bridge.unregister_callback(self.edge.name, self.name, topic, callback)

    def _path(self, path: str) -> str:
        return f"{self._base}/{path.lstrip('/')}"


def _dict_or_empty(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _looks_like_a_ca_file(value: str) -> bool:
    return value.lower().endswith((".pem", ".crt", ".cer")) and os.path.isfile(os.path.expanduser(value))


# ---------------------------------------------------------------- plugin client classes by plugin type

_PLUGIN_CLIENTS: dict[str, type[AsyncPluginClient]] = {}


def register_plugin_client(cls: type[P]) -> type[P]:
    """Use ``cls`` for plugins whose manifest ``type`` is ``cls.plugin_type`` (a class decorator).

    ``cls`` is an :class:`AsyncPluginClient` subclass; the blocking
    ``get_plugin`` returns its blocking form (:func:`~radical_edge_client.blocking_class`).
    """
    if not (isinstance(cls, type) and issubclass(cls, AsyncPluginClient)):
        raise TypeError(
            f"{getattr(cls, '__qualname__', cls)} is not an AsyncPluginClient subclass: a plugin client is written "
            "async (radical_edge_client.PluginClient is the blocking one, derived from it)"
        )
    if not cls.plugin_type:
        raise ValueError(f"{cls.__name__}.plugin_type is not set")
    _PLUGIN_CLIENTS[cls.plugin_type] = cls
    return cls


def plugin_client_class(plugin_type: str) -> type[AsyncPluginClient]:
    """The client class registered for ``plugin_type``, else :class:`AsyncPluginClient`."""
    return _PLUGIN_CLIENTS.get(plugin_type, AsyncPluginClient)


__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncBridgeClient",
    "AsyncEdgeClient",
    "AsyncPluginClient",
    "plugin_client_class",
    "register_plugin_client",
]
