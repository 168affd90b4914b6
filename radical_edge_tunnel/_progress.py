"""Writes that wait on a slow peer: told from writes to a peer that takes nothing.

A write that waits long on its peer is either stuck (the peer stopped
reading: its receive window is closed) or slow (a thin link drains a large
write slowly).  The two look the same from above the socket; the kernel
tells them apart: its count of the bytes the peer has acknowledged grows
only while the peer takes data (Linux ``TCP_INFO``, ``tcpi_bytes_acked``,
which starts at 1 for the SYN).

:func:`watched_send` runs just above the socket, below TLS: a write that has
waited half of its timeout is then watched, and given up (the socket shut
down, so that the connection's reader ends it) only once the peer takes none
of it for another half.  It must sit below TLS because a TLS layer cannot lose
a write half-way (anyio's ``TLSStream`` takes any exception out of a send,
cancellation included, as a broken stream): here a wait cancelled by the
watch is a wait for bytes already handed to the socket's transport, and
nothing is lost.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import sys

import anyio
import anyio.abc

log = logging.getLogger("radical_edge.tunnel")

#: the offset of ``tcpi_bytes_acked`` (a little-endian u64) in Linux's ``struct tcp_info`` (since Linux 4.1)
_BYTES_ACKED = 120
#: Linux's only: the BSDs have a ``TCP_INFO`` too, with another layout (other counters at that offset)
_TCP_INFO = getattr(socket, "TCP_INFO", None) if sys.platform.startswith("linux") else None


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


async def watched_send(stream: anyio.abc.ByteSendStream, sock: socket.socket, item: bytes, timeout: float) -> None:
    """``stream.send(item)`` (an anyio socket stream, whose ``sock`` the kernel counts for), given up once the peer
    takes none of it for ``timeout / 2`` after it has waited ``timeout / 2``: then the socket is shut down and
    :class:`anyio.BrokenResourceError` raised.

    An anyio socket stream hands ``item`` to its transport at once when the transport is not full, then waits for
    it to drain; if it is full, it waits *before* handing ``item`` over, and a cancel there would lose it.  So the
    precondition: every send on ``stream`` goes through here, or returns only once drained (or ends the
    connection when it does not).  Each send made here returns only once drained or raises, so the next one never
    waits before handing its bytes over, and a cancelled wait loses nothing.  Sending nothing waits for the drain
    alone.
    """
    half = timeout / 2
    with anyio.move_on_after(half) as first:
        await stream.send(item)
    if not first.cancelled_caught:
        return
    waited = half
    while True:
        before = bytes_acknowledged(sock)
        with anyio.move_on_after(half) as scope:
            await stream.send(b"")
        if not scope.cancelled_caught:
            return
        waited += half
        if before is None or bytes_acknowledged(sock) == before:
            break
    log.warning("a write waited %.0f s, the last %g s with the peer taking none of it; closing", waited, half)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # the connection's reader sees the end
    raise anyio.BrokenResourceError(f"the peer took no data for {half:g} s")
