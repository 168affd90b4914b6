"""Serve one tunnel stream as one ASGI HTTP request, and run ASGI lifespans.

The request body is handed to the application chunk by chunk as it arrives
(tunnel credit goes back as the application consumes it), and the response
body goes out as the application produces it: nothing is held whole, so a
1 GiB transfer needs no more memory than the flow-control windows.

Paths follow the ASGI convention that ``path`` includes ``root_path``: an
application mounted at ``root_path="/edge1/sysinfo"`` sees
``path="/edge1/sysinfo/health"`` and routes on what follows the root path
(Starlette and FastAPI do this; so does any ASGI 3 framework).

A request body may be capped (``max_body``): a declared ``content-length``
over the cap is answered 413 before the application runs; a body that grows
past it stops being delivered (the application sees ``http.disconnect`` and
is cancelled) and is answered 413, or the stream is reset if the response
had already begun.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

import anyio
import anyio.abc

from radical_edge_proto import ErrorCode
from radical_edge_proto.profile import ERROR_CONTENT_TYPE, error_body
from radical_edge_tunnel import StreamResetError, TunnelStream

log = logging.getLogger("radical_edge.edge")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: how long an application may take to finish its lifespan startup or shutdown
LIFESPAN_TIMEOUT = 30.0


async def send_error(
    stream: TunnelStream, status: int, detail: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer ``stream`` with the JSON error envelope."""
    body = error_body(status, detail)
    head = [
        (b"content-type", ERROR_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        *(headers or []),
    ]
    await stream.respond(status, head)
    await stream.send(body, end_stream=True)


async def send_json_bytes(stream: TunnelStream, status: int, body: bytes) -> None:
    await stream.respond(status, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())])
    await stream.send(body, end_stream=True)


def build_scope(
    *,
    method: str,
    root_path: str,
    rest: str,
    query_string: bytes,
    headers: list[tuple[bytes, bytes]],
    state: dict[str, Any] | None = None,
) -> Scope:
    """The ASGI HTTP scope of a request for ``root_path + rest`` (``rest`` still percent-encoded)."""
    raw_path = root_path + rest
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method.upper(),
        "scheme": "https",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("ascii", "replace"),
        "query_string": query_string,
        "root_path": unquote(root_path),
        "headers": headers,
        "client": None,
        "server": None,
        "extensions": {},
    }
    if state is not None:
        scope["state"] = dict(state)
    return scope


def body_too_large_detail(limit: int) -> str:
    return f"request body too large: this route accepts at most {limit} bytes"


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The request's ``content-length`` (the largest if it is given more than once), or None."""
    lengths = [int(v) for n, v in headers if n == b"content-length" and v.strip().isdigit()]
    return max(lengths) if lengths else None


class _AsgiCall:
    """The state of one request/response pair while the application runs."""

    def __init__(self, stream: TunnelStream, max_body: int | None = None) -> None:
        self.stream = stream
        self.max_body = max_body
        self.received = 0
        #: the body grew past ``max_body``: nothing more was delivered
        self.too_large = False
        #: cancels the application (set while it runs)
        self.cancel: Callable[[], None] | None = None
        self.body_done = False
        self.disconnected = False
        self.started = False
        self.finished = False
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._response_done: anyio.Event | None = None  # made only if the app waits for a disconnect

    @property
    def head_sent(self) -> bool:
        """The response head went out on the stream (an error can then only reset it)."""
        return self.started and not self._status

    async def receive(self) -> Message:
        if not self.body_done:
            try:
                chunk = await self.stream.receive()
            except StreamResetError:
                self.disconnected = True
                return {"type": "http.disconnect"}
            if not chunk:
                self.body_done = True
            self.received += len(chunk)
            if self.max_body is not None and self.received > self.max_body:
                # hold no more of it: the application sees the client go away and is stopped
                self.too_large = self.disconnected = self.body_done = True
                if self.cancel is not None:
                    self.cancel()
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": chunk, "more_body": bool(chunk)}
        # after the body: block until the client goes away or the response is complete
        if not self.disconnected and not self.finished:
            async with anyio.create_task_group() as tg:
                if self._response_done is None:
                    self._response_done = anyio.Event()
                done = self._response_done

                async def on_done() -> None:
                    await done.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(on_done)
                await self.stream.wait_reset()
                tg.cancel_scope.cancel()
            if not self.finished:
                self.disconnected = True
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.disconnected:
            raise OSError("the client disconnected")
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self._status = int(message["status"])
            self._headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
            return
        if kind != "http.response.body":
            if kind.startswith("http.response."):
                return  # an extension we did not announce (trailers, push, ...): ignore
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self.started:
            raise RuntimeError("http.response.body before http.response.start")
        if self.finished:
            return
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        try:
            if self._status:
                # the head goes out with the first body message, so an empty response is one frame
                # queued without a flush when body bytes follow: head and body leave in one message
                await self.stream.respond(self._status, self._headers, end_stream=not body and not more, flush=not body)
                self._status = 0
                if not body and not more:
                    self._finish()
                    return
            if body or not more:
                await self.stream.send(body, end_stream=not more)
        except StreamResetError:
            self.disconnected = True
            raise OSError("the client disconnected") from None
        if not more:
            self._finish()

    def _finish(self) -> None:
        self.finished = True
        if self._response_done is not None:
            self._response_done.set()


async def serve_stream(app: ASGIApp, stream: TunnelStream, scope: Scope, *, max_body: int | None = None) -> None:
    """Run ``app`` for the request on ``stream`` and send its response.

    If the stream is reset (the caller went away) the application is
    cancelled.  An application that fails before it started a response is
    answered 500 with the error envelope; one that fails half-way resets the
    stream (the caller sees a truncated response, never a corrupt one).

    ``max_body`` caps the request body (bytes; None: no cap): a larger
    declared ``content-length`` is answered 413 without running ``app``; a
    body that grows past it is cut off from ``app`` (which sees
    ``http.disconnect`` and is cancelled) and answered 413, or the stream
    is reset if the response had begun.  The caller reads or drops what is
    left of the body (see ``discard_body``).
    """
    if max_body is not None:
        length = declared_length(scope["headers"])
        if length is not None and length > max_body:
            await send_error(stream, 413, body_too_large_detail(max_body))
            return
    ex = _AsgiCall(stream, max_body)
    error: BaseException | None = None

    running = True

    with anyio.CancelScope() as cancel_scope:
        ex.cancel = cancel_scope.cancel

        def on_reset() -> None:  # called by the tunnel when the stream dies (no watcher task per request)
            if running and not ex.finished:
                ex.disconnected = True
                cancel_scope.cancel()

        stream.on_reset(on_reset)
        try:
            await app(scope, ex.receive, ex.send)
        except Exception as exc:
            error = exc
        finally:
            running = False
            ex.cancel = None

    if ex.too_large and not ex.finished:
        log.info("%s %r: request body over %s bytes refused", scope["method"], scope["path"], max_body)
        await _fail(stream, ex, 413, body_too_large_detail(max_body or 0), ErrorCode.CANCEL)
        return
    if ex.disconnected and not ex.finished:
        log.debug("stream %d: the caller went away; the handler was cancelled", stream.id)
        return
    if error is not None:
        if ex.finished:
            log.error("%s %r failed after its response was sent", scope["method"], scope["path"], exc_info=error)
        else:
            log.error("%s %r failed", scope["method"], scope["path"], exc_info=error)
            await _fail(stream, ex, 500, f"internal error in the plugin: {type(error).__name__}: {error}")
        return
    if not ex.finished:
        log.error("%s %r: the application returned without a complete response", scope["method"], scope["path"])
        await _fail(stream, ex, 500, "the plugin returned without a response")


async def _fail(
    stream: TunnelStream, ex: _AsgiCall, status: int, detail: str, code: ErrorCode = ErrorCode.INTERNAL_ERROR
) -> None:
    """Answer ``status`` with the envelope, or reset the stream with ``code`` if the response head went out."""
    try:
        if ex.head_sent:
            await stream.reset(code)  # the head went out: all we can do is cut it
        else:
            await send_error(stream, status, detail)
    except StreamResetError:
        pass


class LifespanError(Exception):
    """The application's lifespan startup failed."""


async def run_lifespan(
    app: ASGIApp,
    state: dict[str, Any],
    *,
    timeout: float = LIFESPAN_TIMEOUT,
    task_status: anyio.abc.TaskStatus[bool] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``app``'s ASGI lifespan: startup, then (when cancelled) shutdown.

    ``task_status.started(True)`` once startup completed, ``started(False)``
    for an application without lifespan support (it then simply runs).
    Raises :class:`LifespanError` if startup fails (before ``started``).
    Cancel the task to shut the application down; shutdown has ``timeout`` seconds.
    """
    to_app_tx, to_app_rx = anyio.create_memory_object_stream[Message](2)
    from_app_tx, from_app_rx = anyio.create_memory_object_stream[Message](2)
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    app_error: list[BaseException] = []

    async def receive() -> Message:
        return await to_app_rx.receive()

    async def send(message: Message) -> None:
        await from_app_tx.send(message)

    async def run_app() -> None:
        try:
            await app(scope, receive, send)
        except Exception as exc:
            app_error.append(exc)
        finally:
            from_app_tx.close()

    async def expect(kind: str) -> bool | None:
        """True: done; False: failed; None: the app does not do lifespan (returned or raised)."""
        try:
            with anyio.fail_after(timeout):
                message = await from_app_rx.receive()
        except anyio.EndOfStream:
            return None
        if message["type"] == f"lifespan.{kind}.complete":
            return True
        if message["type"] == f"lifespan.{kind}.failed":
            raise LifespanError(str(message.get("message", "")) or f"lifespan {kind} failed")
        if kind == "startup" and not str(message["type"]).startswith("lifespan."):
            # an application that ignores the scope type: it does not do lifespan
            app_error.append(RuntimeError(f"answered the lifespan scope with {message['type']!r}"))
            return None
        raise LifespanError(f"unexpected lifespan message {message['type']!r}")

    failure: LifespanError | None = None
    started: bool | None = None
    async with to_app_tx, to_app_rx, from_app_tx, from_app_rx, anyio.create_task_group() as tg:
        tg.start_soon(run_app)
        await to_app_tx.send({"type": "lifespan.startup"})
        try:
            started = await expect("startup")
        except LifespanError as exc:
            failure = exc
        except TimeoutError:
            failure = LifespanError(f"lifespan startup took longer than {timeout} s")
        if failure is not None or started is None:
            tg.cancel_scope.cancel()
        else:
            task_status.started(True)
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await to_app_tx.send({"type": "lifespan.shutdown"})
                        await expect("shutdown")
                    except (LifespanError, TimeoutError, anyio.BrokenResourceError) as exc:
                        log.warning("lifespan shutdown: %s", exc or type(exc).__name__)
                    tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if app_error:
        log.debug("application does not support lifespan: %r", app_error[0])
    task_status.started(False)
