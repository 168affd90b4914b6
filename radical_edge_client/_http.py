"""Requests as tunnel streams: streamed upload bodies, whole or streamed answers.

Request bodies (``data=``) may be bytes, text, a binary file object (read in
chunks in a worker thread), an object with an ``async read(n)``, an async
iterator of bytes or a plain iterator of bytes (advanced in a worker thread):
one chunk at most is read ahead of what the tunnel's flow control lets
through, so a large upload never sits in memory.  Answers are read whole
(:class:`Response`) or chunk by chunk (:class:`StreamResponse`, which can
also :meth:`~StreamResponse.download` into a file).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json as jsonlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Any, Protocol, TypeAlias, runtime_checkable
from urllib.parse import quote, urlencode

import anyio
import anyio.to_thread

from radical_edge_proto import ErrorCode, LocalProtocolError, ResponseReceived
from radical_edge_tunnel import ReadAhead, StreamResetError, TunnelStream, WriteBehind

from ._errors import BridgeProtocolError, RequestTimeout, error_for_status
from ._link import Link

#: how much is read from a file object at a time
CHUNK_SIZE = 256 * 1024
#: bytes gathered for one blocking write of a download (one worker-thread hop)
WRITE_BATCH = 1024 * 1024
#: how much of an error answer's body is read to make the exception
ERROR_BODY_LIMIT = 256 * 1024


@runtime_checkable
class SupportsRead(Protocol):
    """A binary file object: ``read(n) -> bytes`` (``b""`` at the end)."""

    def read(self, n: int = ..., /) -> bytes: ...


@runtime_checkable
class SupportsAsyncRead(Protocol):
    """An async binary file object: ``await read(n) -> bytes`` (``b""`` at the end)."""

    async def read(self, n: int = ..., /) -> bytes: ...


@runtime_checkable
class SupportsWrite(Protocol):
    """A binary sink: ``write(chunk)``."""

    def write(self, data: bytes, /) -> Any: ...


@runtime_checkable
class SupportsAsyncWrite(Protocol):
    """An async binary sink: ``await write(chunk)``."""

    async def write(self, data: bytes, /) -> Any: ...


#: what ``data=`` accepts
BodySource: TypeAlias = (
    bytes
    | bytearray
    | memoryview
    | str
    | IO[bytes]
    | SupportsRead
    | SupportsAsyncRead
    | AsyncIterable[bytes]
    | Iterable[bytes]
)
#: what ``params=`` accepts
Params: TypeAlias = Mapping[str, Any] | Sequence[tuple[str, Any]]
#: what ``headers=`` accepts
Headers: TypeAlias = Mapping[str, str] | Sequence[tuple[str, str]]

_SAFE_PATH = "/:@!$&'()*+,;=-._~%"


def quote_segment(value: str) -> str:
    """One path segment, percent-encoded (``/`` included)."""
    return quote(value, safe="")


def build_target(path: str, params: Params | None = None) -> str:
    """An ASCII request target: ``path`` (non-ASCII and spaces percent-encoded) plus the query."""
    if "?" in path:
        path, _, query = path.partition("?")
        target = quote(path, safe=_SAFE_PATH) + "?" + quote(query, safe=_SAFE_PATH + "?")
    else:
        target = quote(path, safe=_SAFE_PATH)
    if params:
        items = list(params.items()) if isinstance(params, Mapping) else list(params)
        pairs = [(k, _param(v)) for k, v in items if v is not None]
        if pairs:
            target += ("&" if "?" in target else "?") + urlencode(pairs, doseq=True)
    return target


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


# ---------------------------------------------------------------- answers


@dataclass
class ResponseHead:
    """Status and headers of an answer (header names lower case)."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``default``."""
        name = name.lower()
        return next((v for n, v in self.headers if n == name), default)

    @property
    def ok(self) -> bool:
        return self.status < 400


@dataclass
class Response(ResponseHead):
    """A whole answer: ``status``, ``headers``, ``content`` (bytes), ``text`` and :meth:`json`."""

    content: bytes = b""
    where: str = ""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON; :class:`BridgeProtocolError` if it is not JSON."""
        try:
            return jsonlib.loads(self.content)
        except (ValueError, UnicodeDecodeError):
            snippet = self.content[:200].decode("utf-8", "replace")
            raise BridgeProtocolError(f"{self.where}: the answer is not JSON: {snippet!r}", self.status) from None


class StreamResponse(ResponseHead):
    """An answer whose body is read as it arrives (credit goes back to the sender as chunks are consumed)."""

    def __init__(self, head: ResponseHead, stream: TunnelStream, link: Link, where: str) -> None:
        super().__init__(head.status, list(head.headers))
        self._stream = stream
        self._link = link
        self.where = where
        #: the whole body was read
        self.complete = False
        #: bytes read so far
        self.received = 0

    async def receive(self) -> bytes:
        """The next chunk of the body, ``b""`` at the end."""
        if self.complete:
            return b""
        try:
            chunk = await self._stream.receive()
        except StreamResetError as exc:
            raise self._link.error_for_reset(exc, self.where) from None
        if not chunk:
            self.complete = True
        self.received += len(chunk)
        return chunk

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk."""
        while chunk := await self.receive():
            yield chunk

    async def read(self, limit: int | None = None) -> bytes:
        """The rest of the body, whole (at most ``limit`` bytes are kept when given)."""
        body = bytearray()
        while chunk := await self.receive():
            if limit is None or len(body) < limit:
                body += chunk if limit is None else chunk[: limit - len(body)]
        return bytes(body)

    async def download(self, dest: str | os.PathLike[str] | IO[bytes] | SupportsWrite | SupportsAsyncWrite) -> int:
        """Write the body to ``dest`` (a path, a binary file object, or an object with ``async write``).

        Chunks are written as they arrive (a blocking ``write`` in batches, in a
        worker thread while the next batch arrives: :class:`ChunkWriter`); the
        body is never held whole.  Returns the number of bytes written.
        """
        if isinstance(dest, str | os.PathLike):
            fh = await anyio.to_thread.run_sync(open, os.fspath(dest), "wb")
            try:
                return await self.download(fh)
            finally:
                await anyio.to_thread.run_sync(fh.close)
        total = 0
        async with ChunkWriter(dest) as writer:
            while chunk := await self.receive():
                await writer.add(chunk)
                total += len(chunk)
        return total


def sink_write(dest: Any) -> Callable[[bytes], Any]:
    """``dest``'s ``write`` method (sync or async); TypeError if it has none."""
    write: Callable[[bytes], Any] | None = getattr(dest, "write", None)
    if write is None or not callable(write):
        raise TypeError("the download target must be a path or have a write() method")
    return write


class ChunkWriter:
    """Writes a body's chunks into a binary sink, feeding each to ``digest`` (a hashlib object) when given.

    A blocking ``write`` gets the chunks in batches of about ``batch_size``
    bytes, each written (and hashed) in a worker thread while the next batch
    arrives (:class:`~radical_edge_tunnel.WriteBehind`); an ``async write`` is
    awaited chunk by chunk.  Leaving the ``async with`` normally writes what
    is left and waits for it; leaving on an error waits only for the write in
    progress (what was not handed over is not written, nor hashed).
    """

    def __init__(self, dest: Any, digest: Any = None, *, batch_size: int = WRITE_BATCH) -> None:
        write = sink_write(dest)
        self._write = write
        self._digest = digest
        self._batch_size = batch_size
        self._batch: list[bytes] = []
        self._pending = 0
        self._behind: WriteBehind[list[bytes]] | None = (
            None if inspect.iscoroutinefunction(write) else WriteBehind(self._write_batch)
        )

    async def __aenter__(self) -> ChunkWriter:
        if self._behind is not None:
            await self._behind.__aenter__()
        return self

    async def add(self, chunk: bytes) -> None:
        """Write ``chunk`` (a blocking sink: once its batch is full, behind the caller)."""
        if self._behind is None:
            await self._write(chunk)
            _hash(self._digest, chunk)
            return
        self._batch.append(chunk)
        self._pending += len(chunk)
        if self._pending >= self._batch_size:
            await self._hand_over()

    async def _hand_over(self) -> None:
        if self._behind is not None and self._batch:
            batch, self._batch, self._pending = self._batch, [], 0
            await self._behind.put(batch)

    def _write_batch(self, batch: list[bytes]) -> None:
        for chunk in batch:
            self._write(chunk)
            _hash(self._digest, chunk)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._behind is None:
            return
        try:
            if exc is None:
                await self._hand_over()
        finally:
            await self._behind.__aexit__(exc_type, exc, tb)


# ---------------------------------------------------------------- request bodies


def encode_body(json: Any = None, data: BodySource | None = None) -> tuple[BodySource | None, list[tuple[str, str]]]:
    """``json=`` / ``data=`` as a body source plus the headers it implies (content type, length)."""
    if json is not None and data is not None:
        raise TypeError("give json= or data=, not both")
    if json is not None:
        raw = jsonlib.dumps(json, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        return raw, [("content-type", "application/json"), ("content-length", str(len(raw)))]
    if data is None:
        return None, []
    if isinstance(data, str):
        raw = data.encode()
        return raw, [("content-type", "text/plain; charset=utf-8"), ("content-length", str(len(raw)))]
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        return raw, [("content-type", "application/octet-stream"), ("content-length", str(len(raw)))]
    if isinstance(data, Mapping):
        raise TypeError("data= takes bytes, a file object or an iterator of bytes: send a dict with json=")
    if isinstance(data, Iterable | AsyncIterable) or hasattr(data, "read"):
        return data, [("content-type", "application/octet-stream")]
    raise TypeError(f"cannot send a {type(data).__name__} as a body (bytes, a file object or an iterator of bytes)")


@asynccontextmanager
async def body_chunks(
    source: BodySource, *, chunk_size: int = CHUNK_SIZE, digest: Any = None, owned: bool = False
) -> AsyncIterator[AsyncIterable[bytes]]:
    """The chunks of a body source (none empty), each fed to ``digest`` (a hashlib object) when given.

    A blocking ``read`` or a plain iterator runs in a worker thread one chunk
    ahead of the caller (:class:`~radical_edge_tunnel.ReadAhead`, hashing
    there too): the next chunk is read from the disk while this one goes out.
    Text chunks of an iterator are sent UTF-8 encoded.  A source of the
    caller's may block for good (a pipe whose writer hung): cancelling leaves
    its read behind rather than wait for it.  ``owned``: the source is a file
    this library opened (and closes on leaving), so its read in progress is
    waited for instead.
    """
    if isinstance(source, bytes | bytearray | memoryview | str):
        yield _one(_as_bytes(source), digest)
        return
    read = getattr(source, "read", None)
    if read is not None and callable(read):
        if inspect.iscoroutinefunction(read):
            yield _async_reads(read, chunk_size, digest)
            return
        reads = functools.partial(_read_chunk, read, chunk_size, digest)
        async with ReadAhead(reads, abandon_on_cancel=not owned) as chunks:
            yield chunks
    elif isinstance(source, AsyncIterable):
        yield _async_items(source, digest)
    elif isinstance(source, Iterable):
        items = functools.partial(_next_chunk, iter(source), digest)
        async with ReadAhead(items, abandon_on_cancel=not owned) as chunks:
            yield chunks
    else:
        raise TypeError(
            f"cannot send a {type(source).__name__} as a body (bytes, a file object or an iterator of bytes)"
        )


async def _one(data: bytes, digest: Any) -> AsyncIterator[bytes]:
    if data:
        _hash(digest, data)
        yield data


async def _async_reads(read: Any, chunk_size: int, digest: Any) -> AsyncIterator[bytes]:
    while chunk := await read(chunk_size):
        data = _read_bytes(chunk)
        _hash(digest, data)
        yield data


async def _async_items(source: AsyncIterable[Any], digest: Any) -> AsyncIterator[bytes]:
    async for chunk in source:
        if data := _as_bytes(chunk):
            _hash(digest, data)
            yield data


def _read_chunk(read: Callable[[int], Any], chunk_size: int, digest: Any) -> bytes | None:
    """The next chunk of a blocking ``read`` (None at the end), hashed: run in a worker thread."""
    chunk = read(chunk_size)
    if not chunk:
        return None
    data = _read_bytes(chunk)
    _hash(digest, data)
    return data


def _next_chunk(iterator: Iterator[Any], digest: Any) -> bytes | None:
    """The next non-empty chunk of a plain iterator (None at the end), hashed: run in a worker thread."""
    for chunk in iterator:
        if data := _as_bytes(chunk):
            _hash(digest, data)
            return data
    return None


def _hash(digest: Any, data: bytes) -> None:
    if digest is not None:
        digest.update(data)


def _read_bytes(chunk: Any) -> bytes:
    if isinstance(chunk, str):
        raise TypeError("the file object gives text: open it in binary mode ('rb')")
    return bytes(chunk)


def _as_bytes(chunk: Any) -> bytes:
    if isinstance(chunk, bytes | bytearray | memoryview):
        return bytes(chunk)
    if isinstance(chunk, str):
        return chunk.encode()
    raise TypeError(f"body chunks must be bytes, not {type(chunk).__name__}")


class _Upload:
    """Sends a body on a stream in the background (while the answer may already be arriving)."""

    def __init__(self, stream: TunnelStream, source: BodySource) -> None:
        self.stream = stream
        self.source = source
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.error: BaseException | None = None

    async def run(self) -> None:
        try:
            with self.scope:
                async with body_chunks(self.source) as chunks:
                    async for chunk in chunks:
                        await self.stream.send(chunk)
                await self.stream.end()
        except StreamResetError:
            pass  # the answer path reports why
        except Exception as exc:  # the caller's body source failed: abort the request, report it
            self.error = exc
            await _reset(self.stream)
        finally:
            self.done.set()


async def _reset(stream: TunnelStream, code: ErrorCode = ErrorCode.CANCEL) -> None:
    with anyio.CancelScope(shield=True), contextlib.suppress(StreamResetError, LocalProtocolError):
        await stream.reset(code)


def _head_of(response: ResponseReceived) -> ResponseHead:
    return ResponseHead(
        response.status, [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in response.headers]
    )


# ---------------------------------------------------------------- one request


@asynccontextmanager
async def request_any_status(
    link: Link,
    method: str,
    target: str,
    *,
    headers: list[tuple[str, str]],
    body: BodySource | None,
    timeout: float | None,
) -> AsyncIterator[StreamResponse]:
    """Send a request and yield the answer once its head arrived (any status).

    ``timeout`` bounds the wait for the answer's head (not the body); when it
    passes, the request is cancelled on the edge as well and
    :class:`RequestTimeout` raised.  Leaving the context before the body was
    read, or while the upload still runs, resets the stream.
    """
    where = f"{method} {target}"
    stream = await link.open_stream(method, target, headers, end_stream=body is None, timeout=None)
    upload: _Upload | None = None
    answer: StreamResponse | None = None
    try:
        if body is not None:
            inline = isinstance(body, bytes) and len(body) <= stream.send_window
            if inline:
                assert isinstance(body, bytes)
                with contextlib.suppress(StreamResetError):  # the answer path reports why
                    await stream.send(body, end_stream=True)
            else:
                upload = _Upload(stream, body)
                link.spawn(upload.run, name=f"upload {where}")
        try:
            with anyio.fail_after(timeout):
                head = await stream.wait_response()
        except TimeoutError:
            raise RequestTimeout(f"{where}: no answer within {timeout:g} s (the request was cancelled)") from None
        except StreamResetError as exc:
            if upload is not None:
                await upload.done.wait()
                if upload.error is not None:
                    raise upload.error from None
            raise link.error_for_reset(exc, where) from None
        answer = StreamResponse(_head_of(head), stream, link, where)
        if head.end_stream:
            answer.complete = True
        yield answer
        if upload is not None and upload.error is not None:
            raise upload.error
    finally:
        finished = answer is not None and answer.complete and (upload is None or upload.done.is_set())
        if upload is not None:
            upload.scope.cancel()
        if not finished:
            await _reset(stream)


async def fetch(
    link: Link,
    method: str,
    target: str,
    *,
    headers: list[tuple[str, str]],
    body: BodySource | None,
    timeout: float | None,
) -> Response:
    """One request, the whole answer read; error statuses raise the matching :class:`RadicalEdgeError`."""
    where = f"{method} {target}"
    async with request_any_status(link, method, target, headers=headers, body=body, timeout=timeout) as answer:
        content = await answer.read(None if answer.ok else ERROR_BODY_LIMIT)
    if not answer.ok:
        raise error_for_status(answer.status, content, where=where)
    return Response(answer.status, answer.headers, content=content, where=where)


@asynccontextmanager
async def request_stream(
    link: Link,
    method: str,
    target: str,
    *,
    headers: list[tuple[str, str]],
    body: BodySource | None,
    timeout: float | None,
) -> AsyncIterator[StreamResponse]:
    """One request whose answer body is read by the caller; error statuses raise before yielding."""
    where = f"{method} {target}"
    async with request_any_status(link, method, target, headers=headers, body=body, timeout=timeout) as answer:
        if not answer.ok:
            content = await answer.read(ERROR_BODY_LIMIT)
            raise error_for_status(answer.status, content, where=where)
        yield answer


def header_list(headers: Headers | None) -> list[tuple[str, str]]:
    """Headers as a list of (lower-case name, value)."""
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(n).lower(), str(v)) for n, v in items]


__all__ = [
    "BodySource",
    "Headers",
    "Params",
    "Response",
    "ResponseHead",
    "StreamResponse",
    "build_target",
    "encode_body",
    "fetch",
    "header_list",
    "quote_segment",
    "request_any_status",
    "request_stream",
]
