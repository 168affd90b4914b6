"""Load drivers of ``radical-edge bench``: wrk, a raw-socket HTTP/1.1 client, the tunnel protocol, bulk transfers.

Every driver runs for a bounded time and returns a :class:`LoadResult`.  The
Python drivers verify TLS with the benchmark's dev CA; wrk does not verify
certificates at all (acceptable for a loopback benchmark, and said so in the output).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio

from radical_edge_proto import PeerRole
from radical_edge_tunnel import BridgeSettings, Redialer, Tunnel


@dataclass(frozen=True)
class Target:
    """Where the Python drivers connect: a TLS server on loopback, and the bearer token to send."""

    host: str
    port: int
    ctx: ssl.SSLContext
    token: str


@dataclass
class LoadResult:
    requests: int
    seconds: float
    errors: int
    latencies_us: list[float] = field(default_factory=list, repr=False)
    p50_us: float | None = None
    p99_us: float | None = None
    #: CPU seconds this process (the driver) spent, when it is the Python driver
    client_cpu: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        if q == 50 and self.p50_us is not None:
            return self.p50_us
        if q == 99 and self.p99_us is not None:
            return self.p99_us
        if not self.latencies_us:
            return None
        data = sorted(self.latencies_us)
        return data[min(len(data) - 1, round(q / 100 * (len(data) - 1)))]

    def summary(self) -> dict[str, Any]:
        p50, p99 = self.percentile(50), self.percentile(99)
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "errors": self.errors,
            "rps": round(self.rps, 1),
            "p50_ms": None if p50 is None else round(p50 / 1000, 4),
            "p99_ms": None if p99 is None else round(p99 / 1000, 4),
        }


# ---------------------------------------------------------------------------- wrk

_WRK_SCRIPT = """
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer %s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK-JSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, \\"p99_us\\": %%d, " ..
    "\\"errors\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    path = wrk_path()
    if path is None:
        return ""
    out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10, check=False)
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "wrk"


def run_wrk(url: str, token: str, connections: int, duration: float) -> LoadResult:
    """wrk with one thread (the machine's other cores serve), keep-alive, an Authorization header."""
    path = wrk_path()
    assert path is not None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(_WRK_SCRIPT % token)
        script = fh.name
    try:
        os.chmod(script, 0o600)
        seconds = max(1, round(duration))
        cmd = [path, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", script, url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    finally:
        os.unlink(script)
    for line in out.stdout.splitlines():
        if line.startswith("WRK-JSON "):
            data = json.loads(line[len("WRK-JSON ") :])
            break
    else:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}")
    non2xx = 0
    for line in out.stdout.splitlines():
        if "Non-2xx or 3xx responses:" in line:
            non2xx = int(line.split(":")[1])
    return LoadResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        errors=int(data["errors"]) + non2xx,
        p50_us=float(data["p50_us"]),
        p99_us=float(data["p99_us"]),
    )


# ---------------------------------------------------------------------------- HTTP/1.1 response parsing


class ResponseReader:
    """Incremental HTTP/1.1 response parser (Content-Length and chunked bodies); counts body bytes."""

    def __init__(self, keep_body: bool = True) -> None:
        self.keep_body = keep_body
        self._buf = bytearray()
        self._state = "head"
        self._remaining = 0
        self.status = 0
        self.body = bytearray()
        self.body_bytes = 0
        #: (status, body) of each complete response, oldest first
        self.done: deque[tuple[int, bytes]] = deque()

    def _take(self, n: int) -> None:
        if self.keep_body:
            self.body += self._buf[:n]
        self.body_bytes += n
        del self._buf[:n]

    def _complete(self) -> None:
        self.done.append((self.status, bytes(self.body)))
        self.body.clear()
        self._state = "head"

    def feed(self, data: bytes) -> None:
        if self._state == "body" and not self._buf and not self.keep_body and len(data) <= self._remaining:
            # the bulk fast path: count without copying
            self.body_bytes += len(data)
            self._remaining -= len(data)
            if not self._remaining:
                self._complete()
            return
        self._buf += data
        buf = self._buf
        while buf:
            state = self._state
            if state == "head":
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > 65536:
                        raise ValueError("response head too large")
                    return
                lines = bytes(buf[:end]).split(b"\r\n")
                del buf[: end + 4]
                self.status = int(lines[0].split(b" ", 2)[1])
                length, chunked = 0, False
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"transfer-encoding" and b"chunked" in value.lower():
                        chunked = True
                if chunked:
                    self._state = "size"
                elif length:
                    self._state, self._remaining = "body", length
                else:
                    self._complete()
            elif state in ("body", "chunk"):
                n = min(len(buf), self._remaining)
                self._take(n)
                self._remaining -= n
                if self._remaining:
                    return
                if state == "body":
                    self._complete()
                else:
                    self._state = "crlf"
            elif state == "crlf":
                if len(buf) < 2:
                    return
                del buf[:2]
                self._state = "size"
            elif state == "size":
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buf[:end]).split(b";")[0], 16)
                del buf[: end + 2]
                if size:
                    self._state, self._remaining = "chunk", size
                else:
                    self._state = "trailer"
            else:  # trailer
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                line = bytes(buf[:end])
                del buf[: end + 2]
                if not line:
                    self._complete()


def request_bytes(method: str, path: str, token: str, host: str, extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n{extra}\r\n").encode(
        "latin-1"
    )


# ---------------------------------------------------------------------------- raw-socket keep-alive client


class _LoadProtocol(asyncio.Protocol):
    """One connection: keeps ``depth`` requests in flight until ``stop_at``; records latencies."""

    def __init__(self, request: bytes, depth: int, stop_at: float, expect: bytes | None) -> None:
        self.request = request
        self.depth = depth
        self.stop_at = stop_at
        self.expect = expect
        self.reader = ResponseReader(keep_body=expect is not None)
        self.sent: deque[float] = deque()
        self.latencies: list[float] = []
        self.errors = 0
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        now = time.perf_counter()
        transport.write(self.request * self.depth)
        self.sent.extend([now] * self.depth)

    def data_received(self, data: bytes) -> None:
        try:
            self.reader.feed(data)
        except ValueError:
            self.errors += 1
            self._finish()
            return
        now = time.perf_counter()
        done = self.reader.done
        while done:
            status, body = done.popleft()
            self.latencies.append((now - self.sent.popleft()) * 1e6)
            if status != 200 or (self.expect is not None and body != self.expect):
                self.errors += 1
            if now < self.stop_at:
                assert self.transport is not None
                self.transport.write(self.request)
                self.sent.append(now)
        if not self.sent:
            self._finish()

    def _finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sent:
            self.errors += len(self.sent)
            self.sent.clear()
        if not self.finished.done():
            self.finished.set_result(None)


def _same(proto: _LoadProtocol) -> _LoadProtocol:
    return proto


async def run_http_load(
    target: Target,
    path: str,
    connections: int,
    duration: float,
    *,
    depth: int = 1,
    expect: bytes | None = None,
) -> LoadResult:
    """Keep-alive GETs on ``connections`` TLS connections for ``duration`` seconds."""
    loop = asyncio.get_running_loop()
    host, port = target.host, target.port
    request = request_bytes("GET", path, target.token, f"{host}:{port}")
    cpu0 = time.process_time()
    start = time.perf_counter()
    stop_at = start + duration
    protocols = [_LoadProtocol(request, depth, stop_at, expect) for _ in range(connections)]
    transports = []
    try:
        with anyio.fail_after(duration + 30):
            for proto in protocols:
                transport, _ = await loop.create_connection(
                    functools.partial(_same, proto), host, port, ssl=target.ctx, server_hostname=host
                )
                transports.append(transport)
            await asyncio.gather(*(p.finished for p in protocols))
    finally:
        for transport in transports:
            transport.close()
    seconds = time.perf_counter() - start
    latencies = [x for p in protocols for x in p.latencies]
    return LoadResult(
        requests=len(latencies),
        seconds=seconds,
        errors=sum(p.errors for p in protocols),
        latencies_us=latencies,
        client_cpu=time.process_time() - cpu0,
    )


# ---------------------------------------------------------------------------- the SDK's WebSocket (/connect)


class TunnelClient:
    """A client connection to the bridge's ``/connect``: the protocol the SDK speaks, driven directly.

    It finds and dials the bridge as the SDK does (:class:`~radical_edge_tunnel.BridgeSettings`,
    :class:`~radical_edge_tunnel.Redialer`), but once: a load run that loses its connection failed.
    """

    def __init__(self, url: str, token: str, ca: str) -> None:
        self.settings = BridgeSettings.create(url, token=token, cert=ca)
        self.tunnel: Tunnel | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        dialer = Redialer(self.settings, role=PeerRole.CLIENT, name="bench", label="bench client")
        self.tunnel = await dialer.connect()
        async with anyio.create_task_group() as tg:
            await tg.start(self.tunnel.run)
            task_status.started()

    async def get(self, path: str) -> tuple[int, bytes]:
        assert self.tunnel is not None
        stream = await self.tunnel.request("GET", path, end_stream=True)
        response = await stream.wait_response()
        body = b""
        while chunk := await stream.receive():
            body += chunk
        return response.status, body

    async def aclose(self) -> None:
        if self.tunnel is not None:
            await self.tunnel.aclose()


async def run_tunnel_load(
    client: TunnelClient, path: str, concurrency: int, duration: float, *, expect: bytes | None = None
) -> LoadResult:
    """``concurrency`` streams at a time on one WebSocket, for ``duration`` seconds."""
    latencies: list[float] = []
    errors = 0
    cpu0 = time.process_time()
    start = time.perf_counter()
    stop_at = start + duration

    async def worker() -> None:
        nonlocal errors
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            try:
                status, body = await client.get(path)
            except Exception:
                errors += 1
                await anyio.sleep(0.01)
                continue
            latencies.append((time.perf_counter() - t0) * 1e6)
            if status != 200 or (expect is not None and body != expect):
                errors += 1

    with anyio.fail_after(duration + 30):
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
    return LoadResult(
        requests=len(latencies),
        seconds=time.perf_counter() - start,
        errors=errors,
        latencies_us=latencies,
        client_cpu=time.process_time() - cpu0,
    )


# ---------------------------------------------------------------------------- bulk transfers


class Progress:
    """Bytes moved so far by a transfer (read while it runs)."""

    def __init__(self) -> None:
        self.nbytes = 0


class _BulkProtocol(asyncio.Protocol):
    def __init__(self, keep_body: bool, progress: Progress | None) -> None:
        self.progress = progress
        self.reader = ResponseReader(keep_body=keep_body)
        self.response: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=1 << 20)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        if self.progress is not None:
            self.progress.nbytes += len(data)
        if self.reader.done and not self.response.done():
            self.response.set_result(self.reader.done.popleft())

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.can_write.set()
        if not self.response.done():
            self.response.set_exception(ConnectionError(f"connection lost: {exc}"))


@dataclass
class Transfer:
    nbytes: int
    seconds: float
    status: int

    @property
    def mib_s(self) -> float:
        return self.nbytes / (1 << 20) / self.seconds if self.seconds > 0 else 0.0


async def _bulk(target: Target, head: bytes, upload: int, timeout: float, progress: Progress | None) -> Transfer:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(
        lambda: _BulkProtocol(bool(upload), progress),
        target.host,
        target.port,
        ssl=target.ctx,
        server_hostname=target.host,
    )
    try:
        with anyio.fail_after(timeout):
            start = time.perf_counter()
            transport.write(head)
            if upload:
                block = b"\xa5" * (256 * 1024)
                left = upload
                while left > 0 and not proto.response.done():
                    await proto.can_write.wait()
                    n = min(left, len(block))
                    transport.write(block if n == len(block) else block[:n])
                    left -= n
            status, body = await proto.response
            seconds = time.perf_counter() - start
    finally:
        transport.close()
    if upload:
        counted = json.loads(body or b"{}").get("bytes", -1) if status == 200 else -1
        return Transfer(counted, seconds, status)
    return Transfer(proto.reader.body_bytes, seconds, status)


async def download(target: Target, path: str, timeout: float, progress: Progress | None = None) -> Transfer:
    """GET ``path`` and count the body (it is never held)."""
    head = request_bytes("GET", path, target.token, f"{target.host}:{target.port}")
    return await _bulk(target, head, 0, timeout, progress)


async def upload(target: Target, path: str, size: int, timeout: float) -> Transfer:
    """POST ``size`` bytes to ``path``; ``nbytes`` is what the app counted."""
    extra = f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n"
    head = request_bytes("POST", path, target.token, f"{target.host}:{target.port}", extra)
    return await _bulk(target, head, size, timeout, None)
