"""The benchmark's command line: ``python -m radical_edge_bench`` and ``radical-edge bench``.

Only the standard library here (and in :mod:`._report`): the command line parses,
and ``--help`` answers, without the benchmark's dependencies; they are imported to run it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from ._report import render

DESCRIPTION = (
    "Start a bridge, an edge and a direct HTTPS server on loopback and measure latency, "
    "throughput, CPU per request, bulk transfer rates, memory and latency under load, and a file up and down "
    "through the edge's staging plugin next to a raw TLS socket copy; print a table "
    "with the targets.  With --scale N, only the scale benchmark: a bridge and one load process holding N "
    "edges and N SDK connections (bridge RSS and CPU per idle edge, GET /edges, the topology snapshot, "
    "a bridge restart)."
)


def build_parser(prog: str = "python -m radical_edge_bench") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    p.add_argument("--quick", action="store_true", help="small sizes and 1 s runs: a smoke test (~15 s)")
    p.add_argument("--json", action="store_true", help="print the results as JSON (progress goes to stderr)")
    p.add_argument("--duration", type=float, default=None, help="seconds per latency/throughput run (default 5)")
    p.add_argument("--size-mib", type=int, default=None, help="bulk and staging transfer size in MiB (default 256)")
    p.add_argument(
        "--big-mib", type=int, default=None, help="size of the RSS and loaded-latency transfers in MiB (default 1024)"
    )
    p.add_argument("--connections", type=int, default=64, help="concurrent connections/streams (default 64)")
    p.add_argument(
        "--driver",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="HTTP load driver: wrk if installed (auto), else the Python raw-socket client",
    )
    p.add_argument(
        "--pipeline",
        type=int,
        default=1,
        help="requests in flight per connection for the Python driver's concurrent run (default 1, like wrk)",
    )
    p.add_argument(
        "--scale",
        type=_count,
        default=None,
        metavar="N",
        help="run only the scale benchmark: N idle edges and N SDK connections against one bridge "
        "(its RSS and CPU per idle edge, GET /edges, the topology snapshot, a bridge restart); e.g. 1000",
    )
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=None,
        help="(--scale) seconds over which the idle CPU is measured (default: one idle heartbeat interval of the "
        "edges or the SDK connections, the longer: each connection sends one PING in any such window)",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=float,
        default=None,
        help="(--scale) the bridge's --heartbeat-interval (default: the bridge's own default)",
    )
    p.add_argument(
        "--idle-heartbeat-interval",
        type=float,
        default=None,
        help="(--scale) the bridge's --idle-heartbeat-interval (default: the bridge's own default)",
    )
    return p


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


@dataclass
class Options:
    quick: bool = False
    json: bool = False
    duration: float = 5.0
    size_mib: int = 256
    big_mib: int = 1024
    connections: int = 64
    driver: str = "auto"
    pipeline: int = 1
    #: --scale N: run the scale benchmark only, with N edges (and N SDK connections)
    scale: int | None = None
    #: (--scale) None: one heartbeat interval of an idle connection (:meth:`idle_window`)
    idle_seconds: float | None = None
    heartbeat_interval: float | None = None
    idle_heartbeat_interval: float | None = None

    def idle_window(self, intervals: Iterable[float]) -> float:
        """(--scale) seconds over which the idle CPU is measured: as asked, else the longest of the idle
        connections' heartbeat ``intervals``, so that each connection's PING falls in it once."""
        return self.idle_seconds if self.idle_seconds is not None else max(intervals)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        quick = bool(args.quick)
        return cls(
            quick=quick,
            json=bool(args.json),
            duration=args.duration if args.duration is not None else (1.0 if quick else 5.0),
            size_mib=args.size_mib if args.size_mib is not None else (8 if quick else 256),
            big_mib=args.big_mib if args.big_mib is not None else (32 if quick else 1024),
            connections=args.connections,
            driver=args.driver,
            pipeline=max(1, args.pipeline),
            scale=args.scale,
            idle_seconds=None if args.idle_seconds is None else max(0.5, args.idle_seconds),
            heartbeat_interval=args.heartbeat_interval,
            idle_heartbeat_interval=args.idle_heartbeat_interval,
        )


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments), run the benchmark, print the table or the JSON."""
    args = build_parser(prog or "python -m radical_edge_bench").parse_args(argv)
    options = Options.from_args(args)
    from radical_edge_tunnel import tune_process  # noqa: PLC0415

    from ._bench import run  # noqa: PLC0415  (needs the bench extra: the parser does not)

    tune_process()  # the clients (SDK, load drivers, raw copies) run in this process: tuned as the CLI's are
    results = run(options)
    print(json.dumps(results, indent=2) if options.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
