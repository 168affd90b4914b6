"""``radical-edge-service``: run an edge from the command line.

Exit status: 0 after a clean stop (SIGTERM/SIGINT drains first, or the
bridge told the edge to shut down), 1 when the bridge refused the edge for
good (wrong token, unsupported protocol version), 2 for a usage or
configuration error (a token file others can read is one).

The bridge URL, token and CA come from the options, else the environment,
else the token file: :func:`radical_edge_tunnel.resolve_settings`, the same
resolution the SDK uses.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.to_thread

from radical_edge_proto import edge_name_error
from radical_edge_tunnel import (
    DEFAULT_TOKEN_FILE,
    ENV_CERT,
    ENV_TOKEN,
    ENV_URL,
    freeze_startup_objects,
    resolve_settings,
    tune_process,
)

from ._body import DEFAULT_MAX_BODY_BYTES
from ._discovery import PluginSelectionError, discover
from ._service import EdgeFatalError, EdgeService

log = logging.getLogger("radical_edge.edge")

#: the staging plugin's roots (``--staging-root``), as ``radical_edge_plugins.staging.ROOTS_ENV`` reads them
STAGING_ROOTS_ENV = "RADICAL_EDGE_STAGING_ROOTS"

_SIZE = re.compile(r"\s*(\d+)\s*(?:([kmg])(?:i?b)?|b)?\s*", re.IGNORECASE | re.ASCII)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """A size in bytes from ``"1048576"``, ``"512K"``, ``"16MiB"``, ``"1g"`` (binary units); ValueError if not one."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (examples: 1048576, 512K, 16MiB, 1G)")
    return int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]


def _size_argument(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radical-edge-service",
        description="Run a radical-edge edge service: dial the bridge and serve plugins through it.",
    )
    parser.add_argument("--name", default=socket.gethostname(), help="edge name (default: this host's name)")
    parser.add_argument(
        "--url",
        default=None,
        help=f"bridge URL, http(s):// or ws(s):// (env {ENV_URL}); /register is added",
    )
    parser.add_argument(
        "--plugins",
        default="all",
        help="plugins to load: 'all' (default) or a comma list of names or unique prefixes",
    )
    parser.add_argument(
        "--cert",
        default=None,
        help=f"CA certificate file to trust for the bridge (env {ENV_CERT}; default: the system store)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help=f"bridge token (env {ENV_TOKEN}; else read from --token-file)",
    )
    parser.add_argument(
        "--token-file",
        default=str(DEFAULT_TOKEN_FILE),
        help=f"file holding the bridge token; must be mode 0600 (default: {DEFAULT_TOKEN_FILE})",
    )
    parser.add_argument(
        "--insecure-skip-tls-verify",
        action="store_true",
        help="do NOT verify the bridge's TLS certificate (anyone on the path can impersonate it)",
    )
    parser.add_argument(
        "--tls-server-name",
        default=None,
        metavar="HOST",
        help="verify the bridge's certificate for HOST instead of the URL's host (when the URL is a port "
        "forward such as wss://127.0.0.1:PORT to the bridge; verification stays on)",
    )
    parser.add_argument(
        "--ready-file",
        default=None,
        metavar="PATH",
        help="write PATH (JSON: edge, pid, host, time) once the bridge has accepted this edge (its first "
        "WELCOME); a program that started the edge can wait for it",
    )
    parser.add_argument(
        "--max-body",
        type=_size_argument,
        default=DEFAULT_MAX_BODY_BYTES,
        metavar="SIZE",
        help="largest request body a plugin route that reads it whole accepts, e.g. 16MiB (the default), "
        "512K, 0 for no limit; routes that stream their body are exempt",
    )
    parser.add_argument(
        "--staging-root",
        action="append",
        default=None,
        metavar="PATH",
        help="a directory the staging plugin may read and write files in (repeat for several; default: ~, "
        "$SCRATCH if set, and /tmp); nothing outside these roots is reachable",
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
    reason = edge_name_error(args.name)
    if reason is not None:
        print(f"radical-edge-service: {reason}; choose another with --name", file=sys.stderr)
        return 2
    try:
        settings = resolve_settings(
            args.url,
            args.token or None,
            args.cert,
            token_file=args.token_file,
            insecure_skip_tls_verify=args.insecure_skip_tls_verify,
            tls_server_name=args.tls_server_name,
        )
    except OSError as exc:  # a token file others can read (with the chmod to run), or one that cannot be read
        print(f"radical-edge-service: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # no URL, a bad one, a missing CA file
        parser.error(str(exc))
    if settings.token is None:
        log.warning("no bridge token found (--token, %s, %s): connecting without one", ENV_TOKEN, args.token_file)
    # the token is in the settings now: the processes this edge starts (jobs, tasks, child edges) must not inherit it
    os.environ.pop(ENV_TOKEN, None)
    tune_process()
    if args.staging_root:
        # plugin options travel in the environment (the edge never imports a plugin): the staging plugin reads it
        os.environ[STAGING_ROOTS_ENV] = os.pathsep.join(
            os.path.abspath(os.path.expanduser(p)) for p in args.staging_root
        )
    try:
        service = EdgeService(args.name, settings=settings, plugins=args.plugins, max_body_bytes=args.max_body)
    except (PluginSelectionError, ValueError) as exc:
        parser.error(str(exc))
    try:
        return anyio.run(_serve, service, args.ready_file)
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 130


def write_ready_file(path: str, name: str) -> None:
    """Write ``{edge, pid, host, time}`` to ``path`` atomically (a reader never sees half of it)."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    info = {"edge": name, "pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
    tmp.write_text(json.dumps(info) + "\n")
    os.replace(tmp, target)


async def _serve(service: EdgeService, ready_file: str | None = None) -> int:
    status = 0
    async with anyio.create_task_group() as tg:

        async def announce_ready() -> None:
            try:
                await service.wait_connected()
            except RuntimeError:  # stopped (or refused) before the bridge accepted it
                return
            freeze_startup_objects()  # started (plugins loaded): left out of every later collection
            if ready_file is not None:
                try:
                    await anyio.to_thread.run_sync(write_ready_file, ready_file, service.name)
                except OSError as exc:
                    log.error("cannot write the ready file %s: %s", ready_file, exc)

        tg.start_soon(announce_ready)

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
