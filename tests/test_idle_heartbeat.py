"""The heartbeat of an idle connection and of a busy one (protocol section 12).

A hub may give an idle connection (no stream open) a longer heartbeat interval than a busy one: 1,000 idle
edges then cost the bridge a sixth of the wake-ups, while a frozen edge's requests are still answered within
``HEARTBEAT_MISSES`` busy intervals.  These tests drive both ends of a real connection on a simulated clock.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radical_edge_proto import (
    HEARTBEAT_MISSES,
    HUB_BUSY_PING_INTERVALS,
    ConnectionClosed,
    ErrorCode,
    FrameType,
    Limits,
    LocalProtocolError,
    RemoteProtocolError,
    StreamReset,
    Welcome,
    encode_frame,
)

from .helpers import ConnectionPair
from .wire_helpers import frames_of

BUSY, IDLE = 5.0, 30.0
STEP = 0.25


class Clock:
    """Both ends on one clock: each step runs both timers, and delivers what each side sent (unless frozen)."""

    def __init__(self, pair: ConnectionPair, *, frozen_from: float = math.inf) -> None:
        self.pair = pair
        self.now = 0.0
        self.frozen_from = frozen_from  # from then on the connector neither runs nor reads nor answers
        self.sent: dict[str, list[tuple[float, FrameType]]] = {"hub": [], "connector": []}
        self.hub_events: list[object] = []

    @property
    def frozen(self) -> bool:
        return self.now >= self.frozen_from

    def flush(self) -> None:
        hub, connector = self.pair.hub, self.pair.connector
        for _ in range(3):  # a PING, its PONG, nothing more
            data = hub.data_to_send()
            self.sent["hub"] += [(self.now, f.type) for f in frames_of(data)]
            if data and not self.frozen:
                connector.receive_data(data, self.now)
            if self.frozen:
                connector.data_to_send()  # whatever it would have sent is lost with it
                continue
            data = connector.data_to_send()
            self.sent["connector"] += [(self.now, f.type) for f in frames_of(data)]
            if data:
                self.hub_events += hub.receive_data(data, self.now)

    def run_until(self, until: float) -> None:
        while self.now < until and not self.pair.hub.closed:
            self.now = round(self.now + STEP, 6)
            self.hub_events += self.pair.hub.handle_timer(self.now)
            if not self.frozen:
                self.pair.connector.handle_timer(self.now)
            self.flush()

    def request(self) -> int:
        sid = self.pair.hub.send_request("GET", "/e/plugin/x", end_stream=True, now=self.now)
        self.flush()
        return sid

    def cancel(self, sid: int) -> None:
        self.pair.hub.reset_stream(sid, ErrorCode.CANCEL)
        self.flush()

    def request_held(self, hold: float, then: float) -> bool:
        """A request held open ``hold`` seconds, then cancelled, then ``then`` seconds more; whether the hub
        gave up meanwhile (the clock stops there)."""
        sid = self.request()
        self.run_until(self.now + hold)
        if self.pair.hub.closed:
            return True
        self.cancel(sid)
        self.run_until(self.now + then)
        return self.pair.hub.closed

    def pings(self, side: str, start: float = 0.0, end: float = math.inf) -> int:
        return sum(1 for t, kind in self.sent[side] if kind == FrameType.PING and start <= t < end)

    def closed_at(self) -> float | None:
        """When the hub gave up (the clock stops there)."""
        return self.now if self.pair.hub.closed else None


def started(*, frozen_from: float = math.inf) -> Clock:
    clock = Clock(ConnectionPair(heartbeat_interval=BUSY, idle_heartbeat_interval=IDLE), frozen_from=frozen_from)
    clock.pair.hub.handle_timer(0.0)
    clock.pair.connector.handle_timer(0.0)
    return clock


# ---------------------------------------------------------------- the WELCOME


def test_the_welcome_carries_the_idle_interval_and_the_connector_uses_it():
    pair = ConnectionPair(handshake=False)
    pair.connector.send_hello(role="edge", name="e")
    pair.deliver(pair.connector)
    pair.hub.accept(heartbeat_interval=5, resume_token="t", idle_heartbeat_interval=30)
    (frame,) = frames_of(pair.hub.data_to_send())
    body = json.loads(frame.payload[2:])
    assert (body["heartbeat_interval"], body["idle_heartbeat_interval"]) == (5, 30)
    (welcome,) = pair.connector.receive_data(encode_frame(FrameType.WELCOME, 0, 0, frame.payload))
    assert isinstance(welcome, Welcome)
    assert (welcome.heartbeat_interval, welcome.idle_heartbeat_interval) == (5.0, 30.0)
    for conn in (pair.connector, pair.hub):
        assert (conn.heartbeat_interval, conn.idle_heartbeat_interval) == (5.0, 30.0)


def test_without_an_idle_interval_the_welcome_is_as_before_and_idle_means_the_same_interval():
    pair = ConnectionPair(handshake=False)
    pair.connector.send_hello(role="edge", name="e")
    pair.deliver(pair.connector)
    pair.hub.accept(heartbeat_interval=7.5, resume_token="t")
    (frame,) = frames_of(pair.hub.data_to_send())
    assert "idle_heartbeat_interval" not in json.loads(frame.payload[2:])
    (welcome,) = pair.connector.receive_data(encode_frame(FrameType.WELCOME, 0, 0, frame.payload))
    assert welcome.idle_heartbeat_interval is None
    assert pair.connector.idle_heartbeat_interval == pair.hub.idle_heartbeat_interval == 7.5


def test_an_idle_interval_shorter_than_the_busy_one_is_refused_both_ways():
    pair = ConnectionPair(handshake=False)
    pair.connector.send_hello(role="edge", name="e")
    pair.deliver(pair.connector)
    with pytest.raises(LocalProtocolError, match="at least heartbeat_interval"):
        pair.hub.accept(heartbeat_interval=5, resume_token="t", idle_heartbeat_interval=4)
    assert pair.hub.data_to_send() == b""  # nothing sent, nothing changed

    for bad in (4, 0, -1, "30", True, None):
        conn = ConnectionPair(handshake=False).connector
        conn.send_hello(role="edge", name="e")
        conn.data_to_send()
        body = {"limits": Limits().to_json(), "heartbeat_interval": 5, "resume_token": "t"}
        body["idle_heartbeat_interval"] = bad
        welcome = encode_frame(FrameType.WELCOME, 0, 0, b"\x00\x01" + json.dumps(body).encode())
        with pytest.raises(RemoteProtocolError, match="idle_heartbeat_interval") as info:
            conn.receive_data(welcome)
        assert info.value.error_code is ErrorCode.PROTOCOL_ERROR
        assert conn.closed


# ---------------------------------------------------------------- idle and busy


def test_an_idle_connection_pings_once_per_idle_interval_and_a_busy_one_once_per_busy_interval():
    clock = started()
    clock.run_until(120.0)
    assert clock.pings("connector") == 4  # at 30, 60, 90, 120: not every 5 s
    assert clock.pings("hub") == 0  # the hub answers; it pings only a connector silent for 2 intervals
    sid = clock.request()  # the hub's request; the connector holds it open without a word
    clock.run_until(180.0)
    assert 11 <= clock.pings("connector", 120.0, 180.0) <= 12  # every 5 s of the hub's silence
    assert clock.pings("hub", 120.0, 180.0) == 0  # the connector's PINGs are its word: no PINGs both ways
    assert not clock.pair.hub.closed
    clock.cancel(sid)
    clock.run_until(300.0)
    assert clock.pings("connector", 181.0, 301.0) == 4  # idle again: at 210, 240, 270, 300
    assert not clock.pair.hub.closed
    assert not clock.pair.connector.closed


def test_a_request_after_a_long_idle_stretch_asks_the_connector_and_counts_its_silence_from_then():
    """25 s without a word is normal for an idle connector (it pings after 30): the first request must not be
    judged by the busy interval's 15 s.  The hub asks with a PING at once and gives the connector the rest of
    the busy deadline to answer, as though it had been silent for one busy interval then."""
    clock = started(frozen_from=1.0)
    clock.run_until(25.0)
    clock.request()
    assert not clock.pair.hub.closed
    answer_by = 25.0 + (HEARTBEAT_MISSES - 1) * BUSY
    clock.run_until(answer_by - STEP)
    assert not clock.pair.hub.closed
    # asked at once (the connector has no reason to speak if the request is cancelled), and again one busy
    # interval later (the hub's second busy interval of silence)
    assert [t for t, kind in clock.sent["hub"] if kind == FrameType.PING] == [25.0, 25.0 + BUSY]
    clock.run_until(60.0)
    assert clock.closed_at() == answer_by
    closed, reset = clock.hub_events[-2:]
    assert isinstance(closed, ConnectionClosed)
    assert closed.error_code is ErrorCode.TIMEOUT
    assert "for 35.0 s" in closed.reason  # the whole silence, idle stretch included
    assert reset == StreamReset(2, ErrorCode.TIMEOUT, by_peer=False)  # the request is answered, not left hanging


def test_a_connector_frozen_with_a_request_in_flight_is_dropped_three_busy_intervals_after_its_last_word():
    clock = started(frozen_from=32.0)
    clock.run_until(31.0)  # the connector's idle ping at 30
    clock.request()  # silent for 1 s only: no need to ask
    assert clock.pings("hub") == 0
    clock.run_until(100.0)
    assert clock.closed_at() == 30.0 + HEARTBEAT_MISSES * BUSY


def test_a_retried_request_does_not_give_a_silent_connector_a_new_start():
    """A caller that gives up and asks again must not keep a frozen connector alive for ever."""
    clock = started(frozen_from=1.0)
    clock.run_until(25.0)
    for _ in range(10):  # asks, gives up after 4 s, asks again 1 s later
        if clock.request_held(4.0, 1.0):
            break
    # asked at 25 and silent since: the request open at 35 s, or the first after, ends it
    answer_by = 25.0 + (HEARTBEAT_MISSES - 1) * BUSY
    dropped = clock.closed_at()
    assert dropped is not None
    assert answer_by <= dropped <= answer_by + 1.0 + STEP
    assert isinstance(clock.hub_events[-1], StreamReset)  # a request was open: it is answered


def test_a_connector_that_answered_meanwhile_gets_a_new_start():
    clock = started()
    clock.run_until(25.0)
    sid = clock.request()  # asked at 25
    clock.cancel(sid)
    clock.run_until(31.0)  # the connector's idle ping at 30 (its own silence since 0... and since 25: its PING)
    clock.frozen_from = clock.now
    clock.run_until(50.0)
    clock.request()  # silent since 30 (20 s, more than a busy interval): asked now
    clock.run_until(100.0)
    assert clock.closed_at() == 50.0 + (HEARTBEAT_MISSES - 1) * BUSY


def test_a_request_opened_without_the_time_is_checked_at_the_next_timer_call():
    pair = ConnectionPair(heartbeat_interval=BUSY, idle_heartbeat_interval=IDLE)
    hub = pair.hub
    hub.handle_timer(0.0)
    assert hub.next_timer() == 2 * IDLE  # idle: the hub pings after two idle intervals
    hub.send_request("GET", "/x", end_stream=True)
    assert hub.next_timer() == 0.0  # "now": only the timer call knows the time
    assert hub.handle_timer(25.0) == []  # 25 s of idle silence: the request asks the connector
    assert [f.type for f in frames_of(hub.data_to_send())] == [FrameType.HEADERS, FrameType.PING]
    assert hub.next_timer() == 25.0 + BUSY
    (closed, _reset) = hub.handle_timer(25.0 + (HEARTBEAT_MISSES - 1) * BUSY)
    assert closed.error_code is ErrorCode.TIMEOUT


def test_streams_the_connector_opens_make_it_busy_too():
    """The connector's own requests (an SDK client's) follow the same rule on its side."""
    clock = started()
    clock.run_until(29.0)
    sid = clock.pair.connector.send_request("GET", "/x", now=clock.now)
    assert sid == 1
    assert clock.pair.connector.next_timer() == pytest.approx(29.0 + BUSY)  # silent 29 s: asked, again in 5 s
    clock.flush()
    clock.run_until(60.0)
    assert 6 <= clock.pings("connector", 29.0, 60.0) <= 7  # the hub never answered the request: every 5 s
    assert not clock.pair.connector.closed


# ---------------------------------------------------------------- any schedule


schedules = st.lists(st.tuples(st.floats(0.0, 40.0), st.floats(0.0, 20.0)), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(schedule=schedules, frozen_from=st.one_of(st.none(), st.floats(0.0, 150.0)))
def test_any_request_schedule_a_live_connector_stays_and_a_frozen_ones_requests_end_in_time(schedule, frozen_from):
    """Requests at any times, each held for any time (the hub cancels it then): a connector that runs is never
    dropped; a frozen one is dropped, and no later than ``HEARTBEAT_MISSES`` busy intervals after any request
    sent to it once frozen and still open then."""
    clock = started(frozen_from=math.inf if frozen_from is None else frozen_from)
    deadline = math.inf
    for gap, hold in schedule:
        clock.run_until(clock.now + gap)
        if clock.pair.hub.closed:
            break
        asked = clock.now
        sid = clock.request()
        clock.run_until(asked + hold)
        if asked >= clock.frozen_from and hold >= HEARTBEAT_MISSES * BUSY:
            deadline = min(deadline, asked + HEARTBEAT_MISSES * BUSY)
        if clock.pair.hub.closed:
            break
        clock.cancel(sid)
    clock.run_until(max(clock.now, clock.frozen_from if frozen_from is not None else 0.0) + 100.0)
    timeouts = [e for e in clock.hub_events if isinstance(e, ConnectionClosed)]
    if frozen_from is None:
        assert timeouts == []
        assert not clock.pair.connector.closed
        return
    # frozen: dropped, idle or not (an idle one within HEARTBEAT_MISSES idle intervals of its last bytes)
    assert [e.error_code for e in timeouts] == [ErrorCode.TIMEOUT]
    dropped = clock.closed_at()
    assert dropped is not None
    assert dropped <= clock.frozen_from + HEARTBEAT_MISSES * IDLE + STEP
    assert dropped <= deadline


# ---------------------------------------------------------------- a connector whose loop stalls


class StallClock(Clock):
    """The connector's event loop stalls in the given spans: it neither runs its timer nor reads then, and the
    bytes sent to it meanwhile wait in its socket until the stall ends (a plugin blocking the loop)."""

    def __init__(self, pair: ConnectionPair, stalls: list[tuple[float, float]]) -> None:
        super().__init__(pair)
        self.stalls = stalls
        self.waiting = b""

    @property
    def frozen(self) -> bool:
        return any(start <= self.now < end for start, end in self.stalls)

    def flush(self) -> None:
        hub, connector = self.pair.hub, self.pair.connector
        for _ in range(3):
            data = hub.data_to_send()
            self.sent["hub"] += [(self.now, f.type) for f in frames_of(data)]
            self.waiting += data
            if self.frozen:
                continue
            if self.waiting:
                connector.receive_data(self.waiting, self.now)
                self.waiting = b""
            data = connector.data_to_send()
            self.sent["connector"] += [(self.now, f.type) for f in frames_of(data)]
            if data:
                self.hub_events += hub.receive_data(data, self.now)


def busy_and_talked_to(stalls: list[tuple[float, float]], until: float) -> StallClock:
    """The hub holds a request open on the connector (a long job: the connector has nothing to say about it)
    and sends it another request every second, held half a second: the connector hears from the hub all the
    time, so its own PINGs (after an interval without hearing anything) never come."""
    clock = StallClock(ConnectionPair(heartbeat_interval=BUSY, idle_heartbeat_interval=IDLE), stalls)
    clock.pair.hub.handle_timer(0.0)
    clock.pair.connector.handle_timer(0.0)
    clock.request()
    while clock.now < until and not clock.request_held(0.5, 0.5):
        pass
    return clock


def test_a_busy_connector_that_only_listens_survives_a_stall_that_starts_when_the_hub_asks():
    """The connector has said nothing since it got the long request at 0 (it hears the hub all the time, so it
    has no reason to).  Had the hub waited two intervals before asking, its PING would arrive at 10 s, a stall
    of the connector's loop of one interval from then would put the answer at 15 s: three intervals of
    silence, dropped.  The hub asks a busy connector after one and a half intervals: its PING at 7.5 s is
    answered at once, and the next one (15 s) when the stall ends."""
    busy_ping = HUB_BUSY_PING_INTERVALS * BUSY
    clock = busy_and_talked_to([(10.0, 10.0 + BUSY)], 60.0)
    assert clock.closed_at() is None
    hub_pings = [t for t, kind in clock.sent["hub"] if kind == FrameType.PING]
    assert hub_pings[:2] == [busy_ping, 2 * busy_ping]


@settings(max_examples=80, deadline=None)
@given(
    first=st.floats(0.0, 30.0),
    gap=st.floats(STEP, 12.0),
    lengths=st.tuples(
        st.floats(0.0, (HEARTBEAT_MISSES - HUB_BUSY_PING_INTERVALS) * BUSY - 2 * STEP),
        st.floats(0.0, (HEARTBEAT_MISSES - HUB_BUSY_PING_INTERVALS) * BUSY - 2 * STEP),
    ),
)
def test_a_busy_connector_whose_loop_stalls_for_less_than_one_and_a_half_intervals_is_never_dropped(
    first, gap, lengths
):
    """Two stalls, each shorter than one and a half busy intervals (what is left of three after the hub's PING,
    less two steps of the simulated clock), anywhere, with the loop running for at least a step between them:
    the hub's PING is answered within three intervals of silence."""
    second = first + lengths[0] + gap
    clock = busy_and_talked_to([(first, first + lengths[0]), (second, second + lengths[1])], second + 40.0)
    assert clock.closed_at() is None


def test_a_busy_connection_where_nobody_speaks_costs_one_ping_and_one_pong_per_interval():
    """A long request in flight, nothing else: the connector pings every interval (it hears nothing), and those
    PINGs are the hub's sign of life, so the hub never pings too."""
    clock = started()
    clock.run_until(1.0)
    clock.request()
    clock.run_until(61.0)
    assert clock.closed_at() is None
    assert 11 <= clock.pings("connector", 1.0, 61.0) <= 12
    assert clock.pings("hub", 1.0, 61.0) == 0
