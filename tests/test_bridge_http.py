"""The bridge's HTTP channel on its own: request heads fed in pieces of every size.

414 and 431 are decided from the bytes the channel counted itself, so where
the pieces are cut must not change the answer.
"""

from __future__ import annotations

from collections import deque

import anyio
import anyio.abc
import h11
import pytest

from radical_edge_bridge import HTTPLimits
from radical_edge_bridge._deadlines import Deadlines
from radical_edge_bridge._http import HeadMeter, HTTPChannel

from .conftest import TOKEN

pytestmark = pytest.mark.anyio

LIMITS = HTTPLimits()  # 8 KiB request line, 64 KiB of headers


class PieceStream(anyio.abc.ByteStream):
    """A client that sends ``data`` cut into ``size``-byte pieces, one per read; records the answer."""

    def __init__(self, data: bytes, size: int) -> None:
        self.pieces = deque(data[i : i + size] for i in range(0, len(data), size))
        self.sent = bytearray()
        self.reads = 0

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self.pieces:
            raise anyio.EndOfStream
        self.reads += 1
        return self.pieces.popleft()

    async def send(self, item: bytes) -> None:
        self.sent += item

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def first_request(data: bytes, size: int) -> tuple[h11.Request | None, PieceStream]:
    stream = PieceStream(data, size)
    channel = HTTPChannel(stream, LIMITS, Deadlines(1.0))
    with anyio.fail_after(30):
        request = await channel.next_request()
    return request, stream


BIG_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
LONG_LINE_UNFINISHED = b"GET /" + b"a" * 70_000  # never ends: past the header limit while still the first line
LONG_LINE = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"  # complete, under the header limit


@pytest.mark.parametrize("size", [1, 7, 1000, 16_384, 1 << 20])
@pytest.mark.parametrize(
    ("data", "status", "detail"),
    [
        (BIG_HEADERS, b"431", b"request header fields too large"),
        (LONG_LINE_UNFINISHED, b"414", b"request line too long"),
        (LONG_LINE, b"414", b"request line too long"),
    ],
    ids=["headers-too-large", "unfinished-line-too-long", "line-too-long"],
)
async def test_an_oversized_head_in_pieces_gets_the_same_status(data: bytes, status: bytes, detail: bytes, size: int):
    request, stream = await first_request(data, size)
    assert request is None
    assert bytes(stream.sent).startswith(b"HTTP/1.1 " + status), bytes(stream.sent[:200])
    assert detail in stream.sent


@pytest.mark.parametrize("size", [1, 3, 100, 65536, 1 << 20])
async def test_a_head_just_under_the_limits_in_pieces_is_a_request(size: int):
    headers = b"".join(b"X-H%d: %s\r\n" % (n, b"v" * 1000) for n in range(60))  # ~60 KiB
    data = b"GET /" + b"p" * 8000 + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"
    request, stream = await first_request(data, size)
    assert isinstance(request, h11.Request), bytes(stream.sent[:200])
    assert len(request.headers) == 61
    assert stream.reads == len(range(0, len(data), size))  # it really came in that many pieces


@pytest.mark.parametrize(
    ("data", "status"), [(BIG_HEADERS, 431), (LONG_LINE, 414)], ids=["headers-too-large", "line-too-long"]
)
def test_an_oversized_head_that_arrives_whole_is_refused_before_h11_parses_it(data: bytes, status: int):
    """One read takes up to LARGE_READ (512 KiB): such a head must not cost a full parse before its 414/431."""
    refused = HeadMeter(LIMITS).start(data)
    assert refused is not None
    assert refused.status == status


async def test_bytes_of_a_pipelined_head_count_towards_its_limit():
    """The next request's head began in the same read as the first request: those bytes count too."""
    first = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    second = b"GET /b HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    data = first + second
    stream = PieceStream(data, len(first) + 40_000)  # the first request and 40 KB of the second head
    channel = HTTPChannel(stream, LIMITS, Deadlines(1.0))
    request = await channel.next_request()
    assert isinstance(request, h11.Request)
    await channel.send_bytes(200, b"{}")
    assert await channel.next_request() is None
    answers = bytes(stream.sent).split(b"HTTP/1.1 ")
    assert answers[1].startswith(b"200")
    assert answers[2].startswith(b"431")
    assert b"request header fields too large" in answers[2]


async def test_bridge_answers_431_to_headers_sent_in_many_small_pieces(bridge, client_ssl):
    stream = await anyio.connect_tcp(
        "127.0.0.1", bridge.port, tls=True, ssl_context=client_ssl, tls_standard_compatible=False
    )
    line = b"GET /healthz HTTP/1.1\r\n"
    head = line + b"Host: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\nX-Big: "
    header_bytes = len(head) - len(line)
    reply = b""
    async with stream:
        with anyio.fail_after(20):
            await stream.send(head)
            # one TLS record of 100 bytes at a time, until just past the limit (more would be sent
            # into a closed connection, and its reset could discard the answer)
            while header_bytes <= LIMITS.max_header_bytes + 2:
                await stream.send(b"a" * 100)
                header_bytes += 100
            try:
                while True:
                    reply += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
    assert b"request header fields too large" in reply


async def test_a_malformed_pipelined_head_gets_400():
    stream = PieceStream(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP AT ALL\r\n\r\n", 1 << 20)
    channel = HTTPChannel(stream, LIMITS, Deadlines(1.0))
    assert isinstance(await channel.next_request(), h11.Request)
    await channel.send_bytes(200, b"{}")
    assert await channel.next_request() is None
    answers = bytes(stream.sent).split(b"HTTP/1.1 ")
    assert answers[1].startswith(b"200")
    assert answers[2].startswith(b"400")
