"""Where the SDK finds the bridge: :func:`radical_edge_tunnel.resolve_settings`, shared with the edge service.

Only the name the package exports lives on here.
"""

from radical_edge_tunnel import DEFAULT_TOKEN_FILE

__all__ = ["DEFAULT_TOKEN_FILE"]
