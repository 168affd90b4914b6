"""One TLS relay on asyncio in front of the direct server (bench section 8, beside the C relay).

The C relay (:mod:`._relay`) shows what the machine takes of each ratio with no
Python on the path.  This one shows what Python's event loop takes, with none of
the tunnel's protocol work: an ``asyncio.Protocol`` pair per connection, asyncio's
own TLS on both sides (the client's TLS ended, a new TLS connection to the server,
its certificate verified against the run's CA), each piece forwarded as it arrives
and reading paused while the other side's write buffer is full.  No HTTP,
WebSocket or tunnel framing, no tasks after the dial, one process: the tunnel's
shape (a process between the client and the app's process, a second TLS
termination, a third busy process on the same cores) with the least Python.

``python -m radical_edge_bench._aiorelay --cert C --key K --ca CA --upstream PORT`` listens on
127.0.0.1, an ephemeral port, printed as ``RELAY-LISTENING PORT``.  ``prime N`` on its stdin dials N
connections to the server ahead of the clients that will take them (answered ``RELAY-PRIMED N``),
``stats`` counts the clients served from them and the others.  It dies with its parent and after
``--max-seconds``, as the bench's other processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ._procs import die_with_parent

if TYPE_CHECKING:  # this module runs as the relay's own process: the bench's machinery only where it starts one
    from ._bench import Proc

DETAIL = (
    "an asyncio.Protocol pair per connection, asyncio's own TLS both sides, flow control by pausing reads, "
    "no HTTP, WebSocket or tunnel framing: the client's TLS ended, a new TLS connection to the server, its "
    "certificate verified against the run's CA"
)


class _Half(asyncio.Protocol):
    """One side of a relayed connection: what it reads goes to ``peer``; either end's loss closes both."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # (nothing is dropped here: before the pairing only a server that speaks first could send, and HTTP does not)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def eof_received(self) -> bool | None:
        return False  # a TLS transport cannot half-close: the end of one side ends both (connection_lost)

    def connection_lost(self, exc: Exception | None) -> None:
        peer, self.peer = self.peer, None  # (the pair no longer holds itself: no work left for the collector)
        if peer is not None and peer.transport is not None:
            peer.transport.close()

    # the peer's write buffer is full: stop reading this side until it drains
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Upstream:
    """Connections to the server: dialled on demand, or ahead of time (``prime``) into a pool that client
    connections take from first.  The tunnel's hop to the edge is up before a request comes; a relay that
    had to make a TLS connection to the server for each new client would pay handshakes the tunnel does not
    (64 at once, at the start of the 64-connection run, land in its p99)."""

    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        self.port = port
        self.ctx = ctx
        self.idle: list[_Half] = []  # dialled, not yet paired with a client
        self.taken = 0  # client connections paired with a primed connection
        self.dialled = 0  # client connections that had to wait for a dial

    async def dial(self) -> _Half:
        loop = asyncio.get_running_loop()
        _, back = await loop.create_connection(_Half, "127.0.0.1", self.port, ssl=self.ctx, server_hostname="127.0.0.1")
        return back

    async def prime(self, n: int) -> int:
        """Dial until ``n`` idle connections wait in the pool; how many do (fewer if dials failed: on stderr)."""
        self.idle = [h for h in self.idle if h.transport is not None and not h.transport.is_closing()]
        results = await asyncio.gather(*(self.dial() for _ in range(n - len(self.idle))), return_exceptions=True)
        self.idle += [h for h in results if isinstance(h, _Half)]
        failed = [e for e in results if not isinstance(e, _Half)]
        if failed:
            print(f"prime {n}: {len(failed)} dial(s) failed, the first: {failed[0]!r}", file=sys.stderr, flush=True)
        return len(self.idle)

    async def take(self) -> _Half:
        while self.idle:
            back = self.idle.pop()
            if back.transport is not None and not back.transport.is_closing():  # the server may close idle ones
                self.taken += 1
                return back
        self.dialled += 1
        return await self.dial()


class _Front(_Half):
    """The client's side: reading waits until it is paired with a connection to the server."""

    def __init__(self, upstream: _Upstream) -> None:
        super().__init__()
        self._upstream = upstream
        self._dial: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        self._dial = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        assert self.transport is not None
        try:
            back = await self._upstream.take()
        except OSError:  # the server is not there (ssl.SSLError included): the client's connection ends
            self.transport.close()
            return
        assert back.transport is not None
        if self.transport.is_closing():  # the client left while we dialled
            back.transport.close()
            return
        back.peer, self.peer = self, back
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._dial is not None and not self._dial.done():
            self._dial.cancel()
        super().connection_lost(exc)


async def _commands(upstream: _Upstream) -> None:
    """Commands on stdin, one answer line each: ``prime N`` (N connections to the server dialled ahead)
    answers ``RELAY-PRIMED K`` (how many wait), ``stats`` answers ``RELAY-STATS TAKEN DIALLED`` (client
    connections paired with a primed one, and with one dialled for them); anything else ``RELAY-UNKNOWN``.
    stdin is read by a daemon thread, so an interrupt is not held up by a blocked read."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, "")

    threading.Thread(target=read, name="relay-commands", daemon=True).start()
    while line := await lines.get():
        word, _, arg = line.strip().partition(" ")
        if word == "prime" and arg.isdigit():
            print(f"RELAY-PRIMED {await upstream.prime(int(arg))}", flush=True)
        elif word == "stats":
            print(f"RELAY-STATS {upstream.taken} {upstream.dialled}", flush=True)
        else:
            print(f"RELAY-UNKNOWN {line.strip()!r}", flush=True)


async def serve(cert: str, key: str, ca: str, upstream_port: int) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    upstream = _Upstream(upstream_port, ssl.create_default_context(cafile=ca))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Front(upstream), "127.0.0.1", 0, ssl=server_ctx, backlog=1024)
    print(f"RELAY-LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        commands = asyncio.create_task(_commands(upstream))
        try:
            await server.serve_forever()
        finally:
            commands.cancel()


@contextlib.contextmanager
def relay(
    procs: dict[str, Proc],
    name: str,
    *,
    tls: tuple[Path, Path, Path],
    upstream: int,
    env: Mapping[str, str],
    log: Path,
    max_seconds: float,
) -> Iterator[tuple[int, Proc]]:
    """This relay in its own process (``procs[name]`` meanwhile, so the bench stops it on any failure) in front
    of ``127.0.0.1:upstream``, with ``tls`` (certificate, key, the CA the server is verified against); yields its
    port and its process (for :func:`stats` and ``prime``), and stops it on the way out."""
    from ._bench import Proc  # noqa: PLC0415  (that module imports this one)

    cert, key, ca = tls
    argv = [sys.executable, "-m", "radical_edge_bench._aiorelay", "--cert", str(cert), "--key", str(key)]
    argv += ["--ca", str(ca), "--upstream", str(upstream), "--max-seconds", str(max_seconds)]
    proc = procs[name] = Proc(name, argv, dict(env), log, commands=True)
    try:
        yield int(proc.wait_for(r"RELAY-LISTENING (\d+)", 30).group(1)), proc
    finally:
        procs.pop(name).stop()


def stats(proc: Proc) -> tuple[int, int]:
    """A running relay's client connections so far: paired with a primed connection, and dialled for."""
    match = proc.command("stats", r"RELAY-STATS (\d+) (\d+)", 30)
    return int(match.group(1)), int(match.group(2))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m radical_edge_bench._aiorelay", allow_abbrev=False)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True, help="the CA the server's certificate is verified against")
    p.add_argument("--upstream", type=int, required=True, help="the server's port on 127.0.0.1")
    p.add_argument("--max-seconds", type=float, default=3600.0)
    args = p.parse_args(argv)
    die_with_parent(args.max_seconds)
    from radical_edge_tunnel import freeze_startup_objects, tune_process  # noqa: PLC0415

    tune_process()  # the bridge's settings
    freeze_startup_objects()
    asyncio.run(serve(args.cert, args.key, args.ca, args.upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
