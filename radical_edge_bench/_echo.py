"""The event loop's own cost of an idle connection's heartbeat (``--scale N``, section 2).

``--scale N`` measures what the bridge spends on heartbeats: an edge pings after
every heartbeat interval of silence, an SDK connection after every client interval,
and the bridge answers each PING with a PONG.  Next to it this module measures what
asyncio alone spends on the same traffic: a plain TCP echo server on asyncio (an
``asyncio.Protocol`` that writes back what it reads: no TLS, no WebSocket, no tunnel
protocol, no timers, no tasks) holding as many connections, each sending one message
of a heartbeat's size per interval and reading its echo.  It is the least any server
on the bridge's event loop can spend on one exchange, so it says how much of the idle
CPU target is left to the bridge's own work on this machine.

Two processes, both ``python -m radical_edge_bench._echo``:

* ``serve``: the echo server on 127.0.0.1, an ephemeral port, printed as ``ECHO-LISTENING PORT``;
* ``beat PORT``: the connections (``--count`` at ``--interval`` seconds and ``--slow-count``
  at ``--slow-interval``), each starting at a random phase; ``ECHO-READY`` once all are up.
  Then one command per line on stdin: ``count`` answers ``ECHO-COUNT K``, the echoes
  received so far, or fails if a connection ended or has waited over :data:`STALL_SECONDS`
  for an echo; ``quit`` (or the end of stdin) ends it.

Both die with their parent (as the bench's other processes) and after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys

from radical_edge_tunnel import raise_open_file_limit

from ._procs import die_with_parent

#: one heartbeat PING as the bridge receives it: the tunnel frame (10-byte header, payload ``heartbeat``),
#: in a masked WebSocket frame (6 bytes), in a TLS 1.3 record (5-byte header, content type, 16-byte tag)
MESSAGE = b"h" * (10 + 9 + 6 + 5 + 1 + 16)


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._transport.write(data)


async def serve() -> None:
    server = await asyncio.get_running_loop().create_server(_Echo, "127.0.0.1", 0, backlog=4096)
    print(f"ECHO-LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


#: an echo not back this long after its message was sent: the connection is stalled (on loopback it takes ms)
STALL_SECONDS = 2.0


class Beats:
    """The client side: connections that each send :data:`MESSAGE` once per interval and read the echo."""

    def __init__(self, port: int, schedule: list[float]) -> None:
        self.port = port
        self.schedule = schedule  # one interval per connection
        self.echoes = 0
        self.waiting: dict[int, float] = {}  # connection -> when its message now awaiting the echo was sent

    async def _beat(self, i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, interval: float) -> None:
        await asyncio.sleep(random.random() * interval)  # spread over the interval, as heartbeats are
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            self.waiting[i] = loop.time()
            writer.write(MESSAGE)
            await reader.readexactly(len(MESSAGE))
            del self.waiting[i]
            self.echoes += 1
            due += interval
            await asyncio.sleep(max(0.0, due - loop.time()))

    def check(self, tasks: list[asyncio.Task[None]]) -> None:
        """Raise if a connection ended or waits for an echo: a lost one would make the floor look cheaper."""
        for task in tasks:
            if task.done():
                task.result()
                raise ConnectionError("an echo connection ended")
        now = asyncio.get_running_loop().time()
        stalled = [i for i, sent in self.waiting.items() if now - sent > STALL_SECONDS]
        if stalled:
            raise ConnectionError(f"{len(stalled)} echo connection(s) without an answer for over {STALL_SECONDS:g} s")

    async def run(self) -> None:
        raise_open_file_limit(len(self.schedule) + 256)
        conns = [await asyncio.open_connection("127.0.0.1", self.port) for _ in self.schedule]
        tasks = [
            asyncio.create_task(self._beat(i, r, w, interval))
            for i, ((r, w), interval) in enumerate(zip(conns, self.schedule, strict=True))
        ]
        print("ECHO-READY", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if line.strip() == "count":
                self.check(tasks)
                print(f"ECHO-COUNT {self.echoes}", flush=True)
            elif not line or line.strip() == "quit":
                break
        for task in tasks:
            task.cancel()
        for _, writer in conns:
            writer.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m radical_edge_bench._echo", allow_abbrev=False)
    p.add_argument("role", choices=["serve", "beat"])
    p.add_argument("port", type=int, nargs="?")
    p.add_argument("--count", type=int, default=10, help="(beat) connections at --interval")
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--slow-count", type=int, default=0, help="(beat) connections at --slow-interval")
    p.add_argument("--slow-interval", type=float, default=30.0)
    p.add_argument("--max-seconds", type=float, default=600.0)
    args = p.parse_args(argv)
    die_with_parent(args.max_seconds)
    if args.role == "serve":
        from radical_edge_tunnel import tune_process  # noqa: PLC0415

        tune_process()  # the bridge's settings: the floor is not flattered
        raise_open_file_limit(1 << 20)  # (at most the hard limit) as the bridge: 2N connections must all be accepted
        asyncio.run(serve())
        return 0
    if args.port is None:
        p.error("beat needs the server's port")
    schedule = [args.interval] * args.count + [args.slow_interval] * args.slow_count
    asyncio.run(Beats(args.port, schedule).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
