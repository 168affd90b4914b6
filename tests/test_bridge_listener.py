"""The bridge's listener under attack: fd exhaustion, connection floods, plain TCP on the TLS port.

Every attack here needs no token.  The bridge must survive each one, keep (or resume) serving the
other clients, and log a short line rather than a traceback.  Distinct peers come from distinct
loopback addresses (127.0.0.2, 127.0.0.3, ...): Linux routes all of 127/8 to ``lo``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import resource
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest

from radical_edge_bridge import Bridge, BridgeConfig
from radical_edge_bridge._listener import AcceptBackoff

from .conftest import TOKEN, running_bridge

#: the URL line the bridge prints on stdout
URL_LINE = re.compile(r"listening on (https?://127\.0\.0\.1:\d+)")


# ---------------------------------------------------------------- fixtures and helpers


def tls_config(tls_files: tuple[Path, Path], **overrides: object) -> BridgeConfig:
    cert, key = tls_files
    return BridgeConfig(port=0, cert=cert, key=key, token=TOKEN, **overrides)  # type: ignore[arg-type]


def https(bridge: Bridge, client_ssl: ssl.SSLContext, local: str = "127.0.0.1") -> httpx.AsyncClient:
    """An authenticated client whose connections come from the loopback address ``local``."""
    transport = httpx.AsyncHTTPTransport(verify=client_ssl, local_address=local)
    return httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{bridge.port}",
        transport=transport,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )


async def served(bridge: Bridge, client_ssl: ssl.SSLContext, local: str = "127.0.0.1") -> bool:
    """Whether an authenticated request from ``local`` gets its 200."""
    async with https(bridge, client_ssl, local) as client:
        return (await client.get("/edges")).status_code == 200


async def raw(bridge: Bridge, local: str = "127.0.0.1") -> anyio.abc.SocketStream:
    """A plain TCP connection that says nothing (no TLS ClientHello)."""
    assert bridge.port is not None
    return await anyio.connect_tcp("127.0.0.1", bridge.port, local_host=local)


async def closed_by_server(stream: anyio.abc.ByteStream, within: float) -> bool:
    """Whether the server closes ``stream`` (EOF or reset) within ``within`` seconds without a byte."""
    with anyio.move_on_after(within):
        try:
            data = await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return True
        pytest.fail(f"the server sent {data!r} on a connection it should have closed")
    return False


async def wait_until(what: str, check: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.move_on_after(timeout):
        while not check():
            await anyio.sleep(0.01)
        return
    pytest.fail(f"not within {timeout} s: {what}")


async def close_all(streams: list[anyio.abc.SocketStream]) -> None:
    for stream in streams:
        await anyio.aclose_forcefully(stream)


def metric(text: str, name: str) -> float:
    """One sample of the Prometheus text ``text`` (name with labels, exactly as rendered)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    pytest.fail(f"{name} not in /metrics:\n{text}")


def no_tracebacks(records: list[logging.LogRecord]) -> None:
    bad = [r for r in records if r.exc_info or r.levelno >= logging.WARNING or "Traceback" in r.getMessage()]
    assert not bad, [f"{r.name} {r.levelname}: {r.getMessage()}" for r in bad]


def ours(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """Log records from the bridge or anyio (not from the test's own HTTP client)."""
    return [r for r in records if r.name.startswith(("radical_edge", "anyio"))]


# ---------------------------------------------------------------- 1. fd exhaustion


#: the bridge process's fd limit, and the flood that exceeds it
FD_LIMIT = 128
FLOOD = 300


@contextlib.contextmanager
def bridge_process(tmp_path: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m radical_edge_bridge`` (plain HTTP) with ``FD_LIMIT`` fds; killed on exit."""
    out, err = tmp_path / "bridge.stdout", tmp_path / "bridge.stderr"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADICAL_BRIDGE_")}
    env.update(HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    args = ["-m", "radical_edge_bridge", "--port", "0", "--insecure-no-tls", "--token", TOKEN, *extra]
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.DEVNULL, stdout=o, stderr=e, env=env)
    try:
        # set from here, not in a preexec_fn (unsafe with threads); the interpreter holds a handful of fds yet
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
        deadline = time.monotonic() + 15
        while not (match := URL_LINE.search(out.read_text())):
            assert proc.poll() is None, f"bridge exited:\n{err.read_text()}"
            assert time.monotonic() < deadline, f"no URL line:\n{err.read_text()}"
            time.sleep(0.02)
        yield proc, match.group(1)
    finally:
        proc.kill()
        proc.wait(5)


def _healthz_answers(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        time.sleep(0.05)
    return False


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def test_fd_exhaustion_does_not_kill_the_bridge(tmp_path: Path) -> None:
    caps = ["--max-connections", "4096", "--max-connections-per-peer", "4096"]  # above the fd limit: EMFILE first
    with bridge_process(tmp_path, *caps) as (proc, url):
        port = int(url.rsplit(":", 1)[1])
        flood = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(FLOOD)]
        try:
            time.sleep(1.0)  # the bridge runs into EMFILE and (before the fix) dies of it
            stderr = (tmp_path / "bridge.stderr").read_text()
            assert proc.poll() is None, f"the bridge died of the flood:\n{stderr[-3000:]}"
            rss = _rss_kib(proc.pid)
            # release most of the flood while holding the rest: the bridge serves again at once
            for sock in flood[FLOOD // 6 :]:
                sock.close()
            del flood[FLOOD // 6 :]
            assert _healthz_answers(url, timeout=10), "no /healthz while part of the flood is still held"
        finally:
            for sock in flood:
                sock.close()
        assert _healthz_answers(url, timeout=10), "no /healthz after the flood"
        text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).text
        failed_accepts = metric(text, "radical_edge_accept_errors_total")
        assert failed_accepts > 0, "the flood never exhausted the fds: the test proved nothing"
        assert proc.poll() is None
    stderr = (tmp_path / "bridge.stderr").read_text()
    assert "Traceback" not in stderr, stderr[-3000:]
    warnings = [line for line in stderr.splitlines() if "WARNING" in line and "accept" in line]
    assert 1 <= len(warnings) <= 3, warnings  # rate-limited: not one per failed accept
    print(f"flood {FLOOD} connections, fd limit {FD_LIMIT}, {failed_accepts:g} failed accepts, RSS {rss} KiB")


def test_accept_backoff_doubles_to_half_a_second_resets_on_success_and_warns_rarely(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="radical_edge.bridge")
    backoff = AcceptBackoff()
    emfile = OSError(errno.EMFILE, "Too many open files")
    delays = [backoff.failed(emfile, now=i / 10) for i in range(9)]
    assert delays == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5, 0.5])
    backoff.succeeded()
    assert backoff.failed(emfile, now=1.0) == pytest.approx(0.01)
    assert len(caplog.records) == 1, "10 failures within 10 s: one warning"
    backoff.failed(emfile, now=11.0)
    assert len(caplog.records) == 2
    assert caplog.records[-1].getMessage().endswith("failed accepts since the last warning: 10)")


# ---------------------------------------------------------------- 2. connection caps


@pytest.mark.anyio
async def test_per_peer_cap_closes_the_excess_at_once_and_serves_other_peers(
    tls_files: tuple[Path, Path], client_ssl: ssl.SSLContext
) -> None:
    async with running_bridge(tls_config(tls_files, max_connections=20, max_connections_per_peer=5)) as bridge:
        held = [await raw(bridge) for _ in range(5)]
        await wait_until("5 connections open", lambda: bridge.metrics.connections.open == 5)
        extra = [await raw(bridge) for _ in range(3)]
        for stream in extra:
            assert await closed_by_server(stream, within=1.0), "a connection over the per-peer cap stayed open"
        assert await served(bridge, client_ssl, local="127.0.0.2"), "another peer was not served"
        for stream in held:
            assert not await closed_by_server(stream, within=0.05), "a connection under the cap was closed"
        async with https(bridge, client_ssl, local="127.0.0.3") as client:
            text = (await client.get("/metrics")).text
        assert metric(text, 'radical_edge_connections_refused_total{reason="per_peer"}') == 3
        assert metric(text, "radical_edge_connections_open") == 6  # the 5 held and this request's own
        await close_all(held + extra)
        await wait_until("the held slots released", lambda: bridge.metrics.connections.open == 0)
        assert await served(bridge, client_ssl), "the peer was not served again after closing its connections"


@pytest.mark.anyio
async def test_total_cap_closes_the_excess_at_once_and_recovers(
    tls_files: tuple[Path, Path], client_ssl: ssl.SSLContext
) -> None:
    async with running_bridge(tls_config(tls_files, max_connections=20, max_connections_per_peer=5)) as bridge:
        held = [await raw(bridge, f"127.0.0.{2 + i // 5}") for i in range(20)]  # 4 peers x 5
        await wait_until("20 connections open", lambda: bridge.metrics.connections.open == 20)
        extra = await raw(bridge, "127.0.0.9")
        assert await closed_by_server(extra, within=1.0), "a connection over the total cap stayed open"
        assert bridge.metrics.connections.refused["total"] == 1
        await close_all(held[:1])
        await wait_until("one slot free", lambda: bridge.metrics.connections.open == 19)
        assert await served(bridge, client_ssl, local="127.0.0.9"), "not served once a slot was free"
        await close_all([*held[1:], extra])
        await wait_until("all slots released", lambda: bridge.metrics.connections.open == 0)
        assert await served(bridge, client_ssl)


# ---------------------------------------------------------------- 3. plain TCP on the TLS port


@pytest.mark.anyio
async def test_garbage_on_the_tls_port_is_one_short_line_and_others_are_served(
    tls_files: tuple[Path, Path], client_ssl: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_bridge(tls_config(tls_files)) as bridge:
        caplog.clear()
        garbage = [await raw(bridge) for _ in range(3)]
        for stream in garbage:
            await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await served(bridge, client_ssl), "a good client was not served beside the garbage"
        for stream in garbage:
            assert await closed_by_server(stream, within=2.0), "a garbage connection was kept open"
        await close_all(garbage)
        await anyio.sleep(0.1)  # let the bridge finish its log lines
        no_tracebacks(caplog.records)
        assert len(ours(caplog.records)) <= len(garbage), [r.getMessage() for r in ours(caplog.records)]


@pytest.mark.anyio
async def test_a_silent_client_on_the_tls_port_is_dropped_after_the_handshake_timeout(
    tls_files: tuple[Path, Path], client_ssl: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = tls_config(tls_files, max_connections_per_peer=2, tls_handshake_timeout=0.5)
    async with running_bridge(config) as bridge:
        caplog.clear()
        silent = [await raw(bridge) for _ in range(2)]
        await wait_until("2 connections open", lambda: bridge.metrics.connections.open == 2)
        third = await raw(bridge)
        assert await closed_by_server(third, within=1.0), "the silent ones should hold the peer's 2 slots"
        assert await served(bridge, client_ssl, local="127.0.0.2"), "another peer was not served"
        for stream in silent:
            assert await closed_by_server(stream, within=3.0), "a silent connection outlived the handshake timeout"
        await wait_until("the silent slots released", lambda: bridge.metrics.connections.open == 0)
        assert await served(bridge, client_ssl), "the peer was not served once its slots were free"
        await close_all([*silent, third])
        no_tracebacks(caplog.records)
        handshake_lines = [r for r in ours(caplog.records) if "handshake" in r.getMessage().lower()]
        assert len(handshake_lines) <= len(silent), [r.getMessage() for r in handshake_lines]
        assert bridge.metrics.connections.tls_handshake_failures == 2
