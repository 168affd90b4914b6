"""Splice an HTTP request into a tunnel stream to an edge, and the response back.

Bodies stream both ways without being held whole: a chunk is read from one
side only after the previous one was written to the other, and tunnel credit
goes back only as chunks are written, so a slow reader slows the sender.

The caller's ``x-radical-*`` headers are dropped: the edge reads the caller's
identity and the bridge path only from the ones the bridge adds.  The answer
timeout counts silence, not the total: while a request body is still moving
into the edge the timer starts over with every chunk, so a long upload is
never cut while it makes progress.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc

from radical_edge_proto import ErrorCode, ResponseReceived, profile
from radical_edge_tunnel import StreamResetError, Tunnel, TunnelClosedError, TunnelStream

from ._exchange import Exchange, RequestHead
from ._http import BadRequest, ClientGone
from ._metrics import Metrics

#: how long a bodiless request waits for the answer's head before it also watches the caller
_QUICK_ANSWER = 0.05


async def forward(
    channel: Exchange,
    request: RequestHead,
    tunnel: Tunnel,
    tunnel_path: str,
    *,
    caller: str,
    root_path: str,
    timeout: float,
    metrics: Metrics,
) -> None:
    """Forward ``request`` (whose body is still unread) to the edge on ``tunnel``, as ``tunnel_path``,
    and write the answer to ``channel``."""
    headers = profile.forwarded_request_headers(request.headers, caller=caller, root_path=root_path)
    has_body = request.has_body
    started = time.perf_counter()
    status = 502
    metrics.in_flight += 1
    try:
        try:
            stream = await tunnel.request(request.method.decode(), tunnel_path, headers, end_stream=not has_body)
        except TunnelClosedError as exc:
            status = 503
            await channel.send_error(503, f"edge not available: {exc}")
            return
        try:
            status = await _relay_answer(channel, stream, has_body, timeout, metrics)
            return
        except ClientGone:
            await stream.reset(ErrorCode.CANCEL)
            status = 499
            raise
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stream.reset(ErrorCode.CANCEL)
            raise
    finally:
        metrics.in_flight -= 1
        metrics.observe(status, time.perf_counter() - started)


async def _relay_answer(
    channel: Exchange, stream: TunnelStream, has_body: bool, timeout: float, metrics: Metrics
) -> int:
    """Upload the request body (if any) and relay the edge's answer to ``channel``; the status sent."""
    if has_body:
        return await _relay_with_upload(channel, stream, timeout, metrics)
    # No body to upload. Most answers come within a millisecond: wait for the head alone first
    # (cancelling a scope costs more than the rest of a small request: anyio formats the task).
    # An answer that takes longer is awaited while this one task watches the caller (the
    # arrival of the head cancels the watch), with no helper task, so a small request costs
    # no task group; a helper watches only while a streamed body is relayed.
    failure: tuple[int, str] | None = None
    deadline = anyio.current_time() + timeout
    with anyio.move_on_after(min(timeout, _QUICK_ANSWER)), contextlib.suppress(StreamResetError):
        await stream.wait_response()
    timed_out = False
    if stream.response is None and not stream.body_complete:  # neither the head nor a reset yet
        with anyio.move_on_at(deadline) as timer:
            with anyio.CancelScope() as answered:
                stream.on_response(answered.cancel)
                await channel.wait_disconnect()
            if not answered.cancel_called:
                raise ClientGone("the caller went away before the answer")
        timed_out = timer.cancelled_caught
    if timed_out:
        await stream.reset(ErrorCode.CANCEL)  # the edge stops the work too
        failure = (504, f"the edge did not answer within {timeout:g} s")
    else:
        try:
            response = await stream.wait_response()  # here already (or the stream was reset)
        except StreamResetError as exc:
            failure = _reset_status(exc)
    if failure is not None:
        await channel.send_error(*failure)
        return failure[0]
    await _start(channel, stream, response)
    if stream.body_complete:
        await _relay_body(channel, stream, metrics)  # all of it is here: nothing to wait for
        return response.status

    async def watch() -> None:
        await channel.wait_disconnect()
        await stream.reset(ErrorCode.CANCEL)  # the relay sees the reset and gives up

    async with _task_group() as tg:
        tg.start_soon(watch)
        await _relay_body(channel, stream, metrics)
        tg.cancel_scope.cancel()
    return response.status


@asynccontextmanager
async def _task_group() -> AsyncIterator[anyio.abc.TaskGroup]:
    """A task group that lets a lone ClientGone or StreamResetError out as itself, not wrapped in
    an exception group, so the caller leaving is told apart from a failure (499, one quiet line)."""
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if leaves and all(isinstance(e, ClientGone | StreamResetError) for e in leaves):
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


#: on every answer forwarded from an edge.  The bridge's origin is the portal's, where the sign-in cookie
#: works: a page an edge serves (a plugin's HTML, a staged file a browser would render), opened there, must
#: not run script with that cookie.  ``sandbox`` gives it a unique origin and no scripts (added to whatever
#: policy the edge sends: a browser enforces every policy it gets), ``nosniff`` stops a browser from reading
#: a body as HTML or script against its declared type.  JSON, downloads and fetch() callers are unaffected.
ISOLATION_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", b"sandbox"),
    (b"x-content-type-options", b"nosniff"),
)


async def _start(channel: Exchange, stream: TunnelStream, response: ResponseReceived) -> None:
    headers = [(n, v) for n, v in response.headers if n not in profile.HOP_RESPONSE_HEADERS]
    headers += [h for h in ISOLATION_HEADERS if h not in headers]
    if not any(n == b"content-length" for n, _ in headers) and not response.end_stream:
        headers.append((b"transfer-encoding", b"chunked"))
    # a body that is already here leaves together with the head
    await channel.start_response(response.status, headers, flush=not stream.body_ready)


async def _relay_body(channel: Exchange, stream: TunnelStream, metrics: Metrics) -> None:
    try:
        while chunk := await stream.receive():
            metrics.bytes_out += len(chunk)
            if stream.at_end:  # the last chunk: it leaves with the end of the response
                await channel.send_body(chunk, end=True)
                return
            await channel.send_body(chunk)
    except StreamResetError:
        # the head is out: the only honest signal left is to cut the connection
        raise ClientGone("the edge reset the stream mid-response") from None
    await channel.end_response()


async def _relay_with_upload(channel: Exchange, stream: TunnelStream, timeout: float, metrics: Metrics) -> int:
    upload_error: list[BaseException] = []
    body_sent = False
    failure: tuple[int, str] | None = None
    # the answer timer: moved on by every chunk the edge takes, so it measures silence
    silence = anyio.CancelScope(deadline=anyio.current_time() + timeout)

    async def upload_then_watch() -> None:
        """Send the request body, then watch the caller: if it goes away, the edge stops too."""
        nonlocal body_sent
        while True:
            try:
                chunk = await channel.receive_body()
            except (ClientGone, BadRequest, StreamResetError) as exc:  # the caller went away mid-body
                upload_error.append(exc)
                await stream.reset(ErrorCode.CANCEL)
                return
            try:
                if not chunk:
                    await stream.end()
                    body_sent = True
                    break
                metrics.bytes_in += len(chunk)
                await stream.send(chunk)
                silence.deadline = anyio.current_time() + timeout
            except StreamResetError:
                return  # the edge side: the response path reports it
        await channel.wait_disconnect()
        upload_error.append(ClientGone("the caller went away before the answer was complete"))
        await stream.reset(ErrorCode.CANCEL)

    async with _task_group() as tg:
        tg.start_soon(upload_then_watch)
        try:
            with silence:
                response = await stream.wait_response()
        except StreamResetError as exc:
            failure = _reset_status(exc)
        if silence.cancelled_caught:
            await stream.reset(ErrorCode.CANCEL)  # the edge stops the work too
            failure = (504, f"the edge was silent for {timeout:g} s without answering")
        if failure is None:
            await _start(channel, stream, response)
            await _relay_body(channel, stream, metrics)
            if not body_sent:
                # answered (an early 409, 413, ...) before the whole body went in: the rest never will,
                # so the edge must not wait for it
                await stream.reset(ErrorCode.CANCEL)
        # the upload has finished, or is moot once the answer is complete or failed
        tg.cancel_scope.cancel()
    if failure is not None:
        if upload_error:
            raise ClientGone(str(upload_error[0]))
        await channel.send_error(*failure)
        return failure[0]
    return response.status


def _reset_status(exc: StreamResetError) -> tuple[int, str]:
    if exc.code in (ErrorCode.CONNECTION_LOST, ErrorCode.REFUSED_STREAM, ErrorCode.TIMEOUT):
        return 503, "edge disconnected before answering"
    return 502, f"the edge failed the request ({exc})"
