"""stdin and stdout for ``put -`` and ``get -``, read and written by a daemon thread.

A pipe can block for good: the command feeding ``put -`` hangs, or the one
reading ``get -`` stops reading.  The SDK reads and writes blocking file
objects in anyio's worker threads, and Python waits for those at exit, so an
interrupted command would print that it was interrupted and then hang until
the pipe moved.  Here the blocking calls run one at a time in a daemon thread
of their own, on the file descriptors, and the SDK gets an object with
``async read`` / ``async write``: a cancelled call is left to that thread, and
the process exits at once.
"""

from __future__ import annotations

import os
import queue
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel


@dataclass
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    done: anyio.Event
    token: anyio.lowlevel.EventLoopToken
    result: Any = None
    error: BaseException | None = None


class DaemonCalls:
    """Blocking calls, one at a time and in order, in a daemon thread (started by the first call)."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._started = False

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the thread; cancelling the wait leaves the call to finish there, its result dropped."""
        if not self._started:
            self._started = True
            self._thread.start()
        call = _Call(fn, args, anyio.Event(), anyio.lowlevel.current_token())
        self._calls.put(call)
        await call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    def _serve(self) -> None:
        while True:
            call = self._calls.get()
            try:
                call.result = call.fn(*call.args)
            except BaseException as exc:  # handed to the caller
                call.error = exc
            try:
                anyio.from_thread.run_sync(call.done.set, token=call.token)
            except Exception:
                return


class DaemonReader:
    """``async read(n)`` of a file descriptor (stdin's: a pipe, a terminal, a socket), by a daemon thread.

    It reads the descriptor itself (``os.read``), not ``sys.stdin.buffer``: a
    daemon thread still blocked in the buffered reader at exit holds its lock,
    and Python aborts ("could not acquire lock ... at interpreter shutdown").
    A read waits for the first bytes, then takes what else is ready, up to
    ``n``: a slow producer's bytes go out as they come (the client's silence
    timeout sees them), a fast one's in large pieces.  The end of the input is
    remembered (a terminal's Ctrl-D is needed once).  A descriptor some other
    program left in non-blocking mode is waited on with ``select``.  A read
    that was cancelled keeps what it gets: do not read again after one.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._ended = False
        self._calls = DaemonCalls("stdin reader")

    async def read(self, n: int = 1 << 20, /) -> bytes:
        """The next bytes, 1 to ``n`` of them; b"" at the end of the input."""
        if self._ended:
            return b""
        data: bytes
        data, self._ended = await self._calls.call(_read_ready, self._fd, n)
        return data


def _read_ready(fd: int, n: int) -> tuple[bytes, bool]:
    """At least one byte (waiting for it) and whatever else is ready, up to ``n``; and whether the input
    ended (a terminal's end of input is read once: it is not seen again)."""
    parts: list[bytes] = []
    left = n
    while left > 0:
        if parts and not select.select([fd], [], [], 0)[0]:
            break  # nothing more ready now: hand over what there is
        try:
            part = os.read(fd, left)
        except BlockingIOError:  # non-blocking mode (shared with another program): wait for data
            select.select([fd], [], [])
            continue
        if not part:
            return b"".join(parts), True
        parts.append(part)
        left -= len(part)
    return b"".join(parts), False


class DaemonWriter:
    """``async write(data)`` to a file descriptor (stdout's), by a daemon thread (``os.write``, whole; a
    descriptor in non-blocking mode is waited on with ``select``)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._calls = DaemonCalls("stdout writer")

    async def write(self, data: bytes, /) -> int:
        await self._calls.call(_write_all, self._fd, data)
        return len(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:  # non-blocking mode: wait until it takes more
            select.select([], [fd], [])
