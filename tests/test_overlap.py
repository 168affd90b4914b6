"""ReadAhead and WriteBehind: blocking reads and writes in a worker thread, overlapped with the caller.

What a transfer relies on: the next read (or the last write) runs while the caller works on the
network; order is kept; at most one call is in flight; what a call raised comes out as it is (no
ExceptionGroup); a write handed over is finished even when the caller fails or is cancelled.
Each overlap is shown without timing: the blocking call waits for something only the overlapped
caller can do, so without the overlap it would time out.
"""

from __future__ import annotations

import threading

import anyio
import pytest

from radical_edge_tunnel import ReadAhead, WriteBehind

pytestmark = pytest.mark.anyio

#: how long a blocking call waits for the caller before the test counts it as not overlapped
WAIT = 10.0


async def wait_for(event: threading.Event) -> None:
    with anyio.fail_after(WAIT):
        while not event.is_set():
            await anyio.sleep(0.005)


# ---------------------------------------------------------------- WriteBehind


async def test_put_returns_while_the_write_runs_and_writes_stay_in_order() -> None:
    released = threading.Event()
    started = threading.Event()
    written: list[int] = []
    in_flight = 0
    most = 0
    lock = threading.Lock()

    def write(item: int) -> None:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        started.set()
        if item == 0 and not released.wait(WAIT):  # only the caller, going on, can release it
            raise TimeoutError("the caller waited for the write")
        written.append(item)
        with lock:
            in_flight -= 1

    async with WriteBehind(write) as writer:
        await writer.put(0)
        await wait_for(started)
        assert written == []  # put returned while the first write is blocked
        released.set()
        for i in range(1, 20):
            await writer.put(i)
    assert written == list(range(20))  # leaving waited for the last one
    assert most == 1


async def test_a_write_error_comes_out_of_the_next_put_unwrapped_and_stops_the_writes() -> None:
    written: list[int] = []

    def write(item: int) -> None:
        if item == 2:
            raise OSError(28, "No space left on device")
        written.append(item)

    async def run() -> None:
        async with WriteBehind(write) as writer:
            for i in range(10):
                await writer.put(i)
            pytest.fail("every put succeeded")

    with pytest.raises(OSError, match="No space left") as info:
        await run()
    assert type(info.value) is OSError
    assert written == [0, 1]


async def test_a_failed_last_write_is_raised_on_leaving() -> None:
    def write(item: int) -> None:
        raise PermissionError("read-only file system")

    with pytest.raises(PermissionError) as info:
        async with WriteBehind(write) as writer:
            await writer.put(1)  # handed over: it fails behind the caller
    assert type(info.value) is PermissionError


async def test_failed_tells_the_caller_the_writes_stopped() -> None:
    def write(item: int) -> None:
        raise PermissionError("read-only file system")

    async def run() -> None:
        async with WriteBehind(write) as writer:
            await writer.put(1)
            with anyio.fail_after(WAIT):
                while not writer.failed:
                    await anyio.sleep(0.005)
            await writer.put(2)
            pytest.fail("a put after a failed write succeeded")

    with pytest.raises(PermissionError):
        await run()


class HeldWrite:
    """A blocking write that lasts until :meth:`release_soon` lets it finish."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.written: list[str] = []

    def __call__(self, item: str) -> None:
        self.started.set()
        self.release.wait(WAIT)
        self.written.append(item)

    def release_soon(self) -> None:
        threading.Timer(0.05, self.release.set).start()


async def test_the_callers_error_propagates_after_the_write_in_progress_finishes() -> None:
    write = HeldWrite()

    async def run() -> None:
        async with WriteBehind(write) as writer:
            await writer.put("kept")
            await wait_for(write.started)
            write.release_soon()
            raise ValueError("the body failed")

    with pytest.raises(ValueError, match="the body failed") as info:
        await run()
    assert type(info.value) is ValueError
    assert write.written == ["kept"]  # handed over, so written


# ---------------------------------------------------------------- ReadAhead


def reader(items: list[bytes], calls: list[int], fail_at: int | None = None, gate: threading.Event | None = None):
    """A blocking read over ``items``: None at the end; ``gate`` holds the second call until set."""
    position = 0

    def read() -> bytes | None:
        nonlocal position
        calls.append(position)
        if position == 1 and gate is not None and not gate.wait(WAIT):
            raise TimeoutError("the second read waited for the consumer")
        if fail_at is not None and position == fail_at:
            raise OSError(5, "Input/output error")
        if position >= len(items):
            return None
        position += 1
        return items[position - 1]

    return read


async def test_the_next_read_runs_while_the_consumer_holds_an_item() -> None:
    calls: list[int] = []
    items = [bytes([i]) * 10 for i in range(5)]
    got: list[bytes] = []
    async with ReadAhead(reader(items, calls)) as chunks:
        async for chunk in chunks:
            if not got:
                # the consumer has not asked for the second item, and it is being read already
                with anyio.fail_after(WAIT):
                    while len(calls) < 2:
                        await anyio.sleep(0.005)
            got.append(chunk)
    assert got == items
    assert calls == [0, 1, 2, 3, 4, 5]  # each read once, then the end


async def test_a_read_error_comes_after_the_items_read_before_it_unwrapped() -> None:
    calls: list[int] = []
    got: list[bytes] = []

    async def run() -> None:
        async with ReadAhead(reader([b"a", b"b", b"c"], calls, fail_at=2)) as chunks:
            async for chunk in chunks:
                got.append(chunk)

    with pytest.raises(OSError, match="Input/output error") as info:
        await run()
    assert type(info.value) is OSError
    assert got == [b"a", b"b"]


async def test_leaving_early_stops_the_reads() -> None:
    calls: list[int] = []
    gate = threading.Event()
    async with ReadAhead(reader([b"a"] * 100, calls, gate=gate)) as chunks:
        async for _chunk in chunks:
            with anyio.fail_after(WAIT):
                while len(calls) < 2:  # the second read is in progress (held by the gate)
                    await anyio.sleep(0.005)
            threading.Timer(0.05, gate.set).start()  # it finishes only after we leave
            break
    assert len(calls) == 2  # the one handed over and the one in progress: no more
    assert gate.is_set()  # leaving waited for the read in progress


async def test_the_consumers_error_propagates_unwrapped() -> None:
    calls: list[int] = []

    async def run() -> None:
        async with ReadAhead(reader([b"a", b"b"], calls)) as chunks:
            async for _chunk in chunks:
                raise KeyError("consumer")

    with pytest.raises(KeyError):
        await run()


async def test_a_read_that_blocks_for_good_is_left_behind_when_asked() -> None:
    """A pipe whose writer hung: with abandon_on_cancel the caller's cancel ends at once."""
    stuck = threading.Event()
    calls: list[int] = []

    def read() -> bytes | None:
        calls.append(1)
        if len(calls) == 2:
            stuck.wait(WAIT)  # blocks far longer than the caller waits
        return b"x"

    try:
        with anyio.fail_after(WAIT / 2):  # fails the test only if the cancel below waited for the read
            with anyio.move_on_after(0.2) as scope:
                async with ReadAhead(read, abandon_on_cancel=True) as chunks:
                    async for _chunk in chunks:
                        pass
            assert scope.cancelled_caught
    finally:
        stuck.set()


async def test_reads_cancelled_before_the_end_are_not_taken_for_the_end() -> None:
    """If the reads stop early while the consumer goes on (shielded), the iteration says so."""
    got: list[bytes] = []

    async def consume(chunks: ReadAhead[bytes], outer: anyio.CancelScope) -> None:
        with anyio.CancelScope(shield=True):
            async for chunk in chunks:
                got.append(chunk)
                outer.cancel()  # the reader (in the outer scope) is cancelled; this loop is not

    with anyio.CancelScope() as outer:
        async with ReadAhead(lambda: b"more") as chunks:
            with pytest.raises(anyio.BrokenResourceError, match="cancelled before the end"):
                await consume(chunks, outer)
    assert got  # it had items, then no silent end


class Stop(BaseException):
    """Not an Exception, not a cancellation (SystemExit-like)."""


async def test_a_base_exception_from_the_worker_comes_out_unwrapped() -> None:
    def read() -> bytes | None:
        raise Stop

    async def read_all() -> None:
        async with ReadAhead(read) as chunks:
            async for _chunk in chunks:
                pass

    with pytest.raises(Stop):
        await read_all()

    def write(item: int) -> None:
        raise Stop

    async def write_one() -> None:
        async with WriteBehind(write) as writer:
            await writer.put(1)

    with pytest.raises(Stop):
        await write_one()


async def test_a_cancelled_caller_finishes_the_write_in_progress_and_can_still_hand_over() -> None:
    """The staging upload's pattern: cut off, it keeps what arrived for a resume."""
    write = HeldWrite()
    with anyio.CancelScope() as scope:
        async with WriteBehind(write) as writer:
            await writer.put("first")
            await wait_for(write.started)
            scope.cancel()
            try:
                await anyio.sleep(WAIT)
            finally:
                write.release_soon()
                with anyio.CancelScope(shield=True):
                    await writer.put("kept on the way out")
    assert scope.cancelled_caught
    assert write.written == ["first", "kept on the way out"]
