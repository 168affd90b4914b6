"""radical_edge_client: the Python SDK of radical-edge (needs only ``pip install 'radical-edge[client]'``).

The async API (anyio) is here; the blocking facade with the same names is
:mod:`radical_edge_client.sync`:

.. code-block:: python

    # async                                         # blocking (scripts, notebooks)
    from radical_edge_client import BridgeClient     from radical_edge_client.sync import BridgeClient

    async with BridgeClient() as bridge:             with BridgeClient() as bridge:
        edges = await bridge.list_edges()                edges = bridge.list_edges()

One WebSocket to the bridge carries every request (multiplexed) and the
pushed events; it reconnects by itself, and event callbacks resume where they
left off.  Errors are :class:`RadicalEdgeError` subclasses with ``status`` and
``detail``.  The guide is ``docs/client.md``.
"""

from ._client import (
    DEFAULT_TIMEOUT,
    BridgeClient,
    EdgeClient,
    PluginClient,
    plugin_client_class,
    register_plugin_client,
)
from ._errors import (
    AuthError,
    BridgeUnavailable,
    EdgeNotFound,
    EdgeUnavailable,
    HTTPError,
    NotFound,
    PluginNotFound,
    ProtocolError,
    RadicalEdgeError,
    RequestTimeout,
    SessionExpired,
    SessionNotFound,
    TLSVerificationError,
)
from ._events import EventGap, GapCallback, NotificationCallback, TopologyCallback
from ._http import BodySource, Response, StreamResponse
from ._link import Backoff
from ._plugins import PSIJClient, QueueInfoClient, StagingClient, SysInfoClient
from ._settings import DEFAULT_TOKEN_FILE

#: the async client under an explicit name
AsyncBridgeClient = BridgeClient

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOKEN_FILE",
    "AsyncBridgeClient",
    "AuthError",
    "Backoff",
    "BodySource",
    "BridgeClient",
    "BridgeUnavailable",
    "EdgeClient",
    "EdgeNotFound",
    "EdgeUnavailable",
    "EventGap",
    "GapCallback",
    "HTTPError",
    "NotFound",
    "NotificationCallback",
    "PSIJClient",
    "PluginClient",
    "PluginNotFound",
    "ProtocolError",
    "QueueInfoClient",
    "RadicalEdgeError",
    "RequestTimeout",
    "Response",
    "SessionExpired",
    "SessionNotFound",
    "StagingClient",
    "StreamResponse",
    "SysInfoClient",
    "TLSVerificationError",
    "TopologyCallback",
    "plugin_client_class",
    "register_plugin_client",
]
