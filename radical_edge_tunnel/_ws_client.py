"""Dial a hub's WebSocket endpoint (TCP, TLS verified, HTTP upgrade) and return a carrier.

Used by the edge service (``/register``) and the SDK (the client endpoint).
Every way dialling can fail ends in one :class:`ConnectError` subclass with a
message a user can act on:

.. code-block:: text

    TunnelError
    └── ConnectError             DNS, TCP, timeout, TLS or upgrade failure
        ├── TLSVerificationError the hub's certificate is not trusted (wrong CA, wrong host name)
        └── UpgradeRejectedError the hub answered the upgrade with an HTTP error (``status``)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import ssl
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.utilities import ProtocolError as WSProtocolError

from radical_edge_proto import ErrorCode

from ._carrier import WebSocketCarrier
from ._reads import LargeReads
from ._tunnel import TunnelError

log = logging.getLogger("radical_edge.tunnel")

#: how much of a refused upgrade's body is kept for the error message
_MAX_REJECT_BODY = 64 * 1024
_READ_SIZE = 64 * 1024


class ConnectError(TunnelError):
    """The hub could not be reached or refused the WebSocket upgrade."""

    def __init__(self, msg: str, code: ErrorCode | int = ErrorCode.CONNECTION_LOST) -> None:
        super().__init__(msg, code)


class TLSVerificationError(ConnectError):
    """The hub's TLS certificate failed verification (untrusted CA, expired, wrong host name)."""


class UpgradeRejectedError(ConnectError):
    """The hub answered the upgrade request with an HTTP status other than 101.

    ``status`` is that status, ``body`` (at most 64 KiB of) the answer's body,
    ``detail`` the envelope's ``detail`` when the body was one.
    """

    def __init__(self, msg: str, status: int, body: bytes, detail: str | None) -> None:
        code = ErrorCode.UNAUTHORIZED if status in (401, 403) else ErrorCode.CONNECTION_LOST
        super().__init__(msg, code)
        self.status = status
        self.body = body
        self.detail = detail


def websocket_url(url: str, path: str) -> str:
    """Normalise a hub URL: ``http`` -> ``ws``, ``https`` -> ``wss``, and make it end in ``path``.

    ``https://host:8000`` becomes ``wss://host:8000/register`` (for ``path="/register"``);
    ``https://host/prefix`` becomes ``wss://host/prefix/register``; a URL already
    ending in ``path`` is kept.  Raises ``ValueError`` for other schemes or no host.
    """
    parts = urlsplit(url.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"bridge URL {url!r}: the scheme must be http, https, ws or wss")
    if not parts.hostname:
        raise ValueError(f"bridge URL {url!r} has no host")
    base = parts.path.rstrip("/")
    if not base.endswith(path):
        base += path
    return urlunsplit((scheme, parts.netloc, base, parts.query, ""))


def client_ssl_context(
    ca_file: str | os.PathLike[str] | None = None, *, insecure_skip_tls_verify: bool = False
) -> ssl.SSLContext:
    """A TLS client context: trusts ``ca_file`` if given, else the system store; verifies host names.

    ``insecure_skip_tls_verify`` turns verification off entirely (and says so loudly in the log).
    """
    if ca_file is not None and not os.path.isfile(ca_file):
        raise ConnectError(f"CA file {os.fspath(ca_file)!r} does not exist or is not a file")
    try:
        ctx = ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file is not None else None)
    except ssl.SSLError as exc:
        raise ConnectError(f"cannot load the CA file {os.fspath(ca_file or '')!r}: {exc}") from exc
    if insecure_skip_tls_verify:
        log.warning(
            "TLS VERIFICATION IS OFF (--insecure-skip-tls-verify): anyone on the network path can "
            "impersonate the bridge and read the token and all traffic"
        )
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _host_header(host: str, port: int, secure: bool) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == (443 if secure else 80) else f"{shown}:{port}"


async def connect_websocket(
    url: str,
    *,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    headers: Iterable[tuple[str, str]] = (),
    timeout: float = 10.0,
    tls_server_name: str | None = None,
) -> WebSocketCarrier:
    """Open a WebSocket to ``url`` (``ws://`` or ``wss://``) and return it as a carrier.

    ``token`` goes out as ``Authorization: Bearer TOKEN`` on the upgrade
    request.  For ``wss://`` the certificate is verified with ``ssl_context``
    (default: the system store, see :func:`client_ssl_context`) for the URL's host, or for
    ``tls_server_name`` when given (a bridge reached through a port forward).  The whole
    dial (TCP, TLS, upgrade) runs under ``timeout``.  Raises
    :class:`ConnectError` (or a subclass) on every failure; nothing else escapes.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConnectError(f"not a WebSocket URL: {url!r}")
    secure = parts.scheme == "wss"
    host = parts.hostname
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError as exc:
        raise ConnectError(f"{url!r}: {exc}") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        extra = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        if token:
            extra.append((b"authorization", f"Bearer {token}".encode("ascii")))
        ws = WSConnection(ConnectionType.CLIENT)
        upgrade = ws.send(Request(host=_host_header(host, port, secure), target=target, extra_headers=extra))
    except Exception as exc:  # h11 refuses control characters; encode() non-ASCII tokens
        raise ConnectError(f"cannot build the upgrade request for {url}: the token or a header is malformed") from exc

    stream: anyio.abc.ByteStream | None = None
    try:
        with anyio.fail_after(timeout):
            try:
                if secure:
                    ctx = ssl_context if ssl_context is not None else client_ssl_context()
                    sock = await anyio.connect_tcp(host, port)
                    try:
                        stream = await TLSStream.wrap(
                            LargeReads(sock), hostname=tls_server_name or host, ssl_context=ctx
                        )
                    except BaseException:
                        await anyio.aclose_forcefully(sock)
                        raise
                else:
                    stream = LargeReads(await anyio.connect_tcp(host, port))
            except ssl.SSLCertVerificationError as exc:
                raise TLSVerificationError(
                    f"TLS certificate of {host}:{port} not trusted: {exc.verify_message or exc}; "
                    "give the CA that signed the bridge certificate (--cert / RADICAL_BRIDGE_CERT)"
                ) from None
            except ssl.SSLError as exc:
                raise ConnectError(f"TLS handshake with {host}:{port} failed: {exc}") from None
            except (OSError, anyio.BrokenResourceError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                raise ConnectError(f"cannot connect to {host}:{port}: {reason}") from None
            await stream.send(upgrade)
            await _await_accept(stream, ws, url)
            carrier = WebSocketCarrier(stream, ws)
            stream = None  # owned by the carrier now
            return carrier
    except TimeoutError:
        raise ConnectError(f"connecting to {url} timed out after {timeout} s", ErrorCode.TIMEOUT) from None
    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError, WSProtocolError) as exc:
        raise ConnectError(f"the WebSocket upgrade at {url} failed: {exc or type(exc).__name__}") from None
    finally:
        if stream is not None:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await anyio.aclose_forcefully(stream)


async def _await_accept(stream: anyio.abc.ByteStream, ws: WSConnection, url: str) -> None:
    status: int | None = None
    body = bytearray()
    while True:
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                return
            if isinstance(event, RejectConnection):
                status = event.status_code
                if not event.has_body:
                    _rejected(url, status, bytes(body))
            elif isinstance(event, RejectData):
                if len(body) < _MAX_REJECT_BODY:
                    body += event.data[: _MAX_REJECT_BODY - len(body)]
                if event.body_finished:
                    assert status is not None
                    _rejected(url, status, bytes(body))
        try:
            data = await stream.receive(_READ_SIZE)
        except anyio.EndOfStream:
            if status is not None:
                _rejected(url, status, bytes(body))
            raise ConnectError(f"{url}: the server closed the connection during the WebSocket upgrade") from None
        ws.receive_data(data)


def _rejected(url: str, status: int, body: bytes) -> None:
    detail: str | None = None
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        parsed = json.loads(body)
        if isinstance(parsed, dict) and "detail" in parsed:
            detail = str(parsed["detail"])
    if detail is None and body:
        detail = body[:200].decode("utf-8", "replace").strip() or None
    hint = {
        401: " (missing or wrong token: check --token / RADICAL_BRIDGE_TOKEN)",
        403: " (the token is not allowed here)",
        404: " (no WebSocket endpoint at that path: check the URL)",
    }.get(status, "")
    text = f"the server at {url} refused the WebSocket upgrade with HTTP {status}"
    if detail:
        text += f": {detail}"
    raise UpgradeRejectedError(text + hint, status, body, detail)
