"""The handshake over a carrier, under a deadline, before a Tunnel runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from radical_edge_proto import (
    Connection,
    ConnectionClosed,
    ErrorCode,
    Hello,
    PeerRole,
    RemoteProtocolError,
    Welcome,
)

from ._carrier import Carrier
from ._tunnel import TunnelError


class HandshakeError(TunnelError):
    """The handshake failed; ``code`` tells why (UNAUTHORIZED and UNSUPPORTED_VERSION are final)."""


async def _receive_one(conn: Connection, carrier: Carrier, what: type[Hello] | type[Welcome]) -> Hello | Welcome:
    while True:
        data = await carrier.receive()
        if not data:
            raise HandshakeError("the peer closed the connection during the handshake", ErrorCode.CONNECTION_LOST)
        try:
            events = conn.receive_data(data)
        except RemoteProtocolError as exc:
            out = conn.data_to_send()
            if out:
                await carrier.send(out)
            raise HandshakeError(f"handshake failed: {exc}", exc.error_code) from exc
        for event in events:
            if isinstance(event, what):
                return event
            if isinstance(event, ConnectionClosed):
                out = conn.data_to_send()
                if out:
                    await carrier.send(out)
                raise HandshakeError(event.reason, event.error_code)


async def connect_handshake(
    conn: Connection,
    carrier: Carrier,
    *,
    role: PeerRole,
    name: str,
    credential: str = "",
    resume_token: str | None = None,
    manifest: dict[str, Any] | None = None,
    timeout: float = 10.0,
) -> Welcome:
    """(connector) Send HELLO and wait for WELCOME; raises HandshakeError on REJECT or timeout."""
    conn.send_hello(role=role, name=name, credential=credential, resume_token=resume_token, manifest=manifest)
    try:
        with anyio.fail_after(timeout):
            await carrier.send(conn.data_to_send())
            welcome = await _receive_one(conn, carrier, Welcome)
    except TimeoutError:
        raise HandshakeError(f"no WELCOME within {timeout} s", ErrorCode.TIMEOUT) from None
    assert isinstance(welcome, Welcome)
    return welcome


async def accept_handshake(
    conn: Connection,
    carrier: Carrier,
    decide: Callable[[Hello], Awaitable[tuple[bool, ErrorCode, str, float]]],
    *,
    timeout: float = 10.0,
    idle_heartbeat_interval: float | None = None,
) -> Hello:
    """(hub) Wait for HELLO, ask ``decide`` and answer WELCOME or REJECT.

    ``decide(hello)`` returns ``(accepted, reject_code, reason_or_resume_token, heartbeat_interval)``;
    ``idle_heartbeat_interval`` goes into the WELCOME with it (see :meth:`Connection.accept`).
    Raises HandshakeError when the peer is refused, silent or broken.
    """
    try:
        with anyio.fail_after(timeout):
            hello = await _receive_one(conn, carrier, Hello)
            assert isinstance(hello, Hello)
            accepted, code, text, interval = await decide(hello)
            if accepted:
                conn.accept(
                    heartbeat_interval=interval, resume_token=text, idle_heartbeat_interval=idle_heartbeat_interval
                )
            else:
                conn.reject(code, text)
            await carrier.send(conn.data_to_send())
    except TimeoutError:
        raise HandshakeError(f"no HELLO within {timeout} s", ErrorCode.TIMEOUT) from None
    if not accepted:
        raise HandshakeError(text, code)
    return hello
