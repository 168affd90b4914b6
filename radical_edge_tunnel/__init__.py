"""radical_edge_tunnel: runs the protocol core over anyio carriers (WebSocket, in-memory).

Shared by the bridge, the edge service and the SDK.  Everything that dials a
bridge finds it with :func:`resolve_settings` and keeps its connection with a
:class:`Redialer` (one backoff, one fatal policy: see ``_redial.py``).
"""

from ._allocator import tune_allocator
from ._backoff import Backoff, Redial
from ._carrier import Carrier, MemoryCarrier, WebSocketCarrier, memory_carrier_pair, tls_object, with_buffered_tls
from ._gc import GEN0_THRESHOLD, freeze_startup_objects, tune_gc
from ._handshake import HandshakeError, accept_handshake, connect_handshake
from ._limits import MAX_CONNECTION_WINDOW, MAX_STREAM_WINDOW, TUNNEL_FRAME_SIZE, tunnel_limits
from ._overlap import ReadAhead, WriteBehind
from ._progress import bytes_acknowledged
from ._reads import LARGE_READ, LargeReads, tune_socket_reads
from ._redial import FATAL_CODES, FATAL_STATUSES, Connector, FatalDialError, Redialer, fatal_error_for
from ._settings import (
    DEFAULT_TOKEN_FILE,
    ENV_CERT,
    ENV_TOKEN,
    ENV_URL,
    BridgeSettings,
    InsecureFileError,
    check_private,
    load_or_create_token,
    read_token_file,
    resolve_settings,
)
from ._speedups import PURE_PYTHON_ENV, data_frame_builder, enable_speedups
from ._speedups import masking as websocket_masking
from ._tuning import raise_open_file_limit, tune_process
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
    "DEFAULT_TOKEN_FILE",
    "ENV_CERT",
    "ENV_TOKEN",
    "ENV_URL",
    "FATAL_CODES",
    "FATAL_STATUSES",
    "Backoff",
    "BridgeSettings",
    "Carrier",
    "ConnectError",
    "Connector",
    "FatalDialError",
    "GEN0_THRESHOLD",
    "HandshakeError",
    "InsecureFileError",
    "LARGE_READ",
    "LargeReads",
    "PURE_PYTHON_ENV",
    "MemoryCarrier",
    "ReadAhead",
    "Redial",
    "Redialer",
    "MAX_CONNECTION_WINDOW",
    "MAX_STREAM_WINDOW",
    "TUNNEL_FRAME_SIZE",
    "StreamResetError",
    "TLSVerificationError",
    "Tunnel",
    "TunnelClosedError",
    "TunnelError",
    "TunnelStream",
    "UpgradeRejectedError",
    "WebSocketCarrier",
    "WriteBehind",
    "accept_handshake",
    "bytes_acknowledged",
    "check_private",
    "client_ssl_context",
    "connect_handshake",
    "data_frame_builder",
    "connect_websocket",
    "enable_speedups",
    "fatal_error_for",
    "load_or_create_token",
    "memory_carrier_pair",
    "raise_open_file_limit",
    "read_token_file",
    "resolve_settings",
    "tls_object",
    "freeze_startup_objects",
    "tune_allocator",
    "tune_gc",
    "tune_process",
    "tune_socket_reads",
    "tunnel_limits",
    "websocket_masking",
    "websocket_url",
    "with_buffered_tls",
]
