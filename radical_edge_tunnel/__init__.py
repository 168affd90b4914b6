"""radical_edge_tunnel: runs the protocol core over anyio carriers (WebSocket, in-memory).

Shared by the bridge, the edge service and the SDK.
"""

from ._backoff import Backoff, Redial
from ._carrier import Carrier, MemoryCarrier, WebSocketCarrier, memory_carrier_pair, tls_object, with_buffered_tls
from ._envelope import ERROR_CONTENT_TYPE, error_body, error_envelope
from ._handshake import HandshakeError, accept_handshake, connect_handshake
from ._tunnel import StreamResetError, Tunnel, TunnelClosedError, TunnelError, TunnelStream
from ._ws_client import (
    ConnectError,
    TLSVerificationError,
    UpgradeRejectedError,
    client_ssl_context,
    connect_websocket,
    websocket_url,
)

__all__ = [
    "ERROR_CONTENT_TYPE",
    "Backoff",
    "Carrier",
    "ConnectError",
    "HandshakeError",
    "MemoryCarrier",
    "Redial",
    "StreamResetError",
    "TLSVerificationError",
    "Tunnel",
    "TunnelClosedError",
    "TunnelError",
    "TunnelStream",
    "UpgradeRejectedError",
    "WebSocketCarrier",
    "accept_handshake",
    "client_ssl_context",
    "connect_handshake",
    "connect_websocket",
    "error_body",
    "error_envelope",
    "memory_carrier_pair",
    "tls_object",
    "websocket_url",
    "with_buffered_tls",
]
