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

    def connection_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--url", default=None, help="the bridge (default: RADICAL_BRIDGE_URL)")
        parser.add_argument(
            "--token", default=None, help="bearer token (default: RADICAL_BRIDGE_TOKEN, else the token file)"
        )
        parser.add_argument("--cert", default=None, help="CA file to trust (default: RADICAL_BRIDGE_CERT)")
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    ls = sub.add_parser("ls", help="list edges and their plugins", description="List edges and their plugins.")
    connection_options(ls)
    call = sub.add_parser(
        "call",
        help="call a plugin route: EDGE PLUGIN PATH",
        description="Call /EDGE/PLUGIN/PATH through the bridge and print the answer (pretty JSON when it is JSON).",
    )
    call.add_argument("edge")
    call.add_argument("plugin")
    call.add_argument("path", help="the route under the plugin, with ?query if any")
    call.add_argument("--data", default=None, help="request body: JSON text, or @FILE (implies POST)")
    call.add_argument("--method", default=None, help="HTTP method (default GET, or POST with --data)")
    connection_options(call)
    events = sub.add_parser(
        "events", help="tail notifications", description="Print notifications as they arrive (Ctrl-C to stop)."
    )
    events.add_argument("--edge", default=None, help="only this edge")
    events.add_argument("--plugin", default=None, help="only this plugin")
    events.add_argument("--topic", default=None, help="only this topic")
    events.add_argument("--count", type=int, default=0, help="stop after this many")
    connection_options(events)

    bench = sub.add_parser(
        "bench",
        help="measure the tunnel against the same app served directly (loopback, TLS)",
        description="Start a bridge, an edge and a direct HTTPS server on loopback and measure latency, "
        "throughput, CPU per request, bulk transfer rates, memory and latency under load; print a table "
        "with the targets.",
    )
    bench.add_argument("--quick", action="store_true", help="small sizes and 1 s runs: a smoke test (~15 s)")
    bench.add_argument("--json", action="store_true", help="print the results as JSON (progress goes to stderr)")
    bench.add_argument("--duration", type=float, default=None, help="seconds per latency/throughput run (default 5)")
    bench.add_argument("--size-mib", type=int, default=None, help="bulk download/upload size in MiB (default 256)")
    bench.add_argument(
        "--big-mib", type=int, default=None, help="size of the RSS and loaded-latency transfers in MiB (default 1024)"
    )
    bench.add_argument("--connections", type=int, default=64, help="concurrent connections/streams (default 64)")
    bench.add_argument(
        "--driver",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="HTTP load driver: wrk if installed (auto), else the Python raw-socket client",
    )
    bench.add_argument(
        "--pipeline",
        type=int,
        default=1,
        help="requests in flight per connection for the Python driver's concurrent run (default 1, like wrk)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in ("demo", "up"):
        from ._demo import run_demo  # noqa: PLC0415  (needs the bridge and edge extras)

        anyio.run(run_demo, args.host, args.port, args.plugins, args.name, Path(args.home))
        return 0
    if args.command in ("ls", "call", "events"):
        from ._verbs import run  # noqa: PLC0415  (needs the client extra only)

        return run(args.command, args)
    if args.command == "bench":
        from ._bench import run_bench  # noqa: PLC0415  (needs the bench extra)

        return run_bench(args)
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
