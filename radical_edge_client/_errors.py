"""The SDK's exceptions, and how answers and tunnel failures map onto them.

Every error the SDK raises is a :class:`RadicalEdgeError` carrying ``status``
(the HTTP status of the answer, ``None`` when the failure happened before or
outside an HTTP answer: a dial, a handshake, a local timeout) and ``detail``
(the ``detail`` of the JSON error envelope ``{"error", "status_code",
"detail"}``, else a readable message):

.. code-block:: text

    RadicalEdgeError
    ├── AuthError            401/403, or the bridge refused the token (REJECT UNAUTHORIZED)
    ├── BridgeUnavailable    the bridge cannot be reached, or the connection to it broke mid-request
    │   └── TLSVerificationError  the bridge's certificate is not trusted (wrong CA, wrong host name)
    ├── NotFound             404 for something else than an edge, a plugin or a session (a route)
    │   ├── EdgeNotFound     no edge of that name
    │   ├── PluginNotFound   no such plugin on that edge (or it failed to load: status 503)
    │   └── SessionNotFound  no such session (never existed, or unregistered)
    ├── EdgeUnavailable      the edge is known but not connected, or dropped the request (502/503)
    ├── SessionExpired       410: the session timed out; register a new one
    ├── RequestTimeout       no answer in time (504 from the bridge, or the client's own ``timeout``)
    ├── BridgeProtocolError  the bridge broke the protocol, or answered something unreadable
    ├── ChecksumMismatch     a transferred file's SHA-256 is not the source's (nothing was put in place)
    └── HTTPError            any other error status (400, 409, 422, 500, ...)
"""

from __future__ import annotations

import json
from typing import Any

from radical_edge_proto import ErrorCode
from radical_edge_tunnel import (
    ConnectError,
    HandshakeError,
    StreamResetError,
    TunnelError,
    UpgradeRejectedError,
)
from radical_edge_tunnel import TLSVerificationError as _TunnelTLSError

__all__ = [
    "AuthError",
    "BridgeUnavailable",
    "ChecksumMismatch",
    "ChildEdgeFailed",
    "EdgeNotFound",
    "EdgeUnavailable",
    "HTTPError",
    "NotFound",
    "PluginNotFound",
    "BridgeProtocolError",
    "RadicalEdgeError",
    "RequestTimeout",
    "SessionExpired",
    "SessionNotFound",
    "TLSVerificationError",
    "error_for_status",
    "error_from_tunnel",
]


class RadicalEdgeError(Exception):
    """Base of every SDK error.

    ``status`` is the HTTP status of the answer that caused it (``None`` when
    there was no answer), ``detail`` the envelope's ``detail`` (usually a
    string; a list of problems for a 422), ``code`` the tunnel error code when
    the failure came from the tunnel.
    """

    def __init__(self, detail: Any, status: int | None = None, *, code: ErrorCode | int | None = None) -> None:
        self.detail = detail
        self.status = status
        self.code = code
        super().__init__(detail)

    def __str__(self) -> str:
        text = self.detail if isinstance(self.detail, str) else json.dumps(self.detail, default=str)
        return f"{text} (HTTP {self.status})" if self.status is not None else text

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.detail, self.status, self.code))


def _rebuild(cls: type[RadicalEdgeError], detail: Any, status: int | None, code: int | None) -> RadicalEdgeError:
    return cls(detail, status, code=code)


class AuthError(RadicalEdgeError):
    """The bridge refused the credential (missing or wrong token), or the caller may not do this (403)."""


class BridgeUnavailable(RadicalEdgeError):
    """The bridge cannot be reached (DNS, TCP, TLS, upgrade), or the connection broke during a request."""


class TLSVerificationError(BridgeUnavailable):
    """The bridge's TLS certificate is not trusted: give the CA with ``cert=`` / ``RADICAL_BRIDGE_CERT``."""


class NotFound(RadicalEdgeError):
    """404: the thing named in the path does not exist."""


class EdgeNotFound(NotFound):
    """No edge of that name is known to the bridge."""


class PluginNotFound(NotFound):
    """The edge has no plugin of that name (status 404), or it is there but not loaded (status 503)."""


class SessionNotFound(NotFound):
    """The plugin does not know that session id (never registered, or unregistered)."""


class EdgeUnavailable(RadicalEdgeError):
    """The edge is known but not connected now, or it went away before it answered."""


class SessionExpired(RadicalEdgeError):
    """410: the session expired (idle longer than its TTL); register a new one."""


class RequestTimeout(RadicalEdgeError):
    """No answer in time: 504 from the bridge, or the client's own ``timeout`` (``status`` ``None``).

    The request is cancelled on the edge too.
    """


class ChildEdgeFailed(RadicalEdgeError):
    """A child edge (the psij plugin's ``submit_tunneled``) whose job ended before it registered, or failed.

    ``detail`` is its ``tunnel_status`` (``reason``, ``job_state``, ``exit_code``, ``stdout_tail``,
    ``stderr_tail``); the message shows the reason and the tail of the job's stderr.
    """

    def __str__(self) -> str:
        if not isinstance(self.detail, dict):
            return super().__str__()
        info = self.detail
        text = f"child edge {info.get('edge')} {info.get('state')}: {info.get('reason') or info.get('job_state')}"
        err = (info.get("stderr_tail") or "").strip()
        out = (info.get("stdout_tail") or "").strip()
        if err:
            text += "\n--- its job's stderr (tail) ---\n" + err[-2000:]
        if out:
            text += "\n--- its job's stdout (tail) ---\n" + out[-2000:]
        return text


class BridgeProtocolError(RadicalEdgeError):
    """The bridge (or a fake one) broke the tunnel protocol, or an answer could not be read (not JSON).

    Not :class:`radical_edge_proto.ProtocolError` (the protocol core's own, raised by a
    :class:`~radical_edge_proto.Connection`): the SDK reports what it means for a call, with
    ``status``, ``detail`` and ``code``.  ``radical_edge_client.ProtocolError`` is a deprecated alias.
    """


class ChecksumMismatch(RadicalEdgeError):
    """A file moved by the staging client does not have the SHA-256 of its source.

    Nothing was put in place: the partial file (on the edge for an upload or a copy, locally for a
    download) was removed, so the next try starts from the beginning.
    """


class HTTPError(RadicalEdgeError):
    """Any other error status (400, 409, 422, 500, ...)."""


def expect_dict(value: Any, where: str) -> dict[str, Any]:
    """``value`` (a decoded answer) if it is a JSON object, else :class:`BridgeProtocolError` about ``where``."""
    if not isinstance(value, dict):
        raise BridgeProtocolError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def detail_of(body: bytes) -> Any:
    """The ``detail`` of an error envelope (or of any JSON object with one), else the body as text."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body[:2000].decode("utf-8", "replace").strip()
        return text or "(empty body)"
    if isinstance(parsed, dict) and "detail" in parsed:
        return parsed["detail"]
    return parsed


def error_for_status(status: int, body: bytes, *, where: str = "") -> RadicalEdgeError:
    """The exception for an error answer (``status`` >= 400) with ``body`` (the JSON error envelope).

    Who said 404 is read from the envelope's ``detail``, as the bridge, the edge
    and the session store word it (``unknown edge ...``, ``no plugin ...``,
    ``unknown session ...``); ``where`` (e.g. ``"GET /e1/sysinfo/metrics/..."``)
    is prepended to string details.
    """
    detail = detail_of(body)
    text = detail if isinstance(detail, str) else ""
    shown: Any = f"{where}: {detail}" if where and isinstance(detail, str) else detail
    if status in (401, 403):
        return AuthError(shown, status)
    if status == 404:
        if text.startswith(("unknown edge", "unknown or disconnected edge")):
            return EdgeNotFound(shown, status)
        if text.startswith("no plugin"):
            return PluginNotFound(shown, status)
        if text.startswith("unknown session"):
            return SessionNotFound(shown, status)
        return NotFound(shown, status)
    if status == 410:
        return SessionExpired(shown, status)
    if status == 503 and text.startswith("plugin "):
        return PluginNotFound(shown, status)
    if status in (502, 503):
        return EdgeUnavailable(shown, status)
    if status == 504:
        return RequestTimeout(shown, status)
    return HTTPError(shown, status)


_PROTOCOL_CODES = frozenset(
    {
        ErrorCode.PROTOCOL_ERROR,
        ErrorCode.FLOW_CONTROL_ERROR,
        ErrorCode.STREAM_CLOSED,
        ErrorCode.FRAME_SIZE_ERROR,
        ErrorCode.UNSUPPORTED_VERSION,
    }
)


def error_from_tunnel(exc: TunnelError, *, where: str = "") -> RadicalEdgeError:
    """The exception for a failure of the tunnel layer (dial, handshake, stream reset)."""
    prefix = f"{where}: " if where else ""
    code = exc.code
    if isinstance(exc, UpgradeRejectedError):
        if exc.status in (401, 403):
            return AuthError(exc.detail or str(exc), exc.status, code=code)
        return BridgeUnavailable(f"{prefix}{exc}", exc.status, code=code)
    if isinstance(exc, _TunnelTLSError):
        return TLSVerificationError(f"{prefix}{exc}", code=code)
    if isinstance(exc, ConnectError):
        return BridgeUnavailable(f"{prefix}{exc}", code=code)
    if code == ErrorCode.UNAUTHORIZED:
        return AuthError(f"{prefix}the bridge refused the credential: {exc}", code=code)
    if code in _PROTOCOL_CODES:
        return BridgeProtocolError(f"{prefix}{exc}", code=code)
    if isinstance(exc, HandshakeError):
        if code in (ErrorCode.CONNECTION_LOST, ErrorCode.TIMEOUT):
            return BridgeUnavailable(f"{prefix}{exc}", code=code)
        return BridgeProtocolError(f"{prefix}handshake failed: {exc}", code=code)
    if isinstance(exc, StreamResetError):
        if code in (ErrorCode.CONNECTION_LOST, ErrorCode.REFUSED_STREAM):
            return BridgeUnavailable(f"{prefix}the connection to the bridge was lost during the request", code=code)
        if code == ErrorCode.TIMEOUT:
            return RequestTimeout(f"{prefix}{exc}", code=code)
        return EdgeUnavailable(f"{prefix}the request was aborted before it completed: {exc}", code=code)
    return BridgeUnavailable(f"{prefix}{exc}", code=code)
