"""The edge service: keep a tunnel to the bridge up and serve the plugin host over it.

One connection at a time, kept up by the tunnel package's
:class:`~radical_edge_tunnel.Redialer` (the same one the SDK uses): dial,
HELLO (with the manifest and the resume token of the previous WELCOME),
serve until the tunnel ends, then wait a capped, jittered, growing delay and
dial again.  A refusal that cannot get better by retrying (wrong credential,
protocol version the bridge does not speak, a token file others can read)
is fatal (:class:`EdgeFatalError`); the bridge telling this edge to stop
(``GOAWAY`` with ``STOP``, an operator's disconnect) ends the service
normally, without redialling.  ``stop()`` drains: GOAWAY, in-flight requests finish, then the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any

import anyio
import anyio.abc
from anyio.from_thread import BlockingPortal, start_blocking_portal

from radical_edge_proto import (
    MIN_FRAME_SIZE,
    RESERVED_EDGE_NAMES,
    ConnectionClosed,
    ErrorCode,
    GoAway,
    Limits,
    LocalProtocolError,
    PeerRole,
    edge_name_error,
    profile,
)
from radical_edge_tunnel import (
    Backoff,
    BridgeSettings,
    Connector,
    FatalDialError,
    Redialer,
    Tunnel,
)

from ._host import PluginHost
from ._plugin import Plugin

log = logging.getLogger("radical_edge.edge")

__all__ = ["Connector", "EdgeFatalError", "EdgeService"]

#: a HELLO manifest larger than this goes in a MANIFEST frame after WELCOME instead
_HELLO_MANIFEST_LIMIT = MIN_FRAME_SIZE - 2048


class EdgeFatalError(Exception):
    """The bridge refused this edge in a way retrying cannot fix; the service stopped."""


class EdgeService:
    """Run an edge: the plugin host plus a self-healing tunnel to the bridge.

    Give ``url`` (``http(s)://`` or ``ws(s)://``; the ``/register`` path is
    added) with ``token`` and ``ca_file``, or ``settings`` (from
    :func:`radical_edge_tunnel.resolve_settings`: the environment and the
    token file, as the command line does), or a ``connector`` returning a
    connected carrier (the bridge's in-process plugins use a memory carrier).
    ``plugins`` selects installed plugins (``"all"``, a comma list, unique
    prefixes; ``None`` for none); more can be added with :meth:`add_plugin`.
    ``max_body_bytes`` caps request bodies (see :class:`PluginHost`; None:
    the host's setting, 16 MiB by default).

    ``name`` must be a valid edge name (:func:`radical_edge_proto.check_edge_name`);
    with a ``connector`` (an in-process edge, like the bridge's own ``bridge``)
    the names reserved for the bridge's routes are allowed.

    Use ``await service.run()`` in async code, or :meth:`start_in_thread` /
    :meth:`stop` from sync code.
    """

    def __init__(
        self,
        name: str,
        *,
        url: str | None = None,
        token: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        insecure_skip_tls_verify: bool = False,
        plugins: str | Sequence[str] | None = "all",
        host: PluginHost | None = None,
        connector: Connector | None = None,
        backoff: Backoff | None = None,
        limits: Limits | None = None,
        connect_timeout: float = 15.0,
        drain_timeout: float = 30.0,
        rng: random.Random | None = None,
        max_body_bytes: int | None = None,
        settings: BridgeSettings | None = None,
    ) -> None:
        reason = edge_name_error(name)
        if reason is not None and not (connector is not None and name.lower() in RESERVED_EDGE_NAMES):
            raise ValueError(reason)
        self.name = name
        self.backoff = backoff or Backoff()
        self.limits = limits
        self.connect_timeout = connect_timeout
        self.drain_timeout = drain_timeout
        self._rng = rng or random.Random()
        if settings is not None and (url is not None or token is not None or ca_file is not None):
            raise ValueError("give the bridge as settings or as url/token/ca_file, not both")
        if connector is None and settings is None:
            if url is None:
                raise ValueError("give the bridge url (or settings, or a connector)")
            settings = BridgeSettings.create(
                url, token=token, cert=ca_file, insecure_skip_tls_verify=insecure_skip_tls_verify
            )
        #: where the bridge is (None with a connector)
        self.settings = settings
        self.token = settings.token if settings is not None else token
        self.url: str | None = settings.websocket_url(profile.REGISTER_PATH) if connector is None and settings else url
        self._manifest_deferred = False

        #: "idle", "starting", "connecting", "connected", "waiting" (to reconnect), "draining", "stopped"
        self.state = "idle"
        self.tunnel: Tunnel | None = None
        self._seq = 0
        self._stopping = False
        self._stop_event: anyio.Event | None = None
        self._manifest_dirty: anyio.Event | None = None
        self._loop_thread: int | None = None
        self._portal: BlockingPortal | None = None
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._future: Future[None] | None = None
        self._connected_event: anyio.Event | None = None
        # the host last: loading plugins reports manifest changes, which need the state above
        self.host = host or PluginHost(name)
        if max_body_bytes is not None:
            if max_body_bytes < 0:
                raise ValueError("max_body_bytes must be >= 0 (0: no limit)")
            self.host.max_body_bytes = max_body_bytes
        self.host.on_manifest_change = self._manifest_changed
        if settings is not None and connector is None:
            self.host.bridge_settings = settings
        if plugins is not None:
            self.host.load_entry_points(plugins if isinstance(plugins, str) else ",".join(plugins))
        self._redialer = Redialer(
            settings,
            role=PeerRole.EDGE,
            name=name,
            connector=connector,
            credential=token if settings is None else None,
            manifest=self._hello_manifest,
            handler=self.host.handle,
            on_event=self._on_event,
            limits=limits,
            backoff=self.backoff,
            rng=self._rng,
            connect_timeout=connect_timeout,
            label=f"edge {name}",
            logger=log,
            on_state=self._on_redial_state,
        )

    @property
    def resume_token(self) -> str | None:
        """The resume token of the last WELCOME (sent back in the next HELLO)."""
        return self._redialer.resume_token

    @property
    def connections(self) -> int:
        """Handshakes completed since the service was made."""
        return self._redialer.connections

    # ------------------------------------------------------------ embedding API

    async def run(self) -> None:
        """Serve until :meth:`stop` (returns) or a fatal refusal (raises :class:`EdgeFatalError`)."""
        if self._stop_event is not None:
            raise RuntimeError("this EdgeService is already running")
        self.state = "starting"
        self._stop_event = anyio.Event()
        self._manifest_dirty = anyio.Event()
        if self._connected_event is None:
            self._connected_event = anyio.Event()
        self._loop_thread = threading.get_ident()
        if self._stopping:
            self._stop_event.set()
        fatal: EdgeFatalError | None = None
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.host.run)
                try:
                    await self._redialer.run(self._serve)
                except FatalDialError as exc:
                    fatal = EdgeFatalError(str(exc))
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self.state = "stopped"
            self._loop_thread = None
            self._stop_event = None
            self._stopping = False
            if self._connected_event is not None:
                self._connected_event.set()  # wake wait_connected(): it raises now
                self._connected_event = None
            log.info("edge %s stopped", self.name)
        if fatal is not None:
            raise fatal

    def stop(self) -> None:
        """Drain and stop (GOAWAY, let in-flight requests finish); callable from any thread.

        After :meth:`start_in_thread` this also waits for the service thread to end.
        """
        in_loop = self._loop_thread == threading.get_ident()
        if self._portal is not None and not in_loop:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._portal.call(self._request_stop)
        elif in_loop or self._stop_event is None:
            self._request_stop()
        else:
            raise RuntimeError("stop() from another thread needs start_in_thread()")
        if self._portal_cm is not None and threading.get_ident() != self._loop_thread:
            self.wait()

    def start_in_thread(self) -> None:
        """Run the service in a background thread with its own event loop (for sync programs)."""
        if self._portal_cm is not None:
            raise RuntimeError("already started")
        self._portal_cm = start_blocking_portal(name=f"radical-edge-{self.name}")
        self._portal = self._portal_cm.__enter__()
        self._future = self._portal.start_task_soon(self.run, name=f"edge {self.name}")

    def wait(self, timeout: float | None = None) -> None:
        """(after :meth:`start_in_thread`) Block until the service ends; re-raises its fatal error."""
        if self._future is None or self._portal_cm is None:
            raise RuntimeError("not started with start_in_thread()")
        try:
            self._future.result(timeout)
        finally:
            if self._future.done():
                cm, self._portal_cm, self._portal = self._portal_cm, None, None
                if cm is not None:
                    cm.__exit__(None, None, None)

    @property
    def portal(self) -> BlockingPortal:
        """(after :meth:`start_in_thread`) Call into the service's loop: ``portal.call(service.add_plugin, p)``."""
        if self._portal is None:
            raise RuntimeError("not started with start_in_thread()")
        return self._portal

    async def add_plugin(self, plugin: Plugin) -> None:
        """Mount a plugin at run time (the bridge gets the new manifest)."""
        await self.host.add_plugin(plugin)

    async def remove_plugin(self, name: str) -> None:
        """Unmount a plugin at run time (the bridge gets the new manifest)."""
        await self.host.remove_plugin(name)

    async def wait_connected(self) -> None:
        """Wait until a tunnel to the bridge is up (call while :meth:`run` runs, in its loop)."""
        while self.state != "connected":
            if self.state == "stopped":
                raise RuntimeError("the service stopped")
            if self._connected_event is None:
                self._connected_event = anyio.Event()  # run() has not started yet
            await self._connected_event.wait()

    # ------------------------------------------------------------ internals

    def _request_stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.info("edge %s: stopping", self.name)
        if self._stop_event is not None:
            self._stop_event.set()
        self._redialer.stop()

    def _manifest_changed(self, manifest: dict[str, Any]) -> None:
        if self._manifest_dirty is not None:
            self._manifest_dirty.set()

    def _on_redial_state(self, state: str) -> None:
        if not self._stopping:
            self.state = state

    def _hello_manifest(self) -> dict[str, Any]:
        """The manifest for HELLO; one too big for it follows in a MANIFEST frame after WELCOME."""
        manifest = self.host.manifest()
        self._manifest_deferred = (
            len(json.dumps(manifest, ensure_ascii=False, separators=(",", ":")).encode()) > _HELLO_MANIFEST_LIMIT
        )
        return {} if self._manifest_deferred else manifest

    async def _serve(self, tunnel: Tunnel) -> None:
        """Serve one connected tunnel until it ends (the redialer dials the next one)."""
        self.tunnel = tunnel
        log.info("edge %s connected to %s", self.name, self.url or "the bridge")
        assert self._manifest_dirty is not None
        if self._manifest_deferred:
            self._manifest_dirty.set()
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(tunnel.run)
                self.state = "connected"
                assert self._connected_event is not None
                self._connected_event.set()
                self._connected_event = anyio.Event()
                tg.start_soon(self._pump_events, tunnel)
                tg.start_soon(self._pump_manifest, tunnel)
                tg.start_soon(self._drain_on_stop, tunnel)
                await tunnel.closed.wait()
                tg.cancel_scope.cancel()
        finally:
            self.tunnel = None
        closed = tunnel.close_event
        ending = closed is not None and closed.by_peer and not profile.should_reconnect(closed.error_code)
        if not self._stopping and not ending:
            reason = f"{closed.reason} ({closed.error_code!r})" if closed is not None else "connection lost"
            log.warning("edge %s: disconnected from the bridge: %s", self.name, reason)

    def _on_event(self, event: object) -> None:
        if isinstance(event, GoAway):
            log.info("edge %s: the bridge is going away: %s", self.name, event.reason or event.error_code)
        elif isinstance(event, ConnectionClosed) and event.by_peer:
            log.debug("edge %s: connection closed by the bridge: %s", self.name, event)

    async def _pump_events(self, tunnel: Tunnel) -> None:
        queue = self.host.events
        while True:
            batch = await queue.get_batch()
            done = 0
            try:
                for notice in batch:
                    seq = self._seq + 1
                    try:
                        tunnel.queue_event(self.name, notice.plugin, notice.topic, seq, notice.payload)
                    except LocalProtocolError as exc:
                        if exc.error_code is not ErrorCode.FRAME_SIZE_ERROR:
                            raise
                        queue.count_drop(notice, "larger than the bridge's frame size limit")
                    else:
                        self._seq = seq
                    done += 1
                await tunnel.flush()
            except LocalProtocolError:
                queue.requeue(batch[done:])  # the tunnel is closing: send them on the next one
                return
            except BaseException:
                queue.requeue(batch[done:])
                raise

    async def _pump_manifest(self, tunnel: Tunnel) -> None:
        assert self._manifest_dirty is not None
        while True:
            await self._manifest_dirty.wait()
            self._manifest_dirty = anyio.Event()
            manifest = self.host.manifest()
            try:
                await tunnel.send_manifest(manifest)
            except LocalProtocolError as exc:
                if exc.error_code is ErrorCode.FRAME_SIZE_ERROR:
                    log.error("edge %s: the manifest is too large to send: %s", self.name, exc)
                    continue
                return

    async def _drain_on_stop(self, tunnel: Tunnel) -> None:
        assert self._stop_event is not None
        await self._stop_event.wait()
        self.state = "draining"
        log.info("edge %s: draining %d in-flight request(s)", self.name, tunnel.open_stream_count)
        with anyio.move_on_after(self.drain_timeout) as scope:
            await tunnel.drain("edge stopping")
        if scope.cancelled_caught:
            log.warning("edge %s: in-flight requests did not finish in %.0f s", self.name, self.drain_timeout)
            await tunnel.aclose(ErrorCode.NO_ERROR, "edge stopping")
