"""radical_edge_edge: the edge service.

It dials the bridge, hosts plugins as ASGI applications mounted at
``/{plugin}``, and turns tunnel streams into ASGI HTTP requests.  Plugin
authors need :class:`Plugin` and :class:`Session` (see ``docs/plugins.md``).
"""

from radical_edge_tunnel import Backoff

from ._asgi import ASGIApp, LifespanError, build_scope, run_lifespan, serve_stream
from ._body import DEFAULT_MAX_BODY_BYTES, streaming_body
from ._discovery import ENTRY_POINT_GROUP, PluginSelectionError, PluginUnavailable, discover, select
from ._host import PluginHost
from ._notify import Notice, NotificationQueue
from ._plugin import CALLER_HEADER, CurrentSession, Plugin, caller_of, current_session, install_error_envelope
from ._service import EdgeFatalError, EdgeService
from ._sessions import DEFAULT_MAX_SESSIONS_PER_CALLER, Session, SessionError, SessionStore

__all__ = [
    "CALLER_HEADER",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_SESSIONS_PER_CALLER",
    "ENTRY_POINT_GROUP",
    "ASGIApp",
    "Backoff",
    "EdgeFatalError",
    "EdgeService",
    "CurrentSession",
    "LifespanError",
    "Notice",
    "NotificationQueue",
    "Plugin",
    "PluginHost",
    "PluginSelectionError",
    "PluginUnavailable",
    "Session",
    "SessionError",
    "SessionStore",
    "build_scope",
    "caller_of",
    "current_session",
    "discover",
    "install_error_envelope",
    "run_lifespan",
    "select",
    "serve_stream",
    "streaming_body",
]
