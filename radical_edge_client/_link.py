"""The SDK's one connection to the bridge: dial, keep it up, resubscribe, and number events.

A :class:`Link` owns the WebSocket to the bridge's ``/connect`` endpoint and
the protocol :class:`~radical_edge_proto.Connection` on it.  Every request
is a stream on that one connection.  When the connection breaks (network
drop, bridge restart), the link dials again after a capped, jittered,
exponentially growing delay; requests that arrive meanwhile wait for it (up
to ``connect_timeout``).  Dialling, the delays and what is final are the
tunnel package's :class:`~radical_edge_tunnel.Redialer`, the same the edge
service uses: a refused credential, a protocol version the bridge does not
speak and a token file others can read end the link, and every call raises
that error from then on.

Events: the link subscribes to everything (``*/*/*``) once a callback wants
events, and tracks the bridge's sequence numbers.  After a reconnect it
subscribes again with ``resume_after`` = the last number it saw, so the
bridge replays what the client missed (within its replay ring) and the link
drops whatever it already delivered (dedupe by sequence number).  What the
bridge no longer has is reported as an :class:`~._events.EventGap`, never
hidden.  A bridge restart (its ``event_epoch`` in ``GET /healthz`` changed)
restarts the numbering: the link resumes from 0 on the new bridge and reports
a gap of kind ``restart``.

Topology: the bridge pushes one event per edge that changes (``topology_change``,
numbered like any event) and, on every subscription, a snapshot of the whole
topology after the replay (sequence 0, perhaps in several parts).  The link
keeps its own view of the edges from the snapshots and the changes, and hands
topology callbacks the whole ``edges`` dict after each change; a snapshot
calls them only when it shows something the changes had not (events lost in
a gap, or a bridge restart).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc

from radical_edge_proto import (
    ConnectionClosed,
    ErrorCode,
    GoAway,
    Limits,
    LocalProtocolError,
    Notification,
    PeerRole,
    Subscription,
    profile,
)
from radical_edge_proto import Event as ProtoEvent
from radical_edge_tunnel import Backoff as _Backoff
from radical_edge_tunnel import (
    BridgeSettings,
    FatalDialError,
    Redialer,
    StreamResetError,
    Tunnel,
    TunnelClosedError,
    TunnelError,
    TunnelStream,
    UpgradeRejectedError,
)

from . import _events
from ._errors import (
    AuthError,
    BridgeProtocolError,
    BridgeUnavailable,
    RadicalEdgeError,
    error_for_status,
    error_from_tunnel,
)

log = logging.getLogger("radical_edge.client")

#: the subscription id the link uses (it has exactly one)
SUBSCRIPTION_ID = 1
_INFO_TIMEOUT = 10.0

#: ``spawner(fn, name)`` runs ``fn()`` in the background
Spawner = Callable[[Callable[[], Awaitable[None]], str], None]


@dataclass(frozen=True)
class Backoff(_Backoff):
    """Reconnect delays: ``initial * factor**attempt`` capped at ``maximum`` (``reachable_maximum`` while
    the bridge is known to be reachable), jittered to [50 %, 100 %]; the policy of
    :class:`radical_edge_tunnel.Redial`, with the SDK's shorter defaults."""

    initial: float = 0.25
    maximum: float = 15.0


class Link:
    """One multiplexed, self-healing connection to the bridge (see the module docstring)."""

    def __init__(
        self,
        settings: BridgeSettings,
        *,
        dispatcher: _events.Dispatcher,
        name: str = "radical-edge-client",
        connect_timeout: float = 10.0,
        backoff: Backoff | None = None,
        limits: Limits | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        #: the WebSocket URL of the bridge's client endpoint
        self.url = settings.websocket_url(profile.CONNECT_PATH)
        self.dispatcher = dispatcher
        self.name = name
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff()
        self.limits = limits
        self._rng = rng or random.Random()
        #: "connecting", "connected", "waiting" (to reconnect), "failed", "closed"
        self.state = "connecting"
        #: handshakes completed since start (1 + reconnections)
        self.connections = 0
        #: the error of the last failed attempt (shown when a request gives up waiting)
        self.last_error: RadicalEdgeError | None = None
        #: events dropped because they were seen before (replay overlap)
        self.duplicates = 0
        self.tunnel_: Tunnel | None = None
        self._fatal: RadicalEdgeError | None = None
        self._closing = False
        self._changed = anyio.Event()
        self._spawner: Spawner | None = None
        self._scope: anyio.CancelScope | None = None
        self._redialer = Redialer(
            settings,
            role=PeerRole.CLIENT,
            name=name,
            path=profile.CONNECT_PATH,
            on_event=self._on_event,
            limits=limits,
            backoff=self.backoff,
            rng=self._rng,
            connect_timeout=connect_timeout,
            label=f"client {name!r}",
            logger=log,
            on_state=self._on_redial_state,
        )
        # events
        self._want_events = False
        self._subscribed: Tunnel | None = None
        self._sub_lock = anyio.Lock()
        self.epoch: str | None = None
        #: the last sequence number handled (None: not tracking yet)
        self.position: int | None = None
        # topology: the edges as of the last snapshot and the changes after it (None: no snapshot yet)
        self._edges: dict[str, Any] | None = None
        self._bridge_info: dict[str, Any] = {}
        #: the sequence number the last snapshot includes (changes up to it are in it)
        self._view_seq = 0
        #: the parts of a snapshot still arriving
        self._snapshot_parts: dict[str, Any] | None = None
        #: a change came before the first snapshot: that snapshot is reported as a change
        self._change_unseen = False

    # ------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect (the first failure is raised), then keep connected until :meth:`close`.

        A refusal that retrying cannot fix ends it (raised if it is the first
        attempt); every call raises it from then on.
        """
        started = False

        def on_retry(exc: TunnelError) -> None:
            error = error_from_tunnel(exc, where=self.url)
            if not started:
                raise error
            self.last_error = error

        async def serve(tunnel: Tunnel) -> None:
            nonlocal started
            await self._serve(tunnel, None if started else task_status)
            started = True

        with anyio.CancelScope() as scope:
            self._scope = scope
            try:
                await self._redialer.run(serve, on_retry=on_retry)
            except FatalDialError as exc:
                error = self._error_for_fatal(exc)
                if not started:
                    raise error from None
                self.last_error = error
                self._fail(error)
                return
        stopped = self._redialer.stopped_by_peer
        if stopped is not None and not self._closing:
            # the bridge ended this connection on purpose and asked it not to come back
            error = BridgeUnavailable(f"the bridge closed this client's connection for good: {stopped.reason}")
            self.last_error = error
            self._fail(error)
            return
        self.state = "closed"
        self._notify()

    def _on_redial_state(self, state: str) -> None:
        if self._closing or self._fatal is not None:
            return
        self.state = state
        if state == "waiting":
            self._notify()

    def _error_for_fatal(self, exc: FatalDialError) -> RadicalEdgeError:
        if isinstance(exc.cause, UpgradeRejectedError):  # 401/403 on the upgrade: the status and detail
            return error_from_tunnel(exc.cause, where=self.url)
        if exc.code == ErrorCode.UNAUTHORIZED:
            return AuthError(str(exc), code=exc.code)
        return BridgeProtocolError(str(exc), code=exc.code)

    def attach(self, spawner: Spawner) -> None:
        """How background work of this link is started (in the client's task group)."""
        self._spawner = spawner

    def spawn(self, fn: Callable[[], Awaitable[None]], name: str) -> None:
        """Run ``fn()`` in the background (it must not raise)."""
        if self._spawner is None:
            raise RuntimeError("the client is not running")
        self._spawner(fn, name)

    async def close(self) -> None:
        """Stop reconnecting and close the connection (GOAWAY, then the WebSocket close)."""
        if self._closing:
            return
        self._closing = True
        self.state = "closed"
        self._redialer.stop()
        tunnel = self.tunnel_
        if tunnel is not None:
            with anyio.CancelScope(shield=True):
                await tunnel.aclose(ErrorCode.NO_ERROR, "client closed")
        if self._scope is not None:
            self._scope.cancel()
        self._notify()

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def connected(self) -> bool:
        """A connection is up and usable right now."""
        return self.state == "connected" and self._usable(self.tunnel_)

    def _fail(self, exc: RadicalEdgeError) -> None:
        log.error("giving up on the bridge: %s", exc)
        self._fatal = exc
        self.state = "failed"
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # ------------------------------------------------------------ one connection

    async def _serve(self, tunnel: Tunnel, task_status: anyio.abc.TaskStatus[None] | None) -> None:
        """Run one connection until it ends (or the link closes)."""
        async with anyio.create_task_group() as tg:
            await tg.start(tunnel.run)
            self.tunnel_ = tunnel
            self.connections += 1
            failure: RadicalEdgeError | None = None
            if self._want_events:
                try:
                    await self._subscribe(tunnel)
                except RadicalEdgeError as exc:
                    failure = exc
            if failure is None:
                self.state = "connected"
                self.last_error = None
                log.info("connected to the bridge at %s", self.url)
                self._notify()
                if task_status is not None:
                    task_status.started()
                await tunnel.closed.wait()
            else:
                self.last_error = failure
                log.warning("resubscribing to events failed: %s", failure)
                await tunnel.aclose(ErrorCode.INTERNAL_ERROR, "resubscribe failed")
            tg.cancel_scope.cancel()
        if self.tunnel_ is tunnel:
            self.tunnel_ = None
        self._subscribed = None
        closed = tunnel.close_event
        if not self._closing:
            why = f"{closed.reason} ({_code_name(closed.error_code)})" if closed is not None else "connection lost"
            log.warning("disconnected from the bridge: %s", why)
        if failure is not None and task_status is not None:
            raise failure  # the very first connection: report it to the caller
        self._notify()

    # ------------------------------------------------------------ streams

    def _usable(self, tunnel: Tunnel | None) -> bool:
        return tunnel is not None and tunnel.is_open

    async def tunnel(self, timeout: float | None = None) -> Tunnel:
        """The live tunnel; waits (up to ``timeout``, default ``connect_timeout``) while reconnecting."""
        wait = self.connect_timeout if timeout is None else timeout
        with anyio.move_on_after(wait):
            while True:
                changed = self._changed
                self._raise_if_dead()
                tunnel = self.tunnel_
                if tunnel is not None and self._usable(tunnel) and self.state == "connected":
                    return tunnel
                await changed.wait()
        why = f": {self.last_error}" if self.last_error is not None else ""
        raise BridgeUnavailable(f"not connected to the bridge (waited {wait:g} s){why}")

    def _raise_if_dead(self) -> None:
        if self._fatal is not None:
            raise copy.copy(self._fatal)
        if self._closing:
            raise BridgeUnavailable("the client is closed")

    async def open_stream(
        self, method: str, target: str, headers: list[tuple[str, str]], *, end_stream: bool, timeout: float | None
    ) -> TunnelStream:
        """Open a request stream; a tunnel that is closing is waited out and the next one used."""
        for _ in range(3):
            tunnel = await self.tunnel(timeout)
            try:
                return await tunnel.request(method, target, headers, end_stream=end_stream)
            except TunnelClosedError:
                continue  # it began to close under us: the next connection takes it
            except LocalProtocolError as exc:
                raise ValueError(f"cannot send {method} {target!r}: {exc}") from None
        raise BridgeUnavailable(f"{method} {target}: the connection to the bridge keeps closing")

    def error_for_reset(self, exc: StreamResetError, where: str) -> RadicalEdgeError:
        """The SDK error for a stream that died: the link closed, the tunnel broke, or the peer reset it.

        A stream the tunnel's end took along carries the code and reason the connection ended with.
        """
        if self._closing:
            return BridgeUnavailable(f"{where}: the client was closed", code=exc.code)
        return error_from_tunnel(exc, where=where)

    async def simple_get(self, tunnel: Tunnel, target: str) -> Any:
        """GET ``target`` on ``tunnel`` and return the JSON answer (small answers only)."""
        where = f"GET {target}"
        stream: TunnelStream | None = None
        try:
            with anyio.fail_after(_INFO_TIMEOUT):
                stream = await tunnel.request("GET", target, [("accept", "application/json")], end_stream=True)
                head = await stream.wait_response()
                body = bytearray()
                while chunk := await stream.receive():
                    body += chunk
        except TimeoutError:
            if stream is not None:
                with contextlib.suppress(StreamResetError, LocalProtocolError):
                    await stream.reset()
            raise BridgeUnavailable(f"{where}: the bridge did not answer in {_INFO_TIMEOUT:g} s") from None
        except StreamResetError as exc:
            raise self.error_for_reset(exc, where) from None
        except TunnelClosedError as exc:
            raise error_from_tunnel(exc, where=where) from None
        if head.status >= 400:
            raise error_for_status(head.status, bytes(body), where=where)
        try:
            return json.loads(body)
        except ValueError:
            raise BridgeProtocolError(f"{where}: the answer is not JSON", head.status) from None

    # ------------------------------------------------------------ events

    async def want_events(self) -> None:
        """Subscribe (once) so that callbacks get events from now on; returns when the bridge has it.

        If the connection breaks meanwhile, the next one subscribes (that is
        waited for, up to ``connect_timeout``).
        """
        self._want_events = True
        with anyio.move_on_after(self.connect_timeout):
            while True:
                tunnel = await self.tunnel()
                try:
                    await self._subscribe(tunnel)
                    return
                except BridgeUnavailable:
                    if self._usable(tunnel):
                        raise
                    changed = self._changed
                    if self.tunnel_ is tunnel:
                        await changed.wait()  # the next connection subscribes by itself
        raise BridgeUnavailable(f"could not subscribe to events within {self.connect_timeout:g} s")

    async def _subscribe(self, tunnel: Tunnel) -> None:
        async with self._sub_lock:
            if self._subscribed is tunnel:
                return
            info = await self.simple_get(tunnel, "/healthz")
            epoch = info.get("event_epoch") if isinstance(info, dict) else None
            last = info.get("last_event_seq") if isinstance(info, dict) else None
            epoch = epoch if isinstance(epoch, str) else None
            last = last if isinstance(last, int) and not isinstance(last, bool) and last >= 0 else None
            resume: int | None
            if self.position is None:
                # the first subscription: events from now on (the numbering point is "now")
                self.epoch = epoch
                resume = last
            elif epoch is not None and self.epoch is not None and epoch != self.epoch:
                before = self.position
                log.warning("the bridge restarted: resuming its events from the start of its numbering")
                self.dispatcher.put(
                    _events.EventGap(
                        "restart",
                        after=before,
                        detail="the bridge restarted: events it had not delivered before it stopped are lost",
                    )
                )
                self.epoch = epoch
                resume = 0
                self._view_seq = 0  # the new bridge's numbers say nothing about the old one's snapshot
            else:
                resume = self.position
            self.position = resume
            self._snapshot_parts = None  # a snapshot cut short with the last connection is void
            try:
                await tunnel.subscribe(SUBSCRIPTION_ID, Subscription(), resume_after=resume)
            except LocalProtocolError as exc:
                raise BridgeUnavailable(f"cannot subscribe: {exc}") from None
            self._subscribed = tunnel

    def _on_event(self, event: ProtoEvent) -> None:
        """(the tunnel's reader, synchronously) Number, dedupe and queue an event."""
        if isinstance(event, Notification):
            self._on_notification(event)
        elif isinstance(event, GoAway):
            log.info("the bridge is going away: %s", event.reason or _code_name(event.error_code))
        elif isinstance(event, ConnectionClosed):
            log.debug("connection closed: %s", event)

    def _on_notification(self, event: Notification) -> None:
        from_bridge = profile.is_bridge_event(event.source, event.plugin)
        if from_bridge and event.seq == profile.UNNUMBERED:  # not a numbered event: a gap or a snapshot
            if event.topic == profile.TOPIC_GAP:
                self._on_gap(_payload_data(event.payload))
            elif event.topic == profile.TOPIC_TOPOLOGY:
                self._on_snapshot(_payload_data(event.payload))
            else:
                log.debug("ignoring the bridge's unnumbered event %r", event.topic)
            return
        if self.position is not None and event.seq <= self.position:
            self.duplicates += 1
            return
        self.position = event.seq
        data = _payload_data(event.payload)
        if from_bridge and event.topic == profile.TOPIC_TOPOLOGY_CHANGE:
            self._on_topology_change(data, event.seq)
        elif from_bridge and event.topic == profile.TOPIC_TOPOLOGY:
            # a bridge that numbers whole topologies (an older one): each is a snapshot and a change
            self._change_unseen = True
            self._on_snapshot({**data, "as_of": event.seq, "more": False} if isinstance(data, dict) else {})
        else:
            self.dispatcher.put(_events.Notification(event.source, event.plugin, event.topic, data, event.seq))

    def _on_gap(self, info: Any) -> None:
        after = info.get("after") if isinstance(info, dict) else None
        oldest = info.get("oldest") if isinstance(info, dict) else None
        detail = info.get("detail") if isinstance(info, dict) else None
        self.dispatcher.put(
            _events.EventGap(
                "ring",
                after=after if isinstance(after, int) else None,
                oldest=oldest if isinstance(oldest, int) else None,
                detail=detail
                if isinstance(detail, str)
                else f"the bridge no longer holds events {after} < n < {oldest}: they are lost",
            )
        )

    def _on_topology_change(self, data: Any, seq: int) -> None:
        """Apply one edge's change to the view and hand the whole view to topology callbacks."""
        if not isinstance(data, dict) or not isinstance(data.get("edge"), str):
            return
        if seq <= self._view_seq:
            return  # the last snapshot has it already
        if self._edges is None:
            self._change_unseen = True  # the first snapshot, coming, includes it
            return
        name: str = data["edge"]
        state = data.get("state")
        change = data.get("change")
        if change == "removed" or not isinstance(state, dict):
            if name not in self._edges:
                return
            edges = {n: e for n, e in self._edges.items() if n != name}
        else:
            edges = {**self._edges, name: state}
        # a new dict on every change (never changed in place): a queued TopologyChange keeps its own view
        self._edges = edges
        self.dispatcher.put(
            _events.TopologyChange(
                {"bridge": self._bridge_info, "edges": edges},
                seq,
                edge=name,
                change=change if isinstance(change, str) else None,
            )
        )

    def _on_snapshot(self, data: Any) -> None:
        """Take (a part of) the whole topology; the view becomes it, and callbacks hear of what changed."""
        if not isinstance(data, dict):
            return
        edges = data.get("edges")
        parts = self._snapshot_parts if self._snapshot_parts is not None else {}
        parts.update(edges if isinstance(edges, dict) else {})
        if data.get("more") is True:
            self._snapshot_parts = parts
            return
        self._snapshot_parts = None
        bridge = data.get("bridge")
        as_of = data.get("as_of")
        before, unseen = self._edges, self._change_unseen
        self._edges = parts
        self._bridge_info = bridge if isinstance(bridge, dict) else {}
        self._change_unseen = False
        if isinstance(as_of, int) and not isinstance(as_of, bool):
            self._view_seq = as_of
        if (before is None and unseen) or (before is not None and before != parts):
            self.dispatcher.put(_events.TopologyChange({"bridge": self._bridge_info, "edges": parts}, self._view_seq))


def _payload_data(payload: bytes) -> Any:
    """An event payload as data: its JSON value, else its text; None when empty."""
    if not payload:
        return None
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return payload.decode("utf-8", "replace")


def _code_name(code: ErrorCode | int) -> str:
    return code.name if isinstance(code, ErrorCode) else str(code)


__all__ = ["Backoff", "Link"]
