"""The application profile: what the bridge, edges and SDK clients agree on above the frames.

The frame protocol (the rest of this package) says how streams, events and
handshakes travel.  This module is the one place that says what radical-edge
*puts* in them: the WebSocket endpoints, the headers the bridge adds to a
forwarded request, the error body, the plugin manifest, the events the bridge
itself sends, and what a ``GOAWAY`` code tells a connector to do next.
``docs/protocol.md`` section 19 specifies the same, with examples that
``tests/test_profile.py`` builds from the names here.  Standard library only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ._errors import ErrorCode
from ._events import PeerRole, Subscription
from ._names import EDGE_NAME_MAX, RESERVED_EDGE_NAMES, check_edge_name, edge_name_error

# ---------------------------------------------------------------- endpoints

#: the WebSocket endpoint of edges (role ``edge``)
REGISTER_PATH: Final = "/register"
#: the WebSocket endpoint of SDK clients (role ``client``)
CONNECT_PATH: Final = "/connect"


def endpoint_path(role: PeerRole) -> str:
    """The bridge's WebSocket endpoint for a connector of ``role``."""
    return REGISTER_PATH if role is PeerRole.EDGE else CONNECT_PATH


# ---------------------------------------------------------------- edge names
# (the grammar lives in ``_names``: EDGE_NAME_MAX, RESERVED_EDGE_NAMES, check_edge_name, edge_name_error)

# ---------------------------------------------------------------- forwarded requests

#: headers with this prefix are the bridge's word; a caller's own copies are dropped
HEADER_PREFIX: Final = b"x-radical-"
#: who called, as the bridge authenticated them
CALLER_HEADER: Final = b"x-radical-caller"
#: the path prefix under which the edge is reachable through the bridge (``/{edge}``)
ROOT_PATH_HEADER: Final = b"x-radical-root-path"

#: request headers that describe the caller's hop or carry the bridge credential: never forwarded
HOP_REQUEST_HEADERS: Final = frozenset(
    {
        b"authorization",
        b"cookie",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)
#: response headers of the hop; the bridge sets its own
HOP_RESPONSE_HEADERS: Final = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"trailer", b"upgrade"})


def forwarded_request_headers(
    headers: Iterable[tuple[bytes, bytes]], *, caller: str, root_path: str
) -> list[tuple[bytes, bytes]]:
    """The headers an edge receives for a caller's request: the caller's, less the hop-by-hop ones,
    the credential and every ``x-radical-*`` header, then the bridge's caller and root path, last."""
    kept = [(n, v) for n, v in headers if n not in HOP_REQUEST_HEADERS and not n.startswith(HEADER_PREFIX)]
    return [*kept, (CALLER_HEADER, caller.encode("latin-1")), (ROOT_PATH_HEADER, root_path.encode("latin-1"))]


def bridge_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The value of the bridge's header ``name``: the last occurrence (the bridge appends its own)."""
    value = None
    for key, found in headers:
        if key == name:
            value = found
    return value


# ---------------------------------------------------------------- the error body

#: the media type of an error body
ERROR_CONTENT_TYPE: Final = "application/json"


def error_envelope(status: int, detail: Any) -> dict[str, Any]:
    """Every error answer, whoever produces it: ``{"error": true, "status_code": STATUS, "detail": DETAIL}``
    (``detail`` as FastAPI names it, usually a string; a list for validation errors)."""
    return {"error": True, "status_code": status, "detail": detail}


def error_body(status: int, detail: Any) -> bytes:
    """The envelope as UTF-8 JSON bytes."""
    return json.dumps(error_envelope(status, detail), ensure_ascii=False, allow_nan=False, default=str).encode()


# ---------------------------------------------------------------- the plugin manifest

#: the keys of one plugin's manifest entry and their JSON types; ``ui_config`` and ``error`` may be
#: left out (``{}`` and ``null``)
MANIFEST_ENTRY: Final[Mapping[str, tuple[type, ...]]] = {
    "type": (str,),
    "version": (str,),
    "enabled": (bool,),
    "ui_config": (dict,),
    "error": (str, type(None)),
}
_OPTIONAL = frozenset({"ui_config", "error"})


def manifest_entry(
    plugin_type: str, version: str, *, ui_config: Mapping[str, Any] | None = None, error: str | None = None
) -> dict[str, Any]:
    """One plugin's entry in an edge's manifest (``enabled`` is false exactly when there is an ``error``)."""
    return {
        "type": plugin_type,
        "version": version,
        "enabled": error is None,
        "ui_config": dict(ui_config or {}),
        "error": error,
    }


#: what a plugin (mount) name may look like: one URL path segment, never ``.`` or ``..``, nothing a browser
#: or a URL parser would fold or split (the edge refuses others when mounting, the bridge in a manifest)
PLUGIN_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")


def plugin_name_error(name: object) -> str | None:
    """Why ``name`` is not a valid plugin name, or None."""
    if isinstance(name, str) and PLUGIN_NAME.fullmatch(name):
        return None
    return f"invalid plugin name {name!r}: letters, digits, '_' and '-', at most 64, not starting with '-'"


def check_manifest(manifest: object) -> dict[str, dict[str, Any]]:
    """``manifest`` if it is ``{plugin name: entry}`` with valid plugin names (:data:`PLUGIN_NAME`) and
    entries of :data:`MANIFEST_ENTRY`'s shape (unknown keys allowed, for newer edges); ``ValueError``
    naming the first problem otherwise."""
    if not isinstance(manifest, dict):
        raise ValueError("a manifest is a JSON object of plugin entries")
    for name, entry in manifest.items():
        if (reason := plugin_name_error(name)) is not None:
            raise ValueError(f"manifest: {reason}")
        if not isinstance(entry, dict):
            raise ValueError(f"manifest entry {name!r} is not an object")
        for key, types in MANIFEST_ENTRY.items():
            if key not in entry:
                if key in _OPTIONAL:
                    continue
                raise ValueError(f"manifest entry {name!r} lacks {key!r}")
            if not isinstance(entry[key], types) or (bool not in types and isinstance(entry[key], bool)):
                raise ValueError(f"manifest entry {name!r}: {key!r} has the wrong type")
    return manifest


# ---------------------------------------------------------------- events the bridge sends to clients

#: ``source`` and ``plugin`` of the bridge's own events
BRIDGE_SOURCE: Final = "bridge"
#: the whole topology (a snapshot), sent unnumbered, in parts, when a client subscribes
TOPIC_TOPOLOGY: Final = "topology"
#: one edge connected, disconnected, changed its plugins or was forgotten (numbered)
TOPIC_TOPOLOGY_CHANGE: Final = "topology_change"
#: numbered events were lost for this client (unnumbered)
TOPIC_GAP: Final = "gap"
#: the sequence number of events outside the numbering (snapshots, gaps); numbered ones start at 1
UNNUMBERED: Final = 0
#: the values of a ``topology_change``'s ``change``
TOPOLOGY_CHANGES: Final = frozenset({"connected", "disconnected", "updated", "removed"})
#: the subscription that sees the bridge's own events
BRIDGE_EVENTS: Final = Subscription(BRIDGE_SOURCE, BRIDGE_SOURCE, "*")


def is_bridge_event(source: str, plugin: str) -> bool:
    """Whether an event comes from the bridge itself (not relayed from an edge's plugin)."""
    return source == BRIDGE_SOURCE and plugin == BRIDGE_SOURCE


# ---------------------------------------------------------------- what a GOAWAY tells a connector

#: the bridge ended the connection on purpose: do not reconnect (an operator's disconnect)
STOP_CODE: Final = ErrorCode.STOP
#: refusals (``REJECT``, or a fatal ``GOAWAY``) that retrying cannot fix: stop and report
FATAL_CODES: Final = frozenset({ErrorCode.UNAUTHORIZED, ErrorCode.UNSUPPORTED_VERSION})


def should_reconnect(code: ErrorCode | int) -> bool:
    """Whether a connector whose connection the bridge ended with ``code`` dials again.

    ``NO_ERROR`` (a bridge restarting, or dropping a client too slow for its
    events), ``NAME_CONFLICT``, ``TIMEOUT`` and every other code: yes, after the
    reconnect delay, resuming events.  :data:`STOP_CODE` and :data:`FATAL_CODES`: no.
    """
    return code != STOP_CODE and code not in FATAL_CODES


__all__ = [
    "BRIDGE_EVENTS",
    "BRIDGE_SOURCE",
    "CALLER_HEADER",
    "CONNECT_PATH",
    "EDGE_NAME_MAX",
    "ERROR_CONTENT_TYPE",
    "FATAL_CODES",
    "HEADER_PREFIX",
    "HOP_REQUEST_HEADERS",
    "HOP_RESPONSE_HEADERS",
    "MANIFEST_ENTRY",
    "REGISTER_PATH",
    "RESERVED_EDGE_NAMES",
    "ROOT_PATH_HEADER",
    "STOP_CODE",
    "TOPIC_GAP",
    "TOPIC_TOPOLOGY",
    "TOPIC_TOPOLOGY_CHANGE",
    "TOPOLOGY_CHANGES",
    "UNNUMBERED",
    "bridge_header",
    "check_edge_name",
    "PLUGIN_NAME",
    "check_manifest",
    "plugin_name_error",
    "edge_name_error",
    "endpoint_path",
    "error_body",
    "error_envelope",
    "forwarded_request_headers",
    "is_bridge_event",
    "manifest_entry",
    "should_reconnect",
]
