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


def client_frame_builder() -> Callable[[bytes | bytearray | memoryview], bytes] | None:
    """With the accelerators on: a function that makes one masked, final binary frame of a payload
    (RFC 6455 §5.2) in two copies (the C mask, one join), where wsproto's ``send`` makes five (its
    frame builder copies the payload into new buffers four times before and after masking); ``None``
    without them.  For carriers that negotiated no extension (ours never offer one): the frame is
    exactly what wsproto sends for ``Message(data)``, with a fresh random key.
    """
    if not _accelerated():
        return None
    apply = _load_apply_mask()
    if apply is None:  # pragma: no cover - accelerated implies it loaded
        return None
    mask: _ApplyMask = apply
    urandom, pack_short, pack_long = os.urandom, struct.Struct("!BBH").pack, struct.Struct("!BBQ").pack

    def frame(payload: bytes | bytearray | memoryview) -> bytes:
        size = len(payload)
        if size < 126:
            header = bytes((0x82, 0x80 | size))
        elif size < 1 << 16:
            header = pack_short(0x82, 0x80 | 126, size)
        else:
            header = pack_long(0x82, 0x80 | 127, size)
        key = urandom(4)
        return b"".join((header, key, mask(payload, key)))

    return frame


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
