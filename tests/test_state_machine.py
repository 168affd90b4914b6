"""A model-based test of a connected pair: random legal operations from both sides.

The machine drives a :class:`~tests.helpers.ConnectionPair` (connector and hub)
through streams opened by either side, responses, flow-controlled DATA, the
application consuming and acknowledging received bytes, resets, pings, GOAWAY,
subscriptions and notifications -- and delivers the queued bytes in random
amounts and chunkings in either direction.  A model records what each side sent
and received; after every step the invariants below must hold exactly.

Credit conservation (per direction, sender S -> receiver R; ``W`` is R's
``connection_window_size``, ``I`` its ``initial_window_size``)::

    S.send_window()                         credit S still holds
  + DATA bytes on the wire S -> R           sent, not yet processed by R
  + bytes R received, not yet acknowledged  held by R's application (live streams only)
  + R._conn_credit                          acknowledged, below the WINDOW_UPDATE threshold
  + WINDOW_UPDATE(0) increments on the wire R -> S
  == W

and the same per stream with the stream's windows, R's stream ``credit`` and
``I``, while S may still send on it and R still holds it.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from radical_edge_proto import (
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    MIN_FRAME_SIZE,
    Connection,
    ConnState,
    Data,
    ErrorCode,
    Event,
    FrameDecoder,
    FrameType,
    GoAway,
    HalfState,
    Limits,
    ManifestUpdated,
    Notification,
    PingReceived,
    PongReceived,
    RawFrame,
    RequestReceived,
    ResponseReceived,
    Side,
    StreamReset,
    Subscribed,
    Subscription,
    Unsubscribed,
    WindowUpdated,
)

from .helpers import ConnectionPair

SIDES = (Side.CONNECTOR, Side.HUB)
OTHER = {Side.CONNECTOR: Side.HUB, Side.HUB: Side.CONNECTOR}
_CONTROL = (PingReceived, PongReceived, Notification, Subscribed, Unsubscribed, ManifestUpdated, GoAway)


# ================================================================ the model


@dataclass
class StreamView:
    """One stream as one side sees it (it sent ``sent``, received ``received``)."""

    sid: int
    mine: bool  # this side opened it
    local: HalfState = HalfState.IDLE  # what this side sent
    remote: HalfState = HalfState.IDLE  # what this side received
    dead: bool = False  # reset by this side, by the peer, or refused by the peer's GOAWAY
    reset_by_self: bool = False
    refused: bool = False
    reset_code: ErrorCode | None = None  # the code of the RESET frame this side sent
    request: RequestReceived | None = None  # (mine) what the peer must report when it opens
    response: ResponseReceived | None = None  # (peer's) what the peer must report as the answer
    sent: bytearray = field(default_factory=bytearray)
    received: bytearray = field(default_factory=bytearray)
    unconsumed: int = 0  # received, not yet acknowledged by the application

    @property
    def done(self) -> bool:
        return self.local is HalfState.CLOSED and self.remote is HalfState.CLOSED

    @property
    def counted(self) -> bool:
        """Counts against max_concurrent_streams."""
        return not self.dead and not self.done

    @property
    def present(self) -> bool:
        """The connection must still hold it in ``_streams`` (and nothing else may be there)."""
        return not self.dead and not (self.done and self.unconsumed == 0)


@dataclass
class Peer:
    conn: Connection
    streams: dict[int, StreamView] = field(default_factory=dict)
    ignored: set[int] = field(default_factory=set)  # peer-opened streams that raced our GOAWAY
    expect: deque[Event] = field(default_factory=deque)  # control events the peer sent us, in order
    pings_out: int = 0  # our pings not yet answered
    goaway_last: int | None = None  # last stream id of our GOAWAYs (the first one's)
    goaway_received: bool = False
    highest_remote: int = 0  # highest peer-opened stream id whose HEADERS we processed
    subs: dict[int, Subscription] = field(default_factory=dict)  # (hub) subscriptions received


@dataclass
class Wire:
    """Bytes one side queued, in order; ``pending`` are the frames the receiver has not processed."""

    decoder: FrameDecoder = field(default_factory=lambda: FrameDecoder(MAX_FRAME_SIZE))
    undelivered: bytearray = field(default_factory=bytearray)
    pumped: int = 0
    fed: int = 0
    pending: deque[tuple[int, RawFrame]] = field(default_factory=deque)

    def push(self, data: bytes) -> None:
        if not data:
            return
        self.undelivered += data
        for frame in self.decoder.feed(data):
            self.pumped += HEADER_SIZE + len(frame.payload)
            self.pending.append((self.pumped, frame))

    def take(self, n: int) -> bytes:
        piece = bytes(self.undelivered[:n])
        del self.undelivered[:n]
        return piece

    def processed(self, n: int) -> list[RawFrame]:
        """``n`` more bytes were fed to the receiver: the frames it has now processed."""
        self.fed += n
        done = []
        while self.pending and self.pending[0][0] <= self.fed:
            done.append(self.pending.popleft()[1])
        return done

    def frames(self) -> Iterator[RawFrame]:
        return (frame for _end, frame in self.pending)


def body_bytes(side: Side, sid: int, offset: int, size: int) -> bytes:
    """Reproducible body bytes that differ at every position of every stream and direction."""
    return random.Random(f"{side.value}:{sid}:{offset}").randbytes(size)


# ================================================================ strategies

small_window = st.one_of(st.integers(1, 6144), st.integers(MIN_FRAME_SIZE, 40_000))
limits = st.builds(
    Limits,
    max_frame_size=st.just(MIN_FRAME_SIZE),
    max_concurrent_streams=st.integers(1, 3),
    initial_window_size=small_window,
    connection_window_size=st.one_of(st.integers(1, 8192), st.integers(MIN_FRAME_SIZE, 50_000)),
)
sides = st.sampled_from(SIDES)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE"])
paths = st.sampled_from(["/", "/edge1/sysinfo/homedir", "/e/p/x?q=1", "/a%20b"])
header_lists = st.lists(
    st.tuples(st.sampled_from(["Accept", "x-id", "Content-Type"]), st.sampled_from(["", "a", "application/json"])),
    max_size=2,
)
names = st.sampled_from(["edge1", "edge2", "sysinfo", "queue", "job", "state"])
patterns = st.sampled_from(["*", "edge1", "edge?", "[a-e]*", "q*", "job", "nomatch"])
notifications = st.builds(
    Notification, source=names, plugin=names, topic=names, seq=st.integers(0, 2**64 - 1), payload=st.binary(max_size=32)
)
manifests = st.dictionaries(names, st.dictionaries(names, st.integers() | st.text(max_size=5)), max_size=3)
reset_codes = st.sampled_from(
    [ErrorCode.CANCEL, ErrorCode.INTERNAL_ERROR, ErrorCode.NO_ERROR, ErrorCode.REFUSED_STREAM]
)


def normalized(headers: list[tuple[str, str]]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((n.lower().encode(), v.encode()) for n, v in headers)


# ================================================================ the machine


class ConnectionPairMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ready = False

    @initialize(connector_limits=limits, hub_limits=limits)
    def connect(self, connector_limits: Limits, hub_limits: Limits) -> None:
        self.pair = ConnectionPair(connector_limits, hub_limits)
        self.peers = {Side.CONNECTOR: Peer(self.pair.connector), Side.HUB: Peer(self.pair.hub)}
        self.wires = {Side.CONNECTOR: Wire(), Side.HUB: Wire()}  # keyed by the sending side
        self.ready = True

    # ------------------------------------------------------------ plumbing

    def pump(self) -> None:
        for side in SIDES:
            self.wires[side].push(self.peers[side].conn.data_to_send())

    def candidates(self, pred: Callable[[StreamView], bool]) -> list[tuple[Side, int]]:
        """(side, stream id) of every stream a side knows that satisfies ``pred``."""
        return [(side, sid) for side in SIDES for sid, v in self.peers[side].streams.items() if pred(v)]

    def deliver(self, sender: Side, n: int, chunks: list[int]) -> None:
        """Feed ``n`` undelivered bytes of ``sender`` to its peer, cut into ``chunks`` (the rest in one piece)."""
        receiver = OTHER[sender]
        wire = self.wires[sender]
        data = wire.take(n)
        pieces = []
        pos = 0
        for size in chunks:
            if pos >= len(data):
                break
            pieces.append(data[pos : pos + size])
            pos += size
        if pos < len(data):
            pieces.append(data[pos:])
        for piece in pieces:
            events = self.peers[receiver].conn.receive_data(piece)  # a RemoteProtocolError fails the test
            self.on_events(receiver, events)
            self.on_frames(receiver, wire.processed(len(piece)))
            self.pump()

    def on_events(self, side: Side, events: list[Event]) -> None:
        me, peer = self.peers[side], self.peers[OTHER[side]]
        refusals: set[int] = set()
        for ev in events:
            if isinstance(ev, _CONTROL):
                assert not refusals, "the resets of a GOAWAY must follow it directly"
                assert me.expect, f"{side.name} reported {ev!r}, which nobody sent"
                want = me.expect.popleft()
                assert ev == want
                if isinstance(ev, PingReceived):
                    peer.expect.append(PongReceived(ev.payload))
                elif isinstance(ev, PongReceived):
                    me.pings_out -= 1
                elif isinstance(ev, Subscribed):
                    me.subs[ev.subscription_id] = ev.subscription
                elif isinstance(ev, Unsubscribed):
                    me.subs.pop(ev.subscription_id, None)
                elif isinstance(ev, GoAway):
                    me.goaway_received = True
                    refusals = {
                        sid for sid, v in me.streams.items() if v.mine and sid > ev.last_stream_id and v.present
                    }
            elif isinstance(ev, RequestReceived):
                sid = ev.stream_id
                assert sid not in me.streams
                assert sid > me.highest_remote
                theirs = peer.streams[sid]
                assert theirs.mine
                assert theirs.request == ev
                remote = HalfState.CLOSED if ev.end_stream else HalfState.OPEN
                me.streams[sid] = StreamView(sid, mine=False, remote=remote)
            elif isinstance(ev, ResponseReceived):
                mine = me.streams[ev.stream_id]
                assert mine.mine
                assert mine.present
                assert mine.remote is HalfState.IDLE
                assert peer.streams[ev.stream_id].response == ev
                mine.remote = HalfState.CLOSED if ev.end_stream else HalfState.OPEN
            elif isinstance(ev, Data):
                view = me.streams[ev.stream_id]
                assert view.present
                assert view.remote is HalfState.OPEN
                view.received += ev.data
                view.unconsumed += len(ev.data)
                sent = peer.streams[ev.stream_id].sent
                assert sent[: len(view.received)] == view.received, "body bytes changed or out of order"
                if ev.end_stream:
                    assert peer.streams[ev.stream_id].local is HalfState.CLOSED
                    assert view.received == sent, "END_STREAM before all the body arrived"
                    view.remote = HalfState.CLOSED
            elif isinstance(ev, StreamReset):
                view = me.streams[ev.stream_id]
                assert ev.by_peer
                assert view.present
                assert not view.done
                if ev.stream_id in refusals and ev.error_code == ErrorCode.REFUSED_STREAM:
                    refusals.remove(ev.stream_id)
                    view.refused = True
                else:
                    assert peer.streams[ev.stream_id].reset_code == ev.error_code, f"unexpected {ev!r}"
                view.dead = True
            elif isinstance(ev, WindowUpdated):
                assert ev.delta > 0
            else:
                raise AssertionError(f"{side.name} reported {ev!r}")
        assert not refusals, f"GOAWAY should have refused streams {sorted(refusals)}"

    def on_frames(self, side: Side, frames: list[RawFrame]) -> None:
        """Frame-level bookkeeping of what ``side`` processed: new peer streams, even ignored ones."""
        me = self.peers[side]
        peer_parity = 1 if side is Side.HUB else 0
        for frame in frames:
            sid = frame.stream_id
            if frame.type == FrameType.HEADERS and sid % 2 == peer_parity and sid > me.highest_remote:
                me.highest_remote = sid
                if sid not in me.streams:
                    # the only legal reason not to report a new stream: it raced our GOAWAY
                    assert me.goaway_last is not None, f"stream {sid} silently dropped"
                    assert sid > me.goaway_last, f"stream {sid} silently dropped"
                    me.ignored.add(sid)

    # ------------------------------------------------------------ streams

    @precondition(lambda self: any(self.can_open(side) for side in SIDES))
    @rule(data=st.data(), method=methods, path=paths, headers=header_lists, end_stream=st.booleans())
    def open_stream(
        self, data: st.DataObject, method: str, path: str, headers: list[tuple[str, str]], end_stream: bool
    ) -> None:
        side = data.draw(st.sampled_from([s for s in SIDES if self.can_open(s)]), label="side")
        me = self.peers[side]
        expected_id = max([sid for sid, v in me.streams.items() if v.mine], default=-1 if side is Side.CONNECTOR else 0)
        sid = me.conn.send_request(method, path, headers, end_stream=end_stream)
        assert sid == expected_id + 2
        view = StreamView(sid, mine=True, local=HalfState.CLOSED if end_stream else HalfState.OPEN)
        view.request = RequestReceived(sid, method, path, normalized(headers), end_stream)
        me.streams[sid] = view
        if not end_stream and data.draw(st.booleans(), label="with body"):
            self.write_body(data, side, sid)
        self.pump()

    def can_open(self, side: Side) -> bool:
        me = self.peers[side]
        assert me.conn.peer_limits is not None
        counted = sum(1 for v in me.streams.values() if v.mine and v.counted)
        return me.conn.state is ConnState.OPEN and counted < me.conn.peer_limits.max_concurrent_streams

    @precondition(lambda self: self.candidates(lambda v: not v.mine and not v.dead and v.local is HalfState.IDLE))
    @rule(data=st.data(), status=st.integers(100, 999), headers=header_lists, end_stream=st.booleans())
    def respond(self, data: st.DataObject, status: int, headers: list[tuple[str, str]], end_stream: bool) -> None:
        side, sid = data.draw(
            st.sampled_from(self.candidates(lambda v: not v.mine and not v.dead and v.local is HalfState.IDLE)),
            label="side, stream",
        )
        view = self.peers[side].streams[sid]
        self.peers[side].conn.send_response(sid, status, headers, end_stream=end_stream)
        view.local = HalfState.CLOSED if end_stream else HalfState.OPEN
        view.response = ResponseReceived(sid, status, normalized(headers), end_stream)
        if not end_stream and data.draw(st.booleans(), label="with body"):
            self.write_body(data, side, sid)
        self.pump()

    @precondition(lambda self: self.candidates(lambda v: not v.dead and v.local is HalfState.OPEN))
    @rule(data=st.data())
    def send_data(self, data: st.DataObject) -> None:
        side, sid = data.draw(
            st.sampled_from(self.candidates(lambda v: not v.dead and v.local is HalfState.OPEN)),
            label="side, stream",
        )
        self.write_body(data, side, sid)
        self.pump()

    def write_body(self, data: st.DataObject, side: Side, sid: int) -> None:
        """Send up to what flow control allows on ``sid`` (often all of it), sometimes ending the stream."""
        me = self.peers[side]
        view = me.streams[sid]
        window = me.conn.send_window(sid)
        assert window == min(me.conn.send_window(), me.conn._streams[sid].send_window)
        size = data.draw(st.one_of(st.just(window), st.integers(0, window)), label="size")
        end_stream = data.draw(st.booleans(), label="end_stream")
        chunk = body_bytes(side, sid, len(view.sent), size)
        if size == 0 and end_stream:
            me.conn.end_stream(sid)
        else:
            me.conn.send_data(sid, chunk, end_stream=end_stream)
        view.sent += chunk
        if end_stream:
            view.local = HalfState.CLOSED
        assert me.conn.send_window(sid) == (window - size if not end_stream else 0)

    @precondition(lambda self: self.candidates(lambda v: v.unconsumed > 0))
    @rule(data=st.data())
    def consume(self, data: st.DataObject) -> None:
        """The application consumed part of what it received (possibly on a stream reset since)."""
        side, sid = data.draw(st.sampled_from(self.candidates(lambda v: v.unconsumed > 0)))
        view = self.peers[side].streams[sid]
        n = data.draw(st.one_of(st.just(view.unconsumed), st.integers(0, view.unconsumed)), label="n")
        self.peers[side].conn.acknowledge_received_data(sid, n)
        view.unconsumed -= n
        self.pump()

    @precondition(lambda self: self.candidates(lambda v: v.present))
    @rule(data=st.data(), code=reset_codes, any_stream=st.booleans())
    def reset(self, data: st.DataObject, code: ErrorCode, any_stream: bool) -> None:
        """Reset a stream this side holds, or (``any_stream``) any it knows: resetting a finished one is a no-op."""
        side, sid = data.draw(st.sampled_from(self.candidates(lambda v: any_stream or v.present)), label="side, stream")
        view = self.peers[side].streams[sid]
        sends = view.present and not view.done
        self.peers[side].conn.reset_stream(sid, code)
        if sends:
            view.reset_code = code
        if not view.dead:
            view.dead = view.reset_by_self = True
        self.pump()

    # ------------------------------------------------------------ connection level

    @rule(data=st.data(), op=st.sampled_from(["ping", "event", "subscribe", "unsubscribe", "manifest", "goaway"]))
    def connection_level(self, data: st.DataObject, op: str) -> None:
        """One rule for the frames outside streams, so that stream traffic dominates the runs."""
        if op == "ping":
            self.ping(data.draw(sides, label="side"), data.draw(st.binary(max_size=64), label="payload"))
        elif op == "event":
            self.send_event(data.draw(sides, label="side"), data.draw(notifications, label="event"))
        elif op == "subscribe":
            self.subscribe(
                data.draw(st.integers(0, 3), label="sub_id"),
                Subscription(*data.draw(st.tuples(patterns, patterns, patterns), label="patterns")),
                data.draw(st.none() | st.integers(0, 9), label="resume_after"),
            )
        elif op == "unsubscribe":
            self.unsubscribe(data.draw(st.integers(0, 3), label="sub_id"))
        elif op == "manifest":
            self.send_manifest(data.draw(manifests, label="manifest"))
        elif data.draw(st.integers(0, 3), label="goaway?") == 0:  # rarer: it ends the opening of streams
            self.goaway(data.draw(sides, label="side"), data.draw(st.sampled_from(["", "draining", "bye \u2603"])))
        self.pump()

    def ping(self, side: Side, payload: bytes) -> None:
        self.peers[side].conn.ping(payload)
        self.peers[side].pings_out += 1
        self.peers[OTHER[side]].expect.append(PingReceived(payload))

    def goaway(self, side: Side, reason: str) -> None:
        me = self.peers[side]
        me.conn.send_goaway(ErrorCode.NO_ERROR, reason)
        if me.goaway_last is None:
            me.goaway_last = me.highest_remote
        # a repeated GOAWAY never raises the last stream id of the first
        self.peers[OTHER[side]].expect.append(GoAway(me.goaway_last, ErrorCode.NO_ERROR, reason))

    def subscribe(self, sub_id: int, sub: Subscription, resume: int | None) -> None:
        self.pair.connector.subscribe(sub_id, sub, resume_after=resume)
        self.peers[Side.HUB].expect.append(Subscribed(sub_id, sub, resume))

    def unsubscribe(self, sub_id: int) -> None:
        self.pair.connector.unsubscribe(sub_id)
        self.peers[Side.HUB].expect.append(Unsubscribed(sub_id))

    def send_event(self, side: Side, event: Notification) -> None:
        me = self.peers[side]
        sent = me.conn.send_event(event.source, event.plugin, event.topic, event.seq, event.payload)
        if side is Side.HUB:
            # the hub sends only what the subscriptions it has received so far ask for
            assert sent == any(s.matches(event.source, event.plugin, event.topic) for s in me.subs.values())
        else:
            assert sent
        if sent:
            self.peers[OTHER[side]].expect.append(event)

    def send_manifest(self, manifest: dict[str, Any]) -> None:
        self.pair.connector.send_manifest(manifest)
        self.peers[Side.HUB].expect.append(ManifestUpdated(manifest))

    # ------------------------------------------------------------ the carrier

    @precondition(lambda self: any(self.wires[s].undelivered for s in SIDES))
    @rule(data=st.data(), chunks=st.lists(st.integers(1, 4096), max_size=6))
    def deliver_some(self, data: st.DataObject, chunks: list[int]) -> None:
        """Move part (or all) of one side's queued bytes to the other, in random pieces."""
        sender = data.draw(st.sampled_from([s for s in SIDES if self.wires[s].undelivered]), label="sender")
        total = len(self.wires[sender].undelivered)
        n = data.draw(st.one_of(st.just(total), st.integers(1, total)), label="n")
        self.deliver(sender, n, chunks)

    @rule()
    def flush(self) -> None:
        """Deliver everything both ways until the carrier is quiet; then every message has arrived."""
        while any(self.wires[s].undelivered for s in SIDES):
            for side in SIDES:
                self.deliver(side, len(self.wires[side].undelivered), [])
        for side in SIDES:
            me = self.peers[side]
            assert not me.expect, f"{side.name} never reported {list(me.expect)}"
            assert me.pings_out == 0, "a ping was not answered"
            peer = self.peers[OTHER[side]]
            for sid, view in me.streams.items():
                theirs = peer.streams.get(sid)
                if theirs is not None and not theirs.reset_by_self:
                    assert theirs.received == view.sent, f"stream {sid}: not all of {side.name}'s body arrived"

    # ------------------------------------------------------------ invariants

    def inflight(self, sender: Side) -> tuple[dict[int, bytearray], dict[int, int], int, int]:
        """On the wire from ``sender``: DATA bytes per stream, WINDOW_UPDATE increments per id, PINGs, PONGs."""
        data: dict[int, bytearray] = {}
        updates: dict[int, int] = {}
        pings = pongs = 0
        for frame in self.wires[sender].frames():
            if frame.type == FrameType.DATA:
                data.setdefault(frame.stream_id, bytearray()).extend(frame.payload)
            elif frame.type == FrameType.WINDOW_UPDATE:
                updates[frame.stream_id] = updates.get(frame.stream_id, 0) + int.from_bytes(frame.payload, "big")
            elif frame.type == FrameType.PING:
                pings += 1
            elif frame.type == FrameType.PONG:
                pongs += 1
        return data, updates, pings, pongs

    @invariant()
    def windows_never_negative(self) -> None:
        if not self.ready:
            return
        for side in SIDES:
            conn = self.peers[side].conn
            # the public views clamp at 0, so look at the counters themselves too
            assert conn._send_window >= 0
            assert conn._recv_window >= 0
            assert conn.send_window() >= 0
            assert conn.receive_window() >= 0
            for sid, stream in conn._streams.items():
                assert min(stream.send_window, stream.recv_window, stream.unacked, stream.credit) >= 0, f"stream {sid}"
                assert conn.send_window(sid) >= 0
                assert conn.receive_window(sid) >= 0

    @invariant()
    def connection_state_follows_goaways(self) -> None:
        if not self.ready:
            return
        for side in SIDES:
            me = self.peers[side]
            expected = {
                (False, False): ConnState.OPEN,
                (True, False): ConnState.CLOSING_LOCAL,
                (False, True): ConnState.CLOSING_REMOTE,
                (True, True): ConnState.CLOSING_BOTH,
            }[(me.goaway_last is not None, me.goaway_received)]
            assert me.conn.state is expected

    @invariant()
    def no_stream_leaks(self) -> None:
        """A connection holds exactly the streams still live or with unacknowledged data, and counts the live ones."""
        if not self.ready:
            return
        for side in SIDES:
            me = self.peers[side]
            present = {sid for sid, v in me.streams.items() if v.present}
            assert set(me.conn._streams) == present
            assert set(me.conn.open_streams) == {sid for sid, v in me.streams.items() if v.counted}
            assert me.conn._open_local == sum(1 for v in me.streams.values() if v.mine and v.counted)
            assert me.conn._open_remote == sum(1 for v in me.streams.values() if not v.mine and v.counted)
            for sid in present:
                assert me.conn._streams[sid].unacked == me.streams[sid].unconsumed

    @invariant()
    def bytes_delivered_exactly_and_in_order(self) -> None:
        if not self.ready:
            return
        for sender in SIDES:
            me, peer = self.peers[sender], self.peers[OTHER[sender]]
            on_wire, _updates, _pings, _pongs = self.inflight(sender)
            for sid, view in me.streams.items():
                theirs = peer.streams.get(sid)
                received = theirs.received if theirs is not None else bytearray()
                assert view.sent[: len(received)] == received
                dropped = sid in peer.ignored or (theirs is not None and (theirs.reset_by_self or theirs.refused))
                if not dropped:
                    # nothing lost: what arrived plus what is still on its way is what was sent
                    assert received + on_wire.get(sid, b"") == view.sent
                if theirs is not None and theirs.remote is HalfState.CLOSED:
                    assert received == view.sent

    @invariant()
    def credit_is_conserved(self) -> None:
        if not self.ready:
            return
        for sender in SIDES:
            receiver = OTHER[sender]
            s, r = self.peers[sender], self.peers[receiver]
            data_on_wire, _u, _p, _q = self.inflight(sender)
            _d, updates_back, _p2, _q2 = self.inflight(receiver)
            limits = r.conn.local_limits
            held = sum(v.unconsumed for v in r.streams.values() if v.present)
            credit = r.conn._conn_credit
            assert 0 <= credit < max(1, limits.connection_window_size // 4)
            assert r.conn.receive_window() + held + credit == limits.connection_window_size
            assert (
                s.conn.send_window()
                + sum(len(b) for b in data_on_wire.values())
                + held
                + credit
                + updates_back.get(0, 0)
                == limits.connection_window_size
            )
            for sid, view in s.streams.items():
                if view.dead or view.local is not HalfState.OPEN:
                    continue
                theirs = r.streams.get(sid)
                if theirs is None:
                    if sid in r.ignored:
                        continue
                    held_s = credit_s = 0  # its HEADERS are still on the wire
                elif not theirs.present:
                    continue
                else:
                    assert theirs.remote is not HalfState.CLOSED
                    held_s = theirs.unconsumed
                    credit_s = r.conn._streams[sid].credit
                    assert r.conn.receive_window(sid) + held_s + credit_s == limits.initial_window_size
                assert (
                    s.conn._streams[sid].send_window
                    + len(data_on_wire.get(sid, b""))
                    + held_s
                    + credit_s
                    + updates_back.get(sid, 0)
                    == limits.initial_window_size
                ), f"stream {sid} from {sender.name}"

    @invariant()
    def pings_get_pongs(self) -> None:
        """Every ping sent is answered: unanswered ones are on their way, or their pong is."""
        if not self.ready:
            return
        for side in SIDES:
            _d, _u, pings, _q = self.inflight(side)
            _d2, _u2, _p, pongs = self.inflight(OTHER[side])
            assert self.peers[side].pings_out == pings + pongs

    @invariant()
    def hub_knows_the_subscriptions(self) -> None:
        if not self.ready:
            return
        assert self.pair.hub.subscriptions == self.peers[Side.HUB].subs


# Follows the active profile (tests/conftest.py): half its examples, at most 10_000, of its
# stateful_step_count steps each -- ci: 100 runs of up to 50 steps; fuzz: 10_000 runs of up to 100.
_profile = settings.default
ConnectionPairMachine.TestCase.settings = settings(
    _profile, max_examples=min(max(1, _profile.max_examples // 2), 10_000)
)
TestConnectionPair = ConnectionPairMachine.TestCase
