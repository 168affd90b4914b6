"""The bridge: serving (listener, HTTP, WebSocket upgrades), routing and its own routes.

It composes an :class:`EdgeHub` (edges on ``/register``: registry, topology,
edge events) and a :class:`ClientHub` (SDK clients on ``/connect``, readers of
``GET /events``), which share one :class:`EventHub`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import anyio.abc
import h11
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType
from wsproto.utilities import generate_accept_token

from radical_edge_proto import profile
from radical_edge_proto.profile import error_body
from radical_edge_tunnel import Carrier, WebSocketCarrier

from ._auth import Authenticator, bearer_from_headers, clear_session_cookie, credential_from_headers, session_cookie
from ._clients import ClientHub
from ._config import BridgeConfig
from ._deadlines import Deadlines
from ._edgehub import EdgeHub
from ._eventhub import EventHub
from ._exchange import BodyTooLarge, Exchange, RequestHead
from ._forward import forward
from ._http import BadRequest, ClientGone, HTTPChannel, request_has_body
from ._listener import ConnectionGate, ConnectionServer, HandshakeSlots, socket_listeners
from ._metrics import Metrics
from ._registry import RESERVED_NAMES, EdgeRegistry
from ._routes import Route, RouteTable
from ._throttle import AuthThrottle

log = logging.getLogger("radical_edge.bridge")

#: serves a connection upgraded to a WebSocket (it holds the carrier; nothing of the HTTP exchange)
Handoff = Callable[[], Awaitable[None]]
#: what closing a connection may raise when the peer is gone
_CLOSE_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)

#: the portal's own files (``GET /portal/{file}``): one lower-case name with one of these suffixes, so never a
#: path, a dot file, ``..`` or a Python file of the package
_PORTAL_FILE = re.compile(r"[a-z][a-z0-9_-]{0,63}\.(?:js|css|svg)")
_CONTENT_TYPES = {
    "html": b"text/html; charset=utf-8",
    "js": b"text/javascript; charset=utf-8",
    "css": b"text/css; charset=utf-8",
    "svg": b"image/svg+xml",
}
#: on every portal response: no inline script or style, nothing from another origin, no framing, no sniffing
PORTAL_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
PORTAL_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", PORTAL_CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
)


class Bridge:
    """Serving, routing and configuration; the edges are the :attr:`edge_hub`'s, the clients the
    :attr:`client_hub`'s, and the events they share are :attr:`events`."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.auth = Authenticator(config.token)
        self.throttle = AuthThrottle(config.auth_max_failures, config.auth_failure_window)
        self.events = EventHub(
            config.event_ring_size, config.subscriber_queue, config.event_ring_bytes, snapshot=self.topology
        )
        self.edge_hub = EdgeHub(config, self.auth, self.events)
        self.client_hub = ClientHub(
            config,
            self.auth,
            self.events,
            dispatch=lambda exchange, head: self.dispatch(exchange, head, authenticated=True),
        )
        self.metrics = Metrics()
        #: the TLS handshakes in progress (made when serving starts)
        self.handshake_slots: HandshakeSlots | None = None
        self.port: int | None = None
        limits = config.http
        #: the deadlines of the HTTP connections' reads and writes (see HTTPChannel): ticks of up to a second
        self._deadlines = Deadlines(min(1.0, limits.idle_timeout / 4, limits.write_timeout / 4))
        self._stopped = anyio.Event()
        self.routes = self._route_table()
        #: the WebSocket endpoints: path -> who serves the connection once it is upgraded
        self.websocket_routes: dict[str, Callable[[Carrier], Awaitable[None]]] = {
            profile.REGISTER_PATH: self.edge_hub.serve_edge,
            profile.CONNECT_PATH: self.client_hub.serve,
        }

    @property
    def registry(self) -> EdgeRegistry:
        """The edges known (the :attr:`edge_hub`'s registry)."""
        return self.edge_hub.registry

    # ---------------------------------------------------------------- serving

    @property
    def url(self) -> str:
        scheme = "http" if self.config.insecure_no_tls else "https"
        return f"{scheme}://{self.config.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        assert self.config.cert is not None
        ctx.load_cert_chain(str(self.config.cert), str(self.config.key) if self.config.key else None)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen until :meth:`stop` (or ``POST /bridge/terminate``)."""
        listener = await anyio.create_tcp_listener(
            local_host=self.config.host, local_port=self.config.port, reuse_port=False
        )
        sockname = listener.extra(anyio.abc.SocketAttribute.local_address)
        self.port = int(sockname[1])
        ssl_context = None if self.config.insecure_no_tls else self.ssl_context()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._serve_listener, listener, ssl_context)
            tg.start_soon(self._deadlines.run)
            tg.start_soon(self.edge_hub.expire_periodically)
            if self.config.plugins:
                tg.start_soon(self.edge_hub.host_plugins, list(self.config.plugins))
            task_status.started()
            await self._stopped.wait()
            tg.cancel_scope.cancel()

    async def _serve_listener(self, listener: anyio.abc.Listener[Any], ssl_context: ssl.SSLContext | None) -> None:
        """Accept until cancelled: connection caps, EMFILE back-off and the TLS handshake (when
        ``ssl_context`` is given) are the :class:`ConnectionServer`'s; HTTP is :meth:`_handle_connection`'s."""
        config = self.config
        gate = ConnectionGate(config.max_connections, config.max_connections_per_peer, self.metrics.connections)
        slots = HandshakeSlots(config.tls_handshake_concurrency, config.tls_handshake_concurrency_per_peer)
        self.handshake_slots = slots
        server = ConnectionServer(
            self._handle_connection,
            gate,
            ssl_context=ssl_context,
            handshake_timeout=config.tls_handshake_timeout,
            handshake_slots=slots,
        )
        async with listener:
            await server.serve(socket_listeners(listener))

    def stop(self) -> None:
        """Stop serving; :meth:`serve` returns.  Edges keep running and reconnect to the next bridge."""
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _handle_connection(self, stream: anyio.abc.ByteStream) -> None:
        handoff = await self._serve_http(stream)
        if handoff is None:
            return
        # an upgraded connection: served with its carrier alone.  The HTTP state (the h11 connection, the
        # upgrade request and its headers) went with _serve_http's frame, so a long-lived WebSocket does
        # not keep it (a few KiB per connection, times every idle edge and SDK client)
        try:
            await handoff()
        except Exception:
            log.exception("error while serving a WebSocket connection")
        finally:
            with anyio.move_on_after(1, shield=True), contextlib.suppress(*_CLOSE_ERRORS):
                await stream.aclose()

    async def _serve_http(self, stream: anyio.abc.ByteStream) -> Handoff | None:
        """Serve HTTP/1.1 requests until the connection ends (closed here), or until one is upgraded to a
        WebSocket: then the connection is not closed, and what serves the WebSocket is returned."""
        channel = HTTPChannel(stream, self.config.http, self._deadlines)
        peer = _peer(stream)  # once per connection: anyio builds every attribute of a TLS stream to look one up
        handoff: Handoff | None = None
        try:
            while True:
                request = await channel.next_request()
                if request is None:
                    break
                handoff = await self._handle_request(channel, request, peer)
                if handoff is not None or not channel.keep_alive:
                    break
        except (ClientGone, h11.LocalProtocolError, h11.RemoteProtocolError) as exc:
            log.debug("client connection ended: %s", exc)
        except Exception:
            # one connection's failure must never disturb the others or the listener
            log.exception("error while serving a connection")
        finally:
            if handoff is None:
                await channel.aclose()
            else:
                channel.release()
        return handoff

    # ---------------------------------------------------------------- routing

    async def _handle_request(self, channel: HTTPChannel, request: h11.Request, peer: str) -> Handoff | None:
        """Answer one HTTP request (``peer``: the caller's address); for an accepted WebSocket upgrade, what
        serves the WebSocket."""
        headers = list(request.headers)
        names = {n for n, _ in headers}
        if b"transfer-encoding" in names and b"content-length" in names:
            # RFC 9112 6.1: ambiguous framing (a request smuggling shape); refuse it and close
            await channel.send_error(400, "both Content-Length and Transfer-Encoding: send one", close=True)
            return None
        target = origin_form(request.target)
        if target is None:
            await channel.send_error(400, "the request target must be a path or an absolute http(s) URL", close=True)
            return None
        if _is_websocket(headers):
            return await self._websocket(channel, request, urlsplit(target.decode("latin-1")).path, peer)
        head = RequestHead(request.method, target, headers, request_has_body(request), peer)
        await self.dispatch(channel, head, authenticated=False)
        return None

    def _route_table(self) -> RouteTable:
        return RouteTable(
            [
                Route.make("GET", "/", self._index, public=True),
                Route.make("GET", "/healthz", self._healthz, public=True),
                Route.make("POST", "/auth", self._auth_route, public=True),
                Route.make("GET", "/auth", self._auth_status, public=True),
                Route.make("DELETE", "/auth", self._sign_out, public=True),
                Route.make(
                    "GET", "/plugins/{name}.js", self._portal_module, public=True, name=profile.PLUGIN_NAME.pattern
                ),
                Route.make("GET", "/portal/{file}", self._portal_file, public=True, file=_PORTAL_FILE.pattern),
                Route.make("GET", "/edges", self._edges),
                Route.make("POST", "/edge/list", self._edge_list),
                Route.make("POST", "/edge/disconnect/{name}", self._disconnect_route),
                Route.make("POST", "/bridge/terminate", self._terminate),
                Route.make("GET", "/metrics", self._metrics),
                Route.make("GET", "/events", self._events_route, head=False),
            ]
        )

    async def dispatch(self, exchange: Exchange, head: RequestHead, *, authenticated: bool) -> None:
        """Route one request, from HTTP or from an SDK client's tunnel stream."""
        target = head.target.decode("latin-1")
        path, _, query = target.partition("?")
        method = head.method.decode("latin-1")
        try:
            if not path.startswith("/"):
                raise BadRequest(400, "the request target must be a path")
            found = self.routes.find(method, path)
            public = found is not None and found.public
            if not (authenticated or public) and not await self._check_credential(exchange, head.headers, head.peer):
                return
            if found is None:
                await self._forward_route(exchange, head, path)
            elif not found.allowed:
                allow = ", ".join(sorted(found.allow)).encode()
                await exchange.send_bytes(
                    405, error_body(405, f"{method} is not allowed here"), extra=[(b"allow", allow)]
                )
            else:
                await found.route.handler(exchange, head, found.params, query)
        except BodyTooLarge as exc:
            await exchange.send_error(413, str(exc), close=True)
        except BadRequest as exc:
            await exchange.send_error(exc.status, exc.detail, close=True)

    async def _check_credential(
        self, exchange: Exchange, headers: list[tuple[bytes, bytes]], peer: str, *, bearer_only: bool = False
    ) -> bool:
        """True if the request's credential is good; else answered: 401, or 429 for a peer that sent too many
        wrong ones lately (it is then not even checked, so a right guess is not confirmed)."""
        presented = (bearer_from_headers if bearer_only else credential_from_headers)(headers) is not None
        if presented and peer and (wait := self.throttle.retry_after(peer)) is not None:
            await _too_many_failures(exchange, wait)
            return False
        if self.auth.check_bearer(headers) if bearer_only else self.auth.check_headers(headers):
            return True
        if presented and peer:
            self.throttle.failed(peer)
        await _unauthorized(exchange)
        return False

    # ---------------------------------------------------------------- the bridge's own routes

    async def _healthz(self, channel: Exchange, request: RequestHead, params: Mapping[str, str], query: str) -> None:
        await channel.send_json(
            200,
            {
                "status": "ok",
                "edges": sum(e.connected for e in self.registry.entries()),
                # for SDK clients resuming events: the numbering's epoch and where it is now
                "event_epoch": self.events.epoch,
                "last_event_seq": self.events.last_seq,
            },
        )

    async def _index(self, channel: Exchange, request: RequestHead, params: Mapping[str, str], query: str) -> None:
        await _send_portal_file(channel, "index.html")

    async def _portal_file(
        self, channel: Exchange, request: RequestHead, params: Mapping[str, str], query: str
    ) -> None:
        await _send_portal_file(channel, params["file"])

    async def _edge_list(self, channel: Exchange, request: RequestHead, params: Mapping[str, str], query: str) -> None:
        await channel.drain_body()
        await channel.send_json(200, {"data": self.topology()})

    async def _edges(self, channel: Exchange, request: RequestHead, params: Mapping[str, str], query: str) -> None:
        edges = [
            {
                "name": e.name,
                "plugins": sorted(e.manifest),
                "connected": e.connected,
                "plugin_count": len(e.manifest),
            }
            for e in self.registry.entries()
        ]
        await channel.send_json(200, {"edges": edges, "total": len(edges)})

    async def _terminate(self, channel: Exchange, request: RequestHead, params: Mapping[str, str], query: str) -> None:
        await channel.drain_body()
        await channel.send_json(200, {"status": "terminating"})
        self.stop()

    async def _metrics(self, channel: Exchange, request: RequestHead, params: Mapping[str, str], query: str) -> None:
        entries = self.registry.entries()
        body = self.metrics.render(
            edges_connected=sum(e.connected for e in entries),
            edges_known=len(entries),
            subscribers=len(self.events),
            ring_events=self.events.ring_events,
            ring_bytes=self.events.ring_bytes,
        )
        await channel.send_bytes(200, body, b"text/plain; version=0.0.4")

    async def _events_route(
        self, channel: Exchange, request: RequestHead, params: Mapping[str, str], query: str
    ) -> None:
        await self.client_hub.sse(channel, request, query)

    async def _portal_module(
        self, channel: Exchange, request: RequestHead, params: Mapping[str, str], query: str
    ) -> None:
        name = params["name"]
        await _send_portal_file(channel, f"plugins/{name}.js", missing=f"no portal module for plugin {name!r}")

    async def _auth_route(self, channel: Exchange, request: RequestHead, params: Mapping[str, str], query: str) -> None:
        body = await channel.drain_body(64 * 1024)
        try:
            token = json.loads(body or b"{}").get("token")
        except (ValueError, AttributeError, RecursionError):
            raise BadRequest(400, 'body must be JSON {"token": "..."}') from None
        if request.peer and (wait := self.throttle.retry_after(request.peer)) is not None:
            await _too_many_failures(channel, wait)
        elif not self.auth.enabled or (isinstance(token, str) and self.auth.check_secret(token)):
            cookie = session_cookie(token or "", secure=not self.config.insecure_no_tls)
            await channel.send_json(200, {"authenticated": True}, extra=[(b"set-cookie", cookie)])
        else:
            if request.peer:
                self.throttle.failed(request.peer)
            await channel.send_error(401, "wrong token")

    async def _auth_status(
        self, channel: Exchange, request: RequestHead, params: Mapping[str, str], query: str
    ) -> None:
        """Whether this request's credential (cookie or bearer token) is good: the portal asks before it shows
        the sign-in form, without a 401 in the browser's console.  Says nothing else."""
        await channel.send_json(200, {"authenticated": self.auth.check_headers(request.headers)})

    async def _sign_out(self, channel: Exchange, request: RequestHead, params: Mapping[str, str], query: str) -> None:
        """Clear the portal's cookie in this browser (the token itself stays valid: it is the bridge's)."""
        await channel.drain_body(64 * 1024)
        cleared = clear_session_cookie(secure=not self.config.insecure_no_tls)
        await channel.send_json(200, {"authenticated": False}, extra=[(b"set-cookie", cleared)])

    async def _disconnect_route(
        self, channel: Exchange, request: RequestHead, params: Mapping[str, str], query: str
    ) -> None:
        name = unquote(params["name"])
        await channel.drain_body()
        if name in RESERVED_NAMES:
            await channel.send_error(400, f"{name!r} is the bridge itself")
            return
        if not await self.edge_hub.disconnect(name, "disconnected by the bridge operator"):
            await channel.send_error(404, f"unknown or disconnected edge {name!r}")
            return
        await channel.send_json(200, {"status": "disconnected", "edge": name})

    async def _forward_route(self, channel: Exchange, request: RequestHead, path: str) -> None:
        segments = path.split("/")
        if len(segments) < 3 or not segments[1] or not segments[2]:
            await channel.send_error(404, f"no route for {path!r}")
            return
        edge_name = unquote(segments[1])
        entry = self.registry.get(edge_name)
        if entry is None:
            await channel.send_error(404, f"unknown edge {edge_name!r}")
            return
        tunnel = entry.tunnel
        if tunnel is None or tunnel.is_closed:
            await channel.send_error(503, f"edge {edge_name!r} is not connected")
            return
        raw_target = request.target.decode("latin-1")
        tunnel_path = raw_target[len(segments[1]) + 1 :]
        await forward(
            channel,
            request,
            tunnel,
            tunnel_path,
            caller="token" if self.auth.enabled else "anonymous",
            root_path=f"/{segments[1]}",
            timeout=self.config.request_timeout,
            metrics=self.metrics,
        )

    # ---------------------------------------------------------------- topology

    def topology(self) -> dict[str, Any]:
        """The whole view (``POST /edge/list``, and the snapshot a new event subscriber gets first)."""
        return {"bridge": {"url": self.url}, "edges": self.edge_hub.edge_states()}

    # ---------------------------------------------------------------- WebSocket endpoints

    async def _websocket(self, channel: HTTPChannel, request: h11.Request, path: str, peer: str) -> Handoff | None:
        """Accept (or refuse) an upgrade to a WebSocket; accepted, what serves it (the caller runs it)."""
        serve = self.websocket_routes.get(path)
        if serve is None:
            await channel.send_error(404, f"no WebSocket endpoint at {path!r}")
            return None
        headers = list(request.headers)
        # edges and SDK clients send the bearer token; the portal's cookie is no credential here (a page on
        # another site could open a WebSocket to the bridge with it: cross-site WebSocket hijacking)
        if not await self._check_credential(channel, headers, peer, bearer_only=True):
            return None
        key = next((v for n, v in headers if n == b"sec-websocket-key"), None)
        if key is None:
            await channel.send_error(400, "missing Sec-WebSocket-Key")
            return None
        pending = await channel.accept_websocket(generate_accept_token(key))
        return functools.partial(serve, WebSocketCarrier(channel.stream, WSConnection(ConnectionType.SERVER), pending))


async def _send_portal_file(channel: Exchange, name: str, *, missing: str | None = None) -> None:
    """A file of the ``radical_edge_portal`` package, with the portal's security headers.  ``name`` has passed a
    route's strict pattern (one name, or ``plugins/`` and one name), so it cannot leave the package."""
    try:
        body = (resources.files("radical_edge_portal") / name).read_bytes()
    except (OSError, ModuleNotFoundError):
        await channel.send_error(404, missing or f"no portal file {name!r}")
        return
    content_type = _CONTENT_TYPES[name.rpartition(".")[2]]
    await channel.send_bytes(200, body, content_type, PORTAL_HEADERS)


def _peer(stream: anyio.abc.ByteStream) -> str:
    """The caller's IP address ("" if the stream has none, e.g. a Unix socket)."""
    address = stream.extra(anyio.abc.SocketAttribute.remote_address, None)
    return str(address[0]) if isinstance(address, tuple) and address else ""


async def _too_many_failures(channel: Exchange, wait: int) -> None:
    await channel.send_bytes(
        429,
        error_body(429, f"too many wrong credentials from this address; try again in {wait} s"),
        extra=[(b"retry-after", str(wait).encode())],
    )


async def _unauthorized(channel: Exchange) -> None:
    await channel.send_bytes(
        401,
        error_body(401, "missing or wrong bearer token"),
        extra=[(b"www-authenticate", b'Bearer realm="radical-edge"')],
    )


def origin_form(target: bytes) -> bytes | None:
    """``target`` as a path with its query (origin-form); an absolute http(s) URL is reduced to its
    path and query (RFC 9112 3.2.2).  None for any other form (``*``, authority-form, no scheme)."""
    if target.startswith(b"/"):
        return target
    parts = urlsplit(target.decode("latin-1"))
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    path = parts.path or "/"
    return (path + (f"?{parts.query}" if parts.query else "")).encode("latin-1")


def _is_websocket(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(n == b"upgrade" and v.lower() == b"websocket" for n, v in headers)


__all__ = ["Bridge"]
