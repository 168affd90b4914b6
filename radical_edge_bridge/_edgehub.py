"""The edge hub: edges registering on ``WS /register``, the registry of names, topology and its events.

An edge's handshake claims its name in the :class:`EdgeRegistry` (see there for
who may take a name over); from then on its tunnel carries the requests the
bridge forwards to it, and its notifications and manifest updates become
bridge events.  Every change of an edge (``connected``, ``disconnected``,
``updated``, ``removed``) is published on the :class:`EventHub` the bridge
hands in; the client hub delivers them.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

import anyio

from radical_edge_proto import (
    Connection,
    ConnectionClosed,
    ErrorCode,
    GoAway,
    Hello,
    ManifestUpdated,
    Notification,
    PeerRole,
    Side,
    edge_name_error,
    profile,
)
from radical_edge_tunnel import Carrier, HandshakeError, Tunnel, accept_handshake, memory_carrier_pair

from ._auth import Authenticator
from ._config import BridgeConfig
from ._eventhub import EventHub
from ._registry import BRIDGE_EDGE, Claim, EdgeEntry, EdgeRegistry, NameTaken

log = logging.getLogger("radical_edge.bridge")


class EdgeHub:
    """The edges: their registration and handshake, the registry, topology, expiry and edge events."""

    def __init__(self, config: BridgeConfig, auth: Authenticator, events: EventHub) -> None:
        self.config = config
        self.auth = auth
        self.events = events
        self.registry = EdgeRegistry(config.edge_ttl, config.max_disconnected_edges)

    # ---------------------------------------------------------------- serving edges

    async def serve_edge(self, carrier: Carrier, *, internal: bool = False) -> None:
        """Serve one edge connection until it ends; ``internal`` is the bridge's own plugin host (edge ``bridge``)."""
        conn = Connection(Side.HUB, self.config.tunnel)
        claimed: list[Claim] = []

        async def decide(hello: Hello) -> tuple[bool, ErrorCode, str, float]:
            if not internal and not self.auth.check_secret(hello.credential):
                return False, ErrorCode.UNAUTHORIZED, "wrong credential", 0.0
            if hello.role is not PeerRole.EDGE:
                return False, ErrorCode.PROTOCOL_ERROR, "/register is for edges; clients use /connect", 0.0
            if internal:
                reason = None if hello.name == BRIDGE_EDGE else f"the bridge's own plugins are the edge {BRIDGE_EDGE!r}"
            else:
                reason = edge_name_error(hello.name)
            if reason is not None:
                return False, ErrorCode.NAME_CONFLICT, reason, 0.0
            try:
                profile.check_manifest(hello.manifest)
            except ValueError as exc:
                return False, ErrorCode.PROTOCOL_ERROR, f"bad manifest: {exc}", 0.0
            try:
                claim = self.registry.claim(hello.name, hello.resume_token)
            except NameTaken as exc:
                return False, ErrorCode.NAME_CONFLICT, str(exc), 0.0
            claimed.append(claim)
            # a fresh token on every claim: whoever takes a name never learns an earlier holder's token
            return True, ErrorCode.NO_ERROR, claim.resume_token, self.config.heartbeat_interval

        try:
            hello = await accept_handshake(
                conn,
                carrier,
                decide,
                timeout=self.config.handshake_timeout,
                idle_heartbeat_interval=self.config.edge_idle_heartbeat_interval,
            )
        except HandshakeError as exc:
            log.info("edge refused: %s", exc)
            await carrier.aclose()
            self.expire()  # a claim that failed after all is one more disconnected name
            return
        claim = claimed[0]
        entry = claim.entry
        if claim.stale is not None:
            log.info("edge %s reconnected; closing its stale connection", entry.name)
            await claim.stale.aclose(ErrorCode.NAME_CONFLICT, "replaced by a new connection of the same edge")

        tunnel = Tunnel(conn, carrier, name=f"edge {entry.name}", on_event=lambda ev: self._edge_event(entry, ev))
        tunnel.max_stream_window, tunnel.max_connection_window = self.config.edge_window_caps
        self.registry.attach(claim, tunnel, hello.manifest)
        log.info("edge %s connected with plugins %s", entry.name, sorted(hello.manifest))
        self._publish_topology(entry, "connected")
        try:
            await tunnel.run()
        finally:
            if self.registry.detach(entry, tunnel):
                log.info("edge %s disconnected", entry.name)
                self._publish_topology(entry, "disconnected")
                self.expire()  # past the cap of disconnected edges, the oldest go now

    async def host_plugins(self, plugins: list[str]) -> None:
        """Run ``plugins`` inside the bridge as the edge ``bridge``: the same plugin host an edge
        uses, over an in-memory carrier instead of a WebSocket.  Returns when that host stops."""
        try:
            from radical_edge_edge import EdgeService  # noqa: PLC0415  (optional: needs the edge extra)
        except ImportError as exc:
            log.error("cannot host plugins in the bridge: %s (install radical-edge[edge])", exc)
            return

        async with anyio.create_task_group() as tg:

            async def connector() -> Carrier:
                mine, theirs = memory_carrier_pair()
                tg.start_soon(functools.partial(self.serve_edge, theirs, internal=True))
                return mine

            await EdgeService(BRIDGE_EDGE, plugins=plugins, connector=connector).run()

    async def disconnect(self, name: str, reason: str) -> bool:
        """Close the connection of the edge ``name`` with ``STOP`` (it does not reconnect);
        False if there is no such connected edge."""
        entry = self.registry.get(name)
        if entry is None or entry.tunnel is None:
            return False
        await entry.tunnel.aclose(profile.STOP_CODE, reason)
        return True

    def _edge_event(self, entry: EdgeEntry, event: object) -> None:
        if isinstance(event, Notification):
            try:
                data: Any = json.loads(event.payload) if event.payload else None
            except ValueError:
                data = event.payload.decode("utf-8", "replace")
            # the source is the edge this tunnel belongs to, whatever the frame claims
            self.events.publish(
                "notification", {"edge": entry.name, "plugin": event.plugin, "topic": event.topic, "data": data}
            )
        elif isinstance(event, ManifestUpdated):
            try:
                entry.manifest = profile.check_manifest(event.manifest)
            except ValueError as exc:
                log.warning("edge %s: manifest update ignored: %s", entry.name, exc)
                return
            self._publish_topology(entry, "updated")
        elif isinstance(event, GoAway | ConnectionClosed):
            log.info("edge %s: %s", entry.name, event)

    # ---------------------------------------------------------------- topology

    def edge_states(self) -> dict[str, Any]:
        """Every edge known, by name, as in ``topology()["edges"]``."""
        return {e.name: edge_state(e) for e in self.registry.entries()}

    def _publish_topology(self, entry: EdgeEntry, change: str) -> None:
        """Publish that one edge changed: ``connected``, ``disconnected``, ``updated`` or ``removed``.

        The event holds that edge only (never the whole list, which would make
        every event, and the replay ring, grow with the number of edges).
        """
        state = None if change == "removed" else edge_state(entry)
        self.events.publish(profile.TOPIC_TOPOLOGY_CHANGE, {"edge": entry.name, "change": change, "state": state})

    # ---------------------------------------------------------------- expiry

    def expire(self) -> None:
        """Forget disconnected edges past the TTL or beyond the cap (:class:`EdgeRegistry`), telling subscribers."""
        for entry in self.registry.expire():
            log.info("edge %s forgotten (disconnected too long, or too many disconnected edges)", entry.name)
            self._publish_topology(entry, "removed")

    async def expire_periodically(self) -> None:
        """Runs while serving: wakes when the longest-disconnected edge is due (at least once a minute)."""
        while True:
            due = self.registry.next_expiry()
            await anyio.sleep(min(60.0, self.registry.ttl if due is None else due) + 0.001)
            self.expire()


def edge_state(e: EdgeEntry) -> dict[str, Any]:
    """One edge as in ``topology()["edges"][NAME]``."""
    return {
        "endpoint": {"connected": e.connected, "connected_since": e.connected_since},
        "plugins": {
            name: {
                "type": info.get("type", name),
                "namespace": f"/{e.name}/{name}",
                "version": info.get("version"),
                "enabled": info.get("enabled", True),
                "ui_config": info.get("ui_config", {}),
                **({"error": info["error"]} if info.get("error") else {}),
            }
            for name, info in sorted(e.manifest.items())
            if isinstance(info, dict)
        },
    }
