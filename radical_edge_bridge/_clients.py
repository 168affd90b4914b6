"""SDK clients on ``WS /connect``: requests as tunnel streams, events pushed as EVENT frames.

A client speaks the same protocol as an edge (role ``client``).  Each stream
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
topology and gaps.  A client too slow to take its events is disconnected (its
queue is bounded) and resumes after reconnecting.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

from radical_edge_proto import Connection, ErrorCode, Event, Hello, PeerRole, Side, Subscribed
from radical_edge_tunnel import HandshakeError, Tunnel, TunnelStream, WebSocketCarrier, accept_handshake

from ._auth import Authenticator
from ._config import BridgeConfig
from ._eventhub import BridgeEvent, EventHub, encode
from ._exchange import Exchange, RequestHead, TunnelExchange

log = logging.getLogger("radical_edge.bridge")

Dispatch = Callable[[Exchange, RequestHead], Awaitable[None]]


def _room(conn: Connection, source: str, plugin: str, topic: str) -> int:
    """Payload bytes one EVENT frame to this peer can carry (its frame size less the sequence and names)."""
    names = sum(2 + len(s.encode()) for s in (source, plugin, topic))
    return conn.max_outbound_frame_size - 8 - names


def _wanted(conn: Connection, source: str, plugin: str, topic: str) -> bool:
    return any(s.matches(source, plugin, topic) for s in conn.subscriptions.values())


def push_event(conn: Connection, where: tuple[str, str, str], seq: int, payload: bytes) -> bool:
    """Put one numbered event (from ``where`` = source, plugin, topic) on a client connection, if a
    subscription wants it.

    An event larger than the client's frames cannot be sent: the client gets a
    gap for it instead (its connection must not fail over one event).
    """
    source, plugin, topic = where
    room = _room(conn, source, plugin, topic)
    if len(payload) <= room:
        return conn.send_event(source, plugin, topic, seq, payload)
    if not _wanted(conn, source, plugin, topic):
        return False
    detail = f"event {seq} ({len(payload)} bytes) is larger than this connection's frames ({room} bytes)"
    log.warning("client: %r/%r/%r: %s; sending a gap instead", source, plugin, topic, detail)
    gap = {"after": seq - 1, "oldest": seq + 1, "detail": detail}
    return conn.send_event("bridge", "bridge", "gap", 0, encode(gap))


def send_bridge_event(conn: Connection, event: BridgeEvent) -> bool:
    """Put one bridge event on a client connection, if a subscription wants it."""
    where = event.source if event.source is not None else ("bridge", "bridge", event.topic)
    return push_event(conn, where, event.seq, event.payload)


def send_snapshot(conn: Connection, topology: dict[str, Any], as_of: int) -> bool:
    """Put the whole topology on a client connection as sequence-0 ``topology`` events that fit its frames."""
    if not _wanted(conn, "bridge", "bridge", "topology"):
        return False
    room = _room(conn, "bridge", "bridge", "topology")
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
        conn.send_event("bridge", "bridge", "topology", 0, head + more + b', "edges": {' + b", ".join(items) + b"}}")
    return True


async def serve_client(
    carrier: WebSocketCarrier,
    *,
    config: BridgeConfig,
    auth: Authenticator,
    events: EventHub,
    dispatch: Dispatch,
) -> None:
    conn = Connection(Side.HUB, config.tunnel)

    async def decide(hello: Hello) -> tuple[bool, ErrorCode, str, float]:
        if not auth.check_secret(hello.credential):
            return False, ErrorCode.UNAUTHORIZED, "wrong credential", 0.0
        if hello.role is not PeerRole.CLIENT:
            return False, ErrorCode.PROTOCOL_ERROR, "/connect is for SDK clients; edges use /register", 0.0
        return True, ErrorCode.NO_ERROR, secrets.token_urlsafe(16), config.heartbeat_interval

    try:
        await accept_handshake(conn, carrier, decide, timeout=config.handshake_timeout)
    except HandshakeError as exc:
        log.info("client refused: %s", exc)
        await carrier.aclose()
        return

    async def handle(stream: TunnelStream) -> None:
        exchange = TunnelExchange(stream)
        await dispatch(exchange, exchange.head)

    sub = events.subscribe()
    async with anyio.create_task_group() as tg:

        def on_event(event: Event) -> None:
            if isinstance(event, Subscribed):
                if event.resume_after is not None:
                    replay = events.replay(event.resume_after)
                    if replay.gap:
                        gap = {"after": event.resume_after, "oldest": replay.oldest}
                        conn.send_event("bridge", "bridge", "gap", 0, encode(gap))
                    for past in replay.events:
                        send_bridge_event(conn, past)
                # the whole topology as of now, after what was replayed: changes after it follow
                send_snapshot(conn, events.snapshot(), events.last_seq)
                tg.start_soon(tunnel.flush)

        tunnel = Tunnel(conn, carrier, handler=handle, on_event=on_event, name="client")

        async def pump() -> None:
            assert sub.receive is not None
            async for event in sub.receive:
                if conn.closed:
                    return
                if send_bridge_event(conn, event):
                    await tunnel.flush()
            if sub.dropped and not conn.closed:
                log.warning("client too slow for its events: disconnecting it (it resumes on reconnect)")
                await tunnel.aclose(ErrorCode.CANCEL, "too slow to receive events; reconnect and resume")

        tg.start_soon(pump)
        try:
            await tunnel.run()
        finally:
            # stop the pump before closing its queue: a pump woken by the close would fail the task group
            tg.cancel_scope.cancel()
            events.unsubscribe(sub)
