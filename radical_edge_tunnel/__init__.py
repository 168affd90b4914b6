"""radical_edge_tunnel: runs the protocol core over anyio carriers (WebSocket, in-memory).

Shared by the bridge, the edge service and the SDK.
"""

from ._carrier import Carrier, MemoryCarrier, WebSocketCarrier, memory_carrier_pair
from ._handshake import HandshakeError, accept_handshake, connect_handshake
from ._tunnel import StreamResetError, Tunnel, TunnelClosedError, TunnelError, TunnelStream

__all__ = [
    "Carrier",
    "HandshakeError",
    "MemoryCarrier",
    "StreamResetError",
    "Tunnel",
    "TunnelClosedError",
    "TunnelError",
    "TunnelStream",
    "WebSocketCarrier",
    "accept_handshake",
    "connect_handshake",
    "memory_carrier_pair",
]
