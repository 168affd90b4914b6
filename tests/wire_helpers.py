"""Helpers for the protocol-core tests: crafting raw frames and reading queued bytes."""

from __future__ import annotations

import struct

import pytest

from radical_edge_proto import (
    MAX_FRAME_SIZE,
    Connection,
    ConnState,
    ErrorCode,
    FrameDecoder,
    FrameType,
    RawFrame,
    RemoteProtocolError,
    encode_frame,
)

from .helpers import ConnectionPair


def frames_of(data: bytes) -> list[RawFrame]:
    """Decode ``data`` into whole frames; fails if a partial frame is left over."""
    decoder = FrameDecoder(MAX_FRAME_SIZE)
    frames = decoder.feed(data)
    assert decoder.buffered == 0, "queued bytes end in a partial frame"
    return frames


def request_payload(method: bytes, path: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A HEADERS request payload, written out by hand from the wire layout."""
    out = bytes((0, len(method))) + method + struct.pack("!H", len(path)) + path + struct.pack("!H", len(headers))
    for name, value in headers:
        out += struct.pack("!H", len(name)) + name + struct.pack("!H", len(value)) + value
    return out


def response_payload(status: int, headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    out = struct.pack("!BHH", 1, status, len(headers))
    for name, value in headers:
        out += struct.pack("!H", len(name)) + name + struct.pack("!H", len(value)) + value
    return out


def raw_headers(stream_id: int, payload: bytes, *, end_stream: bool = False) -> bytes:
    return encode_frame(FrameType.HEADERS, 1 if end_stream else 0, stream_id, payload)


def raw_data(stream_id: int, data: bytes, *, end_stream: bool = False) -> bytes:
    return encode_frame(FrameType.DATA, 1 if end_stream else 0, stream_id, data)


def raw_reset(stream_id: int, code: int = ErrorCode.CANCEL) -> bytes:
    return encode_frame(FrameType.RESET, 0, stream_id, struct.pack("!H", code))


def raw_window_update(stream_id: int, delta: int) -> bytes:
    return encode_frame(FrameType.WINDOW_UPDATE, 0, stream_id, struct.pack("!I", delta))


def raw_goaway(last_stream_id: int, code: int = ErrorCode.NO_ERROR, reason: bytes = b"") -> bytes:
    return encode_frame(FrameType.GOAWAY, 0, 0, struct.pack("!IH", last_stream_id, code) + reason)


def goodbye(conn: Connection) -> tuple[FrameType, int]:
    """The (type, error code) of the GOAWAY or REJECT that ``conn`` queued last."""
    frames = frames_of(conn.data_to_send())
    assert frames, "no frame queued"
    last = frames[-1]
    if last.type == FrameType.GOAWAY:
        _, code = struct.unpack_from("!IH", last.payload)
    elif last.type == FrameType.REJECT:
        (code,) = struct.unpack_from("!H", last.payload)
    else:
        raise AssertionError(f"last queued frame is {FrameType(last.type).name}, not GOAWAY/REJECT")
    return FrameType(last.type), code


def assert_remote_error(
    conn: Connection, data: bytes, code: ErrorCode, *, goodbye_type: FrameType | None = FrameType.GOAWAY
) -> RemoteProtocolError:
    """Feeding ``data`` raises RemoteProtocolError(code); ``conn`` is then closed and said why.

    ``goodbye_type`` is the frame expected to carry the code (GOAWAY, or REJECT from a hub
    in the handshake), or None when nothing may be sent.
    """
    conn.data_to_send()
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(data)
    assert info.value.error_code == code, str(info.value)
    assert conn.state is ConnState.CLOSED
    assert conn.open_streams == ()
    if goodbye_type is None:
        # a connector before WELCOME has no frame to say why (protocol.md 14.1)
        assert conn.data_to_send() == b""
    else:
        assert goodbye(conn) == (goodbye_type, code)
    # once closed, whatever else arrives is discarded rather than raising again
    assert conn.receive_data(data) == []
    return info.value


def open_stream(pair: ConnectionPair, *, end_stream: bool = False, path: str = "/x") -> int:
    """The connector opens a stream and the hub has seen its request."""
    sid = pair.connector.send_request("POST", path, end_stream=end_stream)
    pair.deliver(pair.connector)
    return sid
