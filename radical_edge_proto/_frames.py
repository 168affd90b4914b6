"""Frame layout: the fixed header, frame types, flags and payload codecs.

Every frame is a 10-byte header followed by ``length`` payload bytes::

    +----------------+--------+--------+----------------+
    | length (u32)   | type u8| flags u8| stream id (u32)|
    +----------------+--------+--------+----------------+

All integers are big-endian.  The payload layouts are given in
``docs/protocol.md``; this module is the one place that knows them.
Decoding never raises anything but :class:`RemoteProtocolError`.
"""

from __future__ import annotations

import enum
import json
import math
import struct
from collections.abc import Iterable
from typing import Any, NamedTuple

from ._errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError

HEADER = struct.Struct("!IBBI")
HEADER_SIZE = HEADER.size
MAX_STREAM_ID = 0x7FFF_FFFF
MAX_WINDOW = 0x7FFF_FFFF
MAX_SEQ = 0xFFFF_FFFF_FFFF_FFFF
MAX_PING_PAYLOAD = 64

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_RESPONSE_HEAD = struct.Struct("!BH")
_GOAWAY_HEAD = struct.Struct("!IH")
_SUBSCRIBE_HEAD = struct.Struct("!IQ")

Headers = tuple[tuple[bytes, bytes], ...]
JSONObject = dict[str, Any]


class FrameType(enum.IntEnum):
    HELLO = 0x01
    WELCOME = 0x02
    REJECT = 0x03
    HEADERS = 0x04
    DATA = 0x05
    RESET = 0x06
    WINDOW_UPDATE = 0x07
    PING = 0x08
    PONG = 0x09
    GOAWAY = 0x0A
    EVENT = 0x0B
    SUBSCRIBE = 0x0C
    UNSUBSCRIBE = 0x0D
    MANIFEST = 0x0E


class Flags(enum.IntFlag):
    END_STREAM = 0x01  # HEADERS, DATA: the sender's half of the stream ends here
    RESUME = 0x02  # SUBSCRIBE: the resume-after sequence number is meaningful


class StreamRule(enum.Enum):
    """Which stream ids a frame type may carry."""

    ZERO = "zero"
    NONZERO = "nonzero"
    ANY = "any"


#: frame type -> (allowed flags, stream id rule)
FRAME_RULES: dict[int, tuple[int, StreamRule]] = {
    FrameType.HELLO: (0, StreamRule.ZERO),
    FrameType.WELCOME: (0, StreamRule.ZERO),
    FrameType.REJECT: (0, StreamRule.ZERO),
    FrameType.HEADERS: (int(Flags.END_STREAM), StreamRule.NONZERO),
    FrameType.DATA: (int(Flags.END_STREAM), StreamRule.NONZERO),
    FrameType.RESET: (0, StreamRule.NONZERO),
    FrameType.WINDOW_UPDATE: (0, StreamRule.ANY),
    FrameType.PING: (0, StreamRule.ZERO),
    FrameType.PONG: (0, StreamRule.ZERO),
    FrameType.GOAWAY: (0, StreamRule.ZERO),
    FrameType.EVENT: (0, StreamRule.ZERO),
    FrameType.SUBSCRIBE: (int(Flags.RESUME), StreamRule.ZERO),
    FrameType.UNSUBSCRIBE: (0, StreamRule.ZERO),
    FrameType.MANIFEST: (0, StreamRule.ZERO),
}
# The same rules as plain ints, for the per-frame fast path of the decoder:
# type -> (flag bits that must be clear, True if the stream id must be 0, True if it must not be)
_FAST_RULES: dict[int, tuple[int, bool, bool]] = {
    int(t): (~flags & 0xFF, rule is StreamRule.ZERO, rule is StreamRule.NONZERO)
    for t, (flags, rule) in FRAME_RULES.items()
}


class RawFrame(NamedTuple):
    type: int
    flags: int
    stream_id: int
    payload: bytes


def frame_header(ftype: int, flags: int, stream_id: int, length: int) -> bytes:
    return HEADER.pack(length, ftype, flags, stream_id)


def encode_frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), ftype, flags, stream_id) + payload


class FrameDecoder:
    """Cuts a byte stream into frames, however the bytes are split.

    Only the header is checked here (size, type, flags, stream id rule);
    payloads are decoded by the connection.  A header that announces more
    than ``max_frame_size`` is refused before its payload is buffered, so a
    peer cannot make us hold more than one frame's worth of bytes.
    """

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[RawFrame]:
        """The frames ``data`` completes; raises :class:`RemoteProtocolError` for a bad header."""
        frames, error = self.feed_until_error(data)
        if error is not None:
            raise error
        return frames

    def feed_until_error(
        self, data: bytes | bytearray | memoryview
    ) -> tuple[list[RawFrame], RemoteProtocolError | None]:
        """Like :meth:`feed`, but a bad header is returned, with the whole frames before it.

        The bad header and what follows it stay buffered.
        """
        if self._buf:
            self._buf += data
            source: bytes | bytearray | memoryview = self._buf
        else:
            source = data
        view = memoryview(source)
        try:
            frames, used, error = self._parse(view)
            rest = len(view) - used
            if source is self._buf:
                if used:
                    view.release()
                    del self._buf[:used]
            elif rest:
                self._buf = bytearray(view[used:])
        finally:
            view.release()
        return frames, error

    def _parse(self, view: memoryview) -> tuple[list[RawFrame], int, RemoteProtocolError | None]:
        frames: list[RawFrame] = []
        pos = 0
        end = len(view)
        unpack = HEADER.unpack_from
        rules = _FAST_RULES
        limit = self.max_frame_size
        while end - pos >= HEADER_SIZE:
            length, ftype, flags, stream_id = unpack(view, pos)
            rule = rules.get(ftype)
            if (
                rule is None
                or length > limit
                or flags & rule[0]
                or stream_id > MAX_STREAM_ID
                or (rule[1] and stream_id)
                or (rule[2] and not stream_id)
            ):
                try:
                    check_header(length, ftype, flags, stream_id, limit)  # raises, with the reason
                except RemoteProtocolError as exc:
                    return frames, pos, exc
            stop = pos + HEADER_SIZE + length
            if stop > end:
                break
            frames.append(RawFrame(ftype, flags, stream_id, bytes(view[pos + HEADER_SIZE : stop])))
            pos = stop
        return frames, pos, None


def check_header(length: int, ftype: int, flags: int, stream_id: int, max_frame_size: int) -> None:
    rule = FRAME_RULES.get(ftype)
    if rule is None:
        raise RemoteProtocolError(f"unknown frame type 0x{ftype:02x}")
    if length > max_frame_size:
        raise RemoteProtocolError(
            f"frame of {length} bytes exceeds the limit of {max_frame_size}",
            ErrorCode.FRAME_SIZE_ERROR,
        )
    allowed, stream_rule = rule
    if flags & ~allowed:
        raise RemoteProtocolError(f"flags 0x{flags:02x} not allowed on {FrameType(ftype).name}")
    if stream_id > MAX_STREAM_ID:
        raise RemoteProtocolError("reserved bit of the stream id is set")
    if stream_rule is StreamRule.ZERO and stream_id != 0:
        raise RemoteProtocolError(f"{FrameType(ftype).name} must be on stream 0")
    if stream_rule is StreamRule.NONZERO and stream_id == 0:
        raise RemoteProtocolError(f"{FrameType(ftype).name} must not be on stream 0")


# ---------------------------------------------------------------- payload reading


class PayloadReader:
    """Bounds-checked reads from one frame payload; any shortfall is a RemoteProtocolError."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise self._truncated()
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self._take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self._take(8))[0]
        return value

    def bytes8(self) -> bytes:
        return self._take(self.u8())

    def bytes16(self) -> bytes:
        return self._take(self.u16())

    def text16(self) -> str:
        return decode_text(self.bytes16(), self._what)

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def done(self) -> None:
        if self._pos != len(self._data):
            raise RemoteProtocolError(f"trailing bytes in {self._what} payload", ErrorCode.FRAME_SIZE_ERROR)

    def header_block(self) -> Headers:
        """The rest of the payload as a header block, each header checked (see :func:`decode_header_block`).

        The same reads, checks and errors as ``u16``, ``bytes16`` and the header checks in turn, in one
        loop without the method calls: a request's headers cross it in every process on the path.
        """
        data, pos, end = self._data, self._pos, len(self._data)
        unpack = _U16.unpack_from
        if pos + 2 > end:
            raise self._truncated()
        count: int = unpack(data, pos)[0]
        pos += 2
        headers = []
        for _ in range(count):
            if pos + 2 > end:
                raise self._truncated()
            size: int = unpack(data, pos)[0]
            pos += 2
            if pos + size + 2 > end:
                raise self._truncated()
            name = data[pos : pos + size]
            pos += size
            size = unpack(data, pos)[0]
            pos += 2
            if pos + size > end:
                raise self._truncated()
            value = data[pos : pos + size]
            pos += size
            check_header_name(name, RemoteProtocolError)
            check_header_value(value, RemoteProtocolError)
            headers.append((name, value))
        self._pos = pos
        self.done()
        return tuple(headers)

    def _truncated(self) -> RemoteProtocolError:
        return RemoteProtocolError(f"truncated {self._what} payload", ErrorCode.FRAME_SIZE_ERROR)


def decode_text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"{what}: text is not valid UTF-8") from None


def decode_json_object(raw: bytes, what: str) -> JSONObject:
    try:
        value = json.loads(decode_text(raw, what), parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        raise RemoteProtocolError(f"{what}: payload is not valid JSON") from None
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"{what}: payload must be a JSON object")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN / Infinity: json.loads would accept them


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")  # 1e999 would become inf, which JSON cannot say
    return value


def encode_json_object(value: JSONObject, what: str) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError(f"{what}: not JSON-serialisable: {exc}") from None


# ---------------------------------------------------------------- field encoders


def text16(value: str, what: str) -> bytes:
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"{what} is not encodable as UTF-8") from None
    if len(raw) > 0xFFFF:
        raise LocalProtocolError(f"{what} longer than 65535 bytes")
    return _U16.pack(len(raw)) + raw


def u16(value: int) -> bytes:
    return _U16.pack(value)


def u32(value: int) -> bytes:
    return _U32.pack(value)


def u64(value: int) -> bytes:
    return _U64.pack(value)


# ---------------------------------------------------------------- validation
# Each check takes the error class to raise, so the same rule refuses a bad
# argument locally (LocalProtocolError) and a bad frame remotely.

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_LOWER_TOKEN = _TOKEN - frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# the same sets as bytes, for bytes.translate(None, allowed): what is left over is not allowed
# (one C call per check instead of a Python loop over the bytes)
_TOKEN_BYTES = bytes(sorted(_TOKEN))
_LOWER_TOKEN_BYTES = bytes(sorted(_LOWER_TOKEN))
_PATH_BYTES = bytes(range(0x21, 0x7F))


def check_method(method: bytes, err: type[ProtocolError]) -> None:
    if not 0 < len(method) <= 32 or method.translate(None, _TOKEN_BYTES):
        raise err(f"invalid method {method!r}")


def check_path(path: bytes, err: type[ProtocolError]) -> None:
    if not path.startswith(b"/") or path.translate(None, _PATH_BYTES):
        raise err(f"invalid request path {path[:64]!r}")


def check_status(status: int, err: type[ProtocolError]) -> None:
    if not 100 <= status <= 999:
        raise err(f"invalid status {status}")


def check_header_name(name: bytes, err: type[ProtocolError]) -> None:
    """Header names travel lowercased (senders lowercase them; a receiver refuses others)."""
    if not name or name.translate(None, _LOWER_TOKEN_BYTES):
        raise err(f"invalid header name {name[:64]!r}")


def check_header_value(value: bytes, err: type[ProtocolError]) -> None:
    if b"\r" in value or b"\n" in value or b"\0" in value:
        raise err("header value contains CR, LF or NUL")


def normalize_headers(headers: Iterable[tuple[bytes | str, bytes | str]]) -> Headers:
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        try:
            n = (name.encode("latin-1") if isinstance(name, str) else bytes(name)).lower()
            v = value.encode("latin-1") if isinstance(value, str) else bytes(value)
        except UnicodeEncodeError:
            raise LocalProtocolError(f"header {name!r}: not encodable as latin-1") from None
        check_header_name(n, LocalProtocolError)
        check_header_value(v, LocalProtocolError)
        out.append((n, v))
    if len(out) > 0xFFFF:
        raise LocalProtocolError("more than 65535 headers")
    return tuple(out)


# ---------------------------------------------------------------- HEADERS payload

KIND_REQUEST = 0
KIND_RESPONSE = 1


def encode_header_block(headers: Headers) -> bytes:
    parts = [_U16.pack(len(headers))]
    for name, value in headers:
        if len(name) > 0xFFFF or len(value) > 0xFFFF:
            raise LocalProtocolError("header name or value longer than 65535 bytes")
        parts += (_U16.pack(len(name)), name, _U16.pack(len(value)), value)
    return b"".join(parts)


def encode_request_payload(method: bytes, path: bytes, headers: Headers) -> bytes:
    if len(path) > 0xFFFF:
        raise LocalProtocolError("request path longer than 65535 bytes")
    return b"".join(
        (bytes((KIND_REQUEST, len(method))), method, _U16.pack(len(path)), path, encode_header_block(headers))
    )


def encode_response_payload(status: int, headers: Headers) -> bytes:
    return _RESPONSE_HEAD.pack(KIND_RESPONSE, status) + encode_header_block(headers)


def decode_header_block(reader: PayloadReader) -> Headers:
    """The rest of ``reader``: a count, then each name and value with its u16 length (section 6), checked."""
    return reader.header_block()


# ---------------------------------------------------------------- other payloads


def encode_goaway_payload(last_stream_id: int, code: int, reason: bytes) -> bytes:
    return _GOAWAY_HEAD.pack(last_stream_id, code) + reason


def encode_event_payload(source: str, plugin: str, topic: str, seq: int, payload: bytes) -> bytes:
    return b"".join(
        (_U64.pack(seq), text16(source, "source"), text16(plugin, "plugin"), text16(topic, "topic"), payload)
    )


def encode_subscribe_payload(sub_id: int, after: int, edge: str, plugin: str, topic: str) -> bytes:
    return b"".join(
        (
            _SUBSCRIBE_HEAD.pack(sub_id, after),
            text16(edge, "edge pattern"),
            text16(plugin, "plugin pattern"),
            text16(topic, "topic pattern"),
        )
    )
