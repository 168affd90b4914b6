"""Two connections wired together in memory (after h11's ConnectionPair)."""

from __future__ import annotations

from collections.abc import Iterable

from radical_edge_proto import (
    Connection,
    Event,
    Hello,
    Limits,
    PeerRole,
    Side,
    Welcome,
)


class ConnectionPair:
    """A connector and a hub; ``deliver`` moves bytes across and returns the events."""

    def __init__(
        self,
        connector_limits: Limits | None = None,
        hub_limits: Limits | None = None,
        *,
        handshake: bool = True,
        heartbeat_interval: float = 10.0,
        idle_heartbeat_interval: float | None = None,
    ) -> None:
        self.connector = Connection(Side.CONNECTOR, connector_limits)
        self.hub = Connection(Side.HUB, hub_limits)
        if handshake:
            self.handshake(heartbeat_interval=heartbeat_interval, idle_heartbeat_interval=idle_heartbeat_interval)

    def peer(self, conn: Connection) -> Connection:
        return self.hub if conn is self.connector else self.connector

    def deliver(self, sender: Connection, *, chunks: Iterable[int] | None = None) -> list[Event]:
        """Move what ``sender`` queued to its peer; optionally cut into ``chunks`` sizes."""
        data = sender.data_to_send()
        receiver = self.peer(sender)
        if chunks is None:
            return receiver.receive_data(data)
        events: list[Event] = []
        pos = 0
        for size in chunks:
            events += receiver.receive_data(data[pos : pos + size])
            pos += size
        events += receiver.receive_data(data[pos:])
        return events

    def handshake(
        self, *, heartbeat_interval: float = 10.0, idle_heartbeat_interval: float | None = None
    ) -> tuple[Hello, Welcome]:
        self.connector.send_hello(role=PeerRole.EDGE, name="edge1", credential="secret", manifest={"sysinfo": {}})
        (hello,) = self.deliver(self.connector)
        assert isinstance(hello, Hello)
        self.hub.accept(
            heartbeat_interval=heartbeat_interval, resume_token="tok", idle_heartbeat_interval=idle_heartbeat_interval
        )
        (welcome,) = self.deliver(self.hub)
        assert isinstance(welcome, Welcome)
        return hello, welcome
