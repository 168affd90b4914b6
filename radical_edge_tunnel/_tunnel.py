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
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import anyio
import anyio.abc

from radical_edge_proto import (
    MAX_WINDOW,
    Connection,
    ConnectionClosed,
    ConnState,
    Data,
    ErrorCode,
    Event,
    LocalProtocolError,
    PingReceived,
    PongReceived,
    RemoteProtocolError,
    RequestReceived,
    ResponseReceived,
    StreamReset,
    Subscription,
    WindowUpdated,
)

from ._carrier import Carrier
from ._limits import MAX_CONNECTION_WINDOW, MAX_STREAM_WINDOW

log = logging.getLogger("radical_edge.tunnel")

HeaderList = Iterable[tuple[bytes | str, bytes | str]]

#: the timer task's wake-up is moved out (a cancel-scope deadline set, no task woken) once bytes received put the
#: connection's next deadline at least this many seconds (or a quarter of the heartbeat interval, if shorter)
#: later: a busy tunnel re-arms at most about once per second
TIMER_SLACK = 1.0


class TunnelError(Exception):
    """Base of the tunnel's errors; ``code`` is the protocol error code.

    ``close_event`` is how the connection ended, when the error comes from its end.
    """

    def __init__(
        self,
        msg: str,
        code: ErrorCode | int = ErrorCode.INTERNAL_ERROR,
        *,
        close_event: ConnectionClosed | None = None,
    ) -> None:
        super().__init__(msg)
        self.code = code
        self.close_event = close_event


class StreamResetError(TunnelError):
    """The stream was reset (by the peer, by this side, or because the tunnel ended).

    When the tunnel's end took the stream with it, ``code`` is the code the
    connection ended with (the peer's GOAWAY, the protocol error found in what
    the peer sent, ``TIMEOUT``, ``CONNECTION_LOST`` for a dead carrier) and
    ``close_event`` says why.
    """


class TunnelClosedError(TunnelError):
    """The tunnel is closed or draining: no new stream can open on it.

    ``code`` is ``REFUSED_STREAM`` (the request was not sent: another
    connection may take it); ``close_event`` is why the tunnel ended, if it did.
    """


def _code_name(code: ErrorCode | int) -> str:
    return code.name if isinstance(code, ErrorCode) else str(code)


def _describe(closed: ConnectionClosed) -> str:
    """``"by the peer (INTERNAL_ERROR: reason)"``, ``"(TIMEOUT: reason)"``: who ended a connection and why."""
    why = _code_name(closed.error_code) + (f": {closed.reason}" if closed.reason else "")
    return f"by the peer ({why})" if closed.by_peer else f"({why})"


class TunnelStream:
    """One request/response exchange on a tunnel."""

    def __init__(self, tunnel: Tunnel, stream_id: int, head: RequestReceived | None = None) -> None:
        self.tunnel = tunnel
        self.id = stream_id
        self.request = head
        self.response: ResponseReceived | None = None
        self._chunks: deque[bytes] = deque()
        self._ended = False  # the peer's side ended (all its body is in _chunks)
        self._sent_end = False  # this side ended its half
        self._reset: ErrorCode | int | None = None
        self._reset_by_peer = False
        self._reset_cause: ConnectionClosed | None = None  # the connection's end, when that reset it
        # events are made only when a task has to wait (most exchanges never do): an anyio
        # Event costs a backend lookup, and a stream is made per request
        self._wake: anyio.Event | None = None  # head, data, end or reset arrived
        self._reset_seen: anyio.Event | None = None
        self._reset_callbacks: list[Callable[[], None]] = []
        self._head_callbacks: list[Callable[[], None]] = []
        #: the handler's scope (streams the peer opened): cancelled when the stream dies under it
        self._scope: anyio.CancelScope | None = None
        if head is not None and head.end_stream:
            self._ended = True

    # ---------------------------------------------------------------- called by the tunnel

    def _on_response(self, event: ResponseReceived) -> None:
        self.response = event
        self._ended = event.end_stream
        self._run_head_callbacks()
        self._notify()
        self._forget_if_done()

    def _forget_if_done(self) -> None:
        """Drop the tunnel's reference once the exchange is over both ways and every byte was taken:
        a finished stream must not stay in the tunnel's table (one per request, for ever)."""
        if self._sent_end and self._ended and not self._chunks:
            self.tunnel._streams.pop(self.id, None)

    def _run_head_callbacks(self) -> None:
        callbacks, self._head_callbacks = self._head_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("stream %d: response callback failed", self.id)

    def _on_data(self, event: Data) -> None:
        if event.data:
            self._chunks.append(event.data)
        if event.end_stream:
            self._ended = True
            self._forget_if_done()
        self._notify()

    def _on_reset(self, code: ErrorCode | int, by_peer: bool, cause: ConnectionClosed | None = None) -> None:
        if self._reset is None:
            self._reset = code
            self._reset_by_peer = by_peer
            self._reset_cause = cause
            if self._reset_seen is not None:
                self._reset_seen.set()
            callbacks, self._reset_callbacks = self._reset_callbacks, []
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    log.exception("stream %d: reset callback failed", self.id)
            self._run_head_callbacks()
        if self._scope is not None and (by_peer or cause is not None):
            self._scope.cancel()  # nobody waits for this work any more: stop it
        self._notify()

    def _notify(self) -> None:
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()

    async def _wait(self) -> None:
        """Wait for the next :meth:`_notify` (callers re-check their condition after it)."""
        if self._wake is None:
            self._wake = anyio.Event()
        await self._wake.wait()

    def _raise_if_reset(self) -> None:
        if self._reset is not None:
            cause = self._reset_cause
            if cause is not None:
                msg = f"stream {self.id} reset: the connection was closed {_describe(cause)}"
            else:
                who = "peer" if self._reset_by_peer else "tunnel"
                msg = f"stream {self.id} reset by the {who} ({_code_name(self._reset)})"
            raise StreamResetError(msg, self._reset, close_event=cause)

    # ---------------------------------------------------------------- public

    @property
    def reset_code(self) -> ErrorCode | int | None:
        return self._reset

    @property
    def send_window(self) -> int:
        """Body bytes :meth:`send` may write now without waiting for credit (0 once this side ended)."""
        return self.tunnel._conn.send_window(self.id)

    def on_reset(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (synchronously, once) when the stream is reset; at once if it already was.

        The cheap way to react to a caller that went away: no task waits for it.  On a stream the peer
        opened, the callbacks end with the handler serving it: once the handler returns, a later reset
        calls none of them.
        """
        if self._reset is not None:
            callback()
        else:
            self._reset_callbacks.append(callback)

    def on_response(self, callback: Callable[[], None]) -> None:
        """(opener) Call ``callback()`` (synchronously, once) when :meth:`wait_response` would no longer
        wait: the response head arrived or the stream was reset; at once if that happened already."""
        if self.response is not None or self._reset is not None:
            callback()
        else:
            self._head_callbacks.append(callback)

    @property
    def at_end(self) -> bool:
        """Whether :meth:`receive` would return ``b""`` now: the peer's body ended and all of it was taken."""
        return self._ended and not self._chunks and self._reset is None

    @property
    def body_complete(self) -> bool:
        """Whether the peer's whole body is here (its end arrived; :meth:`receive` never waits again)."""
        return self._ended or self._reset is not None

    async def wait_reset(self) -> ErrorCode | int:
        """Wait until the stream is reset (by the peer, by this side or by the tunnel's end); returns the code.

        A stream that ends normally is never reset: cancel the waiter when the exchange is over.
        """
        if self._reset is None:
            if self._reset_seen is None:
                self._reset_seen = anyio.Event()
            await self._reset_seen.wait()
        assert self._reset is not None
        return self._reset

    async def wait_response(self) -> ResponseReceived:
        """(opener) Wait for the peer's response head."""
        while self.response is None and self._reset is None:
            await self._wait()
        self._raise_if_reset()
        assert self.response is not None
        return self.response

    async def receive(self) -> bytes:
        """The next body chunk, ``b""`` at the end.  Credit for it goes back to the peer."""
        while not self._chunks:
            self._raise_if_reset()
            if self._ended:
                return b""
            await self._wait()
        chunk = self._chunks.popleft()
        if not self._chunks and self._ended:
            self._forget_if_done()
        conn = self.tunnel._conn
        if not conn.closed:
            probing = conn.probing
            conn.acknowledge_received_data(self.id, len(chunk), anyio.current_time())
            if not probing and conn.probing:  # the first data consumed scheduled round-trip probes
                self.tunnel._retime()
            await self.tunnel._flush_soon()
        return chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.receive():
            yield chunk

    @property
    def body_ready(self) -> bool:
        """Whether :meth:`receive` would return now, without waiting (a chunk or the end is here)."""
        return bool(self._chunks) or self._ended or self._reset is not None

    async def respond(
        self, status: int, headers: HeaderList = (), *, end_stream: bool = False, flush: bool = True
    ) -> None:
        """(handler) Send the response head.

        ``flush=False`` only queues it, to leave with the body that the caller sends next
        (one carrier message instead of two).
        """
        self._raise_if_reset()
        self.tunnel._conn.send_response(self.id, status, headers, end_stream=end_stream)
        if end_stream:
            self._sent_end = True
            self._forget_if_done()
            self.tunnel._wake_senders()  # a stream may have closed: drain() re-checks
        if flush:
            await self.tunnel._flush_soon()

    async def send(self, data: bytes | bytearray | memoryview, *, end_stream: bool = False) -> None:
        """Send body bytes, waiting for credit as needed."""
        conn = self.tunnel._conn
        view = memoryview(data)
        while True:
            self._raise_if_reset()
            if conn.closed:
                raise self.tunnel._stream_lost(self.id)
            window = conn.send_window(self.id)
            if view and not window:
                await self.tunnel.flush()  # what is queued (a head sent with flush=False) must not wait with us
                if not conn.closed and self._reset is None and not conn.send_window(self.id):
                    await self.tunnel.window_changed()
                continue
            n = min(window, len(view))
            last = n == len(view)
            conn.send_data(self.id, view[:n], end_stream=end_stream and last)
            if end_stream and last:
                self._sent_end = True
                self._forget_if_done()
                self.tunnel._wake_senders()  # a stream may have closed: drain() re-checks
            await self.tunnel._flush_soon()
            view = view[n:]
            if last:
                return

    async def end(self) -> None:
        await self.send(b"", end_stream=True)

    async def reset(self, code: ErrorCode = ErrorCode.CANCEL) -> None:
        """Abort the stream both ways; harmless if it already ended."""
        if self._reset is None and not self.tunnel._conn.closed:
            self.tunnel._conn.reset_stream(self.id, code)
            self._on_reset(code, by_peer=False)
            self.tunnel._streams.pop(self.id, None)
            self.tunnel._wake_senders()  # a stream closed: drain() re-checks
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

    The connection is the tunnel's own once handed over: send through the
    tunnel's methods, which write what they queue (:meth:`send_event`,
    :meth:`subscribe`, :meth:`unsubscribe`, :meth:`send_manifest`,
    :meth:`request`, :meth:`drain`, :meth:`aclose`).  To send many events at
    once, or from a synchronous callback, queue each with
    :meth:`queue_event` and write them with one :meth:`flush`.

    When the connection ends, :attr:`close_event` says why (the peer's
    REJECT or GOAWAY, a protocol error found in what it sent, a heartbeat
    timeout, a dead carrier, or :meth:`aclose` here), and every stream still
    open ends with that code and reason.

    One task writes at a time (see :meth:`flush`).  A task that queues a
    frame (a request or response head, body bytes, credit) while another
    one writes leaves it to that writer and goes on.  It waits for the
    writer instead once :attr:`handoff_limit` bytes or more than
    :attr:`handoff_frames` frames are queued (the queue stays bounded), or
    once the writer has written :attr:`handoff_rounds` times in a row (the
    writer is one of the stream tasks: with the others waiting it soon
    finds nothing more queued and goes back to its own stream).  A frame
    handed off is queued, not yet written; a failure to write it is
    reported the way every carrier loss is (the stream is reset).
    :meth:`flush` is the call that returns once the bytes are written.
    """

    #: see the class description
    handoff_limit = 64 * 1024
    #: see the class description
    handoff_rounds = 4
    #: see the class description (it also bounds the count :meth:`Connection.bytes_queued` makes)
    handoff_frames = 64

    def __init__(
        self,
        conn: Connection,
        carrier: Carrier,
        *,
        handler: Handler | None = None,
        on_event: EventSink | None = None,
        name: str = "",
    ) -> None:
        self._conn = conn
        self.carrier = carrier
        self.name = name
        self._handler = handler
        self._on_event = on_event
        self._streams: dict[int, TunnelStream] = {}
        # one writer at a time (see flush); waiters are woken through _write_done
        self._writing = False
        self._write_rounds = 0  # writes done by the task writing now
        self._write_done: anyio.Event | None = None
        self._window: anyio.Event | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        #: set once :meth:`run` has finished (the carrier is closed)
        self.closed = anyio.Event()
        #: why the connection ended (``None`` while it has not)
        self.close_event: ConnectionClosed | None = None
        self._write_timeout = 0.0
        self._watched = False  # the carrier gives a write up itself (watch_writes): a slow peer is waited for
        self.write_timeout = 30.0
        self._timer_scope: anyio.CancelScope | None = None  # the timer task's sleep (its deadline moves: _retime)
        self._timer_at = 0.0  # when the timer task wakes up
        self._max_windows = (MAX_STREAM_WINDOW, MAX_CONNECTION_WINDOW)

    @property
    def write_timeout(self) -> float:
        """Seconds a peer may take no data of a write before the carrier is given up (see :meth:`flush`)."""
        return self._write_timeout

    @write_timeout.setter
    def write_timeout(self, seconds: float) -> None:
        self._write_timeout = seconds
        watch = getattr(self.carrier, "watch_writes", None)
        self._watched = bool(watch(seconds)) if callable(watch) else False

    @property
    def max_stream_window(self) -> int:
        """How far a stream's receive window may grow on a long path (bytes; see ``Connection.tune_windows``).
        Read when :meth:`run` starts; 1 .. 2**31-1 (ValueError otherwise)."""
        return self._max_windows[0]

    @max_stream_window.setter
    def max_stream_window(self, value: int) -> None:
        self._max_windows = (_window(value, "max_stream_window"), self._max_windows[1])

    @property
    def max_connection_window(self) -> int:
        """The same for the connection's window."""
        return self._max_windows[1]

    @max_connection_window.setter
    def max_connection_window(self, value: int) -> None:
        self._max_windows = (self._max_windows[0], _window(value, "max_connection_window"))

    # ---------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until the connection ends; then every open stream is reset and handlers cancelled."""
        if not self._conn.closed:
            self._conn.tune_windows(*self._max_windows)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._timer)
                task_status.started()
                await self._reader()
                tg.cancel_scope.cancel()
        finally:
            self._tg = None
            if not self._conn.closed:
                self._dispatch(self._conn.connection_lost())
            code = self.close_event.error_code if self.close_event is not None else ErrorCode.CONNECTION_LOST
            for stream in list(self._streams.values()):
                stream._on_reset(code, by_peer=False, cause=self.close_event)
            self._streams.clear()
            self._wake_senders()
            self.closed.set()
            with anyio.CancelScope(shield=True):
                await self.carrier.aclose()

    async def aclose(self, code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """End the connection now (GOAWAY with ``code``) and close the carrier.

        :attr:`close_event` becomes ``ConnectionClosed(code, reason, by_peer=False)``,
        which ``on_event`` receives too.
        """
        if not self._conn.closed:
            resets = self._conn.close(code, reason)
            self._dispatch([ConnectionClosed(code, reason, by_peer=False), *resets])
            with anyio.move_on_after(2, shield=True):
                await self.flush(within=2)
        await self.carrier.aclose()

    async def drain(self, reason: str = "draining") -> None:
        """Graceful stop: GOAWAY, let in-flight streams finish, then close."""
        if self.is_open:
            self._conn.send_goaway(ErrorCode.NO_ERROR, reason)
            await self.flush()
        while self._conn.open_streams and not self._conn.closed:
            await self.window_changed()
        await self.aclose()

    # ---------------------------------------------------------------- state

    @property
    def is_open(self) -> bool:
        """Whether new streams may open: the handshake is done and neither side has sent GOAWAY."""
        return self._conn.state is ConnState.OPEN

    @property
    def is_closed(self) -> bool:
        """Whether the connection has ended (nothing more is sent or received on it).

        A draining tunnel (GOAWAY sent or received) is neither open nor closed.
        The carrier may still be closing: :attr:`closed` is set when that is done too.
        """
        return self._conn.closed

    @property
    def open_stream_count(self) -> int:
        """Streams not yet finished in both directions."""
        return len(self._conn.open_streams)

    @property
    def subscriptions(self) -> dict[int, Subscription]:
        """(hub) The peer's subscriptions now, by id (a copy)."""
        return self._conn.subscriptions

    @property
    def max_outbound_frame_size(self) -> int:
        """The largest frame the peer accepts (an EVENT's payload must fit in it with its names)."""
        return self._conn.max_outbound_frame_size

    def _stream_lost(self, stream_id: int) -> StreamResetError:
        """The error for a stream used after the connection ended: with the code and reason it ended with."""
        cause = self.close_event
        if cause is None:
            return StreamResetError(f"stream {stream_id}: the connection was lost", ErrorCode.CONNECTION_LOST)
        msg = f"stream {stream_id}: the connection was closed {_describe(cause)}"
        return StreamResetError(msg, cause.error_code, close_event=cause)

    def _not_open(self) -> TunnelClosedError:
        cause = self.close_event
        if cause is not None:
            why = f"was closed {_describe(cause)}"
        else:
            why = "is closed" if self._conn.closed else "is draining"
        return TunnelClosedError(f"tunnel {self.name} {why}", ErrorCode.REFUSED_STREAM, close_event=cause)

    # ---------------------------------------------------------------- connection-level sending

    def queue_event(self, source: str, plugin: str, topic: str, seq: int, payload: bytes) -> bool:
        """Queue a notification without writing it: call :meth:`flush` after a batch.

        As :meth:`Connection.send_event`: on the hub it is queued only if a
        subscription of the peer wants it; returns whether it was.  Raises
        ``LocalProtocolError`` (``FRAME_SIZE_ERROR``: too large for the peer's
        frames; otherwise the connection is closing) and queues nothing then.
        """
        return self._conn.send_event(source, plugin, topic, seq, payload)

    async def send_event(self, source: str, plugin: str, topic: str, seq: int, payload: bytes) -> bool:
        """Send a notification now (:meth:`queue_event`, then :meth:`flush`); returns whether it was sent."""
        queued = self._conn.send_event(source, plugin, topic, seq, payload)
        await self.flush()
        return queued

    async def subscribe(
        self, subscription_id: int, subscription: Subscription | None = None, *, resume_after: int | None = None
    ) -> None:
        """(connector) Ask for notifications (all of them by default); see :meth:`Connection.subscribe`."""
        self._conn.subscribe(subscription_id, subscription, resume_after=resume_after)
        await self.flush()

    async def unsubscribe(self, subscription_id: int) -> None:
        """(connector) Cancel a subscription."""
        self._conn.unsubscribe(subscription_id)
        await self.flush()

    async def send_manifest(self, manifest: dict[str, Any]) -> None:
        """(connector) Replace the plugin manifest the hub knows for this side."""
        self._conn.send_manifest(manifest)
        await self.flush()

    # ---------------------------------------------------------------- I/O

    async def flush(self, *, within: float | None = None) -> None:
        """Write what the connection has queued; return once it is written.

        One task writes at a time, and it keeps writing until nothing is
        queued, so frames queued meanwhile by other tasks leave in the same
        round (their ``flush`` then only waits for it).  Nothing queued and
        nobody writing: returns at once, without yielding.

        Bytes taken from the connection are written even if the caller is
        cancelled meanwhile (a RESET sent by a task that is being cancelled
        must still go out).  A peer that takes no data for ``write_timeout``
        is given up (the carrier is closed, since the frame stream is then
        cut), but a slow one is not: a carrier over TCP watches its own
        writes (``watch_writes``): one that has waited half of
        ``write_timeout`` is given up only once the peer takes none of it
        for another half.  On other carriers one write may take
        ``write_timeout``.  ``within`` (seconds), for a connection that is
        closing anyway: the write is given up then, however the peer takes
        it (a peer that trickles must not hold a close up).
        """
        while self._writing:
            if self._write_done is None:
                self._write_done = anyio.Event()
            await self._write_done.wait()
        data = self._conn.data_to_send()
        if not data:
            return
        self._writing = True
        limit = math.inf if within is None else anyio.current_time() + within
        try:
            with anyio.CancelScope(shield=True, deadline=limit) as scope:
                while data:
                    if not self._watched:
                        scope.deadline = min(anyio.current_time() + self._write_timeout, limit)
                    self._write_rounds += 1
                    await self.carrier.send(data)
                    data = self._conn.data_to_send()
            if scope.cancelled_caught:
                if anyio.current_time() >= limit:
                    log.debug("%s: the last frames did not leave within %g s", self.name or "tunnel", within)
                else:
                    log.warning("%s: peer took no data for %s s; closing", self.name or "tunnel", self._write_timeout)
                await self.carrier.aclose()
        finally:
            self._writing = False
            self._write_rounds = 0
            done, self._write_done = self._write_done, None
            if done is not None:
                done.set()

    async def _flush_soon(self) -> None:
        """:meth:`flush`, or leave what is queued to the task writing now (see the class description): with
        many streams a task need not wait for the round that writes its frames, one wake-up less per frame."""
        if (
            self._writing
            and self._write_rounds < self.handoff_rounds
            and self._conn.frames_queued <= self.handoff_frames
            and self._conn.bytes_queued < self.handoff_limit
        ):
            return
        await self.flush()

    async def window_changed(self) -> None:
        """Wait until some credit arrives or some stream changes state."""
        if self._window is None:
            self._window = anyio.Event()
        await self._window.wait()

    def _wake_senders(self) -> None:
        window, self._window = self._window, None
        if window is not None:
            window.set()

    async def _reader(self) -> None:
        while True:
            data = await self.carrier.receive()
            if not data:
                self._dispatch(self._conn.connection_lost())
                return
            try:
                events = self._conn.receive_data(data, anyio.current_time())
            except RemoteProtocolError as exc:
                log.warning("%s: protocol error from peer: %s", self.name or "tunnel", exc)
                # what came before the bad frame, then the end and its resets: streams learn the real cause
                self._dispatch(exc.events)
                with anyio.move_on_after(2):
                    await self.flush(within=2)
                return
            self._dispatch(events)
            self._retime()
            await self._flush_soon()
            if self._conn.closed:
                return

    def _retime(self) -> None:
        """Keep the sleeping timer task's wake-up at the connection's next deadline: earlier at once (a
        round-trip probe scheduled by the first data consumed, the busy heartbeat of a first stream after
        none), later once it moved by :data:`TIMER_SLACK`
        or more (bytes received put the heartbeat's deadlines off; without this the timer task would wake at
        the old one for nothing, on an idle connection once per PING).  A cancel scope's deadline set: no
        task is woken."""
        scope, interval = self._timer_scope, self._conn.heartbeat_interval
        if scope is None or interval is None or (due := self._conn.next_timer()) is None:
            return
        if due < self._timer_at or due - self._timer_at >= min(TIMER_SLACK, interval / 4):
            self._timer_at = scope.deadline = due

    async def _timer(self) -> None:
        while True:
            due = self._conn.next_timer()
            if due is None:
                return
            if due > anyio.current_time():
                # asleep until then, or until whenever _retime moves the deadline to
                self._timer_at = due
                with anyio.move_on_at(due) as self._timer_scope:
                    await anyio.sleep_forever()
                self._timer_scope = None
                if anyio.current_time() < self._timer_at:  # a deadline moved out after the scope had fired
                    continue
            self._dispatch(self._conn.handle_timer(anyio.current_time()))
            await self.flush()
            if self._conn.closed:
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
                    self._conn.acknowledge_received_data(event.stream_id, len(event.data))
                if event.end_stream:
                    self._wake_senders()  # a stream may have closed: drain() re-checks
            elif isinstance(event, WindowUpdated):
                self._wake_senders()
            elif isinstance(event, ResponseReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._on_response(event)
                if event.end_stream:
                    self._wake_senders()
            elif isinstance(event, RequestReceived):
                self._on_request(event)
            elif isinstance(event, StreamReset):
                stream = self._streams.pop(event.stream_id, None)
                if stream is not None:
                    # after the ConnectionClosed, a reset is the connection's end taking the stream along
                    stream._on_reset(event.error_code, event.by_peer, self.close_event)
                self._wake_senders()
            elif isinstance(event, PingReceived | PongReceived):
                pass  # answered by the connection; liveness and round trips are the tunnel's own business
            else:
                if isinstance(event, ConnectionClosed):
                    self.close_event = event
                if self._on_event is not None:
                    self._on_event(event)

    def _on_request(self, event: RequestReceived) -> None:
        if self._conn.closed:
            return  # it arrived with the connection's end, which reset it: nobody may serve it
        stream = TunnelStream(self, event.stream_id, event)
        if self._handler is None or self._tg is None:
            self._conn.reset_stream(event.stream_id, ErrorCode.REFUSED_STREAM)
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
            if not self._conn.closed:
                await stream.reset(ErrorCode.INTERNAL_ERROR)
        finally:
            # the handler is done: what it hung on the stream (its scope, reset callbacks that close over
            # its state, which refers back to the stream) goes, so the stream is freed by reference
            # counting when it is forgotten, not later by the cyclic garbage collector
            stream._scope = None
            stream._reset_callbacks.clear()
            if stream.id in self._streams and stream.id not in self._conn.open_streams:
                self._streams.pop(stream.id, None)

    # ---------------------------------------------------------------- opening streams

    async def request(
        self, method: str, path: str, headers: HeaderList = (), *, end_stream: bool = False
    ) -> TunnelStream:
        """Open a stream with a request head; waits while the peer's stream limit is reached.

        Raises :class:`TunnelClosedError` if the tunnel is draining or closed.
        """
        while True:
            if not self.is_open:
                raise self._not_open()
            try:
                # the time: a first stream after an idle stretch may bring the heartbeat's deadlines forward
                stream_id = self._conn.send_request(
                    method, path, headers, end_stream=end_stream, now=anyio.current_time()
                )
            except LocalProtocolError as exc:
                if exc.error_code is ErrorCode.REFUSED_STREAM and self._conn.peer_limits is not None:
                    await self.window_changed()  # a stream slot frees up when a stream ends
                    continue
                raise
            break
        stream = TunnelStream(self, stream_id)
        stream._sent_end = end_stream
        self._streams[stream_id] = stream
        self._retime()
        await self._flush_soon()
        return stream


def _window(value: int, name: str) -> int:
    if not isinstance(value, int) or not 1 <= value <= MAX_WINDOW:
        raise ValueError(f"{name} must be an int in [1, 2**31-1], not {value!r}")
    return value
