"""The bridge: TLS listener, HTTP routing, edge registration, event stream."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import ssl
from collections.abc import Mapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import anyio
import anyio.abc
import h11
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType
from wsproto.utilities import generate_accept_token

from radical_edge_proto import (
    Connection,
    ConnectionClosed,
    ErrorCode,
    GoAway,
    Hello,
    ManifestUpdated,
    Notification,
    PeerRole,
    Side,
    edge_name_error,
)
from radical_edge_tunnel import (
    Carrier,
    HandshakeError,
    Tunnel,
    TunnelClosedError,
    TunnelStream,
    WebSocketCarrier,
    error_body,
    memory_carrier_pair,
)
from radical_edge_tunnel import accept_handshake as hub_handshake

from ._auth import Authenticator, session_cookie
from ._clients import serve_client
from ._config import BridgeConfig
from ._eventhub import BridgeEvent, EventHub
from ._exchange import BodyTooLarge, Exchange, RequestHead
from ._forward import forward
from ._http import BadRequest, ClientGone, HTTPChannel, request_has_body
from ._listener import ConnectionGate, ConnectionServer, socket_listeners
from ._metrics import Metrics
from ._registry import BRIDGE_EDGE, RESERVED_NAMES, Claim, EdgeEntry, EdgeRegistry, NameTaken
from ._routes import Route, RouteTable

log = logging.getLogger("radical_edge.bridge")

#: plugin names as they may appear in a portal module's file name (no dots, no slashes)
_PLUGIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
#: GOAWAY code an edge reads as "shut down, do not reconnect"
SHUTDOWN_CODE = ErrorCode.CANCEL


class Bridge:
    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.auth = Authenticator(config.token)
        self.registry = EdgeRegistry(config.edge_ttl, config.max_disconnected_edges)
        self.events = EventHub(
            config.event_ring_size, config.subscriber_queue, config.event_ring_bytes, snapshot=self.topology
        )
        self.metrics = Metrics()
        self.port: int | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._stopped = anyio.Event()
        self.routes = self._route_table()

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
            self._tg = tg
            tg.start_soon(self._serve_listener, listener, ssl_context)
            tg.start_soon(self._expire_edges_periodically)
            if self.config.plugins:
                tg.start_soon(self._host_own_plugins)
            task_status.started()
            await self._stopped.wait()
            tg.cancel_scope.cancel()

    async def _host_own_plugins(self) -> None:
        """Run the bridge's own plugins as the edge ``bridge``: the same plugin host an edge
        uses, over an in-memory carrier instead of a WebSocket."""
        try:
            from radical_edge_edge import EdgeService  # noqa: PLC0415  (optional: needs the edge extra)
        except ImportError as exc:
            log.error("cannot host plugins in the bridge: %s (install radical-edge[edge])", exc)
            return

        async def connector() -> Carrier:
            mine, theirs = memory_carrier_pair()
            assert self._tg is not None
            self._tg.start_soon(functools.partial(self._serve_edge, theirs, internal=True))
            return mine

        service = EdgeService(BRIDGE_EDGE, plugins=list(self.config.plugins), connector=connector)
        await service.run()

    async def _serve_listener(self, listener: anyio.abc.Listener[Any], ssl_context: ssl.SSLContext | None) -> None:
        """Accept until cancelled: connection caps, EMFILE back-off and the TLS handshake (when
        ``ssl_context`` is given) are the :class:`ConnectionServer`'s; HTTP is :meth:`_handle_connection`'s."""
        config = self.config
        gate = ConnectionGate(config.max_connections, config.max_connections_per_peer, self.metrics.connections)
        server = ConnectionServer(
            self._handle_connection, gate, ssl_context=ssl_context, handshake_timeout=config.tls_handshake_timeout
        )
        async with listener:
            await server.serve(socket_listeners(listener))

    def stop(self) -> None:
        """Stop serving; :meth:`serve` returns.  Edges keep running and reconnect to the next bridge."""
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _handle_connection(self, stream: anyio.abc.ByteStream) -> None:
        channel = HTTPChannel(stream, self.config.http)
        try:
            while True:
                request = await channel.next_request()
                if request is None:
                    break
                upgraded = await self._handle_request(channel, request)
                if upgraded or not channel.keep_alive:
                    break
        except (ClientGone, h11.LocalProtocolError, h11.RemoteProtocolError) as exc:
            log.debug("client connection ended: %s", exc)
        except Exception:
            # one connection's failure must never disturb the others or the listener
            log.exception("error while serving a connection")
        finally:
            await channel.aclose()

    # ---------------------------------------------------------------- routing

    async def _handle_request(self, channel: HTTPChannel, request: h11.Request) -> bool:
        """Answer one HTTP request; True if the connection was handed to a WebSocket."""
        headers = list(request.headers)
        names = {n for n, _ in headers}
        if b"transfer-encoding" in names and b"content-length" in names:
            # RFC 9112 6.1: ambiguous framing (a request smuggling shape); refuse it and close
            await channel.send_error(400, "both Content-Length and Transfer-Encoding: send one", close=True)
            return False
        target = origin_form(request.target)
        if target is None:
            await channel.send_error(400, "the request target must be a path or an absolute http(s) URL", close=True)
            return False
        if _is_websocket(headers):
            return await self._websocket(channel, request, urlsplit(target.decode("latin-1")).path)
        head = RequestHead(request.method, target, headers, request_has_body(request))
        await self.dispatch(channel, head, authenticated=False)
        return False

    def _route_table(self) -> RouteTable:
        return RouteTable(
            [
                Route.make("GET", "/", self._index, public=True),
                Route.make("GET", "/healthz", self._healthz, public=True),
                Route.make("POST", "/auth", self._auth_route, public=True),
                Route.make("GET", "/plugins/{name}.js", self._portal_module, public=True, name=_PLUGIN_NAME.pattern),
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
            if not (authenticated or public or self.auth.check_headers(head.headers)):
                await _unauthorized(exchange)
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
        await channel.send_bytes(200, _PORTAL_PLACEHOLDER, b"text/html; charset=utf-8")

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
        await self._sse(channel, request, query)

    async def _portal_module(
        self, channel: Exchange, request: RequestHead, params: Mapping[str, str], query: str
    ) -> None:
        name = params["name"]
        try:
            body = (resources.files("radical_edge_portal") / "plugins" / f"{name}.js").read_bytes()
        except (FileNotFoundError, ModuleNotFoundError):
            await channel.send_error(404, f"no portal module for plugin {name!r}")
            return
        await channel.send_bytes(200, body, b"text/javascript; charset=utf-8")

    async def _auth_route(self, channel: Exchange, request: RequestHead, params: Mapping[str, str], query: str) -> None:
        body = await channel.drain_body(64 * 1024)
        try:
            token = json.loads(body or b"{}").get("token")
        except (ValueError, AttributeError, RecursionError):
            raise BadRequest(400, 'body must be JSON {"token": "..."}') from None
        if not self.auth.enabled or (isinstance(token, str) and self.auth.check_secret(token)):
            cookie = session_cookie(token or "", secure=not self.config.insecure_no_tls)
            await channel.send_json(200, {"authenticated": True}, extra=[(b"set-cookie", cookie)])
        else:
            await channel.send_error(401, "wrong token")

    async def _disconnect_route(
        self, channel: Exchange, request: RequestHead, params: Mapping[str, str], query: str
    ) -> None:
        name = unquote(params["name"])
        await channel.drain_body()
        if name in RESERVED_NAMES:
            await channel.send_error(400, f"{name!r} is the bridge itself")
            return
        entry = self.registry.get(name)
        if entry is None or entry.tunnel is None:
            await channel.send_error(404, f"unknown or disconnected edge {name!r}")
            return
        await entry.tunnel.aclose(SHUTDOWN_CODE, "disconnected by the bridge operator")
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
        if tunnel is None or tunnel.conn.closed:
            await channel.send_error(503, f"edge {edge_name!r} is not connected")
            return
        raw_target = request.target.decode("latin-1")
        tunnel_path = raw_target[len(segments[1]) + 1 :]

        async def open_stream(m: str, p: str, h: list[tuple[bytes, bytes]], end: bool) -> TunnelStream:
            return await tunnel.request(m, p, h, end_stream=end)

        await forward(
            channel,
            request,
            open_stream,
            tunnel_path,
            caller="token" if self.auth.enabled else "anonymous",
            root_path=f"/{segments[1]}",
            timeout=self.config.request_timeout,
            metrics=self.metrics,
        )

    # ---------------------------------------------------------------- topology and events

    def topology(self) -> dict[str, Any]:
        """The whole view (``POST /edge/list``, and the snapshot a new event subscriber gets first)."""
        edges = {e.name: self._edge_state(e) for e in self.registry.entries()}
        return {"bridge": {"url": self.url}, "edges": edges}

    @staticmethod
    def _edge_state(e: EdgeEntry) -> dict[str, Any]:
        """One edge as in ``topology()["edges"][NAME]``."""
        return {
            "endpoint": {"connected": e.connected, "connected_since": e.connected_since},
            "plugins": {
                name: {
                    "type": info.get("type", name),
                    "namespace": f"/{e.name}/{name}",
                    "version": info.get("version"),
                    "enabled": info.get("enabled", True),
                    "ui_config": info.get("ui_config", {}),
                    **({"error": info["error"]} if info.get("error") else {}),
                }
                for name, info in sorted(e.manifest.items())
                if isinstance(info, dict)
            },
        }

    def _publish_topology(self, entry: EdgeEntry, change: str) -> None:
        """Publish that one edge changed: ``connected``, ``disconnected``, ``updated`` or ``removed``.

        The event holds that edge only (never the whole list, which would make
        every event, and the replay ring, grow with the number of edges).
        """
        state = None if change == "removed" else self._edge_state(entry)
        self.events.publish("topology_change", {"edge": entry.name, "change": change, "state": state})

    def _expire_edges(self) -> None:
        """Forget disconnected edges past the TTL or beyond the cap (:class:`EdgeRegistry`), telling subscribers."""
        for entry in self.registry.expire():
            log.info("edge %s forgotten (disconnected too long, or too many disconnected edges)", entry.name)
            self._publish_topology(entry, "removed")

    async def _expire_edges_periodically(self) -> None:
        """Runs while serving: wakes when the longest-disconnected edge is due (at least once a minute)."""
        while True:
            due = self.registry.next_expiry()
            await anyio.sleep(min(60.0, self.registry.ttl if due is None else due) + 0.001)
            self._expire_edges()

    async def _sse(self, channel: Exchange, request: RequestHead, query: str) -> None:
        await channel.drain_body()
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        edge, plugin, topic = params.get("edge", "*"), params.get("plugin", "*"), params.get("topic", "*")
        header_id = next((v for n, v in request.headers if n == b"last-event-id"), None)
        last_id = header_id.decode("latin-1") if header_id is not None else params.get("last_event_id")
        sub = self.events.subscribe(edge, plugin, topic)
        try:
            await channel.start_response(
                200,
                [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"transfer-encoding", b"chunked"),
                ],
            )
            sent = self.events.last_seq
            if last_id is not None:
                try:
                    after = int(last_id)
                except ValueError:
                    after = -1
                replay = self.events.replay(after, edge, plugin, topic) if after >= 0 else None
                if replay is None or replay.gap:
                    oldest = replay.oldest if replay else 0
                    gap = {"topic": "gap", "data": {"last_event_id": last_id, "oldest_available": oldest}}
                    await channel.send_body(_sse_frame(None, gap))
                for event in replay.events if replay else []:
                    await channel.send_body(_sse_event(event))
                sent = max([sent, *(e.seq for e in (replay.events if replay else []))])
            await channel.send_body(_sse_frame(sent, {"topic": "topology", "data": self.topology()}))
            assert sub.receive is not None
            while True:
                with anyio.move_on_after(self.config.sse_keepalive) as scope:
                    try:
                        event = await sub.receive.receive()
                    except (anyio.EndOfStream, anyio.ClosedResourceError):
                        return  # dropped: too slow; the client resumes with Last-Event-ID
                if scope.cancelled_caught:
                    await channel.send_body(b": keep-alive\n\n")
                    continue
                if event.seq <= sent:
                    continue
                await channel.send_body(_sse_event(event))
        finally:
            self.events.unsubscribe(sub)
            with contextlib.suppress(ClientGone, h11.LocalProtocolError):
                await channel.end_response()

    # ---------------------------------------------------------------- WebSocket endpoints

    async def _websocket(self, channel: HTTPChannel, request: h11.Request, path: str) -> bool:
        if path not in ("/register", "/connect"):
            await channel.send_error(404, f"no WebSocket endpoint at {path!r}")
            return False
        headers = list(request.headers)
        if not self.auth.check_headers(headers):
            await _unauthorized(channel)
            return False
        key = next((v for n, v in headers if n == b"sec-websocket-key"), None)
        if key is None:
            await channel.send_error(400, "missing Sec-WebSocket-Key")
            return False
        await channel._write(
            h11.InformationalResponse(
                status_code=101,
                headers=[
                    (b"upgrade", b"websocket"),
                    (b"connection", b"Upgrade"),
                    (b"sec-websocket-accept", generate_accept_token(key)),
                ],
            )
        )
        pending, _closed = channel.h11.trailing_data
        ws = WSConnection(ConnectionType.SERVER)
        carrier = WebSocketCarrier(channel.stream, ws, pending)
        if path == "/register":
            await self._serve_edge(carrier)
        else:
            await serve_client(
                carrier,
                config=self.config,
                auth=self.auth,
                events=self.events,
                dispatch=lambda exchange, head: self.dispatch(exchange, head, authenticated=True),
            )
        return True

    async def _serve_edge(self, carrier: Carrier, *, internal: bool = False) -> None:
        """Serve one edge connection; ``internal`` is the bridge's own plugin host (edge ``bridge``)."""
        conn = Connection(Side.HUB, self.config.tunnel)
        claimed: list[Claim] = []

        async def decide(hello: Hello) -> tuple[bool, ErrorCode, str, float]:
            if not internal and not self.auth.check_secret(hello.credential):
                return False, ErrorCode.UNAUTHORIZED, "wrong credential", 0.0
            if hello.role is not PeerRole.EDGE:
                return False, ErrorCode.PROTOCOL_ERROR, "/register is for edges; clients use /connect", 0.0
            if internal:
                reason = None if hello.name == BRIDGE_EDGE else f"the bridge's own plugins are the edge {BRIDGE_EDGE!r}"
            else:
                reason = edge_name_error(hello.name)
            if reason is not None:
                return False, ErrorCode.NAME_CONFLICT, reason, 0.0
            try:
                claim = self.registry.claim(hello.name, hello.resume_token)
            except NameTaken as exc:
                return False, ErrorCode.NAME_CONFLICT, str(exc), 0.0
            claimed.append(claim)
            # a fresh token on every claim: whoever takes a name never learns an earlier holder's token
            return True, ErrorCode.NO_ERROR, claim.resume_token, self.config.heartbeat_interval

        try:
            hello = await hub_handshake(conn, carrier, decide, timeout=self.config.handshake_timeout)
        except HandshakeError as exc:
            log.info("edge refused: %s", exc)
            await carrier.aclose()
            self._expire_edges()  # a claim that failed after all is one more disconnected name
            return
        claim = claimed[0]
        entry = claim.entry
        if claim.stale is not None:
            log.info("edge %s reconnected; closing its stale connection", entry.name)
            await claim.stale.aclose(ErrorCode.NAME_CONFLICT, "replaced by a new connection of the same edge")

        tunnel = Tunnel(conn, carrier, name=f"edge {entry.name}", on_event=lambda ev: self._edge_event(entry, ev))
        self.registry.attach(claim, tunnel, hello.manifest)
        log.info("edge %s connected with plugins %s", entry.name, sorted(hello.manifest))
        self._publish_topology(entry, "connected")
        try:
            await tunnel.run()
        finally:
            if self.registry.detach(entry, tunnel):
                log.info("edge %s disconnected", entry.name)
                self._publish_topology(entry, "disconnected")
                self._expire_edges()  # past the cap of disconnected edges, the oldest go now

    def _edge_event(self, entry: EdgeEntry, event: object) -> None:
        if isinstance(event, Notification):
            try:
                data: Any = json.loads(event.payload) if event.payload else None
            except ValueError:
                data = event.payload.decode("utf-8", "replace")
            # the source is the edge this tunnel belongs to, whatever the frame claims
            self.events.publish(
                "notification", {"edge": entry.name, "plugin": event.plugin, "topic": event.topic, "data": data}
            )
        elif isinstance(event, ManifestUpdated):
            entry.manifest = event.manifest
            self._publish_topology(entry, "updated")
        elif isinstance(event, GoAway | ConnectionClosed):
            log.info("edge %s: %s", entry.name, event)


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


def _sse_frame(event_id: int | None, payload: dict[str, Any]) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


def _sse_event(event: BridgeEvent) -> bytes:
    """A published event as an SSE frame, around the bytes it was encoded to once."""
    return b"id: %d\ndata: %s\n\n" % (event.seq, event.sse_json())


_PORTAL_PLACEHOLDER = b"""<!doctype html><html><head><meta charset="utf-8"><title>radical-edge</title></head>
<body><h1>radical-edge bridge</h1><p>The Explorer portal is not built yet.</p></body></html>
"""

__all__ = ["SHUTDOWN_CODE", "Bridge", "TunnelClosedError"]
