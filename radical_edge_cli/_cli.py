"""``radical-edge``: the user's command (demo, ls, call, events, queues, submit, jobs, cancel, put, get, cp, bench)."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio

from ._hpc import add_parsers as add_hpc_parsers
from ._staging import add_parsers as add_staging_parsers


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

    ls = sub.add_parser(
        "ls",
        help="list edges and their plugins; EDGE:PATH lists files on an edge",
        description="Without an argument, list the edges and their plugins; with EDGE, that edge's. With "
        "EDGE:PATH (a colon), list the directory PATH on EDGE through its staging plugin: type, mode, size, "
        "modification time and name (PATH: absolute, ~/..., or relative to the edge's first staging root; "
        "EDGE: alone lists that root).",
    )
    ls.add_argument("target", nargs="?", default=None, metavar="EDGE[:PATH]")
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
    add_hpc_parsers(sub, connection_options)
    add_staging_parsers(sub, connection_options)

    # the benchmark is its own package (radical_edge_bench) with its own options: they are passed on as given
    sub.add_parser(
        "bench",
        add_help=False,
        help="measure the tunnel against the same app served directly (loopback, TLS); bench --help for options",
        description="Run the benchmark (radical_edge_bench); see radical-edge bench --help.",
    )
    return p


def _demo(args: argparse.Namespace, rest: list[str]) -> int:
    from radical_edge_tunnel import tune_process  # noqa: PLC0415

    from ._demo import run_demo  # noqa: PLC0415  (needs the bridge and edge extras)

    tune_process()  # the demo's bridge and edge run in this process
    anyio.run(run_demo, args.host, args.port, args.plugins, args.name, Path(args.home))
    return 0


def _verb(args: argparse.Namespace, rest: list[str]) -> int:
    from ._verbs import run  # noqa: PLC0415  (needs the client extra only)

    return run(args.command, args)


#: what ``radical-edge bench`` runs: the benchmark's own command line, in a new program.  Not imported here:
#: radical_edge_bench imports this package (its public ensure_dev_tls), and two packages never import each other
_BENCH_PROGRAM = "import sys; from radical_edge_bench import main; sys.exit(main(prog='radical-edge bench'))"


def _bench(args: argparse.Namespace, rest: list[str]) -> int:
    command = [sys.executable, "-c", _BENCH_PROGRAM, *rest]  # running it needs the bench extra
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":  # the benchmark takes this process over: its output, Ctrl-C and exit status are direct
        os.execv(sys.executable, command)
    return subprocess.call(command)  # pragma: no cover - the benchmark runs on Linux only


#: sub-command (or alias) -> handler(its arguments, the arguments left over)
COMMANDS: dict[str, Callable[[argparse.Namespace, list[str]], int]] = {
    "demo": _demo,
    "up": _demo,
    "ls": _verb,
    "call": _verb,
    "events": _verb,
    "queues": _verb,
    "submit": _verb,
    "jobs": _verb,
    "cancel": _verb,
    "put": _verb,
    "get": _verb,
    "cp": _verb,
    "bench": _bench,
}
#: the sub-commands that take their own options as given (the others refuse what the parser did not know)
PASS_THROUGH = frozenset({"bench"})
#: the sub-commands that take a command after ``--`` (``args.cmd``), given to them word for word
TAKES_COMMAND = frozenset({"submit"})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args, rest = parser.parse_known_args(argv)
    if args.command in TAKES_COMMAND and "--" in argv:
        # what follows the first "--" is the command, word for word (argparse would drop a second "--")
        split = argv.index("--")
        args, rest = parser.parse_known_args(argv[:split])
        if args.cmd:
            parser.error(f"{args.command}: the command goes after '--' only, not before it: {' '.join(args.cmd)}")
        args.cmd = argv[split + 1 :]
    if rest and args.command not in PASS_THROUGH:
        hint = " (put the command after '--')" if args.command in TAKES_COMMAND else ""
        parser.error(f"unrecognized arguments: {' '.join(rest)}{hint}")
    if args.command in TAKES_COMMAND and not args.cmd:
        parser.error(f"{args.command}: no command given: radical-edge {args.command} EDGE [options] -- CMD [ARGS...]")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return COMMANDS[args.command](args, rest)


if __name__ == "__main__":
    sys.exit(main())
