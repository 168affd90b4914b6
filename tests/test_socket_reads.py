"""tune_socket_reads() / tune_process(): a tuned server process reads a full socket in pieces of LARGE_READ.

Each piece a socket read returns goes alone through TLS, WebSocket, the tunnel
protocol and HTTP, so a bulk transfer's cost follows the number of pieces.
The tuning changes the process's asyncio transports, so it runs in a child
process: this one is left as it is.
"""

from __future__ import annotations

import subprocess
import sys

from radical_edge_tunnel import LARGE_READ

#: what asyncio's socket transports read at once unless tuned
ASYNCIO_READ = 256 * 1024

FIRST_READ = """
import socket, sys
import anyio
from anyio.abc import SocketStream
from radical_edge_tunnel import LargeReads, tune_process, tune_socket_reads

mode = sys.argv[1]
tuned = tune_socket_reads() if mode == "tuned" else tune_process() if mode == "process" else None
ours, theirs = socket.socketpair()
theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)  # the system may cap it
theirs.setblocking(False)
queued = 0
try:
    while True:  # fill the socket before anything reads it: a bulk sender ahead of its reader
        queued += theirs.send(bytes(64 * 1024))
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


def first_read(mode: str) -> tuple[str, int, int, int]:
    done = subprocess.run(
        [sys.executable, "-c", FIRST_READ, mode], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    tuned, queued, first, received = done.stdout.split()
    return tuned, int(queued), int(first), int(received)


def test_an_untuned_process_reads_a_full_socket_in_asyncios_pieces() -> None:
    tuned, queued, first, received = first_read("plain")
    assert queued > LARGE_READ  # (else the next tests could not tell)
    assert (tuned, first, received) == ("None", ASYNCIO_READ, queued)


def test_a_tuned_process_reads_a_full_socket_in_large_pieces_and_loses_nothing() -> None:
    tuned, queued, first, received = first_read("tuned")
    assert (tuned, first, received) == ("True", LARGE_READ, queued)


def test_tune_process_tunes_the_reads_with_the_allocator_and_the_collector() -> None:
    assert first_read("process")[2] == LARGE_READ
    script = (
        "import asyncio.selector_events as s, gc\n"
        "from radical_edge_tunnel import GEN0_THRESHOLD, tune_process\n"
        "s._SelectorSocketTransport.max_size = 4 << 20\n"
        "tune_process()\n"
        "print(s._SelectorSocketTransport.max_size, gc.get_threshold()[0] >= GEN0_THRESHOLD)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(4 << 20), "True"]  # a larger setting is never lowered
