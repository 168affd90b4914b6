"""radical_edge_bridge: the public entry point (REST API, event stream, portal) and the hub of the tunnels."""

from ._config import BridgeConfig
from ._http import HTTPLimits
from ._server import Bridge

__all__ = ["Bridge", "BridgeConfig", "HTTPLimits"]
