"""Staging in the benchmark: a file up and down through the staging plugin, next to a raw TLS socket copy.

The floor is a **raw TLS copy on loopback**: a server process (``python -m
radical_edge_bench._staging raw-server``: ``ssl`` + ``socket``, 4 MiB socket
buffers, 1 MiB reads and writes) that receives N bytes and writes them to a
file in the bench's temporary directory, or sends a file's N bytes; the bench
process is the client, reading from and writing to local files the same way.
Both ends ``fsync`` the file they wrote, as the staging plugin (upload) and
the SDK (download) do.  No hashing, no HTTP: the cheapest way to move a file
over TLS in Python.  The same copy is then timed verified with SHA-256 as
the staging path verifies (the SDK's default): an upload hashed on both ends
(the client what it sends, the server what it writes) and a download by the
client as it receives, each compared with the other end's digest (the server
knows its file's beforehand, as the edge's checksum cache does), straight to
the server and through each relay of section 8: the least any implementation
of the verified staging path could cost on this machine, without HTTP,
WebSocket, the tunnel protocol or the atomic write.

The measured path is the bench's bridge and edge (the edge runs the staging
plugin, its root in the bench's temporary directory), driven by the SDK's
:class:`~radical_edge_client.AsyncStagingClient` as a user drives it: upload
from a file, download to a file, SHA-256 verified on both sides (the SDK
hashes what it sends and receives in worker threads; the edge hashes as it
writes).  Then the same two routes once more with the raw copy's client
speaking plain HTTP/1.1 to the bridge (``PUT upload/{sid}?sha256=``, ``GET
file/{sid}``; no SDK, no hashing in the client): the difference is the SDK's
share.  The CPU of the bridge, the edge, the raw server and the bench process
itself (the client) is read from ``/proc`` / ``process_time`` per GiB moved,
so one can tell which process a rate is bound by.  The targets
(``staging upload/raw TLS >= 0.5``, ``staging download/raw TLS >= 0.5``) are
the SDK's rates: what a user gets.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import ssl
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _aiorelay as aio_relay  # standard library only, like this module
from . import _relay as c_relay

if TYPE_CHECKING:  # only the standard library at import: the table (_report) reads render() without the extras
    from ._bench import Bench, Proc

HOST = "127.0.0.1"
MIB = 1 << 20
GIB = 1 << 30
CHUNK = MIB
SOCKET_BUFFER = 4 * MIB
RAW_READY = "RAW-TLS-READY"
#: the staging root of the bench's edge, and the raw server's directory, under the bench's temporary directory
ROOT_DIR = "staging-root"
RAW_DIR = "raw-tls"
#: staging rate / raw TLS copy rate >=
TARGET_RATIO = 0.5
#: each transfer is timed this many times and the fastest kept: the first write of a few hundred MiB into fresh
#: page cache costs several times what later ones do on a VM (its memory is touched for the first time), and
#: whichever measurement ran first would pay for it
RUNS = 2
#: how the raw server process starts (``-m`` would import this module twice: the package imports it)
RAW_PROGRAM = "import sys; from radical_edge_bench._staging import main; sys.exit(main())"
DRIVER = (
    "the SDK's AsyncStagingClient in the bench process, tuned as the CLI's (upload from a file, download to a "
    f"file, SHA-256 verified on both sides); every rate the fastest of {RUNS} runs"
)
RAW_DETAIL = (
    "a TLS server process (ssl + socket, 4 MiB socket buffers, 1 MiB file reads/writes, fsync) receiving a file / "
    "sending one; the bench process the client, from/to local files, no hashing, no HTTP"
)


def edge_args(workdir: Path) -> list[str]:
    """The arguments of the bench's edge process that add the staging plugin, its root made in ``workdir``."""
    root = workdir / ROOT_DIR
    root.mkdir(parents=True, exist_ok=True)
    return ["--staging-root", str(root)]


# ---------------------------------------------------------------------------- the raw TLS copy


def _tune(sock: socket.socket) -> None:
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _recv_exact(sock: ssl.SSLSocket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"the peer closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


def receive_to_file(sock: ssl.SSLSocket, path: Path, size: int, first: bytes = b"", digest: Any = None) -> int:
    """``size`` bytes (``first`` of them already read) from ``sock`` into a new file at ``path`` (1 MiB writes,
    then fsync), each piece also fed to ``digest`` if given; the bytes received."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    got = len(first)
    try:
        _write_all(fd, memoryview(first))
        if digest is not None:
            digest.update(first)
        while got < size:
            filled = 0
            want = min(CHUNK, size - got)
            while filled < want:  # one TLS record per recv: gather a whole chunk before writing
                n = sock.recv_into(view[filled:want])
                if not n:
                    break
                filled += n
            if not filled:
                break
            _write_all(fd, view[:filled])
            if digest is not None:
                digest.update(view[:filled])
            got += filled
            if filled < want:
                break
        os.fsync(fd)
    finally:
        os.close(fd)
    return got


def send_file(sock: ssl.SSLSocket, path: Path, size: int, digest: Any = None) -> int:
    """The first ``size`` bytes of ``path`` to ``sock`` (1 MiB reads), each piece also fed to ``digest`` if given;
    the bytes sent."""
    sent = 0
    with open(path, "rb", buffering=0) as fh:
        while sent < size:
            data = fh.read(min(CHUNK, size - sent))
            if not data:
                break
            sock.sendall(data)
            if digest is not None:
                digest.update(data)
            sent += len(data)
    return sent


def serve_raw(cert: str, key: str, directory: Path) -> int:
    """The raw TLS copy server: one connection at a time, ``U`` + flag + size (receive into ``raw-up.bin``,
    answer the count) or ``D`` + flag + size (send ``raw-down.bin``), or ``S`` + flag + size (answer the
    SHA-256 of ``raw-down.bin``'s first ``size`` bytes, computed once per version of the file and remembered).

    With the flag ``1`` a copy is verified the way the staging path verifies: an upload is hashed as it is
    written (the edge does that) and its digest sent after the count, for the client, which hashed what it sent
    (the SDK does that), to compare; a download is followed by the remembered digest (the edge answers from its
    checksum cache a file it has hashed before), and the client hashes what it receives."""
    digests: dict[tuple[int, ...], bytes] = {}
    down = directory / "raw-down.bin"

    def digest_of_down(size: int) -> bytes:
        info = os.stat(down)
        version = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, size)
        if version not in digests:
            digests[version] = bytes.fromhex(sha256_of(down, size))
        return digests[version]

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _tune(listener)
    listener.bind((HOST, 0))
    listener.listen(8)
    print(f"{RAW_READY} {listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        _tune(conn)
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                head = _recv_exact(tls, 10)
                op, verify, size = head[:1], head[1:2] == b"1", int.from_bytes(head[2:], "big")
                if op == b"U":
                    digest = hashlib.sha256() if verify else None
                    got = receive_to_file(tls, directory / "raw-up.bin", size, digest=digest)
                    tls.sendall(got.to_bytes(8, "big") + (digest.digest() if digest else b""))
                elif op == b"D":
                    known = digest_of_down(size) if verify else b""
                    send_file(tls, down, size)
                    tls.sendall(known)
                elif op == b"S":
                    tls.sendall(digest_of_down(size))
        except (OSError, ConnectionError) as exc:
            print(f"raw TLS server: {exc}", file=sys.stderr, flush=True)


def _connect(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    sock = socket.create_connection((HOST, port), timeout=600)
    _tune(sock)
    return ctx.wrap_socket(sock, server_hostname=HOST)


def _head(op: bytes, size: int, verify: bool) -> bytes:
    return op + (b"1" if verify else b"0") + size.to_bytes(8, "big")


def _compare(ours: Any, theirs: bytes, what: str) -> None:
    if ours is not None and ours.digest() != theirs:
        raise RuntimeError(f"raw TLS copy: the two ends' SHA-256 of the {what} differ")


def raw_known_digest(port: int, ctx: ssl.SSLContext, size: int) -> str:
    """The SHA-256 (hex) of the raw server's download file, which it then remembers (before a verified
    :func:`raw_download`, as the edge has hashed a file it received)."""
    with _connect(port, ctx) as tls:
        tls.sendall(_head(b"S", size, True))
        return _recv_exact(tls, 32).hex()


def raw_upload(port: int, ctx: ssl.SSLContext, source: Path, size: int, verify: bool = False) -> tuple[float, int]:
    """Send ``size`` bytes of ``source`` to the raw server (which writes and fsyncs them); seconds and the bytes
    it says it wrote.  The TLS handshake is not timed (the SDK's connection is up before its transfers too).
    ``verify``: both ends hash the bytes (SHA-256) and the digests are compared, as in the SDK's verified
    upload to the edge (RuntimeError if they differ)."""
    digest = hashlib.sha256() if verify else None
    with _connect(port, ctx) as tls:
        start = time.perf_counter()
        tls.sendall(_head(b"U", size, verify))
        send_file(tls, source, size, digest)
        answer = _recv_exact(tls, 8 + (32 if verify else 0))
        _compare(digest, answer[8:], "upload")
        return time.perf_counter() - start, int.from_bytes(answer[:8], "big")


def raw_download(port: int, ctx: ssl.SSLContext, target: Path, size: int, verify: bool = False) -> tuple[float, int]:
    """Receive ``size`` bytes from the raw server into ``target`` (written and fsynced); seconds and bytes.
    ``verify``: this end hashes what it receives and compares that with the digest the server sends after the
    bytes (known before: :func:`raw_known_digest`), as the SDK's verified download from the edge does
    (RuntimeError if they differ)."""
    digest = hashlib.sha256() if verify else None
    with _connect(port, ctx) as tls:
        start = time.perf_counter()
        tls.sendall(_head(b"D", size, verify))
        got = receive_to_file(tls, target, size, digest=digest)
        if digest is not None:
            _compare(digest, _recv_exact(tls, 32), "download")
        return time.perf_counter() - start, got


# ---------------------------------------------------------------------------- the same client, HTTP to the bridge


def _read_head(sock: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    """An HTTP/1.1 answer's status and headers; the bytes of the body read with them."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the connection closed before the answer's head: {data[:200]!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


@dataclass(frozen=True)
class Endpoint:
    """The bridge, for the raw client's HTTP requests."""

    port: int
    ctx: ssl.SSLContext
    token: str


def _request(method: str, bridge: Endpoint, target: str, length: int | None = None) -> bytes:
    body = f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n" if length is not None else ""
    return (
        f"{method} {target} HTTP/1.1\r\nHost: {HOST}:{bridge.port}\r\nAuthorization: Bearer {bridge.token}\r\n"
        f"Connection: close\r\n{body}\r\n"
    ).encode()


def http_upload(bridge: Endpoint, target: str, source: Path, size: int) -> tuple[float, int]:
    """``PUT target`` with ``size`` bytes of ``source`` as the body, the raw client's way (1 MiB reads, no
    hashing); seconds and the answer's status."""
    with _connect(bridge.port, bridge.ctx) as tls:
        start = time.perf_counter()
        tls.sendall(_request("PUT", bridge, target, size))
        send_file(tls, source, size)
        status, headers, rest = _read_head(tls)
        length = int(headers.get("content-length") or 0)
        if length > len(rest):
            _recv_exact(tls, length - len(rest))
        return time.perf_counter() - start, status


def http_download(bridge: Endpoint, target: str, local: Path) -> tuple[float, int, int]:
    """``GET target`` into the file ``local`` (1 MiB writes, fsync, no hashing); seconds, status and bytes."""
    with _connect(bridge.port, bridge.ctx) as tls:
        start = time.perf_counter()
        tls.sendall(_request("GET", bridge, target))
        status, headers, rest = _read_head(tls)
        length = int(headers.get("content-length") or 0)
        got = receive_to_file(tls, local, length, rest) if status == 200 else 0
        return time.perf_counter() - start, status, got


# ---------------------------------------------------------------------------- the measurement


def make_source(path: Path, size: int) -> str:
    """A file of ``size`` bytes that differs at every MiB (misplaced chunks show in the checksum); its SHA-256."""
    digest = hashlib.sha256()
    block = bytearray(os.urandom(CHUNK))
    with open(path, "wb", buffering=0) as fh:
        left, i = size, 0
        while left:
            block[:8] = i.to_bytes(8, "big")
            piece = memoryview(block)[: min(CHUNK, left)]
            fh.write(piece)
            digest.update(piece)
            left -= len(piece)
            i += 1
    return digest.hexdigest()


def sha256_of(path: Path, size: int | None = None) -> str:
    """The SHA-256 (hex) of the file at ``path``, or of its first ``size`` bytes."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        left = os.fstat(fh.fileno()).st_size if size is None else size
        while left > 0 and (data := fh.read(min(CHUNK, left))):
            digest.update(data)
            left -= len(data)
    return digest.hexdigest()


def _per_gib(seconds: float, size: int) -> float:
    return round(seconds * GIB / size, 3)


def _rate(size: int, seconds: float) -> float:
    return round(size / MIB / seconds, 1) if seconds > 0 else 0.0


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


class _Cpu:
    """CPU seconds of some server processes and of this process (the client) over a ``with`` block."""

    def __init__(self, procs: dict[str, Proc]) -> None:
        self.procs = procs
        self.spent: dict[str, float] = {}

    def __enter__(self) -> _Cpu:
        self.before = {n: p.cpu() for n, p in self.procs.items()}
        self.client = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.spent = {n: p.cpu() - self.before[n] for n, p in self.procs.items()}
        self.spent["client"] = time.process_time() - self.client

    def per_gib(self, size: int) -> dict[str, float]:
        out = {n: _per_gib(v, size) for n, v in self.spent.items()}
        if "bridge" in out and "edge" in out:
            out["bridge+edge"] = _per_gib(self.spent["bridge"] + self.spent["edge"], size)
        return out


async def _fastest(
    procs: dict[str, Proc], transfer: Callable[[], Awaitable[tuple[float, Any]]]
) -> tuple[float, Any, _Cpu]:
    """``transfer()`` -> (seconds, result), :data:`RUNS` times: the fastest run, with the CPU spent in it."""
    best: tuple[float, Any, _Cpu] | None = None
    for _ in range(RUNS):
        with _Cpu(procs) as cpu:
            seconds, result = await transfer()
        if best is None or seconds < best[0]:
            best = (seconds, result, cpu)
    assert best is not None
    return best


async def measure(bench: Bench, res: dict[str, Any]) -> None:
    """The staging section: ``res["staging"]`` (see the module's docstring)."""
    import anyio.to_thread  # noqa: PLC0415

    from radical_edge_cli import ensure_dev_tls  # noqa: PLC0415
    from radical_edge_client import AsyncBridgeClient, AsyncStagingClient  # noqa: PLC0415

    from ._bench import EDGE, Proc, _log  # noqa: PLC0415  (that module imports this one)

    size = bench.o.size_mib * MIB
    work = bench.dir / "staging-local"
    raw_dir = bench.dir / RAW_DIR
    root = bench.dir / ROOT_DIR
    for d in (work, raw_dir, root):
        d.mkdir(parents=True, exist_ok=True)
    source = work / "source.bin"
    _log(f"bench: staging, {bench.o.size_mib} MiB: making the source file")
    expected = await anyio.to_thread.run_sync(make_source, source, size)
    out: dict[str, Any] = {"size_mib": bench.o.size_mib, "driver": DRIVER, "raw_tls_detail": RAW_DETAIL}

    # 1. the floor: a raw TLS copy on loopback, both ways
    tls = ensure_dev_tls(bench.dir / "tls")  # this run's files (made by Bench.start(), reused as they are)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RADICAL_BRIDGE_TOKEN", None)
    raw = Proc(
        "raw-tls",
        [
            sys.executable,
            "-c",
            RAW_PROGRAM,
            "raw-server",
            "--cert",
            str(tls.cert),
            "--key",
            str(tls.key),
            "--dir",
            str(raw_dir),
            "--max-seconds",
            str(600 + 40 * size / MIB),
        ],
        env,
        bench.dir / "raw-tls.log",
    )
    bench.procs["raw-tls"] = raw  # stopped with the others
    try:
        port = int(raw.wait_for(rf"{RAW_READY} (\d+)", 30).group(1))
        ctx = ssl.create_default_context(cafile=bench.ca)
        os.link(source, raw_dir / "raw-down.bin")
        _log(f"bench: staging, {bench.o.size_mib} MiB: raw TLS copy up and down (the floor)")
        await anyio.to_thread.run_sync(raw_upload, port, ctx, source, min(size, MIB))  # warm up
        server = {"server": raw}
        up_s, written, up_cpu = await _fastest(
            server, lambda: anyio.to_thread.run_sync(raw_upload, port, ctx, source, size)
        )
        down_s, received, down_cpu = await _fastest(
            server, lambda: anyio.to_thread.run_sync(raw_download, port, ctx, work / "raw-back.bin", size)
        )
        if written != size or received != size:
            raise RuntimeError(f"raw TLS copy: {written} bytes up, {received} down, of {size}\n{raw.log_tail()}")
        out["raw_tls"] = {
            "upload_mib_s": _rate(size, up_s),
            "download_mib_s": _rate(size, down_s),
            "upload_cpu_s_per_gib": up_cpu.per_gib(size),
            "download_cpu_s_per_gib": down_cpu.per_gib(size),
        }

        async def through(relay_port: int, name: str, verify: bool = False) -> dict[str, float]:
            """The same copy through a relay on ``relay_port`` (or straight to the server): the rates (fastest of
            the runs, as above); ``verify``: verified with SHA-256 as staging verifies (see raw_upload and
            raw_download)."""
            r_up, r_written, _ = await _fastest(
                {}, lambda: anyio.to_thread.run_sync(raw_upload, relay_port, ctx, source, size, verify)
            )
            back = work / "raw-back.bin"
            r_down, r_received, _ = await _fastest(
                {}, lambda: anyio.to_thread.run_sync(raw_download, relay_port, ctx, back, size, verify)
            )
            if r_written != size or r_received != size:
                raise RuntimeError(
                    f"raw TLS copy through {name}: {r_written} bytes up, {r_received} down, of {size}\n{raw.log_tail()}"
                )
            return {"upload_mib_s": _rate(size, r_up), "download_mib_s": _rate(size, r_down)}

        # the copy verified with SHA-256 as the staging path verifies it: an upload hashed on both ends (SDK, edge),
        # a download by the receiver against a digest the sender knew (the edge's checksum cache)
        _log(f"bench: staging, {bench.o.size_mib} MiB: raw TLS copy verified with SHA-256")
        known = await anyio.to_thread.run_sync(raw_known_digest, port, ctx, size)
        if known != expected:
            raise RuntimeError(f"the raw server's SHA-256 of the source: {known}, expected {expected}")
        hashed = out["raw_tls_sha256"] = {"direct": await through(port, "the raw server", verify=True)}
        # the same copies through one TLS relay in C (._relay) and one on asyncio (._aiorelay): the tunnel's shape
        if c_relay.socat_path() is not None:
            _log(f"bench: staging, {bench.o.size_mib} MiB: raw TLS copy through a C relay")
            with c_relay.relay(port, tls.cert, tls.key, tls.ca, bench.dir / "socat-raw.log") as relay_port:
                out["raw_tls_relay"] = await through(relay_port, "socat")
                hashed["relay"] = await through(relay_port, "socat", verify=True)
        _log(f"bench: staging, {bench.o.size_mib} MiB: raw TLS copy through an asyncio relay")
        with aio_relay.relay(
            bench.procs,
            "aio-relay-raw",
            tls=(tls.cert, tls.key, tls.ca),
            upstream=port,
            env=env,
            log=bench.dir / "aio-relay-raw.log",
            max_seconds=600 + 40 * size / MIB,
        ) as (relay_port, relay):
            out["raw_tls_aio_relay"] = await through(relay_port, "the asyncio relay")
            hashed["aio_relay"] = await through(relay_port, "the asyncio relay", verify=True)
            # the copies it carried (each dialled the server, as a copy straight to it does): proof they went through
            out["raw_tls_aio_relay"]["connections"] = sum(aio_relay.stats(relay))
    finally:
        raw.stop()
        bench.procs.pop("raw-tls", None)
        for leftover in (raw_dir / "raw-up.bin", raw_dir / "raw-down.bin", work / "raw-back.bin"):
            leftover.unlink(missing_ok=True)

    # 2. the staging plugin through the bridge and the edge, driven by the SDK
    servers = {"bridge": bench.procs["bridge"], "edge": bench.procs["edge"]}
    remote = f"{root}/up.bin"
    back = work / "back.bin"
    url = f"https://{HOST}:{bench.bridge_port}"
    async with AsyncBridgeClient(url, token=bench.token, cert=bench.ca, timeout=120) as client:
        staging = await (await client.get_edge_client(EDGE)).get_plugin("staging")
        if not isinstance(staging, AsyncStagingClient):
            raise RuntimeError(f"the bench edge's staging plugin has no staging client: {type(staging).__name__}")
        warm = work / "warm.bin"
        await anyio.to_thread.run_sync(warm.write_bytes, os.urandom(MIB))
        await staging.upload(warm, f"{root}/warm.bin", overwrite=True)
        await staging.download(f"{root}/warm.bin", work / "warm-back.bin", overwrite=True)
        _log(f"bench: staging, {bench.o.size_mib} MiB: upload through the tunnel (the SDK)")

        async def sdk_upload() -> tuple[float, dict[str, Any]]:
            start = time.perf_counter()
            answer = await staging.upload(source, remote, overwrite=True, resume=False, verify=True)
            return time.perf_counter() - start, answer

        async def sdk_download() -> tuple[float, dict[str, Any]]:
            start = time.perf_counter()
            answer = await staging.download(remote, back, overwrite=True, resume=False, verify=True)
            return time.perf_counter() - start, answer

        up_s, up, up_cpu = await _fastest(servers, sdk_upload)
        _log(f"bench: staging, {bench.o.size_mib} MiB: download through the tunnel")
        down_s, down, down_cpu = await _fastest(servers, sdk_download)
        await staging.delete(remote)
        # the bytes arrived: the SDK compared SHA-256 with the edge's both ways; checked here once more on disk
        stored = await anyio.to_thread.run_sync(sha256_of, back)
        verified = up.get("sha256") == expected and down.get("sha256") == expected and stored == expected
        if not verified or up.get("size") != size or down.get("size") != size:
            raise RuntimeError(f"staging: source sha256 {expected}, upload {up}, download {down}, on disk {stored}")
        back.unlink()

        # 3. the same routes with the raw TLS copy's client speaking HTTP/1.1 to the bridge: no SDK, no client
        # hashing (the edge still checks the upload against sha256=), so the client's share shows
        _log(f"bench: staging, {bench.o.size_mib} MiB: the same through the bridge's HTTP, the raw client")
        base = f"/{EDGE}/staging"
        query = urllib.parse.urlencode({"path": remote, "size": size, "sha256": expected, "overwrite": "true"})
        put_target = f"{base}/{staging.session_path('upload')}?{query}"
        get_target = f"{base}/{staging.session_path('file')}?{urllib.parse.urlencode({'path': remote})}"
        bridge = Endpoint(bench.bridge_port, ssl.create_default_context(cafile=bench.ca), bench.token)
        http_up_s, put_status, http_up_cpu = await _fastest(
            servers, lambda: anyio.to_thread.run_sync(http_upload, bridge, put_target, source, size)
        )

        async def raw_http_download() -> tuple[float, tuple[int, int]]:
            seconds, status, got = await anyio.to_thread.run_sync(http_download, bridge, get_target, back)
            return seconds, (status, got)

        http_down_s, (get_status, got), http_down_cpu = await _fastest(servers, raw_http_download)
        http_stored = await anyio.to_thread.run_sync(sha256_of, back)
        if put_status != 200 or get_status != 200 or got != size or http_stored != expected:
            raise RuntimeError(
                f"staging over raw HTTP: PUT {put_status}, GET {get_status}, {got} of {size} bytes, sha256 "
                f"{http_stored} (expected {expected})\n{bench._logs()}"
            )
        await staging.delete(remote)
        await staging.delete(f"{root}/warm.bin")
    for leftover in (source, back, warm, work / "warm-back.bin"):
        leftover.unlink(missing_ok=True)
    out["staging_raw_http"] = {
        "upload_mib_s": _rate(size, http_up_s),
        "download_mib_s": _rate(size, http_down_s),
        "upload_cpu_s_per_gib": http_up_cpu.per_gib(size),
        "download_cpu_s_per_gib": http_down_cpu.per_gib(size),
        "ratios": {
            "upload": _ratio(_rate(size, http_up_s), out["raw_tls"]["upload_mib_s"]),
            "download": _ratio(_rate(size, http_down_s), out["raw_tls"]["download_mib_s"]),
        },
        "detail": "the raw TLS copy's client speaking HTTP/1.1 to the bridge (PUT upload/{sid} with sha256=, "
        "GET file/{sid}): no SDK, no hashing in the client",
    }
    out["staging"] = {
        "upload_mib_s": _rate(size, up_s),
        "download_mib_s": _rate(size, down_s),
        "upload_cpu_s_per_gib": up_cpu.per_gib(size),
        "download_cpu_s_per_gib": down_cpu.per_gib(size),
        "sha256": expected,
        "verified": verified,
    }
    out["ratios"] = {
        "upload": _ratio(out["staging"]["upload_mib_s"], out["raw_tls"]["upload_mib_s"]),
        "download": _ratio(out["staging"]["download_mib_s"], out["raw_tls"]["download_mib_s"]),
    }
    copy = out["raw_tls"]
    for relayed in [*(out[key] for _, key, _ in _RELAYS if key in out), *out["raw_tls_sha256"].values()]:
        relayed["ratios"] = {k: _ratio(relayed[f"{k}_mib_s"], copy[f"{k}_mib_s"]) for k in ("upload", "download")}
    res["staging"] = out


#: the targets table's reference columns, where this section keeps the raw copy through each relay, and what
#: each relay is written in
_RELAYS = (("relay", "raw_tls_relay", "in C"), ("aio_relay", "raw_tls_aio_relay", "on asyncio"))


def target_rows(res: dict[str, Any]) -> list[tuple[str, float | None, str, float, dict[str, float | None]]]:
    """The targets of this section: (name, value, op, limit, the same ratio through each relay: ``relay``
    (in C) and ``aio_relay`` (on asyncio), None where not measured)."""
    st = res.get("staging", {})
    ratios = st.get("ratios", {})
    relays = {ref: st.get(key, {}).get("ratios", {}) for ref, key, _ in _RELAYS}
    return [
        (f"staging {kind}/raw TLS", ratios.get(kind), ">=", TARGET_RATIO, {r: v.get(kind) for r, v in relays.items()})
        for kind in ("upload", "download")
    ]


def _fmt(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"


def _rates(copy: dict[str, Any]) -> str:
    return ", ".join(
        f"{kind} {copy[f'{kind}_mib_s']:.1f} ({_fmt(copy['ratios'][kind])})" for kind in ("upload", "download")
    )


def render(res: dict[str, Any]) -> list[str]:
    """The section's lines in the table (none if it did not run)."""
    st = res.get("staging")
    if not st:
        return []
    s, r = st["staging"], st["raw_tls"]
    lines = [
        f"7. staging, {st['size_mib']} MiB (MiB/s)                staging     raw TLS  staging/raw TLS",
    ]
    for kind in ("upload", "download"):
        lines.append(
            f"  {kind:<36}{s[f'{kind}_mib_s']:>11.1f}{r[f'{kind}_mib_s']:>12.1f}{_fmt(st['ratios'][kind]):>17}"
        )
    h = st.get("staging_raw_http")
    if h:
        lines.append(
            f"  without the SDK (the raw client, HTTP to the bridge): upload {h['upload_mib_s']:.1f} "
            f"({_fmt(h['ratios']['upload'])}), download {h['download_mib_s']:.1f} ({_fmt(h['ratios']['download'])})"
        )
    for kind in ("upload", "download"):
        cpu, raw = s[f"{kind}_cpu_s_per_gib"], r[f"{kind}_cpu_s_per_gib"]
        lines.append(
            f"  CPU s/GiB {kind}: bridge {cpu['bridge']:.2f}, edge {cpu['edge']:.2f}, SDK client {cpu['client']:.2f}; "
            f"raw server {raw['server']:.2f}, raw client {raw['client']:.2f}"
        )
        if h:
            cpu = h[f"{kind}_cpu_s_per_gib"]
            lines.append(
                f"    without the SDK: bridge {cpu['bridge']:.2f}, edge {cpu['edge']:.2f}, "
                f"raw client {cpu['client']:.2f}"
            )
    for _, key, what in _RELAYS:
        if relayed := st.get(key):
            lines.append(f"  the raw TLS copy through one TLS relay {what} (8.): {_rates(relayed)}")
    if verified := st.get("raw_tls_sha256"):
        lines.append(
            "  the raw TLS copy verified with SHA-256 as staging is (an upload hashed on both ends, a download by the "
            f"receiver against the sender's known digest): {_rates(verified['direct'])}"
        )
        for ref, _, what in _RELAYS:
            if ref in verified:
                lines.append(f"    and through the TLS relay {what}: {_rates(verified[ref])}")
    lines += [
        f"  staging: {st['driver']}; sha256 {'verified' if s['verified'] else 'NOT verified'}",
        f"  raw TLS: {st['raw_tls_detail']}",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m radical_edge_bench._staging raw-server --cert --key --dir``: the raw TLS copy server."""
    from ._procs import die_with_parent  # noqa: PLC0415

    p = argparse.ArgumentParser(prog="python -m radical_edge_bench._staging")
    p.add_argument("role", choices=["raw-server"])
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--max-seconds", type=float, default=3600.0)
    args = p.parse_args(argv)
    die_with_parent(args.max_seconds)
    return serve_raw(args.cert, args.key, Path(args.dir))


if __name__ == "__main__":
    sys.exit(main())
