"""One request/response exchange, whatever carried it.

The bridge routes the same way for a request that came over HTTP/1.1
(:class:`~radical_edge_bridge._http.HTTPChannel`) and for one an SDK client
opened as a stream on its WebSocket tunnel (:class:`TunnelExchange`): both
offer the :class:`Exchange` methods below.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from radical_edge_proto import ErrorCode
from radical_edge_proto.profile import error_body
from radical_edge_tunnel import StreamResetError, TunnelStream


@dataclass(frozen=True)
class RequestHead:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    has_body: bool
    #: the caller's address (HTTP), for the wrong-credential throttle; "" for an SDK client's stream
    peer: str = ""


class Exchange(Protocol):
    response_started: bool

    async def receive_body(self) -> bytes: ...

    async def drain_body(self, limit: int = ...) -> bytes: ...

    async def start_response(
        self, status: int, headers: Iterable[tuple[bytes, bytes]], *, flush: bool = True
    ) -> None: ...

    async def send_body(self, data: bytes, *, end: bool = False) -> None:
        """Send body bytes; ``end=True``: they are the last, the response ends with them."""

    async def end_response(self) -> None: ...

    async def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: bytes = ...,
        extra: Iterable[tuple[bytes, bytes]] = ...,
        *,
        close: bool = ...,
    ) -> None: ...

    async def send_json(self, status: int, value: object, extra: Iterable[tuple[bytes, bytes]] = ...) -> None: ...

    async def send_error(self, status: int, detail: str, *, close: bool = ...) -> None: ...

    async def wait_disconnect(self) -> None:
        """Return once the caller has gone away (after its request body, if any, was read)."""


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


_HOP = frozenset({b"transfer-encoding", b"connection", b"keep-alive"})


class TunnelExchange:
    """An exchange on a stream an SDK client opened to the bridge."""

    def __init__(self, stream: TunnelStream) -> None:
        assert stream.request is not None
        self.stream = stream
        req = stream.request
        self.head = RequestHead(req.method.encode(), req.path.encode(), list(req.headers), not req.end_stream)
        self.response_started = False
        self._ended = False
        self._head_only = req.method == "HEAD"  # the answer to HEAD carries no body

    async def receive_body(self) -> bytes:
        return await self.stream.receive()

    async def drain_body(self, limit: int = 1024 * 1024) -> bytes:
        body = bytearray()
        while chunk := await self.stream.receive():
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge(limit)
        return bytes(body)

    async def start_response(self, status: int, headers: Iterable[tuple[bytes, bytes]], *, flush: bool = True) -> None:
        self.response_started = True
        await self.stream.respond(status, [(n, v) for n, v in headers if n not in _HOP], flush=flush)

    async def send_body(self, data: bytes, *, end: bool = False) -> None:
        if self._head_only:
            data = b""
        if end:
            self._ended = True
            await self.stream.send(data, end_stream=True)
        elif data:
            await self.stream.send(data)

    async def end_response(self) -> None:
        if not self._ended:
            self._ended = True
            await self.stream.end()

    async def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: bytes = b"application/json",
        extra: Iterable[tuple[bytes, bytes]] = (),
        *,
        close: bool = False,
    ) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
        self.response_started = True
        self._ended = True
        if self._head_only:
            body = b""
        try:
            await self.stream.respond(status, headers, end_stream=not body, flush=not body)
            if body:
                await self.stream.send(body, end_stream=True)
        except StreamResetError:
            pass  # the client gave up on it

    async def send_json(self, status: int, value: object, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
        await self.send_bytes(status, json.dumps(value).encode(), extra=extra)

    async def wait_disconnect(self) -> None:
        await self.stream.wait_reset()

    async def send_error(self, status: int, detail: str, *, close: bool = False) -> None:
        if self.response_started:
            await self.stream.reset(ErrorCode.INTERNAL_ERROR)
            return
        await self.send_bytes(status, error_body(status, detail))
