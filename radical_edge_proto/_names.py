"""The edge name grammar, shared by the bridge (which refuses bad names at the
handshake) and the edge (which refuses to start with one).

An edge name is one or more *labels* joined by dots (``login1``,
``frontier.batch-12``); a dotted name is shown as a child of its prefix.  A
label starts with an ASCII letter or digit, then up to 62 letters, digits,
``_`` or ``-``.  A whole name is at most :data:`EDGE_NAME_MAX` characters.
So ``.``, ``..``, empty labels, spaces, control characters, ``/``, ``%`` and
non-ASCII text are never names, and a name is always safe to put in a URL
path segment or a log line.

Names the bridge uses for its own routes (:data:`RESERVED_EDGE_NAMES`) are
refused too, compared case-insensitively, so ``/{edge}/...`` can never be
mistaken for a bridge route.
"""

from __future__ import annotations

import re

#: longest edge name, in characters
EDGE_NAME_MAX = 128
_LABEL = r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}"
_EDGE_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")

#: first path segments of the bridge's own routes, and names kept for it
RESERVED_EDGE_NAMES = frozenset(
    {
        "api",
        "auth",
        "bridge",
        "connect",
        "docs",
        "edge",
        "edges",
        "events",
        "favicon.ico",
        "healthz",
        "login",
        "logout",
        "metrics",
        "openapi.json",
        "plugins",
        "portal",
        "register",
        "robots.txt",
        "static",
    }
)


def edge_name_error(name: str) -> str | None:
    """Why ``name`` is not a valid edge name, or None if it is one.

    The reason never repeats more than a short, escaped prefix of the name.
    """
    if not isinstance(name, str) or not name:
        return "an edge name must not be empty"
    if len(name) > EDGE_NAME_MAX:
        return f"an edge name is at most {EDGE_NAME_MAX} characters (got {len(name)})"
    if not _EDGE_NAME.fullmatch(name):
        return (
            f"edge name {name[:40]!r} is not allowed: use dot-separated labels of ASCII letters, digits, "
            "'_' and '-', each starting with a letter or digit"
        )
    if name.lower() in RESERVED_EDGE_NAMES:
        return f"edge name {name!r} is reserved for the bridge's own routes"
    return None


def check_edge_name(name: str) -> str:
    """Return ``name`` if it is a valid edge name; raise ``ValueError`` with the reason if not."""
    reason = edge_name_error(name)
    if reason is not None:
        raise ValueError(reason)
    return name
