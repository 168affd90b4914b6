"""HTTP/1.1 on one connection, with h11: requests in, responses out, limits enforced.

Limits and their answers: request line over ``max_request_line`` -> 414,
headers over ``max_header_bytes`` -> 431, malformed -> 400, a client idle
between requests past ``idle_timeout`` or too slow sending its head past
``head_timeout`` -> connection closed (408 when a request had started), a
client that takes no bytes of the response for ``write_timeout`` -> connection
cut.  ``Expect: 100-continue`` is answered when the body is first read; the
answer to ``HEAD`` is the head alone, whatever body the route produced.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

import anyio
import anyio.abc
import h11

from radical_edge_proto.profile import error_body
from radical_edge_tunnel import bytes_acknowledged, tls_object, with_buffered_tls

from ._deadlines import Deadlines
from ._exchange import BodyTooLarge

log = logging.getLogger("radical_edge.bridge")

_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


@dataclass(frozen=True)
class HTTPLimits:
    max_request_line: int = 8 * 1024
    max_header_bytes: int = 64 * 1024
    head_timeout: float = 30.0
    idle_timeout: float = 120.0
    body_read_timeout: float = 120.0
    #: a client that accepts no response bytes for this long is cut off (a reader that stopped reading)
    write_timeout: float = 30.0


def request_has_body(request: h11.Request) -> bool:
    for name, value in request.headers:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length" and value.strip() != b"0":
            return True
    return False


class ClientGone(Exception):
    """The HTTP client disconnected or stalled."""


class BadRequest(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


_HEAD_END = re.compile(rb"\n\r?\n")


class HeadMeter:
    """Counts the bytes of a request head as they arrive, however they are cut into pieces, and
    tells when the head has passed a limit: 414 (request line) or 431 (header fields).

    h11 bounds only its whole buffer and reports that in words; this is the channel's own count.
    The piece that completes a head is counted too, so an oversized head that arrives whole (a
    read takes up to ``LARGE_READ``) is refused before h11 parses it.  A complete head is checked
    again from its parsed fields (:meth:`HTTPChannel.next_request`).
    """

    def __init__(self, limits: HTTPLimits) -> None:
        self.limits = limits
        #: a head is arriving (between :meth:`start` and the request event)
        self.active = False
        #: the head's blank line has arrived: the bytes after it are not the head's
        self.complete = False
        #: bytes of the head so far
        self.size = 0
        self._start = bytearray()  # its first bytes: enough to see where the request line ends
        self._tail = b""  # the end of the previous piece, for a blank line cut in two

    def start(self, pending: bytes = b"") -> BadRequest | None:
        """A new head begins, with ``pending`` (bytes already received) as its first piece."""
        self.active, self.complete, self.size = True, False, 0
        self._start.clear()
        self._tail = b""
        return self.add(pending)

    def add(self, data: bytes) -> BadRequest | None:
        """Count one piece; the answer if the head has passed a limit."""
        if self.complete or not data:
            return None
        window = self._tail + data
        end = _HEAD_END.search(window)
        if end is not None:
            self.complete = True
            data = data[: max(0, end.end() - len(self._tail))]
        else:
            self._tail = window[-2:]
        keep = self.limits.max_request_line + 2 - len(self._start)
        if keep > 0:
            self._start += data[:keep]
        self.size += len(data)
        return self.too_large()

    def too_large(self) -> BadRequest | None:
        """414 or 431 if the bytes counted have passed a limit, else None."""
        limits = self.limits
        # where the request line ends: its LF, after a CR (h11 takes a bare LF too)
        line_end = self._start.find(b"\n")
        if line_end > limits.max_request_line + 1 or (line_end == -1 and self.size > len(self._start)):
            return BadRequest(414, "request line too long")
        if line_end != -1 and self.size - (line_end + 1) > limits.max_header_bytes + 2:
            return BadRequest(431, "request header fields too large")
        return None


class HTTPChannel:
    """One client connection; call :meth:`next_request` in a loop, and :meth:`aclose` at the end.

    The two waits every request has, for the next request (``idle_timeout``)
    and for the client to take the response (``write_timeout``), are watched
    by ``deadlines`` (one task for all connections): on expiry the socket is
    shut down, which ends the wait as a closed connection.  The rarer ones,
    a head that arrives in pieces and a body being read, have a timer each
    (``anyio.fail_after``): they end in an answer (408) or an error of
    their own.
    """

    def __init__(self, stream: anyio.abc.ByteStream, limits: HTTPLimits, deadlines: Deadlines) -> None:
        self.stream = stream
        self._ssl = tls_object(stream)
        self.limits = limits
        self._deadline = deadlines.add(self._expired)
        self._sock = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        # over TCP the kernel counts what the client has taken: a slow client is told from one that takes nothing,
        # by a look at that count every half of write_timeout (else a write has the whole of it)
        self._watch_writes = bytes_acknowledged(self._sock) is not None
        self._write_wait = limits.write_timeout / 2 if self._watch_writes else limits.write_timeout
        self._writing = False
        self._taken: int | None = None  # what the client had taken at the last look at a waiting write
        # h11's own bound on an unfinished head is a backstop above ours (line + headers + line ends)
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=limits.max_request_line + limits.max_header_bytes + 4
        )
        self._head = HeadMeter(limits)
        self.response_started = False
        self._unsent = b""  # a response head held back to leave with the first body bytes
        self._head_only = False  # answering HEAD: body bytes are dropped

    async def _read(self) -> bytes:
        try:
            data = await self.stream.receive(65536)
        except _GONE:
            return b""
        return with_buffered_tls(self._ssl, data)

    def _poll(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        """h11's next event from the bytes it has; a malformed request is a :class:`BadRequest`."""
        try:
            return self.h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise BadRequest(exc.error_status_hint, f"malformed request: {exc}") from None

    async def _next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        while (event := self._poll()) is h11.NEED_DATA:
            self._feed(await self._read())
        return event

    def _feed(self, data: bytes) -> None:
        """Hand received bytes to h11; while a request head arrives, 414/431 as soon as it passes a limit."""
        if self._head.active and (too_large := self._head.add(data)) is not None:
            raise too_large
        self.h11.receive_data(data)

    async def next_request(self) -> h11.Request | None:
        """The next request head, or None when the client is done (close, idle, EOF)."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            with contextlib.suppress(h11.LocalProtocolError):
                self.h11.start_next_cycle()
        if self.h11.our_state is not h11.IDLE or self.h11.their_state is not h11.IDLE:
            return None  # an unread body or a close: this connection is done
        self.response_started = False
        try:
            # the head starts with what was received after the previous request, if anything (pipelined)
            pending, _closed = self.h11.trailing_data
            if (too_large := self._head.start(pending)) is not None:
                raise too_large
            event = await self._first_event()
        except BadRequest as exc:
            await self.send_error(exc.status, exc.detail, close=True)
            return None
        finally:
            self._head.active = False
        if not isinstance(event, h11.Request):
            return None
        self._head_only = event.method == b"HEAD"
        # the meter judged the head while it was unfinished; a complete one is judged here, from its fields
        if len(event.method) + len(event.target) + 10 > self.limits.max_request_line:
            await self.send_error(414, "request line too long", close=True)
            return None
        if sum(len(n) + len(v) + 4 for n, v in event.headers) > self.limits.max_header_bytes:
            await self.send_error(431, "request header fields too large", close=True)
            return None
        if not request_has_body(event):
            # no body: take the end of the message now, so the connection stays reusable
            # whether or not the route reads a body
            with contextlib.suppress(h11.RemoteProtocolError):
                self.h11.next_event()
        return event

    async def _first_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        """The next request's first event: a closed connection after ``idle_timeout`` without a byte; once
        the first byte is here, the rest of the head must follow within ``head_timeout`` (else 408).
        Deadlines are armed only when there is something to wait for (pipelined heads need none)."""
        event = self._poll()  # a pipelined head may have come with the previous request
        if event is not h11.NEED_DATA:
            return event
        self._deadline.arm(self.limits.idle_timeout)
        try:
            data = await self._read()
        finally:
            self._deadline.disarm()
        if not data:
            return h11.ConnectionClosed()
        self._feed(data)
        event = self._poll()
        if event is not h11.NEED_DATA:
            return event
        try:
            with anyio.fail_after(self.limits.head_timeout):
                return await self._next_event()
        except TimeoutError:
            await self.send_error(408, "request head not received in time", close=True)
            return h11.ConnectionClosed()

    async def receive_body(self) -> bytes:
        """The next request body chunk; ``b""`` at the end of the body."""
        if self.h11.their_state is not h11.SEND_BODY:
            return b""  # no body, or all of it was read
        if self.h11.they_are_waiting_for_100_continue:
            await self._write(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
        while True:
            event = self._poll()
            if event is h11.NEED_DATA:
                try:
                    with anyio.fail_after(self.limits.body_read_timeout):
                        event = await self._next_event()
                except TimeoutError:
                    raise ClientGone("request body stalled") from None
            if isinstance(event, h11.Data):
                if event.data:
                    return bytes(event.data)
                continue
            if isinstance(event, h11.EndOfMessage):
                return b""
            raise ClientGone("client closed the connection during the request body")

    async def drain_body(self, limit: int = 1024 * 1024) -> bytes:
        """Read a whole (small) body; BodyTooLarge (413) if larger than ``limit``."""
        body = bytearray()
        while chunk := await self.receive_body():
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge(limit)
        return bytes(body)

    async def wait_disconnect(self) -> None:
        """Return when the client closes its side; bytes it sends meanwhile (a pipelined
        next request) are kept for the next cycle."""
        while data := await self._read():
            self._feed(data)

    # ---------------------------------------------------------------- writing

    async def _write(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if self._unsent:
            data, self._unsent = self._unsent + (data or b""), b""
        if data:
            self._deadline.arm(self._write_wait)
            self._writing, self._taken = True, None
            try:
                await self.stream.send(data)
            except _GONE:
                if self._deadline.expired:  # armed for this write, so it was this write's deadline
                    raise ClientGone(f"client took no response bytes for {self._write_wait:g} s") from None
                raise ClientGone("client went away") from None
            finally:
                self._writing = False
                self._deadline.disarm()

    async def start_response(self, status: int, headers: Iterable[tuple[bytes, bytes]], *, flush: bool = True) -> None:
        """Send the response head; with ``flush=False`` it leaves with the first body bytes
        (one TLS record and one write instead of two, for a body that is ready now)."""
        self.response_started = True
        event = h11.Response(status_code=status, headers=list(headers), reason=reason_phrase(status))
        if flush:
            await self._write(event)
        else:
            self._unsent += self.h11.send(event) or b""

    async def send_body(self, data: bytes, *, end: bool = False) -> None:
        if self._head_only:
            data = b""
        if end:  # the body and the end of the message in one write
            if data:
                self._unsent += self.h11.send(h11.Data(data=data)) or b""
            await self._write(h11.EndOfMessage())
        elif data:
            await self._write(h11.Data(data=data))

    async def end_response(self) -> None:
        await self._write(h11.EndOfMessage())

    async def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: bytes = b"application/json",
        extra: Iterable[tuple[bytes, bytes]] = (),
        *,
        close: bool = False,
    ) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
        if close:
            headers.append((b"connection", b"close"))
        try:
            await self.start_response(status, headers, flush=False)
            await self.send_body(body)
            await self.end_response()
        except h11.LocalProtocolError:
            pass  # the state does not allow a response any more: nothing to tell the client

    async def send_json(self, status: int, value: object, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
        await self.send_bytes(status, json.dumps(value).encode(), extra=extra)

    async def send_error(self, status: int, detail: str, *, close: bool = False) -> None:
        if self.response_started:
            return
        with contextlib.suppress(ClientGone):
            await self.send_bytes(status, error_body(status, detail), close=close)

    async def accept_websocket(self, accept_token: bytes) -> bytes:
        """Answer the upgrade request just received with ``101 Switching Protocols`` (``accept_token``
        is its ``Sec-WebSocket-Accept``).  Returns the bytes the client sent after its request head
        (its first WebSocket frames, if any); the rest follow on :attr:`stream`, which is the
        caller's from now on: this channel serves no more HTTP."""
        await self._write(
            h11.InformationalResponse(
                status_code=101,
                headers=[
                    (b"upgrade", b"websocket"),
                    (b"connection", b"Upgrade"),
                    (b"sec-websocket-accept", accept_token),
                ],
            )
        )
        pending, _closed = self.h11.trailing_data
        return pending

    @property
    def keep_alive(self) -> bool:
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    def _expired(self) -> None:
        """(the deadline watch) The client idled too long between requests, or took no response bytes for too
        long: shut the socket down, which ends the read or the write that waits (as a closed connection).

        A write watched over TCP waits half of ``write_timeout`` first; from then on it is given up only once
        the client takes none of its bytes for another half (a slow link drains a large write slowly)."""
        if self._writing and self._watch_writes:
            taken = bytes_acknowledged(self._sock)
            if taken is not None and taken != self._taken:  # the first look, or the client took some since
                self._taken = taken
                self._deadline.arm(self._write_wait)
                return
        # a socket.socket, or asyncio's TransportSocket around it (which has shutdown() too)
        sock = self._sock
        if sock is None:  # the bridge's connections are sockets; a stream without one cannot be cut here
            log.warning("an HTTP connection passed its deadline but has no socket to shut down")
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        """The connection is no longer served as HTTP (closed, or upgraded to a WebSocket): stop watching it."""
        self._deadline.close()

    async def aclose(self) -> None:
        self.release()
        with anyio.move_on_after(1, shield=True), contextlib.suppress(*_GONE):
            await self.stream.aclose()
