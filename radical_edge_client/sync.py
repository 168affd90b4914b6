"""The blocking clients under their old address: ``from radical_edge_client.sync import BridgeClient``.

The plain import is blocking now (``from radical_edge_client import BridgeClient``);
this module stays so that code written for it keeps working.  The classes are
those of :mod:`radical_edge_client`.
"""

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

__all__ = [
    "BridgeClient",
    "EdgeClient",
    "PSIJClient",
    "PluginClient",
    "QueueInfoClient",
    "RhapsodyClient",
    "StagingClient",
    "StreamResponse",
    "SysInfoClient",
]
