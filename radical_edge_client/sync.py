"""The blocking SDK, for scripts and notebooks: the same class and method names as the async one.

.. code-block:: python

    from radical_edge_client.sync import BridgeClient

    with BridgeClient() as bridge:                      # RADICAL_BRIDGE_URL / _TOKEN / _CERT
        print(bridge.list_edges())
        sysinfo = bridge.get_edge_client("hpc1").get_plugin("sysinfo")
        print(sysinfo.get_metrics())

        def on_job(edge, plugin, topic, data):          # runs in a worker thread
            print(edge, plugin, topic, data)

        bridge.register_callback("hpc1", "psij", "job_status", on_job)

Each :class:`BridgeClient` runs the async client (:mod:`radical_edge_client`)
on its own event loop in a background thread
(:func:`anyio.from_thread.start_blocking_portal`); every method hands the
call to that loop and waits for the result.  That works the same from a plain
script and from a Jupyter notebook (whose own event loop is not touched).
Callbacks run in worker threads of the client, one at a time and in order, so
a slow callback never stalls the connection; they may call the client's
methods.  A client that is not closed is closed when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.abc
from anyio.from_thread import BlockingPortal, start_blocking_portal

from . import _client, _plugins
from ._events import GapCallback, NotificationCallback, TopologyCallback, is_async_callable
from ._http import BodySource, Headers, Params, Response
from ._http import StreamResponse as AsyncStreamResponse

P = ParamSpec("P")
T = TypeVar("T")

__all__ = [
    "BridgeClient",
    "EdgeClient",
    "PSIJClient",
    "PluginClient",
    "QueueInfoClient",
    "StagingClient",
    "StreamResponse",
    "SysInfoClient",
]


class _Portal:
    """Calls into the client's event loop from any other thread."""

    def __init__(self, portal: BlockingPortal) -> None:
        self.portal = portal

    def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.portal.call(functools.partial(fn, *args, **kwargs))


class StreamResponse:
    """A streamed answer: ``status``, ``headers``, :meth:`iter_bytes`, :meth:`read`, :meth:`download`."""

    def __init__(self, answer: AsyncStreamResponse, portal: _Portal) -> None:
        self._answer = answer
        self._portal = portal
        self.status = answer.status
        self.headers = answer.headers

    @property
    def ok(self) -> bool:
        return self._answer.ok

    def header(self, name: str, default: str | None = None) -> str | None:
        return self._answer.header(name, default)

    def iter_bytes(self) -> Iterator[bytes]:
        """The body, chunk by chunk."""
        while chunk := self._portal.call(self._answer.receive):
            yield chunk

    def read(self) -> bytes:
        """The rest of the body, whole."""
        return self._portal.call(self._answer.read)

    def download(self, dest: str | os.PathLike[str] | Any) -> int:
        """Write the body to ``dest`` (a path or a binary file object) as it arrives; returns the byte count."""
        return self._portal.call(self._answer.download, dest)


class BridgeClient:
    """Blocking client of a radical-edge bridge; arguments as :class:`radical_edge_client.BridgeClient`.

    Connects in the constructor (raising :class:`~radical_edge_client.AuthError`,
    :class:`~radical_edge_client.BridgeUnavailable`, ...); use it as a context
    manager or call :meth:`close`.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        cert: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        self._cm: AbstractContextManager[BlockingPortal] | None = start_blocking_portal(
            "asyncio", name="radical-edge-client"
        )
        blocking = self._cm.__enter__()
        self._portal = _Portal(blocking)
        self._future: Future[None] | None = None
        self._stop: anyio.Event | None = None
        self._lock = threading.Lock()
        try:
            self._async: _client.BridgeClient = blocking.call(
                functools.partial(_client.BridgeClient, url, token, cert, **options)
            )
            self._future, _ = blocking.start_task(self._lifetime, name="radical-edge-client")
        except BaseException:
            self._shutdown_portal()
            raise
        _OPEN.add(self)

    async def _lifetime(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with self._async:
            self._stop = anyio.Event()
            task_status.started()
            await self._stop.wait()

    def close(self) -> None:
        """Unregister this client's sessions, close the connection and stop the background thread."""
        with self._lock:
            if self._cm is None:
                return
            try:
                if self._stop is not None:
                    self._portal.portal.call(self._stop.set)
                if self._future is not None:
                    self._future.result(timeout=30)
            finally:
                self._shutdown_portal()
                _OPEN.discard(self)

    def _shutdown_portal(self) -> None:
        cm, self._cm = self._cm, None
        if cm is not None:
            cm.__exit__(None, None, None)

    def __enter__(self) -> BridgeClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BridgeClient({self._async.url!r}, state={self._async.state!r})"

    # ------------------------------------------------------------ state

    @property
    def url(self) -> str:
        return self._async.url

    @property
    def connected(self) -> bool:
        return self._async.connected

    @property
    def state(self) -> str:
        return self._async.state

    @property
    def stats(self) -> dict[str, int]:
        return self._async.stats

    # ------------------------------------------------------------ requests

    def request(
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
        """See :meth:`radical_edge_client.BridgeClient.request`."""
        return self._portal.call(
            self._async.request, method, path, json=json, data=data, params=params, headers=headers, timeout=timeout
        )

    @contextmanager
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
    ) -> Iterator[StreamResponse]:
        """See :meth:`radical_edge_client.BridgeClient.stream`."""
        cm = self._async.stream(method, path, json=json, data=data, params=params, headers=headers, timeout=timeout)
        with self._portal.portal.wrap_async_context_manager(cm) as answer:
            yield StreamResponse(answer, self._portal)

    def topology(self) -> dict[str, Any]:
        return self._portal.call(self._async.topology)

    def list_edges(self) -> list[str]:
        """The names of the edges connected now."""
        return self._portal.call(self._async.list_edges)

    def edges(self) -> list[dict[str, Any]]:
        return self._portal.call(self._async.edges)

    def health(self) -> dict[str, Any]:
        return self._portal.call(self._async.health)

    def get_edge_client(self, name: str) -> EdgeClient:
        """A client for edge ``name``; :class:`~radical_edge_client.EdgeNotFound` if unknown."""
        return EdgeClient(self._portal.call(self._async.get_edge_client, name), self._portal)

    def disconnect_edge(self, name: str) -> None:
        self._portal.call(self._async.disconnect_edge, name)

    # ------------------------------------------------------------ events

    def register_callback(
        self,
        edge_id: str | None = None,
        plugin_name: str | None = None,
        topic: str | None = None,
        callback: NotificationCallback | None = None,
        *,
        on_gap: GapCallback | None = None,
    ) -> None:
        """See :meth:`radical_edge_client.BridgeClient.register_callback` (returns once events flow)."""
        self._portal.call(self._async.register_callback, edge_id, plugin_name, topic, callback, on_gap=on_gap)

    def unregister_callback(
        self,
        edge_id: str | None = None,
        plugin_name: str | None = None,
        topic: str | None = None,
        callback: NotificationCallback | None = None,
    ) -> None:
        self._portal.call(self._async.unregister_callback, edge_id, plugin_name, topic, callback)

    def register_topology_callback(self, callback: TopologyCallback) -> None:
        """``callback(edges)`` on every topology change (runs in a worker thread)."""
        self._portal.call(self._async.register_topology_callback, callback)

    def unregister_topology_callback(self, callback: TopologyCallback) -> None:
        self._portal.call(self._async.unregister_topology_callback, callback)


class EdgeClient:
    """Blocking counterpart of :class:`radical_edge_client.EdgeClient`."""

    def __init__(self, edge: _client.EdgeClient, portal: _Portal) -> None:
        self._async = edge
        self._portal = portal
        self.name = edge.name

    def __repr__(self) -> str:
        return f"EdgeClient({self.name!r})"

    def list_plugins(self) -> dict[str, dict[str, Any]]:
        return self._portal.call(self._async.list_plugins)

    def get_plugin(self, name: str, *, session: bool = True, **session_options: Any) -> PluginClient:
        """A client for plugin ``name`` (with a registered session): :class:`SysInfoClient`, ..."""
        plugin = self._portal.call(self._async.get_plugin, name, session=session, **session_options)
        cls = _SYNC_CLASSES.get(type(plugin), PluginClient)
        return cls(plugin, self._portal)

    def request(
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
        return self._portal.call(
            self._async.request, method, path, json=json, data=data, params=params, headers=headers, timeout=timeout
        )

    @contextmanager
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
    ) -> Iterator[StreamResponse]:
        cm = self._async.stream(method, path, json=json, data=data, params=params, headers=headers, timeout=timeout)
        with self._portal.portal.wrap_async_context_manager(cm) as answer:
            yield StreamResponse(answer, self._portal)

    def openapi(self) -> dict[str, Any]:
        return self._portal.call(self._async.openapi)


class PluginClient:
    """Blocking counterpart of :class:`radical_edge_client.PluginClient`.

    Methods of a third-party async plugin client without a sync class are
    reached too: coroutine methods become blocking calls.
    """

    def __init__(self, plugin: _client.PluginClient, portal: _Portal) -> None:
        self._async = plugin
        self._portal = portal
        self.name = plugin.name
        self.edge_name = plugin.edge_name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.namespace!r}, sid={self.sid!r})"

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._async, name)
        if callable(attr) and is_async_callable(attr):

            def call(*args: Any, **kwargs: Any) -> Any:
                return self._portal.portal.call(functools.partial(attr, *args, **kwargs))

            return call
        return attr

    @property
    def sid(self) -> str | None:
        return self._async.sid

    @property
    def namespace(self) -> str:
        return self._async.namespace

    @property
    def info(self) -> dict[str, Any]:
        return self._async.info

    def register_session(self, **options: Any) -> str:
        return self._portal.call(self._async.register_session, **options)

    def unregister_session(self) -> None:
        self._portal.call(self._async.unregister_session)

    def close(self) -> None:
        self._portal.call(self._async.close)

    def session_path(self, route: str) -> str:
        return self._async.session_path(route)

    def health(self) -> dict[str, Any]:
        return self._portal.call(self._async.health)

    def version(self) -> str:
        return self._portal.call(self._async.version)

    def ui_config(self) -> dict[str, Any]:
        return self._portal.call(self._async.ui_config)

    def list_sessions(self) -> list[str]:
        return self._portal.call(self._async.list_sessions)

    def request(
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
        """A request relative to the plugin (e.g. ``f"metrics/{sid}"``); the whole answer."""
        return self._portal.call(
            self._async.request, method, path, json=json, data=data, params=params, headers=headers, timeout=timeout
        )

    @contextmanager
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
    ) -> Iterator[StreamResponse]:
        cm = self._async.stream(method, path, json=json, data=data, params=params, headers=headers, timeout=timeout)
        with self._portal.portal.wrap_async_context_manager(cm) as answer:
            yield StreamResponse(answer, self._portal)

    def get_json(self, path: str, *, params: Params | None = None, timeout: float | None = None) -> Any:
        return self._portal.call(self._async.get_json, path, params=params, timeout=timeout)

    def post_json(
        self,
        path: str,
        *,
        json: Any = None,
        data: BodySource | None = None,
        params: Params | None = None,
        timeout: float | None = None,
    ) -> Any:
        return self._portal.call(self._async.post_json, path, json=json, data=data, params=params, timeout=timeout)

    def upload(
        self,
        path: str,
        source: BodySource,
        *,
        method: str = "POST",
        params: Params | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Stream ``source`` (a binary file object, an iterator of bytes, bytes) as the body."""
        return self._portal.call(
            self._async.upload, path, source, method=method, params=params, headers=headers, timeout=timeout
        )

    def download(
        self,
        path: str,
        dest: Any,
        *,
        method: str = "GET",
        params: Params | None = None,
        json: Any = None,
        timeout: float | None = None,
    ) -> int:
        """Stream the answer into ``dest`` (a path or a binary file object); returns the byte count."""
        return self._portal.call(
            self._async.download, path, dest, method=method, params=params, json=json, timeout=timeout
        )

    def register_notification_callback(
        self, callback: NotificationCallback, topic: str | None = None, *, on_gap: GapCallback | None = None
    ) -> None:
        self._portal.call(self._async.register_notification_callback, callback, topic, on_gap=on_gap)

    def unregister_notification_callback(self, callback: NotificationCallback, topic: str | None = None) -> None:
        self._portal.call(self._async.unregister_notification_callback, callback, topic)


class SysInfoClient(PluginClient):
    """Blocking :class:`radical_edge_client.SysInfoClient`."""

    _async: _plugins.SysInfoClient

    def get_metrics(self) -> dict[str, Any]:
        return self._portal.call(self._async.get_metrics)

    def homedir(self) -> str:
        return self._portal.call(self._async.homedir)

    def host_role(self) -> dict[str, Any]:
        return self._portal.call(self._async.host_role)


class QueueInfoClient(PluginClient):
    """Blocking :class:`radical_edge_client.QueueInfoClient`."""

    _async: _plugins.QueueInfoClient

    def backend(self) -> str:
        return self._portal.call(self._async.backend)

    def job_allocation(self) -> dict[str, Any] | None:
        return self._portal.call(self._async.job_allocation)

    def get_info(self, *, user: str | None = None, force: bool = False) -> dict[str, Any]:
        return self._portal.call(self._async.get_info, user=user, force=force)

    def list_jobs(self, queue: str, *, user: str | None = None, force: bool = False) -> dict[str, Any]:
        return self._portal.call(self._async.list_jobs, queue, user=user, force=force)

    def list_all_jobs(self, *, user: str | None = None, force: bool = False) -> dict[str, Any]:
        return self._portal.call(self._async.list_all_jobs, user=user, force=force)

    def list_allocations(self, *, user: str | None = None, force: bool = False) -> dict[str, Any]:
        return self._portal.call(self._async.list_allocations, user=user, force=force)

    def cancel_job(self, job_id: str) -> Any:
        return self._portal.call(self._async.cancel_job, job_id)


class PSIJClient(PluginClient):
    """Blocking :class:`radical_edge_client.PSIJClient`."""

    _async: _plugins.PSIJClient

    def submit_job(self, job_spec: dict[str, Any], executor: str = "local") -> dict[str, Any]:
        return self._portal.call(self._async.submit_job, job_spec, executor)

    def get_job_status(self, job_id: str, *, stdout_offset: int = 0, stderr_offset: int = 0) -> dict[str, Any]:
        return self._portal.call(
            self._async.get_job_status, job_id, stdout_offset=stdout_offset, stderr_offset=stderr_offset
        )

    def list_jobs(self) -> Any:
        return self._portal.call(self._async.list_jobs)

    def cancel_job(self, job_id: str) -> Any:
        return self._portal.call(self._async.cancel_job, job_id)


class StagingClient(PluginClient):
    """Blocking :class:`radical_edge_client.StagingClient`."""

    _async: _plugins.StagingClient

    def put(self, filename: str, content: bytes | str, *, overwrite: bool = False) -> dict[str, Any]:
        return self._portal.call(self._async.put, filename, content, overwrite=overwrite)

    def get(self, filename: str) -> bytes:
        return self._portal.call(self._async.get, filename)

    def list(self, path: str = "~") -> dict[str, Any]:
        return self._portal.call(self._async.list, path)

    def put_file(self, local: str | os.PathLike[str], filename: str, *, overwrite: bool = False) -> dict[str, Any]:
        return self._portal.call(self._async.put_file, local, filename, overwrite=overwrite)


_SYNC_CLASSES: dict[type[_client.PluginClient], type[PluginClient]] = {
    _client.PluginClient: PluginClient,
    _plugins.SysInfoClient: SysInfoClient,
    _plugins.QueueInfoClient: QueueInfoClient,
    _plugins.PSIJClient: PSIJClient,
    _plugins.StagingClient: StagingClient,
}


# ---------------------------------------------------------------- close what the program left open

_OPEN: weakref.WeakSet[BridgeClient] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for client in list(_OPEN):
        with contextlib.suppress(Exception):  # the interpreter is exiting: nothing left to tell
            client.close()
