"""Blocking work in a worker thread, overlapped with the event loop's.

A file transfer alternates between blocking calls (reading, writing and
hashing a file: worker threads) and the network (the event loop).  Done one
after the other, each side waits for the other, and neither a core nor the
disk is kept busy.  :class:`ReadAhead` and :class:`WriteBehind` keep one
blocking call in flight while the caller goes on with the network, so the two
overlap; what is held in memory stays at two items (the caller's and the
one in the worker).

Both run their worker in a task group of their own, but never let it wrap an
error: what the blocking call raised comes out unchanged (the caller's
``except OSError`` still works), where the caller asks for the next item or
leaves the ``async with``.  A blocking call in progress is never abandoned:
cancelling the caller waits for it to return (a write is either done or not
started, so what is known to be written is written).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

T = TypeVar("T")


class _Worker:
    """A task group of its own, entered with the caller's ``async with`` and left with it.

    Its task stores what it raises instead of raising it, so leaving never
    wraps an error in an ExceptionGroup.
    """

    def __init__(self) -> None:
        self._tg: anyio.abc.TaskGroup | None = None
        self._failure: BaseException | None = None

    async def _start(self, task: Callable[..., Coroutine[Any, Any, None]], *args: object) -> None:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(task, *args)

    async def _join(self, *, cancel: bool) -> None:
        tg, self._tg = self._tg, None
        if tg is None:
            return
        if cancel:
            tg.cancel_scope.cancel()
        await tg.__aexit__(None, None, None)  # errors were stored, not raised: nothing to wrap


class ReadAhead(_Worker, Generic[T]):
    """``read()`` called in a worker thread, one call ahead of the consumer, until it returns None.

    ``async with ReadAhead(read) as items: async for item in items: ...``:
    while the body handles an item, the next is being read.  An exception from
    ``read`` is raised by the iteration (after the items read before it); if
    the reads stop before ``read`` said the end (they were cancelled while the
    consumer was not), the iteration raises :class:`anyio.BrokenResourceError`
    rather than end as if complete.  Leaving the block early stops the reads.

    The read in progress then finishes before the block is left, unless
    ``abandon_on_cancel``: for a ``read`` that may block for good (a pipe, a
    socket, a caller's iterator), cancelling leaves it to finish on its own and
    its result is dropped.  Only for reads that touch nothing the caller frees
    on leaving (a file descriptor closed there could be reused under the read).
    """

    def __init__(self, read: Callable[[], T | None], *, abandon_on_cancel: bool = False) -> None:
        super().__init__()
        self._read = read
        self._abandon = abandon_on_cancel
        self._ended = False
        self._rx: MemoryObjectReceiveStream[T] | None = None

    async def __aenter__(self) -> ReadAhead[T]:
        tx, self._rx = anyio.create_memory_object_stream[T](0)  # one item with the consumer, the next being read
        await self._start(self._produce, tx)
        return self

    async def _produce(self, tx: MemoryObjectSendStream[T]) -> None:
        async with tx:
            try:
                while (item := await anyio.to_thread.run_sync(self._read, abandon_on_cancel=self._abandon)) is not None:
                    await tx.send(item)
                self._ended = True
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the consumer left
            except anyio.get_cancelled_exc_class():
                raise
            except BaseException as exc:  # raised where the consumer asks for the next item
                self._failure = exc

    async def __aiter__(self) -> AsyncIterator[T]:
        if self._rx is None:
            raise RuntimeError("iterate a ReadAhead inside its async with")
        async for item in self._rx:
            yield item
        if self._failure is not None:
            raise self._failure
        if not self._ended:
            raise anyio.BrokenResourceError("the reads were cancelled before the end")

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._rx is not None:
            self._rx.close()  # the reader stops at its next hand-over
            self._rx = None
        await self._join(cancel=True)  # or at once, if it waits between reads


class WriteBehind(_Worker, Generic[T]):
    """``write(item)`` called in a worker thread while the caller goes on; at most one call in flight.

    ``async with WriteBehind(write) as writer: await writer.put(item)``: ``put``
    waits until the previous write is done, hands the item over and returns
    while it is written.  Leaving the block waits for the last write.  An
    exception from ``write`` stops the writes: the next :meth:`put`, or
    leaving the block, raises it.  Leaving on an exception of the body (a
    cancellation too) still finishes the write in progress, and that exception
    is the one that propagates; a shielded :meth:`put` there still hands an
    item over (to keep what arrived, say).
    """

    def __init__(self, write: Callable[[T], object]) -> None:
        super().__init__()
        self._write = write
        self._tx: MemoryObjectSendStream[T] | None = None

    async def __aenter__(self) -> WriteBehind[T]:
        self._tx, rx = anyio.create_memory_object_stream[T](0)
        await self._start(self._consume, rx)
        return self

    async def _consume(self, rx: MemoryObjectReceiveStream[T]) -> None:
        # shielded whole: a cancelled caller still hands over what it has (a resume keeps it), and leaving
        # the block always closes the stream, which ends this loop
        with anyio.CancelScope(shield=True):
            async with rx:
                async for item in rx:
                    try:
                        await anyio.to_thread.run_sync(self._write, item)
                    except BaseException as exc:  # raised by the next put, or on leaving
                        self._failure = exc
                        return

    @property
    def failed(self) -> bool:
        """Whether a write raised (the writes stopped there)."""
        return self._failure is not None

    async def put(self, item: T) -> None:
        """Hand ``item`` to the writer once the write before it is done (raises what a write raised)."""
        if self._failure is not None:
            raise self._failure
        if self._tx is None:
            raise RuntimeError("put into a WriteBehind inside its async with")
        try:
            await self._tx.send(item)
        except anyio.BrokenResourceError:
            if self._failure is not None:
                raise self._failure from None
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._tx is not None:
            self._tx.close()  # the writer finishes what it was handed and stops
            self._tx = None
        await self._join(cancel=False)
        if exc is None and self._failure is not None:
            raise self._failure
