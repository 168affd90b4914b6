"""``radical-edge-bridge``: run a bridge from the command line."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import ssl
import sys
from pathlib import Path

import anyio

from radical_edge_tunnel import (
    DEFAULT_TOKEN_FILE,
    ENV_TOKEN,
    InsecureFileError,
    check_private,
    freeze_startup_objects,
    load_or_create_token,
    raise_open_file_limit,
    tune_process,
)

from ._config import BRIDGE_STREAM_WINDOW, BridgeConfig, bridge_tunnel_limits
from ._server import Bridge

log = logging.getLogger("radical_edge.bridge")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="radical-edge-bridge", description="Run the radical-edge bridge.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--cert", default=os.environ.get("RADICAL_BRIDGE_CERT"), help="TLS certificate (PEM)")
    p.add_argument("--key", default=os.environ.get("RADICAL_BRIDGE_KEY"), help="TLS private key (PEM, mode 0600)")
    p.add_argument("--token", default=os.environ.get(ENV_TOKEN), help="bearer token (else token file)")
    p.add_argument("--token-file", default=str(DEFAULT_TOKEN_FILE), help="token file, made 0600 if missing")
    p.add_argument("--no-auth", action="store_true", help="switch authentication off (anyone can run jobs!)")
    p.add_argument("--insecure-no-tls", action="store_true", help="serve plain HTTP (loopback testing only)")
    p.add_argument("--request-timeout", type=float, default=60.0, help="seconds to wait for an edge's answer")
    p.add_argument(
        "--heartbeat-interval",
        type=_positive_float,
        default=BridgeConfig.heartbeat_interval,
        help="the heartbeat interval while an edge has a request in flight: the edge pings after this many seconds "
        "of silence, the bridge after 1.5 times as many; an edge silent 3 times as long is dropped and its "
        "requests answered 503 (default %(default)s)",
    )
    p.add_argument(
        "--idle-heartbeat-interval",
        type=_positive_float,
        default=BridgeConfig.idle_heartbeat_interval,
        help="the same while an edge has no request in flight, when the bridge pings after twice as many seconds "
        "(default %(default)s; raised to --heartbeat-interval if lower)",
    )
    p.add_argument(
        "--stream-window",
        type=_window_kib,
        default=BRIDGE_STREAM_WINDOW // 1024,
        metavar="KIB",
        help="how much of one answer an edge may send ahead of the caller at first, in KiB (default %(default)s); "
        "on a path with a round trip of 5 ms or more the bridge lets it grow to what the path needs (up to "
        "--max-stream-window); smaller: small requests wait less behind a big download on the same edge",
    )
    p.add_argument(
        "--max-stream-window",
        type=_window_kib,
        default=BridgeConfig.max_stream_window // 1024,
        metavar="KIB",
        help="how far that window may grow on a long path, in KiB (default %(default)s; the connection's: twice "
        "that); at --stream-window or below it never grows",
    )
    p.add_argument(
        "--client-heartbeat-interval",
        type=_positive_float,
        default=BridgeConfig.client_heartbeat_interval,
        help="the same for SDK connections (default %(default)s)",
    )
    p.add_argument("--plugins", default="", help="plugins to host in the bridge itself, as the edge 'bridge'")
    p.add_argument(
        "--max-connections",
        type=_positive_int,
        default=BridgeConfig.max_connections,
        help="most client connections at once; more are closed at accept (default %(default)s)",
    )
    p.add_argument(
        "--max-connections-per-peer",
        type=_positive_int,
        default=BridgeConfig.max_connections_per_peer,
        help="most connections from one IP address (default %(default)s; behind a reverse proxy "
        "set it to --max-connections)",
    )
    p.add_argument(
        "--edge-ttl",
        type=_positive_seconds,
        default=BridgeConfig.edge_ttl,
        help="seconds a disconnected edge stays listed before the bridge forgets it (default %(default)s)",
    )
    p.add_argument(
        "--max-disconnected-edges",
        type=_positive_int,
        default=BridgeConfig.max_disconnected_edges,
        help="most disconnected edges remembered; the longest-gone are forgotten first (default %(default)s)",
    )
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    return p


def config_from_args(args: argparse.Namespace) -> BridgeConfig:
    if not args.insecure_no_tls and not args.cert:
        raise SystemExit(
            "radical-edge-bridge: --cert/--key (or RADICAL_BRIDGE_CERT/KEY) are required, "
            "or --insecure-no-tls for a loopback test"
        )
    cert = Path(args.cert).expanduser() if args.cert else None
    key = Path(args.key).expanduser() if args.key else None
    # the private key is in --key, or (without --key) inside the --cert file: either way it must be private
    secret = key if key is not None else (cert if cert is not None and _holds_private_key(cert) else None)
    if secret is not None:
        try:
            check_private(secret)
        except InsecureFileError as exc:
            raise SystemExit(f"radical-edge-bridge: refusing the key: {exc}") from None
        except OSError as exc:
            raise SystemExit(f"radical-edge-bridge: cannot read the key: {exc}") from None
    if cert is not None and not args.insecure_no_tls:
        try:  # a missing or broken certificate is a clear message now, not a traceback later
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key) if key else None)
        except (OSError, ssl.SSLError) as exc:
            where = f"{cert}" + (f" / {key}" if key else "")
            raise SystemExit(f"radical-edge-bridge: cannot load the certificate and key ({where}): {exc}") from None
    token: str | None
    if args.no_auth:
        token = None
        log.warning("AUTHENTICATION IS OFF (--no-auth): anyone who reaches this port can use every edge")
    elif args.token:
        token = args.token
        log.info("using the token given on the command line / environment")
    else:
        path = Path(args.token_file).expanduser()
        try:
            token = load_or_create_token(path)
        except InsecureFileError as exc:  # refused, not replaced: the chmod to run is in the message
            raise SystemExit(f"radical-edge-bridge: refusing the token file: {exc}") from None
        except (OSError, ValueError) as exc:
            raise SystemExit(f"radical-edge-bridge: cannot use the token file {path}: {exc}") from None
        log.info("bridge token is in %s", path)
    return BridgeConfig(
        host=args.host,
        port=args.port,
        cert=cert,
        key=key,
        token=token,
        insecure_no_tls=args.insecure_no_tls,
        request_timeout=args.request_timeout,
        heartbeat_interval=args.heartbeat_interval,
        idle_heartbeat_interval=args.idle_heartbeat_interval,
        client_heartbeat_interval=args.client_heartbeat_interval,
        plugins=tuple(p.strip() for p in args.plugins.split(",") if p.strip()),
        max_connections=args.max_connections,
        max_connections_per_peer=args.max_connections_per_peer,
        edge_ttl=args.edge_ttl,
        tunnel=bridge_tunnel_limits(args.stream_window * 1024),
        max_stream_window=args.max_stream_window * 1024,
        max_disconnected_edges=args.max_disconnected_edges,
    )


def _window_kib(text: str) -> int:
    """argparse type for ``--stream-window``: whole KiB, from 16 to just under the protocol's 2 GiB."""
    value = _positive_int(text)
    if not 16 <= value <= (1 << 21) - 1:
        raise argparse.ArgumentTypeError(f"must be between 16 and {(1 << 21) - 1} KiB, not {value}")
    return value


def _positive_int(text: str) -> int:
    """argparse type for a count that must be at least 1 (a cap of 0 would refuse everyone)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    """argparse type for a finite positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def raise_fd_limit(max_connections: int) -> None:
    """Raise the soft limit on open files towards the hard one, so the connection cap (not EMFILE)
    is what refuses a flood; warn when even the hard limit is below the cap."""
    wanted = max_connections + 256  # the listener, edges' tunnels, log and plugin files
    soft = raise_open_file_limit(wanted)
    if soft is not None and soft < wanted:
        log.warning(
            "the open-file limit (%d) is below --max-connections (%d): past it, new connections wait "
            "until some close (raise 'ulimit -n' to use the cap)",
            soft,
            max_connections,
        )


def _positive_seconds(text: str) -> float:
    """argparse type for a duration in seconds that must be more than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _holds_private_key(path: Path) -> bool:
    """Whether a PEM file contains a private key (a combined cert+key file given as --cert alone)."""
    try:
        return b"PRIVATE KEY-----" in path.read_bytes()
    except OSError:
        return False  # loading the certificate reports it


def token_origin(args: argparse.Namespace) -> str:
    """Where the token comes from, for the operator; never the token itself."""
    if args.no_auth:
        return "none (authentication is off)"
    if args.token:
        return "given by --token / RADICAL_BRIDGE_TOKEN"
    return f"in {Path(args.token_file).expanduser()}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    # the token is in the config now: what the bridge's own plugins start must not inherit it
    os.environ.pop(ENV_TOKEN, None)
    raise_fd_limit(config.max_connections)
    tune_process()
    bridge = Bridge(config)

    failed: list[str] = []

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            try:
                await tg.start(bridge.serve)
            except OSError as exc:  # the port is taken, the address is not ours, ...
                failed.append(f"cannot listen on {config.host}:{config.port}: {exc}")
                return
            freeze_startup_objects()  # started: what exists now is left out of every later collection
            print(f"radical-edge bridge listening on {bridge.url}", flush=True)
            print(f"bridge token: {token_origin(args)}", flush=True)

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        log.info("%s: stopping (edges keep running and reconnect later)", signal.Signals(signum).name)
                        bridge.stop()
                        return

            tg.start_soon(stop_on_signal)
            await bridge.wait_stopped()  # a signal, or POST /bridge/terminate
            tg.cancel_scope.cancel()

    anyio.run(run)
    if failed:
        raise SystemExit(f"radical-edge-bridge: {failed[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
