"""tune_socket_reads() / tune_process(): a tuned server process reads a full socket in pieces of LARGE_READ.

Each piece a socket read returns goes alone through TLS, WebSocket, the tunnel
protocol and HTTP, so a bulk transfer's cost follows the number of pieces.
The tuning changes the process's asyncio classes, so it runs in a child
process: this one is left as it is.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import radical_edge_tunnel
from radical_edge_tunnel import LARGE_READ

#: what asyncio reads at once unless tuned (its socket transports and its TLS)
ASYNCIO_READ = 256 * 1024
#: where the child processes import radical_edge_tunnel from: the one under test
SOURCE = Path(radical_edge_tunnel.__file__).resolve().parents[1]

FIRST_READ = """
import socket, sys
import anyio
from anyio.abc import SocketStream
from radical_edge_tunnel import LargeReads, tune_process, tune_socket_reads

mode = sys.argv[1]
tuned = tune_socket_reads() if mode == "tuned" else tune_process() if mode == "process" else None
ours, theirs = socket.socketpair()
SO_SNDBUFFORCE = 32  # Linux (socket.h); not in Python's socket module
try:  # past the system's cap on socket buffers (privileged); the capped queue is large enough too
    theirs.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20)
except OSError:
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
theirs.setblocking(False)
queued = 0
try:
    while True:  # fill the socket before anything reads it: a bulk sender ahead of its reader
        queued += theirs.send(bytes(16 * 1024))
except BlockingIOError:
    pass

async def main() -> None:
    stream = LargeReads(await SocketStream.from_socket(ours))
    first = await stream.receive()
    received = len(first)
    while received < queued:
        received += len(await stream.receive())
    print(tuned, queued, len(first), received)

anyio.run(main)
"""


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", *args], capture_output=True, text=True, timeout=60, check=False, cwd=SOURCE
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def first_read(mode: str) -> tuple[str, int, int, int]:
    tuned, queued, first, received = run(FIRST_READ, mode).split()
    assert int(queued) > ASYNCIO_READ  # (else no test here could tell a tuned read from another)
    return tuned, int(queued), int(first), int(received)


def test_an_untuned_process_reads_a_full_socket_in_asyncios_pieces() -> None:
    tuned, queued, first, received = first_read("plain")
    assert (tuned, first, received) == ("None", ASYNCIO_READ, queued)


def test_a_tuned_process_reads_a_full_socket_in_large_pieces_and_loses_nothing() -> None:
    tuned, queued, first, received = first_read("tuned")
    assert (tuned, first, received) == ("True", min(queued, LARGE_READ), queued)


def test_asyncios_own_tls_reads_as_much_once_tuned() -> None:
    """uvicorn and the benchmark's relay end TLS with asyncio's SSLProtocol: the bench's references get the
    same read size as the bridge, so no comparison is flattered."""
    script = (
        "import asyncio, ssl, asyncio.sslproto as p\n"
        "from radical_edge_tunnel import tune_socket_reads\n"
        "tune_socket_reads()\n"
        "loop = asyncio.new_event_loop()\n"
        "protocol = p.SSLProtocol(loop, asyncio.Protocol(), ssl.create_default_context(), None)\n"
        "print(len(protocol.get_buffer(-1)))  # what its socket reads go into\n"
        "loop.close()\n"
    )
    assert run(script) == str(LARGE_READ)


def test_tune_process_tunes_the_reads_and_never_lowers_them() -> None:
    assert first_read("process")[2] > ASYNCIO_READ
    script = (
        "import asyncio.selector_events as s\n"
        "from radical_edge_tunnel import tune_process\n"
        "s._SelectorSocketTransport.max_size = 4 << 20\n"
        "tune_process()\n"
        "print(s._SelectorSocketTransport.max_size)\n"
    )
    assert run(script) == str(4 << 20)
