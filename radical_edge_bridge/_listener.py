"""The bridge's accept loop: survives fd exhaustion, caps connections, does TLS per connection.

anyio's ``Listener.serve`` ends (and with it the bridge) at the first failed ``accept()``, and anyone
can make accept fail with EMFILE by opening more connections than the process may hold fds.  Here a
resource-exhaustion error means "back off a little and try again".  Each accepted connection takes a
slot, counted in total and per peer address; over either cap it is closed at once, before any TLS
handshake or per-connection state.  The TLS handshake runs in the connection's own task under a
timeout, so a scanner, a plain-HTTP client or a silent socket costs one debug line and its slot back.
Only so many handshakes run at once (:class:`HandshakeSlots`): a reconnect storm is served a batch
at a time, in arrival order.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from radical_edge_tunnel import LargeReads

from ._metrics import ConnectionStats

log = logging.getLogger("radical_edge.bridge")

ConnectionHandler = Callable[[anyio.abc.ByteStream], Awaitable[None]]

#: accept() failed because the process or the system is out of something: wait, then retry
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: accept() failed for that one connection (reset before we took it, a firewall verdict, and the
#: network errors Linux passes on from the new socket; see accept(2)): just take the next one
ONE_CONNECTION = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED",
        "EPROTO",
        "EPERM",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
    )
    if hasattr(errno, name)
)
#: what a failed TLS handshake raises: garbage, EOF, a reset, the timeout
_HANDSHAKE_FAILED = (
    TimeoutError,
    ssl.SSLError,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)


class ConnectionGate:
    """Live connections in total and per peer address; says no when either cap is full."""

    def __init__(self, max_total: int, max_per_peer: int, stats: ConnectionStats) -> None:
        self.max_total = max_total
        self.max_per_peer = max_per_peer
        self.stats = stats
        self._per_peer: Counter[str] = Counter()

    def admit(self, peer: str) -> bool:
        """Take a slot for a new connection from ``peer``; False (and counted) if a cap is full."""
        if self.stats.open >= self.max_total:
            self.stats.refused["total"] += 1
            return False
        if self._per_peer[peer] >= self.max_per_peer:
            self.stats.refused["per_peer"] += 1
            return False
        self.stats.open += 1
        self._per_peer[peer] += 1
        return True

    def release(self, peer: str) -> None:
        """Give back the slot :meth:`admit` took."""
        self.stats.open -= 1
        self._per_peer[peer] -= 1
        if self._per_peer[peer] <= 0:
            del self._per_peer[peer]  # the table holds only peers with live connections

    def held_by(self, peer: str) -> int:
        return self._per_peer[peer]


@dataclass(eq=False)
class _PeerSlots:
    semaphore: anyio.Semaphore
    users: int = 0  # connections holding or waiting for one of these slots


class HandshakeSlots:
    """At most ``total`` TLS handshakes in progress at once, at most ``per_peer`` of them for one address.

    When every edge and SDK client of a restarted bridge dials within the same second, running all the
    handshakes at once makes each of them take as long as all of them together (one event loop shares its
    time among them), past the timeouts for a large crowd; and the memory of a handshake in progress (tens
    of KiB, which the allocator keeps) is taken by all of them at once.  With slots the crowd is served a
    batch at a time, first come first served: the first connections are back at once, the memory of
    handshakes stays bounded.  A connection asks for a slot only once its first bytes (the ClientHello)
    have arrived, so silent sockets never hold one, and one address never holds more than ``per_peer``.
    """

    def __init__(self, total: int, per_peer: int) -> None:
        if total < 1 or per_peer < 1:
            raise ValueError("handshake slots: total and per_peer must be at least 1")
        self.total = total
        self.per_peer = min(per_peer, total)
        self._slots = anyio.Semaphore(total)
        self._peers: dict[str, _PeerSlots] = {}
        #: handshakes in progress now, and the most there have been at once
        self.in_use = 0
        self.peak = 0

    @contextlib.asynccontextmanager
    async def slot(self, peer: str) -> AsyncIterator[None]:
        """Hold one slot (one of ``peer``'s share) for the block; waits while none is free."""
        mine = self._peers.get(peer)
        if mine is None:
            mine = self._peers[peer] = _PeerSlots(anyio.Semaphore(self.per_peer))
        mine.users += 1
        try:
            async with mine.semaphore, self._slots:
                self.in_use += 1
                self.peak = max(self.peak, self.in_use)
                try:
                    yield
                finally:
                    self.in_use -= 1
        finally:
            mine.users -= 1
            if not mine.users:
                del self._peers[peer]  # the table holds only peers with handshakes under way

    @property
    def peers(self) -> int:
        """Addresses with a handshake in progress or waiting."""
        return len(self._peers)


class AcceptBackoff:
    """Sleep after resource-exhaustion accept failures, 10 ms doubling to 0.5 s; reset by a success.

    Warns at most once every ``warn_every`` seconds (with the number of failures since the last
    warning), so a flood cannot turn into a flood of log lines, even when it lets an accept
    through now and then.
    """

    def __init__(self, first: float = 0.01, cap: float = 0.5, warn_every: float = 10.0) -> None:
        self.first = first
        self.cap = cap
        self.warn_every = warn_every
        self.delay = 0.0
        self._unreported = 0  # failed accepts not yet in a warning
        self._warned_at: float | None = None

    def failed(self, exc: OSError, now: float) -> float:
        """Note one failed accept; returns how long to sleep before the next."""
        self._unreported += 1
        if self._warned_at is None or now - self._warned_at >= self.warn_every:
            log.warning(
                "cannot accept connections: %s (out of file descriptors or memory); backing off and "
                "retrying (failed accepts since the last warning: %d)",
                exc.strerror or exc,
                self._unreported,
            )
            self._warned_at = now
            self._unreported = 0
        self.delay = min(self.cap, self.delay * 2 if self.delay else self.first)
        return self.delay

    def succeeded(self) -> None:
        """An accept worked: the next failure starts again at the shortest delay."""
        self.delay = 0.0


class ConnectionServer:
    """Accepts on a set of TCP listeners and runs ``handler`` on each admitted connection."""

    def __init__(
        self,
        handler: ConnectionHandler,
        gate: ConnectionGate,
        *,
        ssl_context: ssl.SSLContext | None,
        handshake_timeout: float,
        handshake_slots: HandshakeSlots | None = None,
    ) -> None:
        self.handler = handler
        self.gate = gate
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        #: limits the TLS handshakes in progress (None: no limit)
        self.handshake_slots = handshake_slots

    async def serve(self, listeners: Sequence[anyio.abc.SocketListener]) -> None:
        """Accept on every listener until cancelled; the connections live in the same task group."""
        async with anyio.create_task_group() as tg:
            for listener in listeners:
                tg.start_soon(self._accept_loop, listener, tg)

    async def _accept_loop(self, listener: anyio.abc.SocketListener, tg: anyio.abc.TaskGroup) -> None:
        backoff = AcceptBackoff()
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in EXHAUSTED:
                    self.gate.stats.accept_errors += 1
                    await anyio.sleep(backoff.failed(exc, anyio.current_time()))
                elif exc.errno in ONE_CONNECTION:
                    log.debug("accept failed for one connection: %s", exc)
                else:
                    raise
                continue
            backoff.succeeded()
            await self._admit(stream, tg)

    async def _admit(self, stream: anyio.abc.SocketStream, tg: anyio.abc.TaskGroup) -> None:
        """Start the connection's task, or close it at once if a cap is full."""
        peer = peer_of(stream)
        if peer is None:
            log.debug("a connection was gone before it could be served")
            await anyio.aclose_forcefully(stream)
            return
        if not self.gate.admit(peer):
            log.debug("refused a connection from %s: connection cap reached", peer)
            await anyio.aclose_forcefully(stream)
            return
        tg.start_soon(self._run, stream, peer)

    async def _run(self, stream: anyio.abc.SocketStream, peer: str) -> None:
        """One connection: TLS handshake, then the handler; the slot is released however it ends."""
        try:
            served: anyio.abc.ByteStream | None
            if self.ssl_context is not None:
                served = await self._tls_handshake(stream, peer)
            else:
                served = LargeReads(stream)  # as under TLS (large reads; its writes can be watched)
            if served is not None:
                await self.handler(served)
        except Exception:
            # one connection's failure must never disturb the others or the accept loop
            log.exception("error while serving a connection from %s", peer)
        finally:
            self.gate.release(peer)
            await anyio.aclose_forcefully(stream)

    async def _tls_handshake(self, stream: anyio.abc.SocketStream, peer: str) -> TLSStream | None:
        """The server side of the TLS handshake under the timeout (from accept: waiting for the client's
        first bytes and for a handshake slot count too); None (one debug line) if it fails."""
        assert self.ssl_context is not None
        slots = self.handshake_slots
        try:
            with anyio.fail_after(self.handshake_timeout):
                if slots is None:
                    return await TLSStream.wrap(
                        LargeReads(stream), server_side=True, ssl_context=self.ssl_context, standard_compatible=False
                    )
                first = await stream.receive()  # a silent socket never takes a slot
                async with slots.slot(peer):
                    return await TLSStream.wrap(
                        LargeReads(stream, first),
                        server_side=True,
                        ssl_context=self.ssl_context,
                        standard_compatible=False,
                    )
        except _HANDSHAKE_FAILED as exc:
            self.gate.stats.tls_handshake_failures += 1
            log.debug("TLS handshake with %s failed: %s", peer, _describe_error(exc))
            return None


def peer_of(stream: anyio.abc.SocketStream) -> str | None:
    """The remote IP address (the key of the per-peer cap; the port is left out on purpose), or
    None if the client is already gone (reset between the kernel's accept and ours)."""
    try:
        address: Any = stream.extra(anyio.abc.SocketAttribute.remote_address)
    except (anyio.TypedAttributeLookupError, OSError):
        return None
    return str(address[0]) if isinstance(address, tuple) else str(address)


def socket_listeners(listener: anyio.abc.Listener[Any]) -> list[anyio.abc.SocketListener]:
    """The socket listeners inside what ``anyio.create_tcp_listener`` returned (one per address)."""
    inner = getattr(listener, "listeners", [listener])
    found = [each for each in inner if isinstance(each, anyio.abc.SocketListener)]
    if len(found) != len(inner):
        raise TypeError(f"not a TCP listener: {listener!r}")
    return found


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, anyio.EndOfStream):
        return "the client closed the connection"
    cause = exc.__cause__ or exc
    return str(cause) or type(cause).__name__
