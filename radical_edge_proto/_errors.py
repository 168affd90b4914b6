"""Error codes and the exception tree of the protocol core.

.. code-block:: text

    ProtocolError
    ├── LocalProtocolError   this side tried to do something the protocol forbids
    └── RemoteProtocolError  the peer sent something the protocol forbids

Both carry an :class:`ErrorCode`, the code that goes on the wire (in a RESET,
GOAWAY or REJECT frame) when the error ends a stream or the connection.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._events import Event


class ErrorCode(enum.IntEnum):
    """Wire error codes (16 bits on the wire)."""

    NO_ERROR = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2
    FLOW_CONTROL_ERROR = 3
    STREAM_CLOSED = 4
    FRAME_SIZE_ERROR = 5
    #: The stream was not processed at all; the request may be retried.
    REFUSED_STREAM = 6
    CANCEL = 7
    UNSUPPORTED_VERSION = 8
    UNAUTHORIZED = 9
    NAME_CONFLICT = 10
    #: The peer stayed silent past the heartbeat deadline.
    TIMEOUT = 11
    #: Never sent: reported locally for streams of a connection whose carrier died.
    CONNECTION_LOST = 12
    #: ``GOAWAY``: the connection is ended on purpose and the connector must not reconnect.
    STOP = 13

    @classmethod
    def from_wire(cls, value: int) -> ErrorCode | int:
        """The enum member for ``value``, or the bare int for codes this version does not know."""
        try:
            return cls(value)
        except ValueError:
            return value


class ProtocolError(Exception):
    """Base of every error the protocol core raises.

    ``error_code`` is the wire code that describes the failure.
    """

    def __init__(self, msg: str, error_code: ErrorCode = ErrorCode.PROTOCOL_ERROR) -> None:
        super().__init__(msg)
        self.error_code = error_code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, {self.error_code.name})"


class LocalProtocolError(ProtocolError):
    """This side asked for something the protocol does not allow; nothing was sent."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow.

    The connection that raised it is closed and has queued a GOAWAY carrying
    ``error_code`` (a REJECT if the hub had not answered the HELLO yet;
    nothing if a connector had not been welcomed): flush ``data_to_send()``
    and close the carrier.

    ``events`` (from :meth:`Connection.receive_data`) are the events that call
    would have returned: first those of the frames before the bad one, then a
    :class:`ConnectionClosed` with this error's code and message, then a
    :class:`StreamReset` with the same code for every stream that was open.
    Handle them like any other events; an error raised elsewhere has none.
    """

    def __init__(self, msg: str, error_code: ErrorCode = ErrorCode.PROTOCOL_ERROR) -> None:
        super().__init__(msg, error_code)
        self.events: list[Event] = []
