"""The client hub: SDK clients on ``WS /connect`` and event-stream readers on ``GET /events``.

An event-stream reader gets SSE frames whose ids are the bridge's sequence
numbers (``Last-Event-ID`` resumes within the replay ring), the topology
snapshot first.

An SDK client speaks the same protocol as an edge (role ``client``).  Each stream
it opens is routed exactly like an HTTP request (same router, same auth
result).  Notifications and topology changes are pushed as EVENT frames
carrying the bridge's sequence numbers (1, 2, ...), so a client that
reconnects can SUBSCRIBE with ``resume_after`` and lose nothing still in the
replay ring.  The payload is JSON:

* a notification: source = edge, plugin, topic as the plugin sent them; payload its data;
* a topology change: source ``bridge``, plugin ``bridge``, topic ``topology_change``;
  payload ``{"edge", "change", "state"}``: one edge, ``change`` one of
  ``connected``, ``disconnected``, ``updated`` (plugins), ``removed`` (expired;
  ``state`` null), ``state`` that edge as in ``POST /edge/list``;
* on every SUBSCRIBE, after the replay, a snapshot of the whole topology:
  source ``bridge``, plugin ``bridge``, topic ``topology``, sequence **0**,
  payload ``{"bridge", "edges", "as_of", "more"}``.  It is cut into as many
  EVENTs as the client's frame size needs (each with some of the edges, all
  but the last with ``more: true``); ``as_of`` is the sequence number the
  snapshot includes: changes numbered up to it are in it, later ones follow;
* a replay gap: source ``bridge``, plugin ``bridge``, topic ``gap``, sequence 0,
  payload ``{"after", "oldest"}`` (events after < n < oldest are lost), plus
  ``"detail"`` when the bridge says why (an event too large for the client's frames).

Sequence 0 is never an event's number: a client tells snapshots and gaps from
numbered events by it, and never dedupes them.  The hub delivers only what
matches a subscription, so clients subscribe to ``bridge/bridge/*`` to see
topology and gaps.  A client too slow to take its events is disconnected
(``GOAWAY`` with ``NO_ERROR``: its queue is bounded) and resumes after
reconnecting.  A client has that queue (and a task pumping it) only from its
first SUBSCRIBE on: one that only makes calls costs no memory and no wake-up
per event.  The names above are :mod:`radical_edge_proto.profile`'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import anyio
import h11

from radical_edge_proto import Connection, ErrorCode, Event, Hello, PeerRole, Side, Subscribed, profile
from radical_edge_tunnel import Carrier, HandshakeError, Tunnel, TunnelStream, accept_handshake

from ._auth import Authenticator
from ._config import BridgeConfig
from ._eventhub import BridgeEvent, EventHub, Subscriber, encode
from ._exchange import Exchange, RequestHead, TunnelExchange
from ._http import ClientGone

log = logging.getLogger("radical_edge.bridge")

#: ``(source, plugin)`` of the bridge's own events
_BRIDGE = (profile.BRIDGE_SOURCE, profile.BRIDGE_SOURCE)

Dispatch = Callable[[Exchange, RequestHead], Awaitable[None]]


def _room(tunnel: Tunnel, source: str, plugin: str, topic: str) -> int:
    """Payload bytes one EVENT frame to this peer can carry (its frame size less the sequence and names)."""
    names = sum(2 + len(s.encode()) for s in (source, plugin, topic))
    return tunnel.max_outbound_frame_size - 8 - names


def _wanted(tunnel: Tunnel, source: str, plugin: str, topic: str) -> bool:
    return any(s.matches(source, plugin, topic) for s in tunnel.subscriptions.values())


def push_event(tunnel: Tunnel, where: tuple[str, str, str], seq: int, payload: bytes) -> bool:
    """Queue one numbered event (from ``where`` = source, plugin, topic) for a client, if a
    subscription wants it (the caller flushes the tunnel).

    An event larger than the client's frames cannot be sent: the client gets a
    gap for it instead (its connection must not fail over one event).
    """
    source, plugin, topic = where
    room = _room(tunnel, source, plugin, topic)
    if len(payload) <= room:
        return tunnel.queue_event(source, plugin, topic, seq, payload)
    if not _wanted(tunnel, source, plugin, topic):
        return False
    detail = f"event {seq} ({len(payload)} bytes) is larger than this connection's frames ({room} bytes)"
    log.warning("client: %r/%r/%r: %s; sending a gap instead", source, plugin, topic, detail)
    gap = {"after": seq - 1, "oldest": seq + 1, "detail": detail}
    return tunnel.queue_event(*_BRIDGE, profile.TOPIC_GAP, profile.UNNUMBERED, encode(gap))


def send_bridge_event(tunnel: Tunnel, event: BridgeEvent) -> bool:
    """Queue one bridge event for a client, if a subscription wants it (the caller flushes the tunnel)."""
    where = event.source if event.source is not None else (*_BRIDGE, event.topic)
    return push_event(tunnel, where, event.seq, event.payload)


def send_snapshot(tunnel: Tunnel, topology: dict[str, Any], as_of: int) -> bool:
    """Queue the whole topology for a client as sequence-0 ``topology`` events that fit its frames."""
    if not _wanted(tunnel, *_BRIDGE, profile.TOPIC_TOPOLOGY):
        return False
    room = _room(tunnel, *_BRIDGE, profile.TOPIC_TOPOLOGY)
    head = b'{"bridge": ' + encode(topology.get("bridge", {})) + b', "as_of": ' + str(as_of).encode() + b', "more": '
    fixed = len(head) + len(b'false, "edges": {}}')
    parts: list[list[bytes]] = [[]]
    used = fixed
    edges: dict[str, Any] = topology.get("edges", {})
    for name, state in edges.items():
        item = encode({name: state})[1:-1]  # '"NAME": {...}'
        if fixed + len(item) > room:
            endpoint = state.get("endpoint", {}) if isinstance(state, dict) else {}
            item = encode({name: {"endpoint": endpoint, "plugins": {}, "truncated": True}})[1:-1]
            if fixed + len(item) > room:
                log.warning("client: edge %.64r does not fit the client's frames; left out of its snapshot", name)
                continue
            log.warning("client: edge %s does not fit the client's frames; its snapshot entry lacks plugins", name)
        if parts[-1] and used + 2 + len(item) > room:
            parts.append([])
            used = fixed
        used += len(item) + (2 if parts[-1] else 0)
        parts[-1].append(item)
    for n, items in enumerate(parts):
        more = b"true" if n < len(parts) - 1 else b"false"
        part = head + more + b', "edges": {' + b", ".join(items) + b"}}"
        tunnel.queue_event(*_BRIDGE, profile.TOPIC_TOPOLOGY, profile.UNNUMBERED, part)
    return True


class ClientHub:
    """The clients: SDK connections on ``WS /connect`` and event-stream readers on ``GET /events``.

    Both read the bridge's :class:`EventHub`; a client's requests go to ``dispatch``
    (the bridge's router, already authenticated: the handshake checked the credential).
    """

    def __init__(self, config: BridgeConfig, auth: Authenticator, events: EventHub, dispatch: Dispatch) -> None:
        self.config = config
        self.auth = auth
        self.events = events
        self.dispatch = dispatch

    async def serve(self, carrier: Carrier) -> None:
        """Serve one SDK client connection (``WS /connect``) until it ends."""
        config, events = self.config, self.events
        conn = Connection(Side.HUB, config.client_tunnel)

        async def decide(hello: Hello) -> tuple[bool, ErrorCode, str, float]:
            if not self.auth.check_secret(hello.credential):
                return False, ErrorCode.UNAUTHORIZED, "wrong credential", 0.0
            if hello.role is not PeerRole.CLIENT:
                return False, ErrorCode.PROTOCOL_ERROR, "/connect is for SDK clients; edges use /register", 0.0
            return True, ErrorCode.NO_ERROR, secrets.token_urlsafe(16), config.client_heartbeat_interval

        try:
            await accept_handshake(conn, carrier, decide, timeout=config.handshake_timeout)
        except HandshakeError as exc:
            log.info("client refused: %s", exc)
            await carrier.aclose()
            return

        async def handle(stream: TunnelStream) -> None:
            exchange = TunnelExchange(stream)
            try:
                await self.dispatch(exchange, exchange.head)
            except ClientGone as exc:  # the client reset its stream (left a download early): not an error
                log.debug("client stream %d: %s", stream.id, exc)

        # the client's queue of bridge events (and the task that pumps it) exist from its first SUBSCRIBE on:
        # a client that only makes calls costs neither memory nor a wake-up per event published
        sub: Subscriber | None = None
        async with anyio.create_task_group() as tg:

            def on_event(event: Event) -> None:
                nonlocal sub
                if isinstance(event, Subscribed):
                    if sub is None:
                        # now, before the replay and the snapshot: every event after them is queued
                        sub = events.subscribe()
                        tg.start_soon(pump, sub)
                    if event.resume_after is not None:
                        replay = events.replay(event.resume_after)
                        if replay.gap:
                            gap = {"after": event.resume_after, "oldest": replay.oldest}
                            tunnel.queue_event(*_BRIDGE, profile.TOPIC_GAP, profile.UNNUMBERED, encode(gap))
                        for past in replay.events:
                            send_bridge_event(tunnel, past)
                    # the whole topology as of now, after what was replayed: changes after it follow
                    send_snapshot(tunnel, events.snapshot(), events.last_seq)
                    tg.start_soon(tunnel.flush)  # all of it in one write

            tunnel = Tunnel(conn, carrier, handler=handle, on_event=on_event, name="client")

            async def pump(sub: Subscriber) -> None:
                assert sub.receive is not None
                async for event in sub.receive:
                    if tunnel.is_closed:
                        return
                    if send_bridge_event(tunnel, event):
                        await tunnel.flush()
                if sub.dropped and not tunnel.is_closed:
                    log.warning("client too slow for its events: disconnecting it (it resumes on reconnect)")
                    await tunnel.aclose(ErrorCode.NO_ERROR, "too slow to receive events; reconnect and resume")

            try:
                await tunnel.run()
            finally:
                # stop the pump before closing its queue: a pump woken by the close would fail the task group
                tg.cancel_scope.cancel()
                if sub is not None:
                    events.unsubscribe(sub)

    async def sse(self, exchange: Exchange, request: RequestHead, query: str) -> None:
        """Serve ``GET /events``: Server-Sent Events, with ``Last-Event-ID`` (or ``?last_event_id=``) replay,
        then the topology snapshot, then events as they come; keep-alive comments while it is quiet."""
        await exchange.drain_body()
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        edge, plugin, topic = params.get("edge", "*"), params.get("plugin", "*"), params.get("topic", "*")
        header_id = next((v for n, v in request.headers if n == b"last-event-id"), None)
        last_id = header_id.decode("latin-1") if header_id is not None else params.get("last_event_id")
        events = self.events
        sub = events.subscribe(edge, plugin, topic)
        try:
            await exchange.start_response(
                200,
                [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"transfer-encoding", b"chunked"),
                ],
            )
            # what the replay and the snapshot include: the replay is taken now, numbered up to it
            sent = events.last_seq
            if last_id is not None:
                try:
                    after = int(last_id)
                except ValueError:
                    after = -1
                replay = events.replay(after, edge, plugin, topic) if after >= 0 else None
                if replay is None or replay.gap:
                    oldest = replay.oldest if replay else 0
                    gap = {"topic": profile.TOPIC_GAP, "data": {"last_event_id": last_id, "oldest_available": oldest}}
                    await exchange.send_body(_sse_frame(None, gap))
                for event in replay.events if replay else []:
                    await exchange.send_body(_sse_event(event))
            await exchange.send_body(_sse_frame(sent, {"topic": profile.TOPIC_TOPOLOGY, "data": events.snapshot()}))
            assert sub.receive is not None
            while True:
                with anyio.move_on_after(self.config.sse_keepalive) as scope:
                    try:
                        event = await sub.receive.receive()
                    except (anyio.EndOfStream, anyio.ClosedResourceError):
                        return  # dropped: too slow; the client resumes with Last-Event-ID
                if scope.cancelled_caught:
                    await exchange.send_body(b": keep-alive\n\n")
                    continue
                if event.seq <= sent:
                    continue
                await exchange.send_body(_sse_event(event))
        finally:
            events.unsubscribe(sub)
            with contextlib.suppress(ClientGone, h11.LocalProtocolError):
                await exchange.end_response()


def _sse_frame(event_id: int | None, payload: dict[str, Any]) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


def _sse_event(event: BridgeEvent) -> bytes:
    """A published event as an SSE frame, around the bytes it was encoded to once."""
    return b"id: %d\ndata: %s\n\n" % (event.seq, event.sse_json())
