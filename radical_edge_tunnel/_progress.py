"""How many bytes a TCP peer has taken: the progress of a write that waits on a slow peer.

A write that waits long on its peer is either stuck (the peer stopped
reading: its receive window is closed) or slow (a thin link drains a large
write slowly).  The two look the same from above the socket; the kernel
tells them apart: its count of the bytes the peer has acknowledged grows
only while the peer takes data (Linux ``TCP_INFO``, ``tcpi_bytes_acked``,
which starts at 1 for the SYN).  Only the rare slow path asks (a write that
waited half its timeout), so a healthy write costs nothing.
"""

from __future__ import annotations

import socket
import struct

#: the offset of ``tcpi_bytes_acked`` (a little-endian u64) in Linux's ``struct tcp_info`` (since Linux 4.1)
_BYTES_ACKED = 120
_TCP_INFO = getattr(socket, "TCP_INFO", None)


def bytes_acknowledged(sock: socket.socket | None) -> int | None:
    """The bytes the peer of TCP socket ``sock`` has acknowledged so far (a count that only grows), or None
    where this cannot be known (no socket, not TCP, not Linux, or a kernel without the field)."""
    if sock is None or _TCP_INFO is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
    except (OSError, AttributeError):
        return None
    if len(raw) < _BYTES_ACKED + 8:
        return None
    value: int = struct.unpack_from("<Q", raw, _BYTES_ACKED)[0]
    return value
