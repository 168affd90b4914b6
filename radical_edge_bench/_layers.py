"""Where the CPU of one small request goes: each layer's real code, in a tight loop, on the real messages.

The processes' CPU per request (``/proc``) says how much a small GET costs the
bridge and the edge together, not where it goes.  This module runs, in the
bench process, the code of each layer a small request crosses, on the bytes
that layer handles for ``GET /bench-edge/bench/small`` (the headers the load
driver sends and the bridge forwards; the 50-byte JSON answer of
:mod:`._app` with the headers FastAPI gives it), one request per iteration:

* **HTTP/1.1** (h11): the bridge parses the client's request, rewrites its
  headers for the edge and serialises the answer, as ``radical_edge_bridge``'s
  ``HTTPChannel`` and ``forward`` do; the direct server's parse and
  serialisation as uvicorn's h11 protocol does them (its ``date`` and ``server``
  headers included);
* **tunnel framing** (``radical_edge_proto``): a handshaken hub (the bridge)
  and connector (the edge) in memory: the request head out of one and into the
  other, the response head and body back, the credit returned;
* **WebSocket** (wsproto): the bridge's server-side connection sends the
  request's tunnel bytes and receives the response's, the edge's client-side
  connection (which masks what it sends) the opposite;
* **TLS** (``ssl.SSLObject`` over memory BIOs, after the handshake): per hop,
  each end that is the bridge's or the edge's encrypts what it sends and
  decrypts what it receives, reading as anyio's ``TLSStream`` and
  ``with_buffered_tls`` do (the direct server: as asyncio's SSL protocol
  does, the head and the body written separately, as uvicorn writes them).
  The client's own TLS work runs too, but is not counted;
* **ASGI**: the FastAPI app called with the scope the edge builds
  (``radical_edge_edge.build_scope``) and receive/send callables doing what
  the edge's do; the direct server's with uvicorn's scope and its proxy-header
  middleware.

Each layer is warmed up, then run for a fixed time; its CPU (``time.thread_time``)
divided by the requests is its cost.  Where one loop runs two parties (both
ends of the tunnel, or a TLS client that is not ours), the CPU is shared
out by the wall time spent in each party's calls (measured with
``perf_counter_ns`` around them; the cost of those clock reads is
calibrated and taken off).

What the layers leave out of the measured CPU per request is the event loop
(wake-ups, tasks, cancel scopes, ``epoll``), the socket syscalls, and the glue
between the layers (routing, authentication, stream objects).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import statistics
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection as WSProtoConnection
from wsproto.events import AcceptConnection, BytesMessage, Message, Request

from radical_edge_proto import (
    Connection,
    Data,
    PeerRole,
    RequestReceived,
    ResponseReceived,
    Side,
    Welcome,
    profile,
)
from radical_edge_tunnel import LARGE_READ, enable_speedups, with_buffered_tls

from ._app import build_app
from ._load import request_bytes

EDGE = "bench-edge"
PLUGIN = "bench"
PATH = f"/{EDGE}/{PLUGIN}/small"
#: the caller the bridge names when a bearer token authenticated the request
CALLER = "token"
REMAINDER_LABEL = "event loop, wake-ups, tasks, syscalls (measured total minus the layers)"

BRIDGE, EDGE_SIDE, DIRECT, OTHER = "bridge", "edge", "direct", "other"
#: read sizes: the bridge's HTTP channel, the tunnel carrier (and with_buffered_tls), asyncio's SSL protocol
#: (the direct server's, tuned as the bridge's: tune_process)
HTTP_READ = 65536
CARRIER_READ = LARGE_READ
ASYNCIO_SSL_READ = LARGE_READ

Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[ASGIMessage]], Callable[[ASGIMessage], Awaitable[None]]], Awaitable[None]
]


# ---------------------------------------------------------------------------- timing


class Split:
    """Wall time spent by each party of a loop: call :meth:`mark` after each party's part."""

    __slots__ = ("count", "last", "wall")

    def __init__(self, parties: tuple[str, ...]) -> None:
        self.wall = dict.fromkeys(parties, 0)
        self.count = dict.fromkeys(parties, 0)
        self.last = time.perf_counter_ns()

    def restart(self) -> None:
        """Start the clock again (after a pause that belongs to nobody)."""
        self.last = time.perf_counter_ns()

    def mark(self, party: str) -> None:
        now = time.perf_counter_ns()
        self.wall[party] += now - self.last
        self.count[party] += 1
        self.last = now

    def clear(self) -> None:
        for party in self.wall:
            self.wall[party] = 0
            self.count[party] = 0
        self.last = time.perf_counter_ns()


def mark_cost_ns(n: int = 50_000) -> float:
    """CPU nanoseconds one :meth:`Split.mark` costs (taken off what the marks measured)."""
    split = Split((OTHER,))
    best = float("inf")
    for _ in range(3):
        start = time.thread_time_ns()
        for _ in range(n):
            split.mark(OTHER)
        best = min(best, (time.thread_time_ns() - start) / n)
    return best


# ---------------------------------------------------------------------------- the messages


@dataclass
class Messages:
    """What crosses each layer for one small request, as the real code produces it."""

    token: str
    host: str
    #: the client's request, as the load driver (wrk or the Python client) sends it
    client_request: bytes
    #: the request the bridge opens on the tunnel
    method: str = "GET"
    tunnel_path: str = ""
    forwarded_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: the app's answer
    status: int = 0
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    #: bytes on the wire, one request's worth
    tunnel_request: bytes = b""  # the hub's HEADERS frame (one WebSocket message)
    tunnel_response: bytes = b""  # the edge's HEADERS and DATA frames (one WebSocket message)
    ws_to_edge: bytes = b""  # the bridge's WebSocket frame (not masked)
    ws_to_bridge: bytes = b""  # the edge's WebSocket frame (masked)
    bridge_response: bytes = b""  # the bridge's HTTP answer (one write)
    direct_response: list[bytes] = field(default_factory=list)  # the direct server's writes (head, body)


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def tunnel_target(target: str) -> tuple[str, str]:
    """The bridge's split of ``/{edge}/rest`` into the tunnel path ``/rest`` and the root path ``/{edge}``."""
    segments = target.partition("?")[0].split("/")
    return target[len(segments[1]) + 1 :], f"/{segments[1]}"


def hub_pair() -> tuple[Connection, Connection]:
    """A handshaken hub (the bridge's end) and connector (the edge's), with default limits."""
    edge = Connection(Side.CONNECTOR)
    hub = Connection(Side.HUB)
    edge.send_hello(role=PeerRole.EDGE, name=EDGE, credential="bench")
    hub.receive_data(edge.data_to_send())
    hub.accept(heartbeat_interval=5.0, resume_token="bench")
    events = edge.receive_data(hub.data_to_send())
    if not any(isinstance(e, Welcome) for e in events):
        raise RuntimeError(f"tunnel handshake failed: {events}")
    return hub, edge


def websocket_masking() -> str:
    """Install the WebSocket accelerators the real carriers install (``WebSocketCarrier`` calls
    :func:`radical_edge_tunnel.enable_speedups`); which masking routine is used."""
    return enable_speedups()


def ws_pair() -> tuple[WSProtoConnection, WSConnection]:
    """The bridge's end (a bare server connection: the bridge's own HTTP code did the upgrade) and the
    edge's (a client connection that did the upgrade itself)."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="127.0.0.1", target="/register")))
    for event in server.events():
        if isinstance(event, Request):
            client.receive_data(server.send(AcceptConnection()))
    if not any(isinstance(e, AcceptConnection) for e in client.events()):
        raise RuntimeError("WebSocket handshake failed")
    return WSProtoConnection(ConnectionType.SERVER), client


# ---------------------------------------------------------------------------- TLS in memory


class TLSEnd:
    """One end of a TLS connection over memory BIOs."""

    def __init__(self, ctx: ssl.SSLContext, *, server: bool, hostname: str | None = None) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server, server_hostname=hostname)

    # anyio's TLSStream (the bridge and the edge)

    def anyio_send(self, data: bytes) -> bytes:
        """``TLSStream.send``: write, then send what the write BIO holds."""
        self.obj.write(data)
        return self.outgoing.read() if self.outgoing.pending else b""

    def anyio_receive(self, wire: bytes, max_bytes: int, buffered_limit: int) -> bytes:
        """``TLSStream.receive(max_bytes)`` (a read that finds nothing, the socket's bytes, a read), then
        ``with_buffered_tls`` (one more read, which finds no complete record)."""
        try:  # noqa: SIM105  (as anyio does it: try/except, no context manager on the hot path)
            self.obj.read(max_bytes)
        except ssl.SSLWantReadError:
            pass
        self.incoming.write(wire)
        data = self.obj.read(max_bytes)
        if self.outgoing.pending:  # anyio flushes pending writes after a successful call
            self.outgoing.read()
        return with_buffered_tls(self.obj, data, buffered_limit)  # what the carrier and HTTPChannel do next

    # asyncio's SSL protocol (uvicorn), and a plain client

    def read_all(self, wire: bytes, max_bytes: int = ASYNCIO_SSL_READ) -> bytes:
        """``SSLProtocol.data_received`` + ``_do_read__copied``: read until no complete record is left."""
        self.incoming.write(wire)
        parts: list[bytes] = []
        try:
            while chunk := self.obj.read(max_bytes):
                parts.append(chunk)
        except ssl.SSLWantReadError:
            pass
        return b"".join(parts)

    def write_each(self, parts: list[bytes]) -> list[bytes]:
        """One ``transport.write`` per part: ``_do_write`` then ``_process_outgoing`` each time."""
        out = []
        for part in parts:
            self.obj.write(part)
            out.append(self.outgoing.read())
        return out


def tls_pair(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str) -> tuple[TLSEnd, TLSEnd]:
    """A (server, client) pair after the handshake, session tickets delivered."""
    server = TLSEnd(server_ctx, server=True)
    client = TLSEnd(client_ctx, server=False, hostname=hostname)
    done = {"server": False, "client": False}
    for _ in range(20):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        if client.outgoing.pending:
            server.incoming.write(client.outgoing.read())
        if server.outgoing.pending:
            client.incoming.write(server.outgoing.read())
        if all(done.values()) and not client.outgoing.pending and not server.outgoing.pending:
            break
    if not all(done.values()):
        raise RuntimeError("TLS handshake in memory did not complete")
    # TLS 1.3: the client takes the session tickets the server sent after the handshake
    for end in (client, server):
        with contextlib.suppress(ssl.SSLWantReadError):
            end.obj.read(1)
    return server, client


@dataclass(frozen=True)
class TLSFiles:
    ca: Path
    cert: Path
    key: Path


def bridge_server_context(files: TLSFiles) -> ssl.SSLContext:
    """As ``Bridge.ssl_context``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(files.cert), str(files.key))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


# ---------------------------------------------------------------------------- the layers


class Layer:
    """One layer: :meth:`step` handles one request; ``parties`` whose CPU it is (``other``: not ours)."""

    key = ""
    label = ""
    parties: tuple[str, ...] = ()
    is_async = False

    def __init__(self) -> None:
        self.split = Split(self.parties)

    def step(self) -> None:
        raise NotImplementedError

    async def astep(self) -> None:
        raise NotImplementedError

    def check(self) -> None:
        """Raise if the last step did not carry the request and its answer."""


class BridgeHTTP(Layer):
    """The bridge's HTTP/1.1: ``HTTPChannel.next_request`` (h11 parse, the size checks, the end of a body-less
    request), the header rewrite of ``forward``, the answer (``start_response(flush=False)``, ``send_body(end=True)``)
    and the next cycle."""

    key, label, parties = "http", "HTTP/1.1 (h11 parse + serialise)", (BRIDGE,)

    def __init__(self, m: Messages) -> None:
        super().__init__()
        from radical_edge_bridge import HTTPLimits  # noqa: PLC0415

        self.m = m
        self.limits = HTTPLimits()
        self.conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.limits.max_request_line + self.limits.max_header_bytes + 4
        )
        self.request: h11.Request | None = None
        self.forwarded: list[tuple[bytes, bytes]] = []
        self.sent = b""

    def step(self) -> None:
        conn, m, limits = self.conn, self.m, self.limits
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        _pending, _closed = conn.trailing_data
        if conn.next_event() is not h11.NEED_DATA:  # the first event, before reading
            raise RuntimeError("h11: an event before the request")
        conn.receive_data(m.client_request)
        event = conn.next_event()
        if not isinstance(event, h11.Request):
            raise RuntimeError(f"h11 gave {event!r}")
        if len(event.method) + len(event.target) + 10 > limits.max_request_line:
            raise RuntimeError("request line too long")
        if sum(len(n) + len(v) + 4 for n, v in event.headers) > limits.max_header_bytes:
            raise RuntimeError("header fields too large")
        has_body = any(
            n == b"transfer-encoding" or (n == b"content-length" and v.strip() != b"0") for n, v in event.headers
        )
        if not has_body:
            conn.next_event()  # EndOfMessage
        headers = list(event.headers)
        self.forwarded = profile.forwarded_request_headers(headers, caller=CALLER, root_path=f"/{EDGE}")
        # the answer: the edge's head, less the hop headers, then the body with the end of the message
        out = [(n, v) for n, v in m.response_headers if n not in profile.HOP_RESPONSE_HEADERS]
        unsent = conn.send(h11.Response(status_code=m.status, headers=out, reason=reason_phrase(m.status))) or b""
        unsent += conn.send(h11.Data(data=m.body)) or b""
        self.sent = unsent + (conn.send(h11.EndOfMessage()) or b"")
        self.request = event

    def check(self) -> None:
        r = self.request
        if r is None or r.method != b"GET" or r.target != PATH.encode():
            raise RuntimeError(f"bridge h11 parsed {r!r}")
        if self.forwarded != self.m.forwarded_headers:
            raise RuntimeError(f"bridge forwarded {self.forwarded!r}")
        if not self.sent.startswith(b"HTTP/1.1 200 OK\r\n") or not self.sent.endswith(b"\r\n\r\n" + self.m.body):
            raise RuntimeError(f"bridge h11 serialised {self.sent!r}")


def uvicorn_default_headers() -> list[tuple[bytes, bytes]]:
    """uvicorn's ``ServerState.default_headers``: ``date``, then ``server: uvicorn``."""
    return [(b"date", formatdate(time.time(), usegmt=True).encode()), (b"server", b"uvicorn")]


class DirectHTTP(Layer):
    """uvicorn's ``H11Protocol``: ``data_received`` and ``handle_events`` (until NEED_DATA), the
    ``RequestResponseCycle.send`` of the head, the body and the end, and ``on_response_complete``."""

    key, label, parties = "http", "HTTP/1.1 (h11 parse + serialise)", (DIRECT,)

    def __init__(self, m: Messages) -> None:
        super().__init__()
        self.m = m
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)  # h11's default
        self.default_headers = uvicorn_default_headers()
        self.request: h11.Request | None = None
        self.path = ""
        self.sent: list[bytes] = []

    def step(self) -> None:
        conn, m = self.conn, self.m
        conn.receive_data(m.client_request)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.Request):
                self.request = event
                _headers = [(key.lower(), value) for key, value in event.headers]
                raw_path, _, _query = event.target.partition(b"?")
                self.path = unquote(raw_path.decode("ascii"))
                _method = event.method.decode("ascii")
                _version = event.http_version.decode("ascii")
            elif isinstance(event, h11.EndOfMessage):
                pass
            else:
                raise RuntimeError(f"h11 gave {event!r}")
        headers = self.default_headers + list(m.response_headers)
        sent = [conn.send(h11.Response(status_code=m.status, headers=headers, reason=reason_phrase(m.status)))]
        sent.append(conn.send(h11.Data(data=m.body)))
        end = conn.send(h11.EndOfMessage())
        if end:
            sent.append(end)
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            if conn.next_event() is not h11.NEED_DATA:
                raise RuntimeError("h11: an event after the response")
        self.sent = [s for s in sent if s]

    def check(self) -> None:
        if self.request is None or self.path != PATH or len(self.sent) != 2 or self.sent[1] != self.m.body:
            raise RuntimeError(f"direct h11: {self.request!r}, {self.sent!r}")


class TunnelFraming(Layer):
    """Both ends of the tunnel: the bridge's ``Tunnel.request`` and reader (with the credit of the body
    returned, as ``TunnelStream.receive`` does), the edge's reader and ``respond(flush=False)`` + ``send``."""

    key, label, parties = "tunnel", "tunnel framing (radical_edge_proto)", (BRIDGE, EDGE_SIDE)

    def __init__(self, m: Messages) -> None:
        super().__init__()
        self.m = m
        self.hub, self.edge = hub_pair()
        self.request: RequestReceived | None = None
        self.response: ResponseReceived | None = None
        self.data: Data | None = None
        self.wire_request = b""
        self.wire_response = b""

    def step(self) -> None:
        hub, edge, m, split = self.hub, self.edge, self.m, self.split
        stream_id = hub.send_request(m.method, m.tunnel_path, m.forwarded_headers, end_stream=True)
        wire = hub.data_to_send()
        split.mark(BRIDGE)
        for event in edge.receive_data(wire, time.monotonic()):
            if isinstance(event, RequestReceived):
                self.request = event
        edge.send_response(stream_id, m.status, m.response_headers)
        edge.send_window(stream_id)
        edge.send_data(stream_id, m.body, end_stream=True)
        back = edge.data_to_send()
        split.mark(EDGE_SIDE)
        for event in hub.receive_data(back, time.monotonic()):
            if isinstance(event, ResponseReceived):
                self.response = event
            elif isinstance(event, Data):
                self.data = event
                hub.acknowledge_received_data(event.stream_id, len(event.data))
        credit = hub.data_to_send()
        split.mark(BRIDGE)
        if credit:  # a WINDOW_UPDATE, once enough credit has added up
            edge.receive_data(credit, time.monotonic())
            split.mark(EDGE_SIDE)
        self.wire_request, self.wire_response = wire, back

    def check(self) -> None:
        req, resp, data, m = self.request, self.response, self.data, self.m
        if req is None or req.method != m.method or req.path != m.tunnel_path or not req.end_stream:
            raise RuntimeError(f"tunnel: the edge received {req!r}")
        if list(req.headers) != m.forwarded_headers:
            raise RuntimeError(f"tunnel: the edge received the headers {req.headers!r}")
        if resp is None or resp.status != m.status or resp.stream_id != req.stream_id:
            raise RuntimeError(f"tunnel: the bridge received {resp!r}")
        if data is None or data.data != m.body or not data.end_stream:
            raise RuntimeError(f"tunnel: the bridge received the body {data!r}")


class WebSocket(Layer):
    """``WebSocketCarrier.send`` and ``receive`` at both ends: the bridge's server connection sends the
    request's frames and receives the response's; the edge's client connection, the reverse (masked)."""

    key, label, parties = "websocket", "WebSocket (wsproto)", (BRIDGE, EDGE_SIDE)

    def __init__(self, m: Messages) -> None:
        super().__init__()
        self.m = m
        self.bridge, self.edge = ws_pair()
        self.at_edge = b""
        self.at_bridge = b""
        self.wire_to_edge = b""
        self.wire_to_bridge = b""

    @staticmethod
    def _receive(ws: WSConnection | WSProtoConnection, wire: bytes) -> bytes:
        got = b""
        for event in ws.events():  # the carrier looks for a message before it reads
            raise RuntimeError(f"WebSocket: unexpected {event!r}")
        ws.receive_data(wire)
        for event in ws.events():
            if isinstance(event, BytesMessage) and event.data:
                got = bytes(event.data)
                break
        return got

    def step(self) -> None:
        bridge, edge, m, split = self.bridge, self.edge, self.m, self.split
        to_edge = bridge.send(Message(data=m.tunnel_request))
        split.mark(BRIDGE)
        self.at_edge = self._receive(edge, to_edge)
        to_bridge = edge.send(Message(data=m.tunnel_response))
        split.mark(EDGE_SIDE)
        self.at_bridge = self._receive(bridge, to_bridge)
        split.mark(BRIDGE)
        self.wire_to_edge, self.wire_to_bridge = to_edge, to_bridge

    def check(self) -> None:
        if self.at_edge != self.m.tunnel_request or self.at_bridge != self.m.tunnel_response:
            raise RuntimeError("WebSocket: the messages did not arrive intact")
        if self.wire_to_bridge[1] & 0x80 == 0 or self.wire_to_edge[1] & 0x80:
            raise RuntimeError("WebSocket: the edge must mask, the bridge must not")


class _ClientHopLayer(Layer):
    """TLS between the HTTP client (``client``) and a server (``server``): what each one received."""

    key, label = "tls_client", "TLS, client hop (HTTPS)"

    def __init__(self, m: Messages, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
        super().__init__()
        self.m = m
        self.server, self.client = tls_pair(server_ctx, client_ctx, "127.0.0.1")
        self.got = b""
        self.answer = b""


class ClientHopTLS(_ClientHopLayer):
    """TLS between the HTTP client and the bridge: the bridge decrypts the request (``HTTPChannel._read``)
    and encrypts the answer (one write); the client's work runs but is not counted."""

    parties = (BRIDGE, OTHER)

    def step(self) -> None:
        m, split = self.m, self.split
        wire = self.client.anyio_send(m.client_request)
        split.mark(OTHER)
        self.got = self.server.anyio_receive(wire, HTTP_READ, CARRIER_READ)
        back = self.server.anyio_send(m.bridge_response)
        split.mark(BRIDGE)
        self.answer = self.client.read_all(back)
        split.mark(OTHER)

    def check(self) -> None:
        if self.got != self.m.client_request or self.answer != self.m.bridge_response:
            raise RuntimeError("TLS (client hop): the bytes did not arrive intact")


class TunnelHopTLS(Layer):
    """TLS between the bridge (server) and the edge (client): each encrypts the WebSocket frames it sends
    and decrypts those it receives, reading as the carrier does (256 KiB, then ``with_buffered_tls``)."""

    key, label, parties = "tls_tunnel", "TLS, tunnel hop (WSS)", (BRIDGE, EDGE_SIDE)

    def __init__(self, m: Messages, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
        super().__init__()
        self.m = m
        self.bridge, self.edge = tls_pair(server_ctx, client_ctx, "127.0.0.1")
        self.at_edge = b""
        self.at_bridge = b""

    def step(self) -> None:
        m, split = self.m, self.split
        wire = self.bridge.anyio_send(m.ws_to_edge)
        split.mark(BRIDGE)
        self.at_edge = self.edge.anyio_receive(wire, CARRIER_READ, CARRIER_READ)
        back = self.edge.anyio_send(m.ws_to_bridge)
        split.mark(EDGE_SIDE)
        self.at_bridge = self.bridge.anyio_receive(back, CARRIER_READ, CARRIER_READ)
        split.mark(BRIDGE)

    def check(self) -> None:
        if self.at_edge != self.m.ws_to_edge or self.at_bridge != self.m.ws_to_bridge:
            raise RuntimeError("TLS (tunnel hop): the bytes did not arrive intact")


class DirectTLS(_ClientHopLayer):
    """TLS between the HTTP client and uvicorn (asyncio's SSL protocol): the request decrypted, the head
    and the body encrypted as two writes; the client's work runs but is not counted."""

    parties = (DIRECT, OTHER)

    def step(self) -> None:
        m, split = self.m, self.split
        wire = self.client.anyio_send(m.client_request)
        split.mark(OTHER)
        self.got = self.server.read_all(wire)
        back = self.server.write_each(m.direct_response)
        split.mark(DIRECT)
        self.answer = self.client.read_all(b"".join(back))
        split.mark(OTHER)

    def check(self) -> None:
        if self.got != self.m.client_request or self.answer != b"".join(self.m.direct_response):
            raise RuntimeError("TLS (direct): the bytes did not arrive intact")


class EdgeCall:
    """The edge's ``_AsgiCall`` for a request without a body: receive and send as the app sees them."""

    __slots__ = ("body", "body_done", "finished", "headers", "started", "status")

    def __init__(self) -> None:
        self.body_done = False
        self.started = False
        self.finished = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""

    async def receive(self) -> ASGIMessage:
        if not self.body_done:
            self.body_done = True  # the stream's body ended with the request head
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(self, message: ASGIMessage) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            self.status = int(message["status"])
            self.headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
            return
        if kind != "http.response.body" or self.finished:
            return
        self.body += bytes(message.get("body", b""))
        if not message.get("more_body", False):
            self.finished = True


class EdgeASGI(Layer):
    """``PluginHost.handle`` (the path split, the bridge's headers, ``build_scope``) and ``serve_stream``
    (a cancel scope around the app, receive/send as :class:`EdgeCall`), without the tunnel's I/O."""

    key, label, parties, is_async = "asgi", "ASGI app (FastAPI, GET /small)", (EDGE_SIDE,), True

    def __init__(self, m: Messages, app: ASGIApp) -> None:
        super().__init__()
        self.m = m
        self.app = app
        self.state: dict[str, Any] = {}
        self.call = EdgeCall()
        self.scope: Scope = {}

    async def astep(self) -> None:
        from radical_edge_edge import build_scope  # noqa: PLC0415

        m = self.m
        path, _, query = m.tunnel_path.partition("?")
        first, slash, rest = path[1:].partition("/")
        _name = unquote(first)
        headers = list(m.forwarded_headers)
        root_value = profile.bridge_header(headers, profile.ROOT_PATH_HEADER)
        root = root_value.decode("latin-1").rstrip("/") if root_value is not None else ""
        scope = build_scope(
            method=m.method,
            root_path=f"{root}/{first}",
            rest=slash + rest,
            query_string=query.encode("latin-1"),
            headers=headers,
            state=self.state,
        )
        call = EdgeCall()
        with anyio.CancelScope():
            await self.app(scope, call.receive, call.send)
        self.call, self.scope = call, scope

    def check(self) -> None:
        c = self.call
        if c.status != 200 or c.body != self.m.body or not c.finished:
            raise RuntimeError(f"edge ASGI: {c.status} {c.body!r}")


class DirectASGI(Layer):
    """uvicorn's scope (``handle_events``) and ``run_asgi``: the app behind uvicorn's proxy-header middleware."""

    key, label, parties, is_async = "asgi", "ASGI app (FastAPI, GET /small)", (DIRECT,), True

    def __init__(self, m: Messages, app: ASGIApp) -> None:
        super().__init__()
        self.m = m
        self.app = app
        self.app_state: dict[str, Any] = {}
        self.call = EdgeCall()
        # what uvicorn's HTTP layer (DirectHTTP) hands over: the lower-cased headers
        self.headers = [(n.lower(), v) for n, v in h11_request_headers(m.client_request)]
        host, _, port = m.host.rpartition(":")
        self.server = (host, int(port or 443))

    async def astep(self) -> None:
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": ("127.0.0.1", 50000),
            "scheme": "https",
            "method": "GET",
            "root_path": "",
            "path": "/small",
            "raw_path": b"/small",
            "query_string": b"",
            "headers": self.headers,
            "state": self.app_state.copy(),
        }
        call = EdgeCall()
        await self.app(scope, call.receive, call.send)
        self.call = call

    def check(self) -> None:
        c = self.call
        if c.status != 200 or c.body != self.m.body or not c.finished:
            raise RuntimeError(f"direct ASGI: {c.status} {c.body!r}")


def h11_request_headers(raw: bytes) -> list[tuple[bytes, bytes]]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    event = conn.next_event()
    if not isinstance(event, h11.Request):
        raise RuntimeError(f"not a request: {raw!r}")
    return list(event.headers)


def uvicorn_app(files: TLSFiles) -> tuple[ASGIApp, ssl.SSLContext]:
    """The app as ``radical_edge_bench._procs direct`` serves it (uvicorn's wrapping) and uvicorn's TLS context."""
    import uvicorn  # noqa: PLC0415

    config = uvicorn.Config(
        build_app(),
        ssl_certfile=str(files.cert),
        ssl_keyfile=str(files.key),
        http="h11",
        loop="asyncio",
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
    )
    config.load()
    assert config.ssl is not None
    app: Any = config.loaded_app
    return app, config.ssl


# ---------------------------------------------------------------------------- the run


def build_messages(token: str, host: str, runner: asyncio.Runner, edge_app: ASGIApp) -> Messages:
    """One request through the real code of every layer, keeping what each one hands to the next."""
    # the request as the load drivers send it
    m = Messages(token=token, host=host, client_request=request_bytes("GET", PATH, token, host))
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(m.client_request)
    event = conn.next_event()
    if not isinstance(event, h11.Request):
        raise RuntimeError(f"h11 gave {event!r}")
    target = event.target.decode("latin-1")
    m.method = event.method.decode()
    m.tunnel_path, root = tunnel_target(target)
    m.forwarded_headers = profile.forwarded_request_headers(list(event.headers), caller=CALLER, root_path=root)
    # the app's answer, as the edge receives it
    asgi = EdgeASGI(m, edge_app)
    runner.run(asgi.astep())
    m.status, m.response_headers, m.body = asgi.call.status, asgi.call.headers, asgi.call.body
    # the tunnel's bytes
    tunnel = TunnelFraming(m)
    tunnel.step()
    m.tunnel_request, m.tunnel_response = tunnel.wire_request, tunnel.wire_response
    ws = WebSocket(m)
    ws.step()
    m.ws_to_edge, m.ws_to_bridge = ws.wire_to_edge, ws.wire_to_bridge
    # the HTTP answers
    bridge = BridgeHTTP(m)
    bridge.step()
    m.bridge_response = bridge.sent
    direct = DirectHTTP(m)
    direct.step()
    m.direct_response = direct.sent
    return m


@dataclass
class Timing:
    iterations: int
    cpu_us: dict[str, float]


def _time_layer(layer: Layer, runner: asyncio.Runner, seconds: float, mark_ns: float, batch: int = 50) -> Timing:
    """Run ``layer`` for ``seconds`` (after a warm-up) in batches of ``batch`` requests; its CPU per request.

    The CPU is the thread's, over all batches.  A layer with two parties shares it out by the median,
    over the batches, of the wall time each party took: a batch in which the thread was preempted
    (the machine may be busy) does not move the split.
    """
    split = layer.split

    async def run_async(n: int) -> None:
        split.restart()
        for _ in range(n):
            await layer.astep()

    def run(n: int) -> None:
        if layer.is_async:
            runner.run(run_async(n))
        else:
            split.restart()
            for _ in range(n):
                layer.step()

    run(max(batch, 20))  # warm-up
    layer.check()
    split.clear()
    per_batch: dict[str, list[int]] = {p: [] for p in layer.parties}
    n = 0
    deadline = time.perf_counter() + seconds
    start = time.thread_time_ns()
    while True:
        before = dict(split.wall)
        run(batch)
        for party, spent in split.wall.items():
            per_batch[party].append(spent - before[party])
        n += batch
        if time.perf_counter() >= deadline:
            break
    cpu_ns = (time.thread_time_ns() - start) / n
    layer.check()
    if len(layer.parties) == 1:
        return Timing(n, {layer.parties[0]: round(cpu_ns / 1000, 2)})
    # the clock reads of the marks are not the layer's: off the CPU, and off each party's wall time
    cpu_ns = max(cpu_ns - sum(split.count.values()) / n * mark_ns, 0.0)
    wall = {p: max(statistics.median(per_batch[p]) / batch - split.count[p] / n * mark_ns, 0.0) for p in layer.parties}
    total = sum(wall.values()) or 1.0
    return Timing(n, {p: round(cpu_ns * wall[p] / total / 1000, 2) for p in layer.parties if p != OTHER})


def measure(
    files: TLSFiles, *, token: str = "x" * 32, host: str = "127.0.0.1:8443", seconds: float = 0.3
) -> dict[str, Any]:
    """CPU per small request of each layer (µs), for the bridge, the edge and the direct server.

    ``seconds``: how long each layer runs (there are nine, plus ~0.2 s of setup).
    """
    started = time.perf_counter()
    client_ctx = ssl.create_default_context(cafile=str(files.ca))
    bridge_ctx = bridge_server_context(files)
    with asyncio.Runner() as runner:
        edge_app: ASGIApp = build_app()
        direct_app, direct_ctx = uvicorn_app(files)
        m = build_messages(token, host, runner, edge_app)
        mark_ns = mark_cost_ns()
        masking = websocket_masking()
        tunnel_tls = TunnelHopTLS(m, bridge_ctx, client_ctx)
        tunnel_side: list[Layer] = [
            BridgeHTTP(m),
            TunnelFraming(m),
            WebSocket(m),
            ClientHopTLS(m, bridge_ctx, client_ctx),
            tunnel_tls,
            EdgeASGI(m, edge_app),
        ]
        direct_side: list[Layer] = [DirectHTTP(m), DirectTLS(m, direct_ctx, client_ctx), DirectASGI(m, direct_app)]
        rows: dict[str, dict[str, Any]] = {}
        for layer in tunnel_side + direct_side:
            timing = _time_layer(layer, runner, seconds, mark_ns)
            row = rows.setdefault(
                layer.key, {"key": layer.key, "label": layer.label, BRIDGE: None, EDGE_SIDE: None, DIRECT: None}
            )
            row.update(timing.cpu_us)
            row.setdefault("iterations", {})[DIRECT if DIRECT in layer.parties else "tunnel"] = timing.iterations
    for row in rows.values():
        row["bridge+edge"] = _add(row[BRIDGE], row[EDGE_SIDE])
    layers = list(rows.values())
    sums = {col: round(sum(r[col] or 0.0 for r in layers), 2) for col in (BRIDGE, EDGE_SIDE, "bridge+edge", DIRECT)}
    version = tunnel_tls.bridge.obj.version()
    cipher = tunnel_tls.bridge.obj.cipher()
    return {
        "method": (
            "each layer's real code in a loop in the bench process, on one small request's real messages; "
            "CPU from time.thread_time, shared between two parties by their median wall time per batch"
        ),
        "seconds_per_layer": seconds,
        "seconds": round(time.perf_counter() - started, 2),
        "tls": f"{version} {cipher[0] if cipher else ''}".strip(),
        "websocket_masking": masking,
        "mark_overhead_ns": round(mark_ns, 1),
        "messages_bytes": {
            "client_request": len(m.client_request),
            "tunnel_request": len(m.tunnel_request),
            "tunnel_response": len(m.tunnel_response),
            "ws_to_edge": len(m.ws_to_edge),
            "ws_to_bridge": len(m.ws_to_bridge),
            "bridge_response": len(m.bridge_response),
            "direct_response": sum(len(p) for p in m.direct_response),
        },
        "rows": layers,
        "sum_us": sums,
    }


def _add(a: float | None, b: float | None) -> float | None:
    if a is None and b is None:
        return None
    return round((a or 0.0) + (b or 0.0), 2)


def with_measured(layers: dict[str, Any], small: dict[str, Any]) -> dict[str, Any]:
    """``layers`` with the processes' CPU per request (from the small-GET runs over HTTP) and the remainder."""
    sums = layers["sum_us"]
    layers["remainder_label"] = REMAINDER_LABEL
    measured: dict[str, dict[str, float | None]] = {}
    remainder: dict[str, dict[str, float | None]] = {}
    for run in ("one_client", "concurrent"):
        tunnel = small["tunnel_http"][run]["cpu_ms_per_request"]
        direct = small["direct"][run]["cpu_ms_per_request"]
        got = {
            BRIDGE: tunnel.get("bridge"),
            EDGE_SIDE: tunnel.get("edge"),
            "bridge+edge": tunnel.get("bridge+edge"),
            DIRECT: direct.get("server"),
        }
        measured[run] = {k: None if v is None else round(v * 1000, 2) for k, v in got.items()}
        remainder[run] = {k: None if v is None else round(v - sums[k], 2) for k, v in measured[run].items()}
    layers["measured_us"] = measured
    layers["remainder_us"] = remainder
    return layers
