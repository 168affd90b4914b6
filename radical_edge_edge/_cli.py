"""``radical-edge-service``: run an edge from the command line.

Exit status: 0 after a clean stop (SIGTERM/SIGINT drains first, or the
bridge told the edge to shut down), 1 when the bridge refused the edge for
good (wrong token, unsupported protocol version), 2 for a usage or
configuration error.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from radical_edge_tunnel import ConnectError

from ._discovery import PluginSelectionError, discover
from ._service import EdgeFatalError, EdgeService

log = logging.getLogger("radical_edge.edge")

#: where the bridge writes its token by default, and where an edge on the same account finds it
DEFAULT_TOKEN_FILE = Path("~/.radical/edge/bridge.token")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radical-edge-service",
        description="Run a radical-edge edge service: dial the bridge and serve plugins through it.",
    )
    parser.add_argument("--name", default=socket.gethostname(), help="edge name (default: this host's name)")
    parser.add_argument(
        "--url",
        default=os.environ.get("RADICAL_BRIDGE_URL"),
        help="bridge URL, http(s):// or ws(s):// (env RADICAL_BRIDGE_URL); /register is added",
    )
    parser.add_argument(
        "--plugins",
        default="all",
        help="plugins to load: 'all' (default) or a comma list of names or unique prefixes",
    )
    parser.add_argument(
        "--cert",
        default=os.environ.get("RADICAL_BRIDGE_CERT"),
        help="CA certificate file to trust for the bridge (env RADICAL_BRIDGE_CERT; default: the system store)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="bridge token (env RADICAL_BRIDGE_TOKEN; else read from --token-file)",
    )
    parser.add_argument(
        "--token-file",
        default=str(DEFAULT_TOKEN_FILE),
        help=f"file holding the bridge token (default: {DEFAULT_TOKEN_FILE})",
    )
    parser.add_argument(
        "--insecure-skip-tls-verify",
        action="store_true",
        help="do NOT verify the bridge's TLS certificate (anyone on the path can impersonate it)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        type=str.upper,
        help="log level (default: INFO)",
    )
    parser.add_argument("--list-plugins", action="store_true", help="list the installed plugins and exit")
    return parser


def resolve_token(arg: str | None, token_file: str) -> str | None:
    """The token from ``--token``, else ``RADICAL_BRIDGE_TOKEN``, else the token file; ``None`` if none."""
    if arg:
        return arg.strip()
    env = os.environ.get("RADICAL_BRIDGE_TOKEN")
    if env:
        return env.strip()
    path = Path(token_file).expanduser()
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SystemExit(f"radical-edge-service: cannot read the token file {path}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("token file %s is readable by other users: chmod 600 it", path)
    return text or None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if args.list_plugins:
        for name, ep in sorted(discover().items()):
            print(f"{name:20} {ep.value}")
        return 0
    if not args.url:
        parser.error("the bridge URL is required: --url or RADICAL_BRIDGE_URL")
    token = resolve_token(args.token, args.token_file)
    if token is None:
        log.warning(
            "no bridge token found (--token, RADICAL_BRIDGE_TOKEN, %s): connecting without one", args.token_file
        )
    try:
        service = EdgeService(
            args.name,
            url=args.url,
            token=token,
            ca_file=args.cert,
            insecure_skip_tls_verify=args.insecure_skip_tls_verify,
            plugins=args.plugins,
        )
    except (PluginSelectionError, ValueError, ConnectError) as exc:
        parser.error(str(exc))
    try:
        return anyio.run(_serve, service)
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 130


async def _serve(service: EdgeService) -> int:
    status = 0
    async with anyio.create_task_group() as tg:

        async def on_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                count = 0
                async for signum in signals:
                    count += 1
                    if count == 1:
                        log.info("%s: draining (send it again to stop at once)", signal.Signals(signum).name)
                        service.stop()
                    else:
                        log.warning("%s again: stopping now", signal.Signals(signum).name)
                        tg.cancel_scope.cancel()

        tg.start_soon(on_signals)
        try:
            await service.run()
        except EdgeFatalError as exc:
            log.error("%s", exc)
            print(f"radical-edge-service: {exc}", file=sys.stderr)
            status = 1
        tg.cancel_scope.cancel()
    return status
