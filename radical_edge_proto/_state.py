"""The state machines, as tables.

A transition that is not in a table is a protocol violation: the caller
raises :class:`LocalProtocolError` when this side tried it and
:class:`RemoteProtocolError` when the peer did.  Nothing is silently ignored.
"""

from __future__ import annotations

import enum


class ConnState(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; the C hash keeps table lookups cheap

    IDLE = "idle"  # connector, before HELLO
    AWAIT_HELLO = "await_hello"  # hub, before HELLO
    HELLO_SENT = "hello_sent"  # connector, waiting for WELCOME / REJECT
    HELLO_RECEIVED = "hello_received"  # hub, the application decides
    OPEN = "open"
    CLOSING_LOCAL = "closing_local"  # this side sent GOAWAY
    CLOSING_REMOTE = "closing_remote"  # the peer sent GOAWAY
    CLOSING_BOTH = "closing_both"
    CLOSED = "closed"


class ConnInput(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; the C hash keeps table lookups cheap

    SEND_HELLO = "send_hello"
    RECV_HELLO = "recv_hello"
    SEND_WELCOME = "send_welcome"
    RECV_WELCOME = "recv_welcome"
    SEND_REJECT = "send_reject"
    RECV_REJECT = "recv_reject"
    SEND_GOAWAY = "send_goaway"
    RECV_GOAWAY = "recv_goaway"
    OPEN_LOCAL_STREAM = "open_local_stream"
    OPEN_REMOTE_STREAM = "open_remote_stream"
    #: any other frame once the handshake is done (DATA, RESET, PING, EVENT, ...)
    SEND_FRAME = "send_frame"
    RECV_FRAME = "recv_frame"
    #: the connection ends: fatal error, timeout, lost carrier, close()
    CLOSE = "close"


_S = ConnState
_I = ConnInput
_LIVE = (_S.OPEN, _S.CLOSING_LOCAL, _S.CLOSING_REMOTE, _S.CLOSING_BOTH)

CONN_TRANSITIONS: dict[tuple[ConnState, ConnInput], ConnState] = {
    # handshake
    (_S.IDLE, _I.SEND_HELLO): _S.HELLO_SENT,
    (_S.HELLO_SENT, _I.RECV_WELCOME): _S.OPEN,
    (_S.HELLO_SENT, _I.RECV_REJECT): _S.CLOSED,
    (_S.AWAIT_HELLO, _I.RECV_HELLO): _S.HELLO_RECEIVED,
    (_S.AWAIT_HELLO, _I.SEND_REJECT): _S.CLOSED,  # a HELLO we cannot even read (version)
    (_S.HELLO_RECEIVED, _I.SEND_WELCOME): _S.OPEN,
    (_S.HELLO_RECEIVED, _I.SEND_REJECT): _S.CLOSED,
    # new streams: only while fully open, except that a peer may still race a
    # stream past our GOAWAY (it is then refused, not treated as an error)
    (_S.OPEN, _I.OPEN_LOCAL_STREAM): _S.OPEN,
    (_S.OPEN, _I.OPEN_REMOTE_STREAM): _S.OPEN,
    (_S.CLOSING_LOCAL, _I.OPEN_REMOTE_STREAM): _S.CLOSING_LOCAL,
    # draining
    (_S.OPEN, _I.SEND_GOAWAY): _S.CLOSING_LOCAL,
    (_S.OPEN, _I.RECV_GOAWAY): _S.CLOSING_REMOTE,
    (_S.CLOSING_LOCAL, _I.SEND_GOAWAY): _S.CLOSING_LOCAL,
    (_S.CLOSING_LOCAL, _I.RECV_GOAWAY): _S.CLOSING_BOTH,
    (_S.CLOSING_REMOTE, _I.SEND_GOAWAY): _S.CLOSING_BOTH,
    (_S.CLOSING_REMOTE, _I.RECV_GOAWAY): _S.CLOSING_REMOTE,
    (_S.CLOSING_BOTH, _I.SEND_GOAWAY): _S.CLOSING_BOTH,
    (_S.CLOSING_BOTH, _I.RECV_GOAWAY): _S.CLOSING_BOTH,
}
# every other frame flows in every live state
for _state in _LIVE:
    CONN_TRANSITIONS[(_state, _I.SEND_FRAME)] = _state
    CONN_TRANSITIONS[(_state, _I.RECV_FRAME)] = _state
# any state but CLOSED can end
for _state in ConnState:
    if _state is not _S.CLOSED:
        CONN_TRANSITIONS[(_state, _I.CLOSE)] = _S.CLOSED
del _state


class HalfState(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; the C hash keeps table lookups cheap

    """One direction of a stream (what one side sends on it)."""

    IDLE = "idle"  # no HEADERS yet
    OPEN = "open"  # HEADERS sent, body may follow
    CLOSED = "closed"  # END_STREAM sent


class HalfInput(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; the C hash keeps table lookups cheap

    HEADERS = "headers"
    HEADERS_END = "headers_end"  # HEADERS with END_STREAM (no body)
    DATA = "data"
    DATA_END = "data_end"  # DATA with END_STREAM


_H = HalfState
_HI = HalfInput

HALF_TRANSITIONS: dict[tuple[HalfState, HalfInput], HalfState] = {
    (_H.IDLE, _HI.HEADERS): _H.OPEN,
    (_H.IDLE, _HI.HEADERS_END): _H.CLOSED,
    (_H.OPEN, _HI.DATA): _H.OPEN,
    (_H.OPEN, _HI.DATA_END): _H.CLOSED,
}
