"""The blocking clients, for scripts and notebooks: what ``from radical_edge_client import BridgeClient`` gives.

.. code-block:: python

    from radical_edge_client import BridgeClient

    with BridgeClient() as bridge:                      # RADICAL_BRIDGE_URL / _TOKEN / _CERT
        print(bridge.list_edges())
        sysinfo = bridge.get_edge_client("hpc1").get_plugin("sysinfo")
        print(sysinfo.get_metrics())

        def on_job(edge, plugin, topic, data):          # runs in a worker thread
            print(edge, plugin, topic, data)

        bridge.register_callback("hpc1", "psij", "job_status", on_job)

Each :class:`BridgeClient` runs an :class:`~radical_edge_client.AsyncBridgeClient`
on its own event loop in a background thread
(:func:`anyio.from_thread.start_blocking_portal`); every method hands the
call to that loop and waits for the result.  That works the same from a plain
script, from a thread, and from code running inside an event loop (a Jupyter
notebook, whose own loop is not touched).  Callbacks run in worker threads of
the client, one at a time and in order, so a slow callback never stalls the
connection; they may call the client's methods.  A client that is not closed
is closed when the interpreter exits.

Every class here is derived from its async class (see
:mod:`radical_edge_client._blocking`): the bodies below only *name* the
members, so type checkers see them with the async signatures; a plugin client
registered with :func:`~radical_edge_client.register_plugin_client` gets its
blocking class made the first time ``get_plugin`` returns one.  Only the
bridge client's lifetime (the loop thread) is written here.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import inspect
import os
import threading
import weakref
from concurrent.futures import Future
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import anyio.abc
from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._blocking import Blocking, Portal, attribute, blocking, direct
from ._client import AsyncBridgeClient, AsyncEdgeClient, AsyncPluginClient
from ._http import StreamResponse as AsyncStreamResponse
from ._plugins import (
    AsyncPSIJClient,
    AsyncQueueInfoClient,
    AsyncRhapsodyClient,
    AsyncStagingClient,
    AsyncSysInfoClient,
)

__all__ = [
    "BridgeClient",
    "EdgeClient",
    "PSIJClient",
    "PluginClient",
    "QueueInfoClient",
    "RhapsodyClient",
    "StagingClient",
    "StreamResponse",
    "SysInfoClient",
]


class StreamResponse(Blocking, wraps=AsyncStreamResponse):
    """A streamed answer: ``status``, ``headers``, :meth:`iter_bytes`, :meth:`read`, :meth:`download`."""

    status: int
    headers: list[tuple[str, str]]
    where: str
    complete: bool
    received: int

    ok = attribute(AsyncStreamResponse.ok)
    header = direct(AsyncStreamResponse.header)
    receive = blocking(AsyncStreamResponse.receive)
    iter_bytes = blocking(AsyncStreamResponse.aiter_bytes)
    read = blocking(AsyncStreamResponse.read)
    download = blocking(AsyncStreamResponse.download)


class PluginClient(Blocking, wraps=AsyncPluginClient):
    """One plugin on one edge: its session and its routes (relative to ``/{edge}/{plugin}/``).

    Made by :meth:`EdgeClient.get_plugin`, of the blocking class of the plugin
    client registered for the plugin's type (:class:`SysInfoClient`, ...);
    the methods of a third-party client are there too, blocking.  Generic use::

        hello = edge.get_plugin("hello")
        greeting = hello.get_json(f"greet/{hello.sid}", params={"name": "Ada"})
    """

    plugin_type: ClassVar[str]
    name: str
    info: dict[str, Any]
    sid: str | None
    edge: EdgeClient
    bridge: BridgeClient

    namespace = attribute(AsyncPluginClient.namespace)
    edge_name = attribute(AsyncPluginClient.edge_name)
    register_session = blocking(AsyncPluginClient.register_session)
    unregister_session = blocking(AsyncPluginClient.unregister_session)
    close = blocking(AsyncPluginClient.close)
    session_path = direct(AsyncPluginClient.session_path)
    health = blocking(AsyncPluginClient.health)
    version = blocking(AsyncPluginClient.version)
    ui_config = blocking(AsyncPluginClient.ui_config)
    list_sessions = blocking(AsyncPluginClient.list_sessions)
    request = blocking(AsyncPluginClient.request)
    stream = blocking(AsyncPluginClient.stream, returns=StreamResponse)
    get_json = blocking(AsyncPluginClient.get_json)
    post_json = blocking(AsyncPluginClient.post_json)
    upload = blocking(AsyncPluginClient.upload)
    download = blocking(AsyncPluginClient.download)
    register_notification_callback = blocking(AsyncPluginClient.register_notification_callback)
    unregister_notification_callback = blocking(AsyncPluginClient.unregister_notification_callback)

    if TYPE_CHECKING:  # the methods of a third-party plugin client, which a type checker cannot know

        def __getattr__(self, name: str) -> Any: ...


class SysInfoClient(PluginClient, wraps=AsyncSysInfoClient):
    get_metrics = blocking(AsyncSysInfoClient.get_metrics)
    homedir = blocking(AsyncSysInfoClient.homedir)
    host_role = blocking(AsyncSysInfoClient.host_role)


class QueueInfoClient(PluginClient, wraps=AsyncQueueInfoClient):
    backend = blocking(AsyncQueueInfoClient.backend)
    job_allocation = blocking(AsyncQueueInfoClient.job_allocation)
    get_info = blocking(AsyncQueueInfoClient.get_info)
    list_jobs = blocking(AsyncQueueInfoClient.list_jobs)
    list_all_jobs = blocking(AsyncQueueInfoClient.list_all_jobs)
    list_allocations = blocking(AsyncQueueInfoClient.list_allocations)
    cancel_job = blocking(AsyncQueueInfoClient.cancel_job)


class PSIJClient(PluginClient, wraps=AsyncPSIJClient):
    submit_job = blocking(AsyncPSIJClient.submit_job)
    executors = blocking(AsyncPSIJClient.executors)
    get_job_status = blocking(AsyncPSIJClient.get_job_status)
    list_jobs = blocking(AsyncPSIJClient.list_jobs)
    cancel_job = blocking(AsyncPSIJClient.cancel_job)
    watch = blocking(AsyncPSIJClient.watch)
    submit_tunneled = blocking(AsyncPSIJClient.submit_tunneled)
    tunnel_status = blocking(AsyncPSIJClient.tunnel_status)
    wait_child_edge = blocking(AsyncPSIJClient.wait_child_edge)


class StagingClient(PluginClient, wraps=AsyncStagingClient):
    put = blocking(AsyncStagingClient.put)
    get = blocking(AsyncStagingClient.get)
    list = blocking(AsyncStagingClient.list)
    put_file = blocking(AsyncStagingClient.put_file)
    roots = blocking(AsyncStagingClient.roots)
    listdir = blocking(AsyncStagingClient.listdir)
    stat = blocking(AsyncStagingClient.stat)
    mkdir = blocking(AsyncStagingClient.mkdir)
    delete = blocking(AsyncStagingClient.delete)
    move = blocking(AsyncStagingClient.move)
    checksum = blocking(AsyncStagingClient.checksum)
    upload_state = blocking(AsyncStagingClient.upload_state)
    abandon_upload = blocking(AsyncStagingClient.abandon_upload)
    commit = blocking(AsyncStagingClient.commit)
    # (source, remote) and (remote, target), like cp: not the generic PluginClient.upload/download
    upload = blocking(AsyncStagingClient.upload)  # type: ignore[assignment]
    download = blocking(AsyncStagingClient.download)  # type: ignore[assignment]
    copy = blocking(AsyncStagingClient.copy)


class RhapsodyClient(PluginClient, wraps=AsyncRhapsodyClient):
    register_session = blocking(AsyncRhapsodyClient.register_session)
    session_status = blocking(AsyncRhapsodyClient.session_status)
    backends = blocking(AsyncRhapsodyClient.backends)
    submit_tasks = blocking(AsyncRhapsodyClient.submit_tasks)
    wait_tasks = blocking(AsyncRhapsodyClient.wait_tasks)
    list_tasks = blocking(AsyncRhapsodyClient.list_tasks)
    get_task = blocking(AsyncRhapsodyClient.get_task)
    cancel_task = blocking(AsyncRhapsodyClient.cancel_task)
    cancel_all = blocking(AsyncRhapsodyClient.cancel_all)


class EdgeClient(Blocking, wraps=AsyncEdgeClient):
    """One edge, through the bridge: its plugins and raw requests to ``/{edge}/...``."""

    name: str
    bridge: BridgeClient

    list_plugins = blocking(AsyncEdgeClient.list_plugins)
    get_plugin = blocking(AsyncEdgeClient.get_plugin, returns=PluginClient)
    openapi = blocking(AsyncEdgeClient.openapi)
    request = blocking(AsyncEdgeClient.request)
    stream = blocking(AsyncEdgeClient.stream, returns=StreamResponse)


class BridgeClient(Blocking, wraps=AsyncBridgeClient):
    """Blocking client of a radical-edge bridge; the arguments of :class:`~radical_edge_client.AsyncBridgeClient`.

    Connects in the constructor (raising :class:`~radical_edge_client.AuthError`,
    :class:`~radical_edge_client.BridgeUnavailable`, ...); use it as a context
    manager or call :meth:`close`.
    """

    _exclude: ClassVar[frozenset[str]] = frozenset({"connect", "close"})  # the constructor and close() do these
    _is_view: ClassVar[bool] = False

    url: str
    timeout: float

    connected = attribute(AsyncBridgeClient.connected)
    state = attribute(AsyncBridgeClient.state)
    stats = attribute(AsyncBridgeClient.stats)
    request = blocking(AsyncBridgeClient.request)
    stream = blocking(AsyncBridgeClient.stream, returns=StreamResponse)
    topology = blocking(AsyncBridgeClient.topology)
    list_edges = blocking(AsyncBridgeClient.list_edges)
    edges = blocking(AsyncBridgeClient.edges)
    health = blocking(AsyncBridgeClient.health)
    get_edge_client = blocking(AsyncBridgeClient.get_edge_client, returns=EdgeClient)
    disconnect_edge = blocking(AsyncBridgeClient.disconnect_edge)
    register_callback = blocking(AsyncBridgeClient.register_callback)
    unregister_callback = blocking(AsyncBridgeClient.unregister_callback)
    register_topology_callback = blocking(AsyncBridgeClient.register_topology_callback)
    unregister_topology_callback = blocking(AsyncBridgeClient.unregister_topology_callback)

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
        loop = self._cm.__enter__()
        self._portal = Portal(loop, self)
        self._future: Future[None] | None = None
        self._stop: anyio.Event | None = None
        self._lock = threading.Lock()
        try:
            self._async = loop.call(functools.partial(type(self)._wraps, url, token, cert, **options))
            self._future, _ = loop.start_task(self._lifetime, name="radical-edge-client")
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

    if not TYPE_CHECKING:  # a type checker reports ``async with BridgeClient()``; at run time, say what to use

        async def __aenter__(self) -> None:
            self.close()
            raise TypeError(
                "radical_edge_client.BridgeClient is the blocking client (it connected in its constructor): "
                "for 'async with', use radical_edge_client.AsyncBridgeClient"
            )

        async def __aexit__(self, *exc_info: object) -> None:
            return None


BridgeClient.__init__.__signature__ = inspect.signature(AsyncBridgeClient.__init__)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- close what the program left open

_OPEN: weakref.WeakSet[BridgeClient] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for client in list(_OPEN):
        with contextlib.suppress(Exception):  # the interpreter is exiting: nothing left to tell
            client.close()
