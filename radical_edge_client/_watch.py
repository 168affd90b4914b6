"""Following one psij job: :class:`JobUpdate` and the watcher behind :meth:`AsyncPSIJClient.watch`.

The psij plugin pushes ``job_status`` (``{job_id, state, exit_code, ...}``, once
per transition) and ``job_output`` (``{job_id, stream, offset, data}``, while
the job runs; ``offset`` is the byte offset of ``data`` in that stream's
output).  Its ``status`` route answers the state and the output from given
byte offsets.  The watcher subscribes first, then reads the status from offset
0, so nothing the job did before the subscription is missed; after that the
events drive it, and the offsets it keeps per stream drop what it already
has and fetch what an event skipped.  A poll every ``poll_interval`` seconds
(and one after an :class:`~radical_edge_client.EventGap`) covers events that
never come.  When the job reaches a final state, one last status read from the
offsets picks up the tail of the output; the final status is the last update.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from ._errors import BridgeProtocolError
from ._events import EventGap

#: the job states of radical-edge (``plugins/scheduler/states.py``, spelled the same everywhere)
JOB_STATES = ("PENDING", "RUNNING", "DONE", "FAILED", "CANCELLED", "HELD", "UNKNOWN")
#: the states a job never leaves
FINAL_STATES = frozenset({"DONE", "FAILED", "CANCELLED"})
#: the output streams of a job
STREAMS = ("stdout", "stderr")
#: how far along a state is: a job never goes back to a lower rank than it reached, so an event older than a
#: status read is ignored (UNKNOWN, the scheduler saying something unknown, may come and go at any rank)
_RANK = {"PENDING": 0, "HELD": 0, "RUNNING": 1, "DONE": 2, "FAILED": 2, "CANCELLED": 2}

#: events waiting for the watcher before it stops queueing them and re-reads the status instead
_BUFFER = 1024
#: the most ``status`` reads for the tail of a finished job's output (each is bounded by the plugin)
_MAX_TAIL_READS = 1000


@dataclass(frozen=True)
class JobUpdate:
    """One step of a watched job: its state changed (``kind == "status"``) or it wrote output (``"output"``).

    ``state`` is the job's state as of this update (``PENDING``, ``RUNNING``,
    ``DONE``, ``FAILED``, ``CANCELLED``, ``HELD``, ``UNKNOWN``); ``exit_code``
    is set once the job has one.  An output update has ``stream``
    (``"stdout"`` or ``"stderr"``) and the new text in ``data``.  ``info`` is
    what the plugin said with a status update (its whole event or status answer).
    """

    job_id: str
    kind: Literal["status", "output"]
    state: str
    exit_code: int | None = None
    stream: Literal["stdout", "stderr"] | None = None
    data: str = ""
    info: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def final(self) -> bool:
        """Whether this is the job's final state (the last update of a watch)."""
        return self.kind == "status" and self.state in FINAL_STATES


StatusReader = Callable[[str, int, int], Awaitable[dict[str, Any]]]
Subscribe = Callable[[Callable[..., Awaitable[None]], Callable[[EventGap], Awaitable[None]]], Awaitable[None]]
Unsubscribe = Callable[[Callable[..., Awaitable[None]]], Awaitable[None]]


class JobWatcher:
    """The state of one watch: the offsets read so far per stream and the last state reported."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.offsets = dict.fromkeys(STREAMS, 0)
        self.state: str | None = None
        self.exit_code: int | None = None
        self.rank = -1

    def from_status(self, answer: dict[str, Any]) -> list[JobUpdate]:
        """The output updates in a ``status`` answer read from :attr:`offsets` (which it advances)."""
        updates = []
        state = answer.get("state")
        for stream in STREAMS:
            text = _encodable(answer.get(stream))
            new_offset = answer.get(f"{stream}_offset")
            if isinstance(text, str) and text:
                updates.append(self._output(stream, text, state if isinstance(state, str) else None))
            if isinstance(new_offset, int) and not isinstance(new_offset, bool):
                self.offsets[stream] = max(self.offsets[stream], new_offset)
            elif isinstance(text, str):  # no new offset given: count what came
                self.offsets[stream] += len(text.encode())
        return updates

    def from_output(self, event: dict[str, Any]) -> JobUpdate | Literal[False] | None:
        """The new part of a ``job_output`` event; ``None`` if it holds nothing new, ``False`` if it skips
        output this watcher has not read (the caller reads the status from the offsets instead)."""
        stream, data, offset = event.get("stream"), _encodable(event.get("data")), event.get("offset")
        if stream not in STREAMS or not isinstance(data, str):
            return None
        if not isinstance(offset, int) or isinstance(offset, bool):
            return False
        raw = data.encode()  # the plugin's text is one character per byte it read where bytes were not UTF-8
        have = self.offsets[stream]
        if offset > have:
            return False
        if offset + len(raw) <= have:
            return None
        self.offsets[stream] = offset + len(raw)
        return self._output(stream, raw[have - offset :].decode("utf-8", "replace"))

    def read_nothing(self, answer: dict[str, Any]) -> bool:
        """Whether a ``status`` answer brought no output (the plugin bounds what one answer carries)."""
        return not any(isinstance(answer.get(s), str) and answer.get(s) for s in STREAMS)

    def status(self, state: str, exit_code: Any, info: dict[str, Any]) -> JobUpdate | None:
        """A status update if ``state`` is new (or brings the exit code), else ``None``."""
        code = exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else None
        if state in _RANK and _RANK[state] < self.rank:
            return None  # an event from before the status read that already showed a later state
        if state == self.state and (code is None or code == self.exit_code):
            return None
        self.state = state
        self.rank = max(self.rank, _RANK.get(state, -1))
        if code is not None:
            self.exit_code = code
        return JobUpdate(self.job_id, "status", state, self.exit_code, info=info)

    def _output(self, stream: str, text: str, state: str | None = None) -> JobUpdate:
        kind: Literal["stdout", "stderr"] = "stdout" if stream == "stdout" else "stderr"
        return JobUpdate(self.job_id, "output", state or self.state or "UNKNOWN", self.exit_code, kind, text)


#: lone surrogates: JSON can carry them ("\\udcff"), no stream can encode them
_SURROGATE = re.compile("[\ud800-\udfff]")


def _encodable(value: Any) -> Any:
    """Output text as UTF-8 can encode it (a hostile plugin's lone surrogates as U+FFFD); other values as given."""
    return _SURROGATE.sub("\ufffd", value) if isinstance(value, str) else value


def _state_of(answer: dict[str, Any], where: str) -> str:
    state = answer.get("state")
    if not isinstance(state, str):
        raise BridgeProtocolError(f"{where}: no 'state' in the answer")
    return state


async def watch_job(
    job_id: str,
    read_status: StatusReader,
    subscribe: Subscribe,
    unsubscribe: Unsubscribe,
    *,
    poll_interval: float,
) -> AsyncGenerator[JobUpdate, None]:
    """The updates of ``job_id`` (see the module docstring); ends after the final state."""
    send, receive = anyio.create_memory_object_stream[tuple[str, dict[str, Any]] | None](_BUFFER)
    watcher = JobWatcher(job_id)
    resync = False

    async def on_event(edge: str, plugin: str, topic: str, data: Any) -> None:
        nonlocal resync
        if topic not in ("job_status", "job_output") or not isinstance(data, dict):
            return
        if str(data.get("job_id")) != job_id:
            return
        try:
            send.send_nowait((topic, data))
        except anyio.WouldBlock:  # the reader is far behind: it re-reads the status instead
            resync = True
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):  # the watch has ended
            pass

    async def on_gap(gap: EventGap) -> None:
        nonlocal resync
        resync = True
        with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            send.send_nowait(None)  # wake the reader

    async def poll() -> tuple[list[JobUpdate], str, dict[str, Any]]:
        answer = await read_status(job_id, watcher.offsets["stdout"], watcher.offsets["stderr"])
        return watcher.from_status(answer), _state_of(answer, f"psij status of {job_id}"), answer

    try:
        await subscribe(on_event, on_gap)  # first: what happens from now on is queued for us
    except BaseException:  # cancelled or failed before it was on: only the queue to close
        send.close()
        receive.close()
        raise
    try:
        outputs, state, answer = await poll()  # then: everything before, from offset 0
        for update in outputs:
            yield update
        final: tuple[str, Any, dict[str, Any]] | None = None
        if state in FINAL_STATES:
            final = (state, answer.get("exit_code"), answer)
        elif (first := watcher.status(state, answer.get("exit_code"), answer)) is not None:
            yield first
        wait = poll_interval if math.isfinite(poll_interval) and poll_interval > 0 else math.inf
        while final is None:
            item: tuple[str, dict[str, Any]] | None = None
            with anyio.move_on_after(wait):  # never held across a yield (the blocking iterator steps one by one)
                item = await receive.receive()
            if item is None or resync:
                resync = False
                outputs, state, answer = await poll()
                for update in outputs:
                    yield update
                if state in FINAL_STATES:
                    final = (state, answer.get("exit_code"), answer)
                elif (changed := watcher.status(state, answer.get("exit_code"), answer)) is not None:
                    yield changed
                continue
            topic, data = item
            if topic == "job_output":
                chunk = watcher.from_output(data)
                if chunk is False:  # it skipped output we have not read: read it from the offsets
                    outputs, _, _ = await poll()
                    for update in outputs:
                        yield update
                elif chunk is not None:
                    yield chunk
                continue
            event_state = data.get("state")
            if not isinstance(event_state, str):
                continue
            if event_state in FINAL_STATES:
                final = (event_state, data.get("exit_code"), data)
            elif (changed := watcher.status(event_state, data.get("exit_code"), data)) is not None:
                yield changed
        # the tail of the output (written before the end, perhaps announced after it; read until
        # an answer brings nothing, as one answer carries a bounded amount), then the end
        state, exit_code, info = final
        for _ in range(_MAX_TAIL_READS):
            before = dict(watcher.offsets)
            tail = await read_status(job_id, watcher.offsets["stdout"], watcher.offsets["stderr"])
            for update in watcher.from_status(tail):
                yield update
            if watcher.read_nothing(tail) or watcher.offsets == before:
                break
        if tail.get("state") in FINAL_STATES:  # the plugin's word now wins over an event's
            state, info = str(tail["state"]), tail
            if tail.get("exit_code") is not None:
                exit_code = tail["exit_code"]
        watcher.state, watcher.rank = None, -1  # the final update is always given, even if seen before
        last = watcher.status(state, exit_code, info)
        assert last is not None
        yield last
    finally:
        with anyio.CancelScope(shield=True):
            await unsubscribe(on_event)
        send.close()
        receive.close()


__all__ = ["FINAL_STATES", "JOB_STATES", "JobUpdate", "JobWatcher", "watch_job"]
