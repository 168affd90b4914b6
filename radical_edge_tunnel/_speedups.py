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
from collections.abc import Callable

import wsproto.frame_protocol as _frame_protocol

#: environment variable that turns every accelerator off
PURE_PYTHON_ENV = "RADICAL_EDGE_PURE_PYTHON"

_ApplyMask = Callable[[bytes | bytearray | memoryview, bytes], bytes]


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


def masking() -> str:
    """Which WebSocket masking routine this process uses: ``"C (websockets.speedups)"`` or ``"pure Python"``."""
    return (
        "C (websockets.speedups)" if getattr(_frame_protocol.XorMaskerSimple, "accelerated", False) else "pure Python"
    )


def enable_speedups() -> str:
    """Install the accelerators that are available and allowed; idempotent. Returns :func:`masking`.

    Called when a WebSocket carrier is made, so every bridge, edge and SDK
    process uses them without a setting.
    """
    if getattr(_frame_protocol.XorMaskerSimple, "accelerated", False):
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
