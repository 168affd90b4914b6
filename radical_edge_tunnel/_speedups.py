"""Optional accelerators (the ``speedups`` extra), in place of pure-Python hot loops.

WebSocket clients must mask every frame they send (RFC 6455 §5.3) and servers
unmask what they receive: a byte-wise XOR over every tunnel byte, which
wsproto does in pure Python at about 1 GiB/s. With the ``speedups`` extra
installed, the C routine of the ``websockets`` package does it instead
(tens of GiB/s). Nothing else changes: wsproto still parses and builds the
frames, and the bytes on the wire are the same.

``RADICAL_EDGE_PURE_PYTHON=1`` in the environment keeps the pure-Python path
even when the extra is installed (the test suite runs that way; the benchmark
measures both).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import wsproto.frame_protocol as _frame_protocol

#: environment variable that turns every accelerator off
PURE_PYTHON_ENV = "RADICAL_EDGE_PURE_PYTHON"

_ApplyMask = Callable[[bytes | bytearray | memoryview, bytes], bytes]


def _accelerated() -> bool:
    """Whether wsproto makes its maskers with the C routine now (:func:`enable_speedups` installed it)."""
    return bool(getattr(_frame_protocol.XorMaskerSimple, "accelerated", False))


def _load_apply_mask() -> _ApplyMask | None:
    try:
        from websockets.speedups import apply_mask  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415
    except ImportError:
        return None
    return apply_mask  # type: ignore[no-any-return, unused-ignore]


class _CMasker:
    """wsproto's masker interface (``process``, the key rotating across calls), with a C XOR."""

    __slots__ = ("_apply", "_key")

    def __init__(self, masking_key: bytes | bytearray, apply: _ApplyMask) -> None:
        self._key = bytes(masking_key)
        self._apply = apply

    def process(self, data: bytes | bytearray) -> bytes:
        if not data:
            return b""
        out = self._apply(data, self._key)
        turn = len(data) % 4
        if turn:
            self._key = self._key[turn:] + self._key[:turn]
        return out


def data_frame_builder(*, client: bool) -> Callable[[bytes | bytearray | memoryview], bytes] | None:
    """With the accelerators on: a function that makes one final binary frame of a payload (RFC 6455
    §5.2), masked with a fresh random key for a ``client``, unmasked for a server; ``None`` without them.

    The frame is exactly what wsproto's ``send`` makes for ``Message(data)`` on a connection without
    extensions (ours never offer one), in fewer copies: a client's in two (the C mask, one join), a
    server's in one (the join), where wsproto copies the payload four more times (a server frame of
    256 KiB, measured with the tuned allocator: 29 µs in wsproto, 7 µs here).
    """
    if not _accelerated():
        return None
    pack_short, pack_long = struct.Struct("!BBH").pack, struct.Struct("!BBQ").pack
    mask_bit = 0x80 if client else 0

    def header(size: int) -> bytes:
        if size < 126:
            return bytes((0x82, mask_bit | size))
        if size < 1 << 16:
            return pack_short(0x82, mask_bit | 126, size)
        return pack_long(0x82, mask_bit | 127, size)

    if not client:

        def server_frame(payload: bytes | bytearray | memoryview) -> bytes:
            return b"".join((header(len(payload)), payload))

        return server_frame
    apply = _load_apply_mask()
    if apply is None:  # pragma: no cover - accelerated implies it loaded
        return None
    mask: _ApplyMask = apply
    urandom = os.urandom

    def client_frame(payload: bytes | bytearray | memoryview) -> bytes:
        key = urandom(4)
        return b"".join((header(len(payload)), key, mask(payload, key)))

    return client_frame


def masking() -> str:
    """Which WebSocket masking routine this process uses: ``"C (websockets.speedups)"`` or ``"pure Python"``."""
    return "C (websockets.speedups)" if _accelerated() else "pure Python"


def enable_speedups() -> str:
    """Install the accelerators that are available and allowed; idempotent. Returns :func:`masking`.

    Called when a WebSocket carrier is made, so every bridge, edge and SDK
    process uses them without a setting.
    """
    if _accelerated():
        return masking()
    if os.environ.get(PURE_PYTHON_ENV, "").strip() not in ("", "0"):
        return masking()
    found = _load_apply_mask()
    if found is None:
        return masking()
    apply: _ApplyMask = found

    class AcceleratedMasker(_CMasker):
        accelerated = True

        def __init__(self, masking_key: bytes | bytearray) -> None:
            super().__init__(masking_key, apply)

    # wsproto looks the class up by name each time it makes a masker: the frames it builds are unchanged
    _frame_protocol.XorMaskerSimple = AcceleratedMasker  # type: ignore[misc, assignment]
    return masking()
