"""Sockets read in large pieces: fewer trips through TLS, WebSocket, the tunnel protocol and HTTP.

Each piece a socket read returns travels alone through the layers above it,
and their Python work is per piece, not per byte.  Two things bound a piece:

* asyncio reads a socket at most 256 KiB at a time: its socket transports
  ``recv()`` that much (``max_size`` of its selector transport), and so does
  its own TLS (``SSLProtocol``, which uvicorn and the benchmark's relay use).
  :func:`tune_socket_reads` raises both to :data:`LARGE_READ` in a server
  process (the bridge's and the edge's command lines, the demo and the
  benchmark's servers call it through :func:`radical_edge_tunnel.tune_process`).
  A read only takes what the socket holds, so a small message costs what it
  did; only a bulk transfer, whose socket is full when it is read, comes in
  fewer pieces.  Measured on 512 MiB uploads through the bridge, three
  alternating pairs: 247-283 MiB/s with 256 KiB reads, 299-313 with 512 KiB
  (the bridge's CPU from 3.5-4.0 to 3.2-3.3 s per GiB, the edge's from
  2.3-2.6 to 2.0-2.1).  1 MiB gained no more: the copies between the layers
  then no longer stay in the CPU's cache.
* anyio's ``TLSStream`` reads its transport with ``receive()`` and no size,
  which an anyio socket stream answers with at most 64 KiB.  A
  :class:`LargeReads` under the TLS layer asks for :data:`LARGE_READ`
  (first measured with 256 KiB, on a 512 MiB upload through the bridge: its
  CPU per GiB from 5.1 to 3.7 s, the edge's from 3.4 to 2.1 s, and 197 to
  268 MiB/s).  The SDK's connections use it too; only the asyncio settings
  above are left alone in a process that is not one of ours.

A ``LargeReads`` can also hand out bytes already received from the socket
first (the bridge peeks at the first bytes before it starts a TLS
handshake).
"""

from __future__ import annotations

import asyncio.selector_events
import asyncio.sslproto
import socket
from collections.abc import Callable, Mapping
from typing import Any

import anyio.abc

from ._progress import bytes_acknowledged, watched_send

#: the most one socket read takes (a tuned process's transports; what a LargeReads asks for)
LARGE_READ = 512 * 1024


def tune_socket_reads(size: int = LARGE_READ) -> bool:
    """Let this process's asyncio socket transports and asyncio's TLS read up to ``size`` bytes at once
    (never fewer than they did); whether both settings exist in this Python.  They have for as long as
    asyncio has had them, but they are not public: a missing one leaves those reads as they were."""
    tuned = 0
    for owner in (
        getattr(asyncio.selector_events, "_SelectorSocketTransport", None),
        getattr(asyncio.sslproto, "SSLProtocol", None),
    ):
        current = getattr(owner, "max_size", None)
        if owner is not None and isinstance(current, int):
            owner.max_size = max(current, size)
            tuned += 1
    return tuned == 2


class LargeReads(anyio.abc.ByteStream):
    """``stream`` (a socket stream, under a TLS layer), whose ``receive()`` asks for :data:`LARGE_READ` bytes
    unless told otherwise; ``first``: bytes already received from it, handed out before what follows.

    Its writes can be watched (:meth:`watch_writes`, by a tunnel that runs on it): a slow peer is then told
    from one that takes nothing (:func:`~radical_edge_tunnel._progress.watched_send`)."""

    def __init__(self, stream: anyio.abc.ByteStream, first: bytes = b"") -> None:
        self._stream = stream
        self._first = first
        self._sock: socket.socket | None = None  # set while writes are watched
        self._write_timeout = 0.0

    def watch_writes(self, timeout: float) -> bool:
        """Give a write up once the peer takes none of it for ``timeout / 2``, after it has waited ``timeout / 2``;
        False (nothing changes) where the kernel cannot tell how much the peer took."""
        sock = self._stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        if bytes_acknowledged(sock) is None:
            return False
        self._sock, self._write_timeout = sock, timeout
        return True

    async def receive(self, max_bytes: int = LARGE_READ) -> bytes:
        if self._first:
            data, self._first = self._first[:max_bytes], self._first[max_bytes:]
            return data
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        if self._sock is None:
            await self._stream.send(item)
        else:
            await watched_send(self._stream, self._sock, item, self._write_timeout)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._stream.extra_attributes
