"""radical_edge_edge: the edge service.

It dials the bridge, hosts plugins as ASGI applications mounted at
``/{plugin}``, and turns tunnel streams into ASGI HTTP requests.  Plugin
authors need :class:`Plugin` and :class:`Session` (see ``docs/plugins.md``).
"""

from ._asgi import ASGIApp, LifespanError, build_scope, run_lifespan, serve_stream
from ._discovery import ENTRY_POINT_GROUP, PluginSelectionError, PluginUnavailable, discover, select
from ._host import PluginHost
from ._notify import Notice, NotificationQueue
from ._plugin import CALLER_HEADER, CurrentSession, Plugin, caller_of, current_session, install_error_envelope
from ._service import Backoff, EdgeFatalError, EdgeService
from ._sessions import Session, SessionError, SessionStore

__all__ = [
    "CALLER_HEADER",
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
]
