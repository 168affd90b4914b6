"""radical_edge_client: the Python SDK of radical-edge (needs only ``pip install 'radical-edge[client]'``).

The plain names block (scripts, notebooks); the ``Async`` ones are for
anyio, asyncio or trio code:

.. code-block:: python

    # blocking                                      # async
    from radical_edge_client import BridgeClient     from radical_edge_client import AsyncBridgeClient

    with BridgeClient() as bridge:                   async with AsyncBridgeClient() as bridge:
        edges = bridge.list_edges()                      edges = await bridge.list_edges()

Each client is written once, async; its blocking class is derived from it
(:func:`blocking_class`), a third-party plugin client's too.  One WebSocket
to the bridge carries every request (multiplexed) and the pushed events; it
reconnects by itself, and event callbacks resume where they left off.
Errors are :class:`RadicalEdgeError` subclasses with ``status`` and
``detail``.  The guide is ``docs/client.md``.
"""

import warnings
from typing import TYPE_CHECKING, Any

from ._blocking import blocking_class
from ._client import (
    DEFAULT_TIMEOUT,
    AsyncBridgeClient,
    AsyncEdgeClient,
    AsyncPluginClient,
    plugin_client_class,
    register_plugin_client,
)
from ._errors import (
    AuthError,
    BridgeProtocolError,
    BridgeUnavailable,
    ChecksumMismatch,
    ChildEdgeFailed,
    EdgeNotFound,
    EdgeUnavailable,
    HTTPError,
    NotFound,
    PluginNotFound,
    RadicalEdgeError,
    RequestTimeout,
    SessionExpired,
    SessionNotFound,
    TLSVerificationError,
)
from ._events import EventGap, GapCallback, NotificationCallback, TopologyCallback
from ._http import BodySource, Response
from ._http import StreamResponse as AsyncStreamResponse
from ._link import Backoff
from ._plugins import (
    AsyncPSIJClient,
    AsyncQueueInfoClient,
    AsyncRhapsodyClient,
    AsyncStagingClient,
    AsyncSysInfoClient,
)
from ._settings import DEFAULT_TOKEN_FILE
from ._sync import (
    BridgeClient,
    EdgeClient,
    PluginClient,
    PSIJClient,
    QueueInfoClient,
    RhapsodyClient,
    StagingClient,
    StreamResponse,
    SysInfoClient,
)
from ._watch import FINAL_STATES, JOB_STATES, JobUpdate

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOKEN_FILE",
    "AsyncBridgeClient",
    "AsyncEdgeClient",
    "AsyncPSIJClient",
    "AsyncPluginClient",
    "AsyncQueueInfoClient",
    "AsyncRhapsodyClient",
    "AsyncStagingClient",
    "AsyncStreamResponse",
    "AsyncSysInfoClient",
    "AuthError",
    "Backoff",
    "BodySource",
    "BridgeClient",
    "BridgeProtocolError",
    "BridgeUnavailable",
    "ChecksumMismatch",
    "ChildEdgeFailed",
    "EdgeClient",
    "EdgeNotFound",
    "EdgeUnavailable",
    "EventGap",
    "FINAL_STATES",
    "GapCallback",
    "HTTPError",
    "JOB_STATES",
    "JobUpdate",
    "NotFound",
    "NotificationCallback",
    "PSIJClient",
    "PluginClient",
    "PluginNotFound",
    "QueueInfoClient",
    "RadicalEdgeError",
    "RequestTimeout",
    "RhapsodyClient",
    "Response",
    "SessionExpired",
    "SessionNotFound",
    "StagingClient",
    "StreamResponse",
    "SysInfoClient",
    "TLSVerificationError",
    "TopologyCallback",
    "blocking_class",
    "plugin_client_class",
    "register_plugin_client",
]

if TYPE_CHECKING:
    #: deprecated: :class:`BridgeProtocolError` (not :class:`radical_edge_proto.ProtocolError`)
    ProtocolError = BridgeProtocolError
else:

    def __getattr__(name: str) -> Any:
        if name == "ProtocolError":
            warnings.warn(
                "radical_edge_client.ProtocolError is now BridgeProtocolError "
                "(radical_edge_proto.ProtocolError is the protocol core's own error)",
                DeprecationWarning,
                stacklevel=2,
            )
            return BridgeProtocolError
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
