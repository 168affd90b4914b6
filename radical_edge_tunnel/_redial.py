"""The one redialer: dial a bridge, handshake, serve, and dial again, with one policy for everyone.

The edge service, the SDK, the benchmark's load driver and edges started by
other programs (the psij plugin's child edges) all keep their connection to
a bridge with a :class:`Redialer`.  Each attempt dials (``connect_websocket``
to ``/register`` or ``/connect``, or a given connector), sends HELLO (role,
name, credential, the resume token of the last WELCOME, the manifest) and
hands the connected :class:`Tunnel` to the caller's ``serve``; when
``serve`` returns, the next attempt waits the delay of the shared
:class:`Redial` policy (see :mod:`radical_edge_tunnel._backoff`).

The fatal policy, the same everywhere: these end :meth:`Redialer.run` with
:class:`FatalDialError` and are never retried, because retrying cannot fix
them --

* a REJECT with ``UNAUTHORIZED`` (wrong credential) or ``UNSUPPORTED_VERSION``
  (the bridge speaks another protocol version), or the bridge ending a
  connection with one of those codes;
* HTTP 401 or 403 on the WebSocket upgrade (missing or wrong token);
* a token file that group or others can access (:class:`InsecureFileError`,
  naming the ``chmod 600`` to run).

A connection the bridge ends with ``STOP`` (an operator's disconnect) ends
:meth:`Redialer.run` normally, with :attr:`Redialer.stopped_by_peer` set: the
side was told not to come back.

Everything else is retried: a bridge that cannot be reached (refused, DNS,
timeout, TLS, an HTTP error instead of the upgrade) lets the delays grow; a
bridge that was reached but refused the handshake (``NAME_CONFLICT`` for a
stale duplicate of this edge, a bridge shutting down, ...) or ended a session
keeps them short.

Usage, e.g. an edge started by a batch job (the psij plugin's child edges;
``host`` is a running :class:`radical_edge_edge.PluginHost`)::

    settings = resolve_settings()          # RADICAL_BRIDGE_URL / _TOKEN / _CERT, else ~/.radical/edge/bridge.token
    redialer = Redialer(settings, role=PeerRole.EDGE, name="login1.job-42",
                        handler=host.handle, manifest=host.manifest)
    async def serve(tunnel: Tunnel) -> None:
        await tunnel.run()                 # until the bridge goes away; then the redialer dials again
    await redialer.run(serve)              # returns after redialer.stop(); raises FatalDialError

(``EdgeService("login1.job-42", settings=resolve_settings(), plugins=...)``
does exactly this with a plugin host, events, manifest updates and draining.)
One attempt without redialing (a load driver, a probe): ``tunnel = await redialer.connect()``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from radical_edge_proto import (
    PROTOCOL_VERSION,
    Connection,
    ConnectionClosed,
    ErrorCode,
    Limits,
    PeerRole,
    Side,
    profile,
)

from ._backoff import Backoff, Redial
from ._carrier import Carrier
from ._handshake import HandshakeError, connect_handshake
from ._limits import tunnel_limits
from ._settings import BridgeSettings, InsecureFileError
from ._tunnel import EventSink, Handler, Tunnel, TunnelError, _code_name
from ._ws_client import ConnectError, UpgradeRejectedError, connect_websocket

log = logging.getLogger("radical_edge.tunnel")

#: returns a connected carrier (an in-memory pair, a custom transport); raises ConnectError
Connector = Callable[[], Awaitable[Carrier]]

#: handshake refusals (and connection-ending codes) that retrying cannot fix (the application profile's)
FATAL_CODES = profile.FATAL_CODES
#: HTTP answers to the upgrade that retrying cannot fix
FATAL_STATUSES = frozenset({401, 403})

_HINTS: dict[ErrorCode | int, str] = {
    ErrorCode.UNAUTHORIZED: "check the token (--token, RADICAL_BRIDGE_TOKEN or the token file)",
    ErrorCode.UNSUPPORTED_VERSION: (
        f"this side speaks protocol version {PROTOCOL_VERSION}: run the same radical-edge release on both sides"
    ),
}


class FatalDialError(TunnelError):
    """The bridge refused this side in a way retrying cannot fix (see the module docstring).

    ``code`` is the refusal's code (``UNAUTHORIZED`` for a credential refused
    on the upgrade or a token file refused here), ``status`` the HTTP status of
    a refused upgrade (else None), ``cause`` the error it came from (if any).
    """

    def __init__(
        self,
        msg: str,
        code: ErrorCode | int,
        *,
        status: int | None = None,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(msg, code)
        self.status = status
        self.cause = cause


def fatal_error_for(exc: BaseException, who: str = "this side") -> FatalDialError | None:
    """The :class:`FatalDialError` ``exc`` amounts to under the fatal policy, or None if it is worth retrying."""
    if isinstance(exc, FatalDialError):
        return exc
    if isinstance(exc, UpgradeRejectedError) and exc.status in FATAL_STATUSES:
        return FatalDialError(f"the bridge refused the credential: {exc}", exc.code, status=exc.status, cause=exc)
    if isinstance(exc, HandshakeError) and exc.code in FATAL_CODES:
        hint = _HINTS.get(exc.code)
        text = f"the bridge refused {who} ({_code_name(exc.code)}): {exc}" + (f"; {hint}" if hint else "")
        return FatalDialError(text, exc.code, cause=exc)
    if isinstance(exc, InsecureFileError):
        return FatalDialError(str(exc), ErrorCode.UNAUTHORIZED, cause=exc)
    return None


class Redialer:
    """Keep a connection to a bridge up: dial + handshake, hand it to ``serve``, dial again; one policy.

    The bridge is ``settings`` (dialled at ``path``: ``/register`` for an edge,
    ``/connect`` otherwise; the token re-read from its token file on each
    dial), or a ``connector`` returning a connected carrier; ``credential``,
    if given, is sent instead of the settings' token.
    HELLO carries ``role``, ``name``, the credential, the resume token of the
    last WELCOME and ``manifest()`` (if given).  Each connected :class:`Tunnel`
    gets ``handler`` and ``on_event``.  ``on_state`` hears ``"connecting"``
    before each dial and ``"waiting"`` before each delay.  Log lines begin
    with ``label`` (default ``"{role} {name}"``).
    """

    def __init__(
        self,
        settings: BridgeSettings | None = None,
        *,
        role: PeerRole,
        name: str,
        path: str | None = None,
        connector: Connector | None = None,
        credential: str | None = None,
        manifest: Callable[[], dict[str, Any]] | None = None,
        handler: Handler | None = None,
        on_event: EventSink | None = None,
        limits: Limits | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        connect_timeout: float = 10.0,
        label: str | None = None,
        logger: logging.Logger | None = None,
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        if settings is None and connector is None:
            raise ValueError("give the bridge's settings or a connector")
        self.settings = settings
        self.role = role
        self.name = name
        if path is None:
            path = profile.endpoint_path(role)
        #: the WebSocket URL dialled (None with a connector)
        self.url: str | None = settings.websocket_url(path) if settings is not None and connector is None else None
        self._connector = connector
        self._credential = credential
        self._manifest = manifest
        self.handler = handler
        self.on_event = on_event
        self.limits = limits if limits is not None else tunnel_limits()
        self.backoff = backoff or Backoff()
        self.rng = rng or random.Random()
        self.connect_timeout = connect_timeout
        self.label = label or f"{role.name.lower()} {name}"
        self.log = logger or log
        self._on_state = on_state
        #: the resume token of the last WELCOME (sent back in the next HELLO)
        self.resume_token: str | None = None
        #: handshakes completed
        self.connections = 0
        #: "idle", "connecting", "connected" (serve runs), "waiting" (to redial), "stopped"
        self.state = "idle"
        #: the error of the last failed attempt (None after a success)
        self.last_error: TunnelError | None = None
        #: set when the bridge ended a connection with ``STOP`` (do not reconnect): :meth:`run` returned
        self.stopped_by_peer: ConnectionClosed | None = None
        self._stopping = False
        self._running = False
        self._stop_event: anyio.Event | None = None
        self._attempt: anyio.CancelScope | None = None

    # ------------------------------------------------------------ one attempt

    def credential(self) -> str | None:
        """The credential for the next HELLO (and the upgrade's bearer token); may raise InsecureFileError."""
        if self._credential is not None:
            return self._credential
        return self.settings.current_token() if self.settings is not None else None

    async def _dial(self, credential: str | None) -> Carrier:
        if self._connector is not None:
            return await self._connector()
        assert self.url is not None
        assert self.settings is not None
        return await connect_websocket(
            self.url,
            token=credential,
            ssl_context=self.settings.ssl_context,
            timeout=self.connect_timeout,
            tls_server_name=self.settings.tls_server_name,
        )

    async def connect(self) -> Tunnel:
        """Dial and handshake once; the tunnel is not running yet (run it with ``tunnel.run``).

        Raises :class:`FatalDialError` under the fatal policy, else
        :class:`ConnectError` (the bridge was not reached; a timeout is one
        too) or :class:`HandshakeError` (it refused the handshake).
        """
        try:
            credential = self.credential()
        except InsecureFileError as exc:
            raise FatalDialError(str(exc), ErrorCode.UNAUTHORIZED, cause=exc) from None
        manifest = self._manifest() if self._manifest is not None else None
        conn = Connection(Side.CONNECTOR, self.limits)
        carrier: Carrier | None = None
        try:
            with anyio.fail_after(self.connect_timeout * 2):
                carrier = await self._dial(credential)
                welcome = await connect_handshake(
                    conn,
                    carrier,
                    role=self.role,
                    name=self.name,
                    credential=credential or "",
                    resume_token=self.resume_token,
                    manifest=manifest,
                    timeout=self.connect_timeout,
                )
        except (ConnectError, HandshakeError) as exc:
            await _close_quietly(carrier)
            fatal = fatal_error_for(exc, self.label)
            if fatal is not None:
                raise fatal from None
            raise
        except TimeoutError:
            await _close_quietly(carrier)
            where = self.url or "the bridge"
            raise ConnectError(
                f"connecting to {where} timed out after {self.connect_timeout * 2:g} s", ErrorCode.TIMEOUT
            ) from None
        except BaseException:
            await _close_quietly(carrier)
            raise
        self.resume_token = welcome.resume_token
        self.connections += 1
        return Tunnel(conn, carrier, handler=self.handler, on_event=self.on_event, name=self.label)

    # ------------------------------------------------------------ the loop

    async def run(
        self,
        serve: Callable[[Tunnel], Awaitable[object]],
        *,
        on_retry: Callable[[TunnelError], None] | None = None,
    ) -> None:
        """Dial, ``await serve(tunnel)`` (it runs the tunnel until it ends), wait, dial again; until :meth:`stop`.

        Raises :class:`FatalDialError` under the fatal policy, also when the
        bridge ends a served connection with a fatal code.  ``on_retry(exc)``
        hears every failed attempt that will be retried (it may raise to give
        up, e.g. on the very first one); exceptions from ``serve`` propagate.
        """
        if self._running:
            raise RuntimeError("this Redialer is already running")
        self._running = True
        self._stop_event = anyio.Event()
        redial = Redial(self.backoff, self.rng)
        try:
            while not self._stopping:
                self._set_state("connecting")
                tunnel: Tunnel | None = None
                with anyio.CancelScope() as scope:
                    self._attempt = scope
                    try:
                        tunnel = await self.connect()
                    except (ConnectError, HandshakeError) as exc:
                        self.last_error = exc
                        if isinstance(exc, ConnectError):
                            redial.unreachable()  # not even reached: the delays may grow
                        if on_retry is not None:
                            on_retry(exc)
                        what = "" if isinstance(exc, ConnectError) else "handshake refused: "
                        self.log.warning("%s: %s%s", self.label, what, exc)
                    finally:
                        self._attempt = None
                if self._stopping:
                    if tunnel is not None:
                        await _close_quietly(tunnel.carrier)
                    break
                if tunnel is not None:
                    self.last_error = None
                    self.state = "connected"
                    began = anyio.current_time()
                    await serve(tunnel)
                    closed = tunnel.close_event
                    if self._stopping:
                        break
                    if closed is not None and closed.by_peer and closed.error_code in FATAL_CODES:
                        raise FatalDialError(
                            f"the bridge ended the connection ({_code_name(closed.error_code)}): {closed.reason}",
                            closed.error_code,
                        )
                    if closed is not None and closed.by_peer and closed.error_code == profile.STOP_CODE:
                        self.log.warning("%s: the bridge asked this side to stop: %s", self.label, closed.reason)
                        self.stopped_by_peer = closed
                        break
                    redial.connection_ended(anyio.current_time() - began)  # the bridge is there: short delays
                delay = redial.next_delay()
                self._set_state("waiting")
                self.log.info("%s: reconnecting in %.2f s", self.label, delay)
                with anyio.move_on_after(delay):
                    await self._stop_event.wait()
        finally:
            self.state = "stopped"
            self._running = False
            self._stopping = False
            self._stop_event = None

    def stop(self) -> None:
        """Dial no more: a dial or a wait under way ends now, :meth:`run` returns once ``serve`` does.

        Called before :meth:`run`, that run returns at once.  (Call it in the event loop's thread.)
        """
        self._stopping = True
        if self._attempt is not None:
            self._attempt.cancel()
        if self._stop_event is not None:
            self._stop_event.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _set_state(self, state: str) -> None:
        self.state = state
        if self._on_state is not None:
            self._on_state(state)


async def _close_quietly(carrier: Carrier | None) -> None:
    if carrier is not None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await carrier.aclose()


__all__ = ["FATAL_CODES", "FATAL_STATUSES", "Connector", "FatalDialError", "Redialer", "fatal_error_for"]
