"""``radical-edge``: the user's command (demo, ls, call, events, bench)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import anyio


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="radical-edge", description="radical-edge: HPC machines behind one bridge.")
    p.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default), ERROR")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        aliases=["up"],
        help="run a bridge, a local edge and the portal in one process",
        description="Run a bridge, a local edge with every plugin that can run here, and the portal. "
        "Makes a development CA, certificate and token under ~/.radical/edge/ if there are none.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    demo.add_argument("--plugins", default="all", help="plugins of the local edge (default: all)")
    demo.add_argument("--name", default=None, help="name of the local edge (default: the host name)")
    demo.add_argument("--home", default="~/.radical/edge", help="where the dev CA, certificate and token live")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in ("demo", "up"):
        from ._demo import run_demo  # noqa: PLC0415  (needs the bridge and edge extras)

        anyio.run(run_demo, args.host, args.port, args.plugins, args.name, Path(args.home))
        return 0
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
