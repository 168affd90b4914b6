"""The benchmark's server processes: ``python -m radical_edge_bench._procs ROLE ...``.

* ``bridge``: the real bridge command (``python -m radical_edge_bridge``), in its own process;
* ``edge``: an edge service whose only plugin is the benchmark app, mounted as ``bench``
  (and, with ``--staging-root``, the staging plugin: the staging section);
* ``direct``: the same app served directly over HTTPS by uvicorn (h11, asyncio: the
  same HTTP parser and event loop as the bridge), the floor the tunnel is compared to;
* ``scale``: the load process of ``--scale N``: N edges and N SDK connections in one
  event loop (:mod:`._swarm`), driven by commands on stdin.

Each process dies with its parent (``PR_SET_PDEATHSIG``) and after ``--max-seconds`` at
the latest, so a crashed benchmark leaves nothing running.  The token comes in the
environment (``RADICAL_BRIDGE_TOKEN``), never on a command line.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import runpy
import signal
import socket
import sys
import threading

READY = "BENCH-READY"


def die_with_parent(max_seconds: float) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    timer = threading.Timer(max_seconds, lambda: os.kill(os.getpid(), signal.SIGKILL))
    timer.daemon = True
    timer.start()


def _run_bridge(args: argparse.Namespace, rest: list[str]) -> int:
    """Run ``python -m radical_edge_bridge`` in this process (which dies with its parent)."""
    sys.argv = ["radical-edge-bridge", "--cert", args.cert, "--key", args.key, *rest]
    runpy.run_module("radical_edge_bridge", run_name="__main__", alter_sys=True)  # exits with the bridge's status
    return 0


def _run_edge(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415

    from radical_edge_tunnel import freeze_startup_objects, tune_process  # noqa: PLC0415

    tune_process()  # as radical-edge-service does

    from radical_edge_edge import EdgeService  # noqa: PLC0415
    from radical_edge_tunnel import resolve_settings  # noqa: PLC0415

    from ._app import build_app  # noqa: PLC0415

    async def serve() -> None:
        # the bridge as every edge finds it: the URL and CA given, the token from RADICAL_BRIDGE_TOKEN
        if args.staging_root:  # the staging plugin too (bench section 7), as radical-edge-service --staging-root
            os.environ["RADICAL_EDGE_STAGING_ROOTS"] = os.pathsep.join(args.staging_root)
        plugins = "staging" if args.staging_root else None
        service = EdgeService(args.name, settings=resolve_settings(args.url, cert=args.ca), plugins=plugins)
        await service.host.add_app("bench", build_app(), version="1")
        async with anyio.create_task_group() as tg:
            tg.start_soon(service.run)
            with anyio.fail_after(30):
                await service.wait_connected()
            freeze_startup_objects()
            print(READY, flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            service.stop()
            with anyio.move_on_after(3):
                while service.state != "stopped":
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()

    anyio.run(serve)
    return 0


def _run_direct(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415

    from radical_edge_tunnel import freeze_startup_objects, tune_process  # noqa: PLC0415

    tune_process()  # the bridge's and the edge's allocator, GC and read settings: the floor is not flattered

    from ._app import build_app  # noqa: PLC0415

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY only then
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    config = uvicorn.Config(
        build_app(),
        ssl_certfile=args.cert,
        ssl_keyfile=args.key,
        http="h11",
        loop="asyncio",
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=1024,
    )
    server = uvicorn.Server(config)
    config.load()  # the app and uvicorn's protocol classes are built before the heap is frozen
    freeze_startup_objects()
    print(f"{READY} {sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])
    return 0


def _run_scale(args: argparse.Namespace) -> int:
    from ._swarm import run  # noqa: PLC0415

    return run(args.url, args.ca, args.count, args.concurrency)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m radical_edge_bench._procs", allow_abbrev=False)
    p.add_argument("role", choices=["bridge", "edge", "direct", "scale"])
    p.add_argument("--max-seconds", type=float, default=3600.0)
    p.add_argument("--url")
    p.add_argument("--ca")
    p.add_argument("--name", default="bench-edge")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--count", type=int, default=10, help="(scale) edges, and as many SDK connections")
    p.add_argument("--concurrency", type=int, default=64, help="(scale) connections being set up at once")
    p.add_argument("--staging-root", action="append", default=[], help="(edge) add the staging plugin, this root")
    args, rest = p.parse_known_args(argv)
    die_with_parent(args.max_seconds)
    if args.role == "bridge":
        return _run_bridge(args, rest)
    if args.role == "edge":
        return _run_edge(args)
    if args.role == "scale":
        return _run_scale(args)
    return _run_direct(args)


if __name__ == "__main__":
    sys.exit(main())
