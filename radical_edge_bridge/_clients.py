"""SDK clients on ``WS /connect``: requests as tunnel streams, events pushed as EVENT frames.

A client speaks the same protocol as an edge (role ``client``).  Each stream
it opens is routed exactly like an HTTP request (same router, same auth
result).  Notifications and topology changes are pushed as EVENT frames
carrying the bridge's sequence numbers, so a client that reconnects can
SUBSCRIBE with ``resume_after`` and lose nothing still in the replay ring:

* a notification: source = edge, plugin, topic as the plugin sent them;
* a topology change: source ``bridge``, plugin ``bridge``, topic ``topology``;
* a replay gap: source ``bridge``, plugin ``bridge``, topic ``gap``, sequence 0,
  payload ``{"after", "oldest"}``.

The hub delivers only what matches a subscription, so clients subscribe to
``bridge/bridge/*`` to see topology and gaps.  A client too slow to take its
events is disconnected (its queue is bounded) and resumes after reconnecting.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from radical_edge_proto import Connection, ErrorCode, Event, Hello, PeerRole, Side, Subscribed
from radical_edge_tunnel import HandshakeError, Tunnel, TunnelStream, WebSocketCarrier, accept_handshake

from ._auth import Authenticator
from ._config import BridgeConfig
from ._eventhub import BridgeEvent, EventHub
from ._exchange import Exchange, RequestHead, TunnelExchange

log = logging.getLogger("radical_edge.bridge")

Dispatch = Callable[[Exchange, RequestHead], Awaitable[None]]


def send_bridge_event(conn: Connection, event: BridgeEvent) -> bool:
    """Put one bridge event on a client connection, if a subscription wants it."""
    if event.topic == "notification":
        data = event.data
        payload = json.dumps(data.get("data")).encode()
        return conn.send_event(str(data["edge"]), str(data["plugin"]), str(data["topic"]), event.seq, payload)
    return conn.send_event("bridge", "bridge", event.topic, event.seq, json.dumps(event.data).encode())


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
            if isinstance(event, Subscribed) and event.resume_after is not None:
                replay = events.replay(event.resume_after)
                if replay.gap:
                    gap = {"after": event.resume_after, "oldest": replay.oldest}
                    conn.send_event("bridge", "bridge", "gap", 0, json.dumps(gap).encode())
                for past in replay.events:
                    send_bridge_event(conn, past)
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
