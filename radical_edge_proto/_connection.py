"""The connection state machine: bytes in, events out; calls in, bytes out.

A :class:`Connection` never touches a socket, a clock or a thread.  The I/O
layer feeds it received bytes with :meth:`Connection.receive_data`, asks it
for bytes to write with :meth:`Connection.data_to_send`, and drives the
heartbeat by passing the current time to :meth:`Connection.handle_timer`
at :meth:`Connection.next_timer` (and, for an exact watchdog, the arrival
time of received bytes to :meth:`Connection.receive_data`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from . import _frames as fr
from ._errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import (
    MIN_FRAME_SIZE,
    ConnectionClosed,
    Data,
    Event,
    GoAway,
    Hello,
    Limits,
    ManifestUpdated,
    Notification,
    PeerRole,
    PingReceived,
    PongReceived,
    RequestReceived,
    ResponseReceived,
    Side,
    StreamReset,
    Subscribed,
    Subscription,
    Unsubscribed,
    Welcome,
    WindowUpdated,
)
from ._frames import Flags, FrameType, RawFrame
from ._state import CONN_TRANSITIONS, HALF_TRANSITIONS, ConnInput, ConnState, HalfInput, HalfState

#: The protocol version this implementation speaks.
PROTOCOL_VERSION = 1
#: A peer is declared dead after this many heartbeat intervals of silence.
HEARTBEAT_MISSES = 3
#: On an idle connection the hub sends its own PING only after this many intervals of silence.  The
#: connector pings after one, so an idle connection costs one PING (connector) and one PONG (hub) per
#: interval, and a hub holding thousands of connections answers pings instead of also timing its own
#: for each of them.
HUB_PING_INTERVALS = 2
#: On a busy connection (a stream open) the hub asks after this many intervals of silence: a connector
#: that hears the hub all the time never pings, and a PING after two intervals, met by a stall of the
#: connector's loop of one, was answered at the third: too late.  Not after one: a connector that does
#: ping (nobody sends it anything) pings after one, and the hub would ping at the same time, for nothing.
HUB_BUSY_PING_INTERVALS = 1.5
#: Credit goes back to the peer once this fraction of a window was consumed.
CREDIT_DIVISOR = 4
#: Window tuning (see :meth:`Connection.tune_windows`): the consumption rate is measured over at least this
#: many seconds (and at least one round trip), so a burst of reads is not taken for a fast path.
TUNE_SPAN = 0.005
#: Window tuning: a path whose round trip is shorter (seconds) keeps the initial windows.  512 KiB a round
#: trip is still 100 MiB/s per stream at this bound, and on a busy host a round trip measured on loopback
#: can look a few milliseconds long (the peer's loop answers late); growing there would only let more
#: of a big download queue ahead of small answers.
TUNE_MIN_RTT = 0.005
#: Window tuning: seconds after the first data is consumed at which a PING measures the round trip (the
#: shortest one counts: the first may wait behind the very data it was sent for).  An idle connection sends none.
RTT_PROBES = (0.0, 1.0, 3.0)
_HEARTBEAT_PING = b"heartbeat"
_RTT_PING = b"rtt"

_LIVE = frozenset({ConnState.OPEN, ConnState.CLOSING_LOCAL, ConnState.CLOSING_REMOTE, ConnState.CLOSING_BOTH})

_END_STREAM = int(Flags.END_STREAM)
_DRAINING = frozenset({ConnState.CLOSING_LOCAL, ConnState.CLOSING_REMOTE, ConnState.CLOSING_BOTH})

#: frame types only one side may send (the others may be sent by both)
_SENT_ONLY_BY: dict[int, Side] = {
    FrameType.HELLO: Side.CONNECTOR,
    FrameType.SUBSCRIBE: Side.CONNECTOR,
    FrameType.UNSUBSCRIBE: Side.CONNECTOR,
    FrameType.MANIFEST: Side.CONNECTOR,
    FrameType.WELCOME: Side.HUB,
    FrameType.REJECT: Side.HUB,
}


class _Stream:
    __slots__ = (
        "consumed",
        "counted",
        "credit",
        "id",
        "local",
        "local_initiated",
        "mark",
        "recv_window",
        "remote",
        "send_window",
        "unacked",
        "window",
    )

    def __init__(self, stream_id: int, local_initiated: bool, send_window: int, recv_window: int) -> None:
        self.id = stream_id
        self.local_initiated = local_initiated
        self.local = HalfState.IDLE  # what this side sends
        self.remote = HalfState.IDLE  # what the peer sends
        self.send_window = send_window  # credit we have towards the peer
        self.recv_window = recv_window  # credit the peer has towards us
        self.unacked = 0  # received, not yet acknowledged by the application
        self.credit = 0  # acknowledged, not yet returned in a WINDOW_UPDATE
        self.counted = True  # counts against max_concurrent_streams
        self.window = recv_window  # the receive window this side keeps granting (grows when tuned)
        self.mark: float | None = None  # window tuning: when the current measurement began
        self.consumed = 0  # window tuning: bytes acknowledged since then

    @property
    def done(self) -> bool:
        return self.local is HalfState.CLOSED and self.remote is HalfState.CLOSED


def _half_move(state: HalfState, inp: HalfInput, err: type[ProtocolError], stream_id: int) -> HalfState:
    try:
        return HALF_TRANSITIONS[(state, inp)]
    except KeyError:
        raise err(
            f"stream {stream_id}: {inp.value} not allowed when that direction is {state.value}",
            ErrorCode.STREAM_CLOSED if state is HalfState.CLOSED else ErrorCode.PROTOCOL_ERROR,
        ) from None


def _credit_threshold(window: int) -> int:
    return max(1, window // CREDIT_DIVISOR)


class Connection:
    """One end of a radical-edge tunnel.

    ``side`` says which end this is; ``limits`` what this side accepts.
    Every ``send_*`` method either queues bytes (see :meth:`data_to_send`)
    or raises :class:`LocalProtocolError` and changes nothing.
    """

    # no per-instance dict: a bridge holds thousands of idle connections
    __slots__ = (
        "_busy_unchecked",
        "_challenged_at",
        "_conn_credit",
        "_conn_window",
        "_decoder",
        "_goaway_last_id",
        "_highest_remote_id",
        "_last_rx",
        "_next_local_id",
        "_open_local",
        "_open_remote",
        "_out",
        "_ping_sent_at",
        "_probe_at",
        "_probe_payload",
        "_probe_seq",
        "_probes",
        "_recv_window",
        "_rx_now",
        "_rx_since_timer",
        "_send_window",
        "_streams",
        "_subscriptions",
        "_tuning",
        "heartbeat_interval",
        "idle_heartbeat_interval",
        "local_limits",
        "min_rtt",
        "peer_limits",
        "probing",
        "side",
        "state",
        "version",
        "versions",
    )

    def __init__(
        self,
        side: Side,
        limits: Limits | None = None,
        *,
        versions: Iterable[int] = (PROTOCOL_VERSION,),
    ) -> None:
        self.side = side
        self.local_limits = limits if limits is not None else Limits()
        self.peer_limits: Limits | None = None
        self.versions = frozenset(versions)
        self.version: int | None = None
        self.state = ConnState.IDLE if side is Side.CONNECTOR else ConnState.AWAIT_HELLO
        self.heartbeat_interval: float | None = None
        #: the heartbeat interval while no stream is open (section 12); ``heartbeat_interval`` unless the hub
        #: chose a longer one
        self.idle_heartbeat_interval: float | None = None

        self._decoder = fr.FrameDecoder(self.local_limits.max_frame_size)
        self._out: list[bytes | memoryview] = []
        self._streams: dict[int, _Stream] = {}
        self._open_local = 0
        self._open_remote = 0
        self._next_local_id = 1 if side is Side.CONNECTOR else 2
        self._highest_remote_id = 0
        self._goaway_last_id: int | None = None
        self._send_window = 0
        self._recv_window = self.local_limits.connection_window_size
        self._conn_window = self.local_limits.connection_window_size  # grows with tuned stream windows
        self._conn_credit = 0
        self._tuning: tuple[int, int] | None = None  # (largest stream window, largest connection window)
        #: the shortest round trip seen (seconds; ``None`` until a PONG answered a PING of ours)
        self.min_rtt: float | None = None
        self._probe_at: float | None = None  # when the PING now awaiting its PONG was sent
        self._probe_payload = b""  # that PING's payload: only the PONG echoing it ends the measurement
        self._probe_seq = 0
        self._probes: list[float] = []  # when the next round-trip PINGs are due
        #: the round-trip probes of window tuning were scheduled (at the first data consumed):
        #: :meth:`next_timer` may then be earlier than before
        self.probing = False
        self._rx_now: float | None = None  # the arrival time of the bytes being handled
        self._subscriptions: dict[int, Subscription] = {}
        self._last_rx: float | None = None  # when the peer's last bytes arrived
        self._rx_since_timer = False
        self._ping_sent_at: float | None = None  # the last heartbeat PING since the peer's last bytes
        self._challenged_at: float | None = None  # the PING that asked a silent peer as the connection became busy
        self._busy_unchecked = False  # a first stream opened with no time given: handle_timer checks the silence

    # ------------------------------------------------------------ introspection

    @property
    def open_streams(self) -> tuple[int, ...]:
        """Ids of streams that are not yet closed in both directions."""
        return tuple(s.id for s in self._streams.values() if not s.done)

    @property
    def subscriptions(self) -> dict[int, Subscription]:
        """(hub) The peer's current subscriptions."""
        return dict(self._subscriptions)

    def send_window(self, stream_id: int = 0) -> int:
        """Bytes that may be sent now: on ``stream_id``, or on the connection for 0.

        For a stream this is already limited by the connection window; 0 for
        a stream that is not open for sending.
        """
        if stream_id == 0:
            return max(self._send_window, 0)
        stream = self._streams.get(stream_id)
        if stream is None or stream.local is not HalfState.OPEN:
            return 0
        return max(min(stream.send_window, self._send_window), 0)

    def receive_window(self, stream_id: int = 0) -> int:
        """Credit the peer currently holds towards this side (connection for 0)."""
        if stream_id == 0:
            return self._recv_window
        stream = self._streams.get(stream_id)
        return 0 if stream is None else stream.recv_window

    @property
    def closed(self) -> bool:
        return self.state is ConnState.CLOSED

    @property
    def drained(self) -> bool:
        """GOAWAY was sent or received and no stream is left open: the carrier may close."""
        return self.state in _DRAINING and not self.open_streams

    @property
    def max_outbound_frame_size(self) -> int:
        return self.peer_limits.max_frame_size if self.peer_limits else MIN_FRAME_SIZE

    # ------------------------------------------------------------ plumbing

    @property
    def bytes_queued(self) -> int:
        """How many bytes :meth:`data_to_send` would return now (counted: a sum over :attr:`frames_queued`)."""
        return sum(map(len, self._out))

    @property
    def frames_queued(self) -> int:
        """How many frames (or runs of frames built at once) :meth:`data_to_send` would return now."""
        return len(self._out)

    def data_to_send(self) -> bytes:
        """Everything queued for the wire since the last call (possibly ``b""``)."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _move(self, inp: ConnInput, err: type[ProtocolError]) -> None:
        self.state = self._peek(inp, err)

    def _peek(self, inp: ConnInput, err: type[ProtocolError]) -> ConnState:
        try:
            return CONN_TRANSITIONS[(self.state, inp)]
        except KeyError:
            raise err(f"{inp.value} not allowed in connection state {self.state.value}") from None

    def _frame(self, ftype: int, flags: int, stream_id: int, payload: bytes) -> bytes:
        limit = self.max_outbound_frame_size
        if len(payload) > limit:
            raise LocalProtocolError(
                f"{FrameType(ftype).name} of {len(payload)} bytes exceeds the peer's limit of {limit}",
                ErrorCode.FRAME_SIZE_ERROR,
            )
        return fr.frame_header(ftype, flags, stream_id, len(payload)) + payload

    def _is_local_id(self, stream_id: int) -> bool:
        return (stream_id % 2 == 1) == (self.side is Side.CONNECTOR)

    def _was_opened(self, stream_id: int) -> bool:
        if self._is_local_id(stream_id):
            return stream_id < self._next_local_id
        return stream_id <= self._highest_remote_id

    def _require_stream(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            state = "closed" if self._was_opened(stream_id) else "never opened"
            raise LocalProtocolError(f"stream {stream_id} is {state}", ErrorCode.STREAM_CLOSED)
        return stream

    def _uncount(self, stream: _Stream) -> None:
        if stream.counted:
            stream.counted = False
            if stream.local_initiated:
                self._open_local -= 1
            else:
                self._open_remote -= 1

    def _retire_if_done(self, stream: _Stream) -> None:
        """Stop counting a stream closed both ways; forget it once its data is acknowledged."""
        if stream.done:
            self._uncount(stream)
            if not stream.unacked:
                del self._streams[stream.id]

    def _drop_stream(self, stream: _Stream) -> None:
        """Remove a stream at once (reset); its unacknowledged bytes go back to the connection."""
        del self._streams[stream.id]
        self._uncount(stream)
        if stream.unacked:
            self._return_connection_credit(stream.unacked)

    def _return_connection_credit(self, n: int) -> None:
        self._conn_credit += n
        if self._conn_credit >= _credit_threshold(self._conn_window):
            self._out.append(fr.encode_frame(FrameType.WINDOW_UPDATE, 0, 0, fr.u32(self._conn_credit)))
            self._recv_window += self._conn_credit
            self._conn_credit = 0

    # ------------------------------------------------------------ handshake (send)

    def send_hello(
        self,
        *,
        role: PeerRole | str,
        name: str,
        credential: str = "",
        resume_token: str | None = None,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        """(connector) Introduce this side; WELCOME or REJECT will follow."""
        try:
            role = PeerRole(role)
        except ValueError:
            raise LocalProtocolError(f"role must be one of {[r.value for r in PeerRole]}") from None
        body = fr.encode_json_object(
            {
                "role": role.value,
                "name": name,
                "credential": credential,
                "resume_token": resume_token,
                "manifest": manifest or {},
                "limits": self.local_limits.to_json(),
            },
            "HELLO",
        )
        frame = self._frame(FrameType.HELLO, 0, 0, fr.u16(max(self.versions)) + body)
        self._move(ConnInput.SEND_HELLO, LocalProtocolError)
        self._out.append(frame)

    def accept(
        self, *, heartbeat_interval: float, resume_token: str, idle_heartbeat_interval: float | None = None
    ) -> None:
        """(hub) Answer the HELLO with WELCOME: the connection is open.

        ``idle_heartbeat_interval`` (at least ``heartbeat_interval``) is the heartbeat while no stream
        is open; by default the same (section 12).
        """
        if not heartbeat_interval > 0:
            raise LocalProtocolError("heartbeat_interval must be positive")
        if idle_heartbeat_interval is not None and not idle_heartbeat_interval >= heartbeat_interval:
            raise LocalProtocolError("idle_heartbeat_interval must be at least heartbeat_interval")
        version = self.version if self.version is not None else max(self.versions)
        welcome: dict[str, Any] = {
            "limits": self.local_limits.to_json(),
            "heartbeat_interval": heartbeat_interval,
            "resume_token": resume_token,
        }
        if idle_heartbeat_interval is not None:
            welcome["idle_heartbeat_interval"] = idle_heartbeat_interval
        body = fr.encode_json_object(welcome, "WELCOME")
        frame = self._frame(FrameType.WELCOME, 0, 0, fr.u16(version) + body)
        self._move(ConnInput.SEND_WELCOME, LocalProtocolError)
        self._out.append(frame)
        self.heartbeat_interval = heartbeat_interval
        self.idle_heartbeat_interval = idle_heartbeat_interval or heartbeat_interval
        self._open_with_peer()

    def reject(self, error_code: ErrorCode, reason: str) -> None:
        """(hub) Refuse the HELLO; the connection is closed once the bytes are sent."""
        frame = self._frame(FrameType.REJECT, 0, 0, fr.u16(error_code) + _clip(reason, MIN_FRAME_SIZE - 2))
        self._move(ConnInput.SEND_REJECT, LocalProtocolError)
        self._out.append(frame)

    def _open_with_peer(self) -> None:
        assert self.peer_limits is not None
        self._send_window = self.peer_limits.connection_window_size

    # ------------------------------------------------------------ streams (send)

    def send_request(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[bytes | str, bytes | str]] = (),
        *,
        end_stream: bool = False,
        now: float | None = None,
    ) -> int:
        """Open a stream with a request; returns its id.

        ``now`` (the caller's clock, as for :meth:`handle_timer`) lets the first stream after an idle
        stretch start the busy heartbeat at once (section 12); without it that waits for the next
        :meth:`handle_timer` call, which :meth:`next_timer` then asks for at once.
        """
        try:
            raw_method = method.encode("ascii")
            raw_path = path.encode("ascii")
        except UnicodeEncodeError:
            raise LocalProtocolError("method and path must be ASCII (percent-encode the path)") from None
        fr.check_method(raw_method, LocalProtocolError)
        fr.check_path(raw_path, LocalProtocolError)
        payload = fr.encode_request_payload(raw_method, raw_path, fr.normalize_headers(headers))
        self._peek(ConnInput.OPEN_LOCAL_STREAM, LocalProtocolError)
        assert self.peer_limits is not None
        if self._open_local >= self.peer_limits.max_concurrent_streams:
            raise LocalProtocolError(
                f"the peer allows {self.peer_limits.max_concurrent_streams} concurrent streams",
                ErrorCode.REFUSED_STREAM,
            )
        stream_id = self._next_local_id
        if stream_id > fr.MAX_STREAM_ID:
            raise LocalProtocolError("stream ids exhausted: open a new connection", ErrorCode.REFUSED_STREAM)
        flags = Flags.END_STREAM if end_stream else 0
        frame = self._frame(FrameType.HEADERS, flags, stream_id, payload)
        stream = _Stream(stream_id, True, self.peer_limits.initial_window_size, self.local_limits.initial_window_size)
        stream.local = HALF_TRANSITIONS[(HalfState.IDLE, HalfInput.HEADERS_END if end_stream else HalfInput.HEADERS)]
        self._streams[stream_id] = stream
        busy = self._busy
        self._open_local += 1
        self._next_local_id += 2
        self._out.append(frame)
        if not busy:
            self._becoming_busy(now)
        return stream_id

    def send_response(
        self,
        stream_id: int,
        status: int,
        headers: Iterable[tuple[bytes | str, bytes | str]] = (),
        *,
        end_stream: bool = False,
    ) -> None:
        """Answer a stream the peer opened."""
        fr.check_status(status, LocalProtocolError)
        payload = fr.encode_response_payload(status, fr.normalize_headers(headers))
        self._peek(ConnInput.SEND_FRAME, LocalProtocolError)
        stream = self._require_stream(stream_id)
        if stream.local_initiated:
            raise LocalProtocolError(f"stream {stream_id} was opened by this side: it takes no response")
        new = _half_move(
            stream.local, HalfInput.HEADERS_END if end_stream else HalfInput.HEADERS, LocalProtocolError, stream_id
        )
        frame = self._frame(FrameType.HEADERS, Flags.END_STREAM if end_stream else 0, stream_id, payload)
        stream.local = new
        self._out.append(frame)
        self._retire_if_done(stream)

    def send_data(self, stream_id: int, data: bytes | memoryview, *, end_stream: bool = False) -> None:
        """Send body bytes; split into frames of the peer's maximum size.

        Raises ``LocalProtocolError`` (FLOW_CONTROL_ERROR) if ``data`` is
        larger than :meth:`send_window` allows.  ``data`` must not change
        until :meth:`data_to_send` has been called.
        """
        self._peek(ConnInput.SEND_FRAME, LocalProtocolError)
        stream = self._require_stream(stream_id)
        new = _half_move(
            stream.local, HalfInput.DATA_END if end_stream else HalfInput.DATA, LocalProtocolError, stream_id
        )
        size = len(data)
        if size > stream.send_window or size > self._send_window:
            raise LocalProtocolError(
                f"stream {stream_id}: {size} bytes exceed the send window "
                f"(stream {stream.send_window}, connection {self._send_window})",
                ErrorCode.FLOW_CONTROL_ERROR,
            )
        stream.local = new
        stream.send_window -= size
        self._send_window -= size
        limit = self.max_outbound_frame_size
        view = memoryview(data)
        pos = 0
        out = self._out
        while True:
            chunk = view[pos : pos + limit]
            pos += len(chunk)
            last = pos >= size
            flags = _END_STREAM if (last and end_stream) else 0
            out.append(fr.frame_header(FrameType.DATA, flags, stream_id, len(chunk)))
            if chunk:
                out.append(chunk)
            if last:
                break
        self._retire_if_done(stream)

    def end_stream(self, stream_id: int) -> None:
        """Close this side's direction of a stream (an empty DATA with END_STREAM)."""
        self.send_data(stream_id, b"", end_stream=True)

    def reset_stream(self, stream_id: int, error_code: ErrorCode = ErrorCode.CANCEL) -> None:
        """Abort a stream in both directions.  A stream that already ended is left alone."""
        self._peek(ConnInput.SEND_FRAME, LocalProtocolError)
        stream = self._streams.get(stream_id)
        if stream is None:
            if not self._was_opened(stream_id):
                raise LocalProtocolError(f"stream {stream_id} was never opened")
            return
        if not stream.done:
            self._out.append(fr.encode_frame(FrameType.RESET, 0, stream_id, fr.u16(error_code)))
        self._drop_stream(stream)

    def acknowledge_received_data(self, stream_id: int, n: int, now: float | None = None) -> None:
        """Say that ``n`` received bytes of ``stream_id`` were consumed; credit goes back to the peer.

        ``now`` (the caller's clock, as for :meth:`handle_timer`) is when they were consumed: with
        :meth:`tune_windows` on, the stream's window grows when the consumption rate shows that a
        round trip holds more than half of it.
        """
        if self.state not in _LIVE:
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            if not self._was_opened(stream_id):
                raise LocalProtocolError(f"stream {stream_id} was never opened")
            return  # reset: its credit went back already
        if not 0 <= n <= stream.unacked:
            raise LocalProtocolError(f"stream {stream_id}: acknowledging {n} of {stream.unacked} unacknowledged bytes")
        stream.unacked -= n
        if stream.remote is not HalfState.CLOSED:
            stream.credit += n
            if self._tuning is not None and now is not None:
                if not self.probing:  # the first data: time to learn the round trip
                    self.probing = True
                    self._probes = [now + delay for delay in RTT_PROBES]
                    self._probe(now)
                if self.min_rtt is not None:
                    self._tune(stream, n, now, self.min_rtt)
            if stream.credit >= _credit_threshold(stream.window):
                self._out.append(fr.encode_frame(FrameType.WINDOW_UPDATE, 0, stream_id, fr.u32(stream.credit)))
                stream.recv_window += stream.credit
                stream.credit = 0
        self._return_connection_credit(n)
        self._retire_if_done(stream)

    def tune_windows(self, max_stream_window: int, max_connection_window: int) -> None:
        """Let receive windows grow to what the path needs, up to these sizes (bytes).

        A stream's window starts at ``initial_window_size``.  Once data is first consumed, PINGs
        (payload ``rtt``) measure the round trip, at :data:`RTT_PROBES` from then; heartbeat PINGs
        refine it (:attr:`min_rtt` keeps the shortest).  On a path shorter than :data:`TUNE_MIN_RTT`
        the windows stay as they are.  While the application acknowledges a stream's data, the rate
        it does so is measured over at least a round trip and :data:`TUNE_SPAN`; when twice what that
        rate consumes in a round trip exceeds the window, the window grows to it (at most doubling at
        a time): a long path is no longer limited to a window per round trip, while on a short one
        the window, and what queues in it ahead of other streams, stays small.  The connection window
        follows at twice the largest stream window.  Only the credit granted grows; nothing on the
        wire changes, and the peer needs no support for it.
        """
        if not 0 < max_stream_window <= fr.MAX_WINDOW or not 0 < max_connection_window <= fr.MAX_WINDOW:
            raise LocalProtocolError("window sizes must be in [1, 2**31-1]")
        self._tuning = (max_stream_window, max_connection_window)

    def _probe(self, now: float) -> None:
        """Send a round-trip PING if one is due and none is awaiting its PONG."""
        while self._probes and self._probes[0] <= now:
            del self._probes[0]  # one awaiting its PONG already measures this round trip
            if self._probe_at is None and self.state in _LIVE:
                self._probe_seq += 1
                self._probe_payload = _RTT_PING + fr.u32(self._probe_seq & 0xFFFF_FFFF)
                self._out.append(fr.encode_frame(FrameType.PING, 0, 0, self._probe_payload))
                self._probe_at = now

    def _round_trip(self, rtt: float) -> None:
        """A round-trip sample: the shortest is kept.  One under :data:`TUNE_MIN_RTT` after windows grew
        on a longer one (an early PONG that waited behind data, a busy peer) takes the growth back."""
        grown_on = self.min_rtt
        self.min_rtt = rtt if grown_on is None else min(grown_on, rtt)
        if self.min_rtt < TUNE_MIN_RTT and (grown_on is None or grown_on >= TUNE_MIN_RTT):
            self._shrink_windows()

    def _shrink_windows(self) -> None:
        """Back to the announced windows: the surplus is withheld from the credit consumed data returns
        (credit below zero), so the peer's window shrinks as it sends, and nothing it holds is revoked."""
        initial = self.local_limits.initial_window_size
        for stream in self._streams.values():
            if stream.window > initial:
                stream.credit -= stream.window - initial
                stream.window = initial
        conn = self.local_limits.connection_window_size
        if self._conn_window > conn:
            self._conn_credit -= self._conn_window - conn
            self._conn_window = conn

    def _tune(self, stream: _Stream, n: int, now: float, rtt: float) -> None:
        assert self._tuning is not None
        max_stream, max_conn = self._tuning
        if rtt < TUNE_MIN_RTT:  # a short path: nothing grows (the shortest round trip only gets shorter)
            return
        if stream.mark is None:  # the measurement starts here: these bytes took no time to count
            stream.mark = now
            return
        stream.consumed += n
        elapsed = now - stream.mark
        if elapsed < max(rtt, TUNE_SPAN):
            return
        wanted = 2 * stream.consumed * rtt / elapsed  # twice what one round trip consumes at this rate
        stream.mark, stream.consumed = now, 0
        if wanted <= stream.window or stream.window >= max_stream:
            return
        grown = min(max_stream, 2 * stream.window, int(wanted))
        stream.credit += grown - stream.window  # the increase leaves with the next WINDOW_UPDATE
        stream.window = grown
        conn = min(max_conn, 2 * grown)
        if conn > self._conn_window:
            self._conn_credit += conn - self._conn_window
            self._conn_window = conn

    # ------------------------------------------------------------ connection level (send)

    def ping(self, payload: bytes = b"") -> None:
        if len(payload) > fr.MAX_PING_PAYLOAD:
            raise LocalProtocolError(f"PING payload is at most {fr.MAX_PING_PAYLOAD} bytes")
        self._move(ConnInput.SEND_FRAME, LocalProtocolError)
        self._out.append(fr.encode_frame(FrameType.PING, 0, 0, bytes(payload)))

    def send_goaway(self, error_code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Start draining: the peer may open no new stream; streams up to now finish normally.

        A GOAWAY sent again never raises the last stream id.  To end the
        connection with an error, use :meth:`close`.
        """
        if error_code != ErrorCode.NO_ERROR:
            raise LocalProtocolError("a draining GOAWAY carries NO_ERROR; close() ends with an error")
        last = self._highest_remote_id if self._goaway_last_id is None else self._goaway_last_id
        payload = fr.encode_goaway_payload(last, error_code, _clip(reason, 4096))
        frame = self._frame(FrameType.GOAWAY, 0, 0, payload)
        self._move(ConnInput.SEND_GOAWAY, LocalProtocolError)
        self._goaway_last_id = last
        self._out.append(frame)

    def close(self, error_code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> list[Event]:
        """End the connection now (GOAWAY, or REJECT during the handshake).

        Returns a :class:`StreamReset` for every stream that was still open.
        """
        if self.state is ConnState.CLOSED:
            return []
        self._queue_goodbye(error_code, reason)
        return self._terminate(error_code, by_peer=False)

    def connection_lost(self) -> list[Event]:
        """The carrier died: every open stream is reset with ``CONNECTION_LOST``."""
        if self.state is ConnState.CLOSED:
            return []
        events = self._terminate(ErrorCode.CONNECTION_LOST, by_peer=False)
        return [ConnectionClosed(ErrorCode.CONNECTION_LOST, "connection lost", by_peer=False), *events]

    def _queue_goodbye(self, error_code: ErrorCode, reason: str) -> None:
        if self.state in (ConnState.AWAIT_HELLO, ConnState.HELLO_RECEIVED):
            self._out.append(fr.encode_frame(FrameType.REJECT, 0, 0, fr.u16(error_code) + _clip(reason, 4096)))
        elif self.state in _LIVE:
            self._out.append(
                fr.encode_frame(
                    FrameType.GOAWAY,
                    0,
                    0,
                    fr.encode_goaway_payload(self._highest_remote_id, error_code, _clip(reason, 4096)),
                )
            )

    def _terminate(self, error_code: ErrorCode | int, *, by_peer: bool) -> list[Event]:
        self._move(ConnInput.CLOSE, LocalProtocolError)
        events: list[Event] = [StreamReset(s.id, error_code, by_peer) for s in self._streams.values() if not s.done]
        self._streams.clear()
        self._open_local = self._open_remote = 0
        self._subscriptions.clear()
        return events

    def send_event(self, source: str, plugin: str, topic: str, seq: int, payload: bytes) -> bool:
        """Send a notification.  On the hub it goes out only if one of the peer's
        subscriptions matches; returns whether it was sent."""
        if not 0 <= seq <= fr.MAX_SEQ:
            raise LocalProtocolError("sequence number out of range")
        frame = self._frame(FrameType.EVENT, 0, 0, fr.encode_event_payload(source, plugin, topic, seq, payload))
        self._peek(ConnInput.SEND_FRAME, LocalProtocolError)
        if self.side is Side.HUB and not any(s.matches(source, plugin, topic) for s in self._subscriptions.values()):
            return False
        self._out.append(frame)
        return True

    def subscribe(
        self,
        subscription_id: int,
        subscription: Subscription | None = None,
        *,
        resume_after: int | None = None,
    ) -> None:
        """(connector) Ask for notifications; replay those after ``resume_after`` if the hub still has them."""
        self._sent_by(FrameType.SUBSCRIBE)
        sub = subscription or Subscription()
        if not 0 <= subscription_id <= 0xFFFF_FFFF:
            raise LocalProtocolError("subscription id out of range")
        if resume_after is not None and not 0 <= resume_after <= fr.MAX_SEQ:
            raise LocalProtocolError("resume_after out of range")
        payload = fr.encode_subscribe_payload(subscription_id, resume_after or 0, sub.edge, sub.plugin, sub.topic)
        frame = self._frame(FrameType.SUBSCRIBE, Flags.RESUME if resume_after is not None else 0, 0, payload)
        self._move(ConnInput.SEND_FRAME, LocalProtocolError)
        self._out.append(frame)

    def unsubscribe(self, subscription_id: int) -> None:
        self._sent_by(FrameType.UNSUBSCRIBE)
        if not 0 <= subscription_id <= 0xFFFF_FFFF:
            raise LocalProtocolError("subscription id out of range")
        self._move(ConnInput.SEND_FRAME, LocalProtocolError)
        self._out.append(fr.encode_frame(FrameType.UNSUBSCRIBE, 0, 0, fr.u32(subscription_id)))

    def send_manifest(self, manifest: dict[str, Any]) -> None:
        """(connector) Replace the plugin manifest the hub knows for this side."""
        self._sent_by(FrameType.MANIFEST)
        frame = self._frame(FrameType.MANIFEST, 0, 0, fr.encode_json_object(manifest, "MANIFEST"))
        self._move(ConnInput.SEND_FRAME, LocalProtocolError)
        self._out.append(frame)

    def _sent_by(self, ftype: FrameType) -> None:
        if _SENT_ONLY_BY.get(ftype, self.side) is not self.side:
            raise LocalProtocolError(f"only the {_SENT_ONLY_BY[ftype].value} sends {ftype.name}")

    # ------------------------------------------------------------ heartbeat

    @property
    def _busy(self) -> bool:
        return bool(self._open_local or self._open_remote)

    def _interval_now(self) -> float | None:
        """The heartbeat interval that applies now: ``heartbeat_interval`` while a stream is open, else the
        idle one (section 12)."""
        return self.heartbeat_interval if self._busy else self.idle_heartbeat_interval

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` should next be called, on the caller's clock.

        ``None`` while there is no heartbeat (before the handshake, after the
        end); ``0.0`` means "now", to start the clock.  Opening the first
        stream may make it earlier (the busy interval applies).
        """
        interval = self._interval_now()
        if interval is None or self.state not in _LIVE:
            return None
        silent_since = self._silent_since()
        if silent_since is None or self._busy_unchecked:
            return 0.0
        ping_at = silent_since + self._ping_after(interval)
        if self._ping_sent_at is not None:
            ping_at = max(ping_at, self._ping_sent_at + interval)
        due = min(ping_at, silent_since + HEARTBEAT_MISSES * interval)
        return min(due, self._probes[0]) if self._probes else due

    def _silent_since(self) -> float | None:
        """Where the peer's silence is counted from: its last bytes; while busy, if a PING asked it when
        the connection became busy, one busy interval before that PING (see :meth:`_becoming_busy`)."""
        if self._busy and self._challenged_at is not None and self.heartbeat_interval is not None:
            return self._challenged_at - self.heartbeat_interval
        return self._last_rx

    def _ping_after(self, interval: float) -> float:
        """Seconds of silence before this side's first PING (section 12): the connector's after one interval, the
        hub's after ``HUB_BUSY_PING_INTERVALS`` while busy and ``HUB_PING_INTERVALS`` while idle (on an idle
        connection the connector's PING comes first and the hub only answers)."""
        if self.side is Side.CONNECTOR:
            return interval
        return interval * (HUB_BUSY_PING_INTERVALS if self._busy else HUB_PING_INTERVALS)

    def _becoming_busy(self, now: float | None) -> None:
        """The first stream opened by this side after none (section 12).  Silence from the idle stretch
        before must not count at the busy interval: if the peer has been silent for a busy interval or
        more, a PING asks it now (the one already sent, if any), and while busy its silence counts as
        one busy interval at that PING, so it has ``HEARTBEAT_MISSES - 1`` busy intervals to answer.
        Until it answers, the next request does not ask again: a peer that stays silent is given up on
        that long after the first request, however often callers retry."""
        interval = self.heartbeat_interval
        if interval is None or self.idle_heartbeat_interval == interval:
            return
        if now is None:
            self._busy_unchecked = True  # handle_timer does it, at once (next_timer says "now")
            return
        self._busy_unchecked = False
        if self._last_rx is None or self._rx_since_timer or not self._busy or self._challenged_at is not None:
            return
        if now - self._last_rx >= interval:
            if self._ping_sent_at is None:
                self._send_heartbeat_ping(now)
            self._challenged_at = self._ping_sent_at

    def handle_timer(self, now: float) -> list[Event]:
        """Do what is due at ``now``: send a heartbeat PING, or give up on a silent peer.

        Anything received since the previous call counts as a sign of life
        at ``now``.  A peer silent for ``HEARTBEAT_MISSES`` intervals ends
        the connection: a GOAWAY(TIMEOUT) is queued and a
        :class:`ConnectionClosed` plus the resets of open streams returned.
        """
        interval = self._interval_now()
        if interval is None or self.state not in _LIVE:
            return []
        if self._rx_since_timer or self._last_rx is None:
            self._heard_at(now)
        if self._busy_unchecked:
            self._becoming_busy(now)
        silent_since, last_rx = self._silent_since(), self._last_rx
        assert silent_since is not None
        assert last_rx is not None
        silent = now - silent_since
        if silent >= HEARTBEAT_MISSES * interval:
            reason = f"no traffic from the peer for {now - last_rx:.1f} s"
            self._queue_goodbye(ErrorCode.TIMEOUT, reason)
            resets = self._terminate(ErrorCode.TIMEOUT, by_peer=False)
            return [ConnectionClosed(ErrorCode.TIMEOUT, reason, by_peer=False), *resets]
        ping_due = self._ping_sent_at is None or now - self._ping_sent_at >= interval
        self._probe(now)
        if silent >= self._ping_after(interval) and ping_due:
            self._send_heartbeat_ping(now)
        return []

    def _send_heartbeat_ping(self, now: float) -> None:
        self._out.append(fr.encode_frame(FrameType.PING, 0, 0, _HEARTBEAT_PING))
        self._ping_sent_at = now
        if self._probe_at is None:
            self._probe_at, self._probe_payload = now, _HEARTBEAT_PING

    def _heard_at(self, now: float) -> None:
        """Bytes from the peer at ``now``: its silence starts again, and nothing asked of it is owed."""
        self._last_rx = now
        self._rx_since_timer = False
        self._ping_sent_at = None
        self._challenged_at = None

    # ------------------------------------------------------------ receiving

    def receive_data(self, data: bytes | bytearray | memoryview, now: float | None = None) -> list[Event]:
        """Feed bytes from the carrier, cut anywhere; returns the events they complete.

        ``now`` (the caller's clock, as for :meth:`handle_timer`) is when the
        bytes arrived: the heartbeat counts the peer's silence from exactly
        then, so a silent peer is given up ``HEARTBEAT_MISSES`` intervals
        after its last bytes.  Without it they count as a sign of life at the
        next :meth:`handle_timer` call, up to an interval late.

        Raises :class:`RemoteProtocolError` for anything the peer may not
        send; the connection is then closed with a GOAWAY (or REJECT) queued.
        Nothing is lost with it: the error's ``events`` hold the events of the
        frames before the bad one, then the :class:`ConnectionClosed` and the
        stream resets the error caused.  Bytes arriving after the connection
        closed are discarded.
        """
        if self.state is ConnState.CLOSED:
            return []
        self._rx_now = now
        if data:
            if now is None:
                self._rx_since_timer = True
            else:
                self._heard_at(now)
        events: list[Event] = []
        frames, error = self._decoder.feed_until_error(data)
        try:
            for frame in frames:
                self._dispatch(frame, events)
                if self.closed:
                    return events  # whatever follows the end is discarded, a bad header too
            if error is not None:
                raise error
        except RemoteProtocolError as exc:
            reason = str(exc)
            self._queue_goodbye(exc.error_code, reason)
            events.append(ConnectionClosed(exc.error_code, reason, by_peer=False))
            events += self._terminate(exc.error_code, by_peer=False)
            exc.events = events
            raise
        return events

    def _dispatch(self, frame: RawFrame, events: list[Event]) -> None:
        only = _SENT_ONLY_BY.get(frame.type)
        if only is self.side:
            raise RemoteProtocolError(f"only the {only.value} may send {FrameType(frame.type).name}")
        _HANDLERS[frame.type](self, frame, events)

    def _on_hello(self, frame: RawFrame, events: list[Event]) -> None:
        self._peek(ConnInput.RECV_HELLO, RemoteProtocolError)
        reader = fr.PayloadReader(frame.payload, "HELLO")
        version = reader.u16()
        if version not in self.versions:
            reason = f"protocol version {version} is not supported; this hub speaks {sorted(self.versions)}"
            self._move(ConnInput.SEND_REJECT, RemoteProtocolError)
            self._out.append(
                fr.encode_frame(FrameType.REJECT, 0, 0, fr.u16(ErrorCode.UNSUPPORTED_VERSION) + reason.encode())
            )
            events.append(ConnectionClosed(ErrorCode.UNSUPPORTED_VERSION, reason, by_peer=False))
            return
        body = fr.decode_json_object(reader.rest(), "HELLO")
        role = _field(body, "role", str)
        if role not in ("edge", "client"):
            raise RemoteProtocolError(f"HELLO: unknown role {role!r}")
        resume = body.get("resume_token")
        if resume is not None and not isinstance(resume, str):
            raise RemoteProtocolError("HELLO: resume_token must be a string or null")
        manifest = body.get("manifest", {})
        if not isinstance(manifest, dict):
            raise RemoteProtocolError("HELLO: manifest must be an object")
        limits = _limits(body)
        hello = Hello(
            version=version,
            role=PeerRole(role),
            name=_field(body, "name", str),
            credential=_field(body, "credential", str),
            resume_token=resume,
            manifest=manifest,
            limits=limits,
        )
        self._move(ConnInput.RECV_HELLO, RemoteProtocolError)
        self.version = version
        self.peer_limits = limits
        events.append(hello)

    def _on_welcome(self, frame: RawFrame, events: list[Event]) -> None:
        self._peek(ConnInput.RECV_WELCOME, RemoteProtocolError)
        reader = fr.PayloadReader(frame.payload, "WELCOME")
        version = reader.u16()
        if version not in self.versions:
            raise RemoteProtocolError(f"WELCOME: hub chose protocol version {version}", ErrorCode.UNSUPPORTED_VERSION)
        body = fr.decode_json_object(reader.rest(), "WELCOME")
        interval = _interval(body.get("heartbeat_interval"))
        key = "idle_heartbeat_interval"
        idle_interval = _interval(body[key], key) if key in body else None
        if idle_interval is not None and idle_interval < interval:
            raise RemoteProtocolError("WELCOME: idle_heartbeat_interval must be at least heartbeat_interval")
        token = _field(body, "resume_token", str)
        limits = _limits(body)
        self._move(ConnInput.RECV_WELCOME, RemoteProtocolError)
        self.version = version
        self.peer_limits = limits
        self.heartbeat_interval = interval
        self.idle_heartbeat_interval = idle_interval or interval
        self._open_with_peer()
        events.append(Welcome(version, limits, interval, token, idle_interval))

    def _on_reject(self, frame: RawFrame, events: list[Event]) -> None:
        self._peek(ConnInput.RECV_REJECT, RemoteProtocolError)
        reader = fr.PayloadReader(frame.payload, "REJECT")
        code = ErrorCode.from_wire(reader.u16())
        reason = fr.decode_text(reader.rest(), "REJECT")
        self._move(ConnInput.RECV_REJECT, RemoteProtocolError)
        events.append(ConnectionClosed(code, reason, by_peer=True))

    def _on_headers(self, frame: RawFrame, events: list[Event]) -> None:
        sid = frame.stream_id
        end = bool(frame.flags & _END_STREAM)
        half_input = HalfInput.HEADERS_END if end else HalfInput.HEADERS
        stream = self._streams.get(sid)
        if stream is None:
            self._peek(ConnInput.RECV_FRAME, RemoteProtocolError)
            if self._is_local_id(sid):
                if sid < self._next_local_id:
                    return  # an answer to a stream we reset: drop it
                raise RemoteProtocolError(f"HEADERS on stream {sid}, which this side never opened")
            if sid <= self._highest_remote_id:
                raise RemoteProtocolError(f"HEADERS on closed stream {sid}", ErrorCode.STREAM_CLOSED)
            self._move(ConnInput.OPEN_REMOTE_STREAM, RemoteProtocolError)
            method, path, headers = _decode_request(frame.payload)
            self._highest_remote_id = sid
            if self._goaway_last_id is not None and sid > self._goaway_last_id:
                return  # raced our GOAWAY: refused implicitly, the peer may retry
            assert self.peer_limits is not None
            if self._open_remote >= self.local_limits.max_concurrent_streams:
                self._out.append(fr.encode_frame(FrameType.RESET, 0, sid, fr.u16(ErrorCode.REFUSED_STREAM)))
                return
            stream = _Stream(sid, False, self.peer_limits.initial_window_size, self.local_limits.initial_window_size)
            stream.remote = HALF_TRANSITIONS[(HalfState.IDLE, half_input)]
            self._streams[sid] = stream
            self._open_remote += 1  # busy now, if not before: the peer just spoke, its silence starts now
            events.append(RequestReceived(sid, method, path, headers, end))
            return
        self._peek(ConnInput.RECV_FRAME, RemoteProtocolError)
        # a stream the peer opened already had its HEADERS: the table refuses a second one
        new = _half_move(stream.remote, half_input, RemoteProtocolError, sid)
        status, headers = _decode_response(frame.payload)
        stream.remote = new
        events.append(ResponseReceived(sid, status, headers, end))
        self._retire_if_done(stream)

    def _on_data(self, frame: RawFrame, events: list[Event]) -> None:
        self._peek(ConnInput.RECV_FRAME, RemoteProtocolError)
        sid = frame.stream_id
        size = len(frame.payload)
        if size > self._recv_window:
            raise RemoteProtocolError(
                f"DATA of {size} bytes exceeds the connection window of {self._recv_window}",
                ErrorCode.FLOW_CONTROL_ERROR,
            )
        stream = self._streams.get(sid)
        if stream is None:
            if not self._was_opened(sid):
                raise RemoteProtocolError(f"DATA on stream {sid}, which was never opened")
            self._recv_window -= size
            self._return_connection_credit(size)  # for a stream we reset: nobody will consume it
            return
        end = bool(frame.flags & _END_STREAM)
        new = _half_move(stream.remote, HalfInput.DATA_END if end else HalfInput.DATA, RemoteProtocolError, sid)
        if size > stream.recv_window:
            raise RemoteProtocolError(
                f"stream {sid}: DATA of {size} bytes exceeds the stream window of {stream.recv_window}",
                ErrorCode.FLOW_CONTROL_ERROR,
            )
        self._recv_window -= size
        stream.recv_window -= size
        stream.unacked += size
        stream.remote = new
        events.append(Data(sid, frame.payload, end))
        self._retire_if_done(stream)

    def _on_reset(self, frame: RawFrame, events: list[Event]) -> None:
        self._peek(ConnInput.RECV_FRAME, RemoteProtocolError)
        reader = fr.PayloadReader(frame.payload, "RESET")
        code = ErrorCode.from_wire(reader.u16())
        reader.done()
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            if not self._was_opened(frame.stream_id):
                raise RemoteProtocolError(f"RESET on stream {frame.stream_id}, which was never opened")
            return
        if stream.done:
            return  # both sides had finished; the reset changes nothing
        self._drop_stream(stream)
        events.append(StreamReset(frame.stream_id, code, by_peer=True))

    def _on_window_update(self, frame: RawFrame, events: list[Event]) -> None:
        self._peek(ConnInput.RECV_FRAME, RemoteProtocolError)
        reader = fr.PayloadReader(frame.payload, "WINDOW_UPDATE")
        delta = reader.u32()
        reader.done()
        if not 1 <= delta <= fr.MAX_WINDOW:
            raise RemoteProtocolError(f"WINDOW_UPDATE increment {delta} out of range")
        sid = frame.stream_id
        if sid == 0:
            if self._send_window + delta > fr.MAX_WINDOW:
                raise RemoteProtocolError("connection window overflow", ErrorCode.FLOW_CONTROL_ERROR)
            self._send_window += delta
        else:
            stream = self._streams.get(sid)
            if stream is None:
                if not self._was_opened(sid):
                    raise RemoteProtocolError(f"WINDOW_UPDATE on stream {sid}, which was never opened")
                return
            if stream.send_window + delta > fr.MAX_WINDOW:
                raise RemoteProtocolError(f"stream {sid}: window overflow", ErrorCode.FLOW_CONTROL_ERROR)
            stream.send_window += delta
        events.append(WindowUpdated(sid, delta))

    def _on_ping(self, frame: RawFrame, events: list[Event]) -> None:
        self._peek(ConnInput.RECV_FRAME, RemoteProtocolError)
        if len(frame.payload) > fr.MAX_PING_PAYLOAD:
            raise RemoteProtocolError("PING payload too long", ErrorCode.FRAME_SIZE_ERROR)
        self._out.append(fr.encode_frame(FrameType.PONG, 0, 0, frame.payload))
        events.append(PingReceived(frame.payload))

    def _on_pong(self, frame: RawFrame, events: list[Event]) -> None:
        self._peek(ConnInput.RECV_FRAME, RemoteProtocolError)
        if len(frame.payload) > fr.MAX_PING_PAYLOAD:
            raise RemoteProtocolError("PONG payload too long", ErrorCode.FRAME_SIZE_ERROR)
        if self._probe_at is not None and frame.payload == self._probe_payload:
            if self._rx_now is not None:
                self._round_trip(max(self._rx_now - self._probe_at, 0.0))
            self._probe_at = None
        events.append(PongReceived(frame.payload))

    def _on_goaway(self, frame: RawFrame, events: list[Event]) -> None:
        self._peek(ConnInput.RECV_GOAWAY, RemoteProtocolError)
        reader = fr.PayloadReader(frame.payload, "GOAWAY")
        last = reader.u32()
        code = ErrorCode.from_wire(reader.u16())
        reason = fr.decode_text(reader.rest(), "GOAWAY")
        if last > fr.MAX_STREAM_ID:
            raise RemoteProtocolError("GOAWAY: last stream id out of range")
        self._move(ConnInput.RECV_GOAWAY, RemoteProtocolError)
        events.append(GoAway(last, code, reason))
        if code != ErrorCode.NO_ERROR:
            events.append(ConnectionClosed(code, reason, by_peer=True))
            events.extend(self._terminate(code, by_peer=True))
            return
        for stream in [s for s in self._streams.values() if s.local_initiated and s.id > last]:
            self._drop_stream(stream)
            events.append(StreamReset(stream.id, ErrorCode.REFUSED_STREAM, by_peer=True))

    def _on_event(self, frame: RawFrame, events: list[Event]) -> None:
        self._peek(ConnInput.RECV_FRAME, RemoteProtocolError)
        reader = fr.PayloadReader(frame.payload, "EVENT")
        seq = reader.u64()
        source = reader.text16()
        plugin = reader.text16()
        topic = reader.text16()
        events.append(Notification(source, plugin, topic, seq, reader.rest()))

    def _on_subscribe(self, frame: RawFrame, events: list[Event]) -> None:
        self._peek(ConnInput.RECV_FRAME, RemoteProtocolError)
        reader = fr.PayloadReader(frame.payload, "SUBSCRIBE")
        sub_id = reader.u32()
        after = reader.u64()
        sub = Subscription(reader.text16(), reader.text16(), reader.text16())
        reader.done()
        resume = bool(frame.flags & Flags.RESUME)
        if not resume and after:
            raise RemoteProtocolError("SUBSCRIBE: a resume sequence number without the RESUME flag")
        self._subscriptions[sub_id] = sub
        events.append(Subscribed(sub_id, sub, after if resume else None))

    def _on_unsubscribe(self, frame: RawFrame, events: list[Event]) -> None:
        self._peek(ConnInput.RECV_FRAME, RemoteProtocolError)
        reader = fr.PayloadReader(frame.payload, "UNSUBSCRIBE")
        sub_id = reader.u32()
        reader.done()
        self._subscriptions.pop(sub_id, None)
        events.append(Unsubscribed(sub_id))

    def _on_manifest(self, frame: RawFrame, events: list[Event]) -> None:
        self._peek(ConnInput.RECV_FRAME, RemoteProtocolError)
        events.append(ManifestUpdated(fr.decode_json_object(frame.payload, "MANIFEST")))


# ---------------------------------------------------------------- helpers


#: what each frame type received does (one table for all connections: per connection, bound methods cost
#: 1.5 KiB, and a bridge holds thousands of idle connections)
_HANDLERS: dict[int, Callable[[Connection, RawFrame, list[Event]], None]] = {
    FrameType.HELLO: Connection._on_hello,
    FrameType.WELCOME: Connection._on_welcome,
    FrameType.REJECT: Connection._on_reject,
    FrameType.HEADERS: Connection._on_headers,
    FrameType.DATA: Connection._on_data,
    FrameType.RESET: Connection._on_reset,
    FrameType.WINDOW_UPDATE: Connection._on_window_update,
    FrameType.PING: Connection._on_ping,
    FrameType.PONG: Connection._on_pong,
    FrameType.GOAWAY: Connection._on_goaway,
    FrameType.EVENT: Connection._on_event,
    FrameType.SUBSCRIBE: Connection._on_subscribe,
    FrameType.UNSUBSCRIBE: Connection._on_unsubscribe,
    FrameType.MANIFEST: Connection._on_manifest,
}


def _clip(text: str, limit: int) -> bytes:
    # a reason is for humans and often built from an OS error message: encode it lossily, never fail
    raw = text.encode("utf-8", "backslashreplace")
    if len(raw) <= limit:
        return raw
    return raw[: max(limit, 0)].decode("utf-8", "ignore").encode("utf-8")


def _interval(raw: object, key: str = "heartbeat_interval") -> float:
    """A heartbeat interval: a finite positive number of seconds."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise RemoteProtocolError(f"WELCOME: {key} must be a positive number")
    try:
        value = float(raw)
    except OverflowError:
        value = math.inf
    if not 0 < value < math.inf:
        raise RemoteProtocolError(f"WELCOME: {key} must be a finite positive number")
    return value


def _field(body: dict[str, Any], key: str, kind: type[str]) -> str:
    value = body.get(key)
    if not isinstance(value, kind):
        raise RemoteProtocolError(f"field {key!r} must be a {kind.__name__}")
    return value


def _limits(body: dict[str, Any]) -> Limits:
    raw = body.get("limits")
    if not isinstance(raw, dict):
        raise RemoteProtocolError("limits must be an object")
    values: dict[str, int] = {}
    for key in ("max_frame_size", "max_concurrent_streams", "initial_window_size", "connection_window_size"):
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise RemoteProtocolError(f"limits.{key} must be an integer")
        values[key] = value
    try:
        return Limits(**values)
    except ValueError as exc:
        raise RemoteProtocolError(f"limits: {exc}") from None


def _decode_request(payload: bytes) -> tuple[str, str, fr.Headers]:
    reader = fr.PayloadReader(payload, "HEADERS")
    if reader.u8() != fr.KIND_REQUEST:
        raise RemoteProtocolError("HEADERS opening a stream must be a request")
    method = reader.bytes8()
    fr.check_method(method, RemoteProtocolError)
    path = reader.bytes16()
    fr.check_path(path, RemoteProtocolError)
    return method.decode("ascii"), path.decode("ascii"), fr.decode_header_block(reader)


def _decode_response(payload: bytes) -> tuple[int, fr.Headers]:
    reader = fr.PayloadReader(payload, "HEADERS")
    if reader.u8() != fr.KIND_RESPONSE:
        raise RemoteProtocolError("HEADERS on a stream this side opened must be a response")
    status = reader.u16()
    fr.check_status(status, RemoteProtocolError)
    return status, fr.decode_header_block(reader)
