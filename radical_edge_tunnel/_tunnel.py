"""Run a protocol-core Connection over a carrier, with anyio.

One :class:`Tunnel` per connection: a reader task feeding the core, a timer
task for heartbeats, writes serialised by a lock, and one task per stream
the peer opens (handed to ``handler``).  Streams are :class:`TunnelStream`
objects with awaitable ``send``/``receive`` that respect flow control: a
sender waits for credit, and credit goes back only as the application
consumes, so memory stays bounded end to end.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import anyio
import anyio.abc

from radical_edge_proto import (
    Connection,
    ConnectionClosed,
    Data,
    ErrorCode,
    Event,
    LocalProtocolError,
    RemoteProtocolError,
    Request,
    Response,
    StreamReset,
    WindowUpdated,
)

from ._carrier import Carrier

log = logging.getLogger("radical_edge.tunnel")

HeaderList = Iterable[tuple[bytes | str, bytes | str]]


class TunnelError(Exception):
    """Base of the tunnel's errors; ``code`` is the protocol error code."""

    def __init__(self, msg: str, code: ErrorCode | int = ErrorCode.INTERNAL_ERROR) -> None:
        super().__init__(msg)
        self.code = code


class StreamResetError(TunnelError):
    """The stream was reset (by the peer, by this side, or because the tunnel died)."""


class TunnelClosedError(TunnelError):
    """The tunnel is closed or draining: no new stream can open on it."""


class TunnelStream:
    """One request/response exchange on a tunnel."""

    def __init__(self, tunnel: Tunnel, stream_id: int, head: Request | None = None) -> None:
        self.tunnel = tunnel
        self.id = stream_id
        self.request = head
        self.response: Response | None = None
        self._head_ready = anyio.Event()
        self._chunks: deque[bytes] = deque()
        self._ended = False
        self._reset: ErrorCode | int | None = None
        self._reset_by_peer = False
        self._wake = anyio.Event()
        self._reset_seen = anyio.Event()
        #: the handler's scope (streams the peer opened): cancelled when the stream dies under it
        self._scope: anyio.CancelScope | None = None
        if head is not None and head.end_stream:
            self._ended = True

    # ---------------------------------------------------------------- called by the tunnel

    def _on_response(self, event: Response) -> None:
        self.response = event
        self._ended = event.end_stream
        self._head_ready.set()
        self._notify()

    def _on_data(self, event: Data) -> None:
        if event.data:
            self._chunks.append(event.data)
        if event.end_stream:
            self._ended = True
        self._notify()

    def _on_reset(self, code: ErrorCode | int, by_peer: bool) -> None:
        if self._reset is None:
            self._reset = code
            self._reset_by_peer = by_peer
            self._reset_seen.set()
        if self._scope is not None and (by_peer or code == ErrorCode.CONNECTION_LOST):
            self._scope.cancel()  # nobody waits for this work any more: stop it
        self._head_ready.set()
        self._notify()

    def _notify(self) -> None:
        self._wake.set()
        self._wake = anyio.Event()

    def _raise_if_reset(self) -> None:
        if self._reset is not None:
            who = "peer" if self._reset_by_peer else "tunnel"
            name = self._reset.name if isinstance(self._reset, ErrorCode) else str(self._reset)
            raise StreamResetError(f"stream {self.id} reset by the {who} ({name})", self._reset)

    # ---------------------------------------------------------------- public

    @property
    def reset_code(self) -> ErrorCode | int | None:
        return self._reset

    async def wait_reset(self) -> ErrorCode | int:
        """Wait until the stream is reset (by the peer, by this side or by the tunnel's end); returns the code.

        A stream that ends normally is never reset: cancel the waiter when the exchange is over.
        """
        await self._reset_seen.wait()
        assert self._reset is not None
        return self._reset

    async def wait_response(self) -> Response:
        """(opener) Wait for the peer's response head."""
        await self._head_ready.wait()
        self._raise_if_reset()
        assert self.response is not None
        return self.response

    async def receive(self) -> bytes:
        """The next body chunk, ``b""`` at the end.  Credit for it goes back to the peer."""
        while not self._chunks:
            self._raise_if_reset()
            if self._ended:
                return b""
            await self._wake.wait()
        chunk = self._chunks.popleft()
        conn = self.tunnel.conn
        if not conn.closed:
            conn.acknowledge_received_data(self.id, len(chunk))
            await self.tunnel.flush()
        return chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.receive():
            yield chunk

    async def respond(self, status: int, headers: HeaderList = (), *, end_stream: bool = False) -> None:
        """(handler) Send the response head."""
        self._raise_if_reset()
        self.tunnel.conn.send_response(self.id, status, headers, end_stream=end_stream)
        if end_stream:
            self.tunnel._wake_senders()  # a stream may have closed: drain() re-checks
        await self.tunnel.flush()

    async def send(self, data: bytes | bytearray | memoryview, *, end_stream: bool = False) -> None:
        """Send body bytes, waiting for credit as needed."""
        conn = self.tunnel.conn
        view = memoryview(data)
        while True:
            self._raise_if_reset()
            if conn.closed:
                raise StreamResetError(f"stream {self.id}: the tunnel closed", ErrorCode.CONNECTION_LOST)
            window = conn.send_window(self.id)
            if view and not window:
                await self.tunnel.window_changed()
                continue
            n = min(window, len(view))
            last = n == len(view)
            conn.send_data(self.id, view[:n], end_stream=end_stream and last)
            if end_stream and last:
                self.tunnel._wake_senders()  # a stream may have closed: drain() re-checks
            await self.tunnel.flush()
            view = view[n:]
            if last:
                return

    async def end(self) -> None:
        await self.send(b"", end_stream=True)

    async def reset(self, code: ErrorCode = ErrorCode.CANCEL) -> None:
        """Abort the stream both ways; harmless if it already ended."""
        if self._reset is None and not self.tunnel.conn.closed:
            self.tunnel.conn.reset_stream(self.id, code)
            self._on_reset(code, by_peer=False)
            self.tunnel._streams.pop(self.id, None)
            # a task being cancelled resets its streams: the RESET must still go out now, not with
            # whatever frame is flushed next (flush() would stop at its lock, leaving it queued)
            with anyio.CancelScope(shield=True):
                await self.tunnel.flush()


Handler = Callable[[TunnelStream], Awaitable[None]]
EventSink = Callable[[Event], None]


class Tunnel:
    """A handshaken :class:`Connection` running over a :class:`Carrier`.

    ``handler`` serves streams the peer opens (one task each); ``on_event``
    receives connection-level events (notifications, subscriptions, manifest
    updates, GOAWAY, the final ConnectionClosed) synchronously, in order.
    """

    def __init__(
        self,
        conn: Connection,
        carrier: Carrier,
        *,
        handler: Handler | None = None,
        on_event: EventSink | None = None,
        name: str = "",
    ) -> None:
        self.conn = conn
        self.carrier = carrier
        self.name = name
        self._handler = handler
        self._on_event = on_event
        self._streams: dict[int, TunnelStream] = {}
        self._write_lock = anyio.Lock()
        self._window = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self.closed = anyio.Event()
        self.close_event: ConnectionClosed | None = None
        #: seconds a write may take before the carrier is given up
        self.write_timeout = 30.0

    # ---------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until the connection ends; then every open stream is reset and handlers cancelled."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._timer)
                task_status.started()
                await self._reader()
                tg.cancel_scope.cancel()
        finally:
            self._tg = None
            if not self.conn.closed:
                self._dispatch(self.conn.connection_lost())
            for stream in list(self._streams.values()):
                stream._on_reset(ErrorCode.CONNECTION_LOST, by_peer=False)
            self._streams.clear()
            self._wake_senders()
            self.closed.set()
            with anyio.CancelScope(shield=True):
                await self.carrier.aclose()

    async def aclose(self, code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """End the connection now (GOAWAY with ``code``) and close the carrier."""
        if not self.conn.closed:
            self._dispatch(self.conn.close(code, reason))
            with anyio.move_on_after(2, shield=True):
                await self.flush()
        await self.carrier.aclose()

    async def drain(self, reason: str = "draining") -> None:
        """Graceful stop: GOAWAY, let in-flight streams finish, then close."""
        if self.conn.state.name == "OPEN":
            self.conn.send_goaway(ErrorCode.NO_ERROR, reason)
            await self.flush()
        while self.conn.open_streams and not self.conn.closed:
            await self.window_changed()
        await self.aclose()

    # ---------------------------------------------------------------- I/O

    async def flush(self) -> None:
        """Write what the connection has queued.

        Bytes taken from the connection are written even if the caller is
        cancelled meanwhile (a RESET sent by a task that is being cancelled
        must still go out); a carrier that takes longer than
        ``write_timeout`` for it is closed, since the frame stream is then cut.
        """
        async with self._write_lock:
            data = self.conn.data_to_send()
            if not data:
                return
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(self.write_timeout) as scope:
                    await self.carrier.send(data)
                if scope.cancelled_caught:
                    log.warning("%s: peer took no data for %s s; closing", self.name or "tunnel", self.write_timeout)
                    await self.carrier.aclose()

    async def window_changed(self) -> None:
        """Wait until some credit arrives or some stream changes state."""
        await self._window.wait()

    def _wake_senders(self) -> None:
        self._window.set()
        self._window = anyio.Event()

    async def _reader(self) -> None:
        while True:
            data = await self.carrier.receive()
            if not data:
                self._dispatch(self.conn.connection_lost())
                return
            try:
                events = self.conn.receive_data(data)
            except RemoteProtocolError as exc:
                log.warning("%s: protocol error from peer: %s", self.name or "tunnel", exc)
                with anyio.move_on_after(2):
                    await self.flush()
                self._dispatch([ConnectionClosed(exc.error_code, str(exc), by_peer=False)])
                return
            self._dispatch(events)
            await self.flush()
            if self.conn.closed:
                return

    async def _timer(self) -> None:
        while True:
            due = self.conn.next_timer()
            if due is None:
                return
            await anyio.sleep_until(due)
            self._dispatch(self.conn.handle_timer(anyio.current_time()))
            await self.flush()
            if self.conn.closed:
                await self.carrier.aclose()
                return

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Data):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._on_data(event)
                else:
                    # nobody reads it any more: give the credit back at once
                    self.conn.acknowledge_received_data(event.stream_id, len(event.data))
                if event.end_stream:
                    self._wake_senders()  # a stream may have closed: drain() re-checks
            elif isinstance(event, WindowUpdated):
                self._wake_senders()
            elif isinstance(event, Response):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._on_response(event)
                if event.end_stream:
                    self._wake_senders()
            elif isinstance(event, Request):
                self._on_request(event)
            elif isinstance(event, StreamReset):
                stream = self._streams.pop(event.stream_id, None)
                if stream is not None:
                    stream._on_reset(event.error_code, event.by_peer)
                self._wake_senders()
            else:
                if isinstance(event, ConnectionClosed):
                    self.close_event = event
                if self._on_event is not None:
                    self._on_event(event)

    def _on_request(self, event: Request) -> None:
        stream = TunnelStream(self, event.stream_id, event)
        if self._handler is None or self._tg is None:
            self.conn.reset_stream(event.stream_id, ErrorCode.REFUSED_STREAM)
            return
        self._streams[event.stream_id] = stream
        self._tg.start_soon(self._serve, stream, name=f"stream {event.stream_id}")

    async def _serve(self, stream: TunnelStream) -> None:
        assert self._handler is not None
        try:
            with anyio.CancelScope() as scope:
                stream._scope = scope
                await self._handler(stream)
        except StreamResetError:
            pass
        except Exception:
            log.exception("%s: handler for stream %d failed", self.name or "tunnel", stream.id)
            if not self.conn.closed:
                await stream.reset(ErrorCode.INTERNAL_ERROR)
        finally:
            if stream.id in self._streams and stream.id not in self.conn.open_streams:
                self._streams.pop(stream.id, None)

    # ---------------------------------------------------------------- opening streams

    async def request(
        self, method: str, path: str, headers: HeaderList = (), *, end_stream: bool = False
    ) -> TunnelStream:
        """Open a stream with a request head; waits while the peer's stream limit is reached."""
        while True:
            if self.conn.closed or self.conn.state.name != "OPEN":
                raise TunnelClosedError(f"tunnel {self.name} is not open", ErrorCode.REFUSED_STREAM)
            try:
                stream_id = self.conn.send_request(method, path, headers, end_stream=end_stream)
            except LocalProtocolError as exc:
                if exc.error_code is ErrorCode.REFUSED_STREAM and self.conn.peer_limits is not None:
                    await self.window_changed()  # a stream slot frees up when a stream ends
                    continue
                raise
            break
        stream = TunnelStream(self, stream_id)
        self._streams[stream_id] = stream
        await self.flush()
        return stream
