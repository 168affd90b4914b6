"""Carriers: what moves tunnel bytes between two processes (or two tasks).

A carrier only moves opaque byte chunks; the protocol core does the framing,
so a chunk boundary means nothing.  ``receive()`` returns ``b""`` once the
peer is gone (orderly close, EOF or a broken connection alike).
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Protocol

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from anyio.streams.tls import TLSAttribute
from wsproto import WSConnection
from wsproto.connection import Connection as WSProtoConnection
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage

from ._reads import LARGE_READ, LargeReads
from ._speedups import data_frame_builder, enable_speedups

#: WebSocket close codes used by radical-edge
WS_NORMAL = 1000
WS_GOING_AWAY = 1001
WS_UNSUPPORTED_DATA = 1003
WS_POLICY_VIOLATION = 1008

_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


def tls_object(stream: anyio.abc.ByteStream) -> ssl.SSLObject | None:
    """The SSL object of an anyio TLS stream (None for a plain one)."""
    ssl_object = stream.extra(TLSAttribute.ssl_object, None)
    return ssl_object if isinstance(ssl_object, ssl.SSLObject) else None


def with_buffered_tls(ssl_object: ssl.SSLObject | None, first: bytes, limit: int = LARGE_READ) -> bytes:
    """``first`` (just received) plus the TLS records already buffered behind it, up to ``limit``; never waits.

    A TLS read returns one record (at most 16 KiB) at a time, while the socket
    delivers many at once: taking the rest now means one pass through the
    WebSocket, protocol and HTTP layers per socket read instead of per record.
    Anything but complete records (a partial record, an alert, the peer's
    close) is left for the next regular ``receive()``, which reports it.
    """
    if ssl_object is None or not first:
        return first
    parts = [first]
    size = len(first)
    while size < limit:
        try:
            more = ssl_object.read(limit - size)
        except ssl.SSLError:  # SSLWantReadError: no complete record left; or an error receive() reports
            break
        if not more:
            break
        parts.append(more)
        size += len(more)
    return first if len(parts) == 1 else b"".join(parts)


class Carrier(Protocol):
    """What a tunnel needs of a carrier.

    A carrier may also offer ``watch_writes(timeout) -> bool``: it then gives
    a write up itself once the peer takes none of it for ``timeout / 2``,
    after the write has waited ``timeout / 2`` (True), so a slow peer is
    waited for; see :meth:`Tunnel.flush`.
    """

    async def send(self, data: bytes) -> None: ...

    async def receive(self) -> bytes: ...

    async def aclose(self) -> None: ...


class MemoryCarrier:
    """One end of an in-memory carrier; make both with :func:`memory_carrier_pair`."""

    def __init__(self, tx: MemoryObjectSendStream[bytes], rx: MemoryObjectReceiveStream[bytes]) -> None:
        self._tx = tx
        self._rx = rx

    async def send(self, data: bytes) -> None:
        # a gone peer is reported by receive(); sending to it is a no-op
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._tx.send(data)

    async def receive(self) -> bytes:
        try:
            return await self._rx.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            return b""

    async def aclose(self) -> None:
        await self._tx.aclose()
        await self._rx.aclose()


def memory_carrier_pair(buffer: int = 16) -> tuple[MemoryCarrier, MemoryCarrier]:
    """Two connected in-memory carriers with a small fixed buffer (backpressure, never unbounded)."""
    a_tx, b_rx = anyio.create_memory_object_stream[bytes](buffer)
    b_tx, a_rx = anyio.create_memory_object_stream[bytes](buffer)
    return MemoryCarrier(a_tx, a_rx), MemoryCarrier(b_tx, b_rx)


class WebSocketCarrier:
    """Tunnel bytes as binary WebSocket messages over an anyio byte stream (TCP or TLS).

    ``ws`` is an already-upgraded wsproto connection; ``pending`` are bytes
    that arrived behind the HTTP upgrade.  Text messages are refused with
    close code 1003.  WebSocket pings are answered here.
    """

    def __init__(
        self, stream: anyio.abc.ByteStream, ws: WSConnection | WSProtoConnection, pending: bytes = b""
    ) -> None:
        enable_speedups()
        # data frames built with fewer copies when the accelerators are on (wsproto's otherwise)
        self._data_frame = data_frame_builder(client=ws.client)
        self._stream = stream
        self._ssl = tls_object(stream)
        self._ws = ws
        # one write at a time (tunnel frames, pong and close replies); no lock object, so an
        # uncontended write does not yield to the event loop just to take it
        self._writing = False
        self._write_done: anyio.Event | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        if pending:
            ws.receive_data(pending)

    async def _write(self, data: bytes) -> None:
        if not data:
            return
        while self._writing:
            if self._write_done is None:
                self._write_done = anyio.Event()
            await self._write_done.wait()
        self._writing = True
        try:
            await self._stream.send(data)
        finally:
            self._writing = False
            done, self._write_done = self._write_done, None
            if done is not None:
                done.set()

    async def send(self, data: bytes) -> None:
        if self._ws.state is not ConnectionState.OPEN:
            return
        frame = self._data_frame(data) if self._data_frame is not None else self._ws.send(Message(data=data))
        with contextlib.suppress(*_GONE):
            await self._write(frame)  # a loss is reported by receive()

    def watch_writes(self, timeout: float) -> bool:
        """Tell a slow peer from one that takes nothing (see :meth:`LargeReads.watch_writes`); False where the
        stream below the WebSocket (below TLS, if any) is not a watched socket."""
        below = getattr(self._stream, "transport_stream", self._stream)  # an anyio TLSStream's socket side
        return isinstance(below, LargeReads) and below.watch_writes(timeout)

    async def receive(self) -> bytes:
        while True:
            for event in self._ws.events():
                if isinstance(event, BytesMessage):
                    if event.data:
                        return bytes(event.data)
                elif isinstance(event, TextMessage):
                    await self.close(WS_UNSUPPORTED_DATA, "radical-edge tunnels carry binary messages only")
                    return b""
                elif isinstance(event, Ping):
                    with contextlib.suppress(*_GONE):
                        await self._write(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.close_code, self.close_reason = event.code, event.reason
                    if self._ws.state is ConnectionState.REMOTE_CLOSING:
                        with contextlib.suppress(*_GONE):
                            await self._write(self._ws.send(event.response()))
                    return b""
            try:
                data = await self._stream.receive(LARGE_READ)
            except _GONE:
                return b""
            self._ws.receive_data(with_buffered_tls(self._ssl, data))

    async def close(self, code: int = WS_NORMAL, reason: str = "") -> None:
        """Send a WebSocket close (if still open); the stream is closed by :meth:`aclose`."""
        if self._ws.state is ConnectionState.OPEN:
            with contextlib.suppress(*_GONE):
                await self._write(self._ws.send(CloseConnection(code=code, reason=reason)))

    async def aclose(self) -> None:
        """Send a close frame and close the stream; never raises, never takes more than ~2 s.

        A TLS close can fail (the peer's close frame arrives after our
        close_notify, or another task is reading): the stream is then closed
        without ceremony.
        """
        with anyio.move_on_after(2, shield=True):
            await self.close()
            with contextlib.suppress(*_GONE, anyio.BusyResourceError):
                await self._stream.aclose()
                return
        with contextlib.suppress(*_GONE, anyio.BusyResourceError):
            await anyio.aclose_forcefully(self._stream)
