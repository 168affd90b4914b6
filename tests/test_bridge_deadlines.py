"""The bridge's deadline watch: one task for the idle and write deadlines of every HTTP connection."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import pytest

from radical_edge_bridge import Bridge, BridgeConfig, HTTPLimits
from radical_edge_bridge._deadlines import Deadlines

from .conftest import TOKEN, running_bridge
from .test_bridge import echo, start_edge

pytestmark = pytest.mark.anyio

AUTH = f"Authorization: Bearer {TOKEN}"


@contextlib.asynccontextmanager
async def edge_behind_bridge(tls_files, client_ssl, handler, limits: HTTPLimits) -> AsyncIterator[Bridge]:
    """A bridge with these HTTP limits, and an edge on it that answers every request with ``handler``."""
    cert, key = tls_files
    config = BridgeConfig(port=0, cert=cert, key=key, token=TOKEN, http=limits, request_timeout=10)
    async with running_bridge(config) as b:
        tunnel, ws = await start_edge(b, client_ssl, handler)
        async with anyio.create_task_group() as tg:
            await tg.start(tunnel.run)
            yield b
            await tunnel.aclose()
            tg.cancel_scope.cancel()
        await ws.close()


async def connect(b: Bridge, client_ssl) -> anyio.abc.ByteStream:
    return await anyio.connect_tcp("127.0.0.1", b.port, tls=True, ssl_context=client_ssl, tls_standard_compatible=False)


async def test_an_armed_deadline_fires_once_within_a_tick_and_a_disarmed_or_closed_one_never():
    deadlines = Deadlines(0.05)
    fired: dict[str, list[float]] = {"armed": [], "disarmed": [], "closed": []}
    armed = deadlines.add(lambda: fired["armed"].append(time.monotonic()))
    disarmed = deadlines.add(lambda: fired["disarmed"].append(time.monotonic()))
    closed = deadlines.add(lambda: fired["closed"].append(time.monotonic()))
    async with anyio.create_task_group() as tg:
        tg.start_soon(deadlines.run)
        start = time.monotonic()
        for deadline in (armed, disarmed, closed):
            deadline.arm(0.2)
        disarmed.disarm()
        closed.close()
        assert len(deadlines) == 2
        await anyio.sleep(0.6)
        tg.cancel_scope.cancel()
    assert len(fired["armed"]) == 1  # once: an expired deadline is disarmed
    assert 0.2 <= fired["armed"][0] - start <= 0.2 + 0.05 + 0.1
    assert fired["disarmed"] == fired["closed"] == []
    assert armed.expired
    assert not disarmed.expired
    armed.arm(10)  # armed again: it has not expired since
    assert not armed.expired


async def test_a_failing_expiry_is_logged_and_the_others_still_fire(caplog: pytest.LogCaptureFixture):
    deadlines = Deadlines(0.05)
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    for deadline in (deadlines.add(boom), deadlines.add(lambda: fired.append("other"))):
        deadline.arm(0.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(deadlines.run)
        await anyio.sleep(0.3)
        tg.cancel_scope.cancel()
    assert fired == ["other"]
    assert "a deadline's expiry failed" in caplog.text


def test_a_tick_must_be_a_positive_number_of_seconds():
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="tick"):
            Deadlines(bad)


@pytest.fixture
async def idle_bridge(tls_files):
    cert, key = tls_files
    limits = HTTPLimits(idle_timeout=0.5)
    async with running_bridge(BridgeConfig(port=0, cert=cert, key=key, token=TOKEN, http=limits)) as b:
        yield b


async def _answer(stream) -> bytes:
    data = b""
    with anyio.fail_after(5):
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            data += await stream.receive()
    return data


async def test_a_keep_alive_connection_lives_while_requests_come_and_closes_idle_timeout_after_the_last(
    idle_bridge, client_ssl
):
    async with await connect(idle_bridge, client_ssl) as stream:
        for n in range(5):  # 1.2 s in all, over two idle timeouts: each wait for a request has its own deadline
            if n:
                await anyio.sleep(0.3)
            await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await _answer(stream)).startswith(b"HTTP/1.1 200")
        answered = time.monotonic()
        assert len(idle_bridge._deadlines) == 1  # this connection
        with anyio.fail_after(5):
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()
        assert 0.5 <= time.monotonic() - answered <= 0.5 + 0.125 + 0.5  # the idle timeout, within a tick (and slack)
    with anyio.fail_after(5):
        while len(idle_bridge._deadlines):  # closed: no longer watched
            await anyio.sleep(0.02)


async def test_a_connection_upgraded_to_a_websocket_is_no_longer_watched(idle_bridge, client_ssl):
    tunnel, ws = await start_edge(idle_bridge, client_ssl, echo)
    async with anyio.create_task_group() as tg:
        await tg.start(tunnel.run)
        with anyio.fail_after(5):
            while len(idle_bridge._deadlines):
                await anyio.sleep(0.02)
        await anyio.sleep(1.0)  # twice the HTTP idle timeout: the tunnel has its own heartbeat
        assert tunnel.is_open
        await tunnel.aclose()
        tg.cancel_scope.cancel()
    await ws.close()


async def test_the_watch_does_not_tick_with_nothing_to_watch(monkeypatch: pytest.MonkeyPatch):
    deadlines = Deadlines(0.01)
    sleeps: list[float] = []
    real_sleep = anyio.sleep

    async def counting_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await real_sleep(seconds)

    monkeypatch.setattr(anyio, "sleep", counting_sleep)
    async with anyio.create_task_group() as tg:
        tg.start_soon(deadlines.run)
        await real_sleep(0.2)
        assert sleeps == []  # asleep until a deadline is added
        deadline = deadlines.add(lambda: None)
        await real_sleep(0.1)
        assert sleeps  # ticking
        deadline.close()
        await real_sleep(0.05)
        count = len(sleeps)
        await real_sleep(0.2)
        assert len(sleeps) <= count + 1  # asleep again (one tick may have been under way)
        tg.cancel_scope.cancel()


async def test_a_slow_answer_and_a_slow_body_are_not_cut_by_the_idle_or_the_write_deadline(tls_files, client_ssl):
    """Both deadlines are 0.5 s; the edge takes 1.2 s to answer and 1.2 s between two body chunks.  The idle
    deadline ends when the request is here, and the write deadline when each write is done: neither may stay
    armed while the bridge waits for the edge."""

    async def slow(stream) -> None:
        await anyio.sleep(1.2)
        await stream.respond(200, [("content-type", "text/plain")])
        await stream.send(b"first ")
        await anyio.sleep(1.2)
        await stream.send(b"second", end_stream=True)

    limits = HTTPLimits(idle_timeout=0.5, write_timeout=0.5)
    async with edge_behind_bridge(tls_files, client_ssl, slow, limits) as b, await connect(b, client_ssl) as stream:
        await stream.send(f"GET /e1/slow HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n\r\n".encode())
        data = b""
        with anyio.fail_after(10):
            while not data.endswith(b"second\r\n0\r\n\r\n"):
                data += await stream.receive()
    assert data.startswith(b"HTTP/1.1 200")
    assert b"first " in data


async def test_a_client_cut_by_the_write_deadline_is_logged_as_such(tls_files, client_ssl, caplog):
    caplog.set_level(logging.DEBUG, logger="radical_edge")

    async def endless(stream) -> None:
        await stream.respond(200, [("content-type", "application/octet-stream")])
        while True:
            await stream.send(b"z" * 65536)

    limits = HTTPLimits(write_timeout=0.5)
    async with edge_behind_bridge(tls_files, client_ssl, endless, limits) as b, await connect(b, client_ssl) as stream:
        await stream.send(f"GET /e1/big HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n\r\n".encode())
        with anyio.fail_after(10):  # never reads: cut after the write deadline
            while "client took no response bytes for 0.25 s" not in caplog.text:
                await anyio.sleep(0.05)
