"""The user verbs of ``radical-edge`` (through the SDK): ls, call, events; queues, submit, jobs, cancel in ``_hpc``;
put, get, cp and ``ls EDGE:PATH`` in ``_staging``."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

import anyio

from radical_edge_client import EdgeNotFound, RadicalEdgeError
from radical_edge_tunnel import tune_process

from . import _hpc, _staging
from ._term import isatty, shown


async def ls(args: Any, out: TextIO = sys.stdout) -> int:
    """Edges and their plugins (``EDGE``: one edge's); ``EDGE:PATH``: files on the edge (:mod:`._staging`)."""
    target = getattr(args, "target", None)
    if target and _staging.parse_remote(target) is not None:
        return await _staging.listing(args, out)
    async with _hpc.connect(args) as client:
        topology = await client.topology()
    edges = topology.get("edges", {})
    if target:
        if target not in edges:
            raise EdgeNotFound(f"no edge named {target!r} (radical-edge ls lists the edges)", 404)
        edges = {target: edges[target]}
    if args.json:
        out.write(json.dumps(edges, indent=2, sort_keys=True) + "\n")
        return 0
    if not edges:
        out.write("no edges\n")
        return 0
    rows = [["EDGE", "CONNECTED", "PLUGINS"]]
    for name, edge in sorted(edges.items()):
        plugins = edge.get("plugins", {})
        names = [p if info.get("enabled", True) else f"{p}(not loaded)" for p, info in sorted(plugins.items())]
        connected = "yes" if (edge.get("endpoint") or {}).get("connected", True) else "no"
        rows.append([name, connected, ", ".join(names) or "-"])
    _hpc.table(rows, out)
    return 0


def _body(data: str | None) -> tuple[Any, bytes | None]:
    """``--data``: JSON text, or ``@FILE`` for a file's bytes."""
    if data is None:
        return None, None
    if data.startswith("@"):
        return None, Path(data[1:]).expanduser().read_bytes()
    try:
        return json.loads(data), None
    except ValueError:
        raise SystemExit(f"radical-edge call: --data is neither JSON nor @FILE: {data[:60]!r}") from None


async def call(args: Any, out: TextIO = sys.stdout) -> int:
    """One request to ``/{edge}/{plugin}/{path}``; prints the answer's body."""
    json_body, raw = _body(args.data)
    method = args.method or ("POST" if args.data is not None else "GET")
    path = f"/{args.edge}/{args.plugin}/{args.path.lstrip('/')}"
    async with _hpc.connect(args) as client:
        answer = await client.request(method, path, json=json_body, data=raw)
    if args.json:
        try:
            body: Any = answer.json()
        except RadicalEdgeError:
            body = answer.text
        out.write(json.dumps({"status": answer.status, "body": body}, indent=2) + "\n")
        return 0
    try:
        out.write(json.dumps(answer.json(), indent=2) + "\n")
    except RadicalEdgeError:
        # the body as it is into a file or a pipe; on a terminal its control characters are shown escaped
        text = shown(answer.text, keep="\n\t") if isatty(out) else answer.text
        out.write(text + ("" if text.endswith("\n") else "\n"))
    return 0


async def events(args: Any, out: TextIO = sys.stdout) -> int:
    """Print notifications as they come (``--count`` to stop after N)."""
    done = anyio.Event()
    seen = 0

    def show(edge: str, plugin: str, topic: str, data: Any) -> None:
        nonlocal seen
        if dataclasses.is_dataclass(data) and not isinstance(data, type):
            data = dataclasses.asdict(data)  # an EventGap: say so, never hide it
        if args.json:
            out.write(json.dumps({"edge": edge, "plugin": plugin, "topic": topic, "data": data}) + "\n")
        else:
            out.write(f"{shown(edge)}/{shown(plugin)}/{shown(topic)}: {json.dumps(data)}\n")
        out.flush()
        seen += 1
        if args.count and seen >= args.count:
            done.set()

    async with _hpc.connect(args) as client:
        await client.register_callback(args.edge, args.plugin, args.topic, show)
        if not args.json:
            sys.stderr.write("waiting for events (Ctrl-C to stop)\n")
        await done.wait()
    return 0


#: verb -> its coroutine function(args) -> exit status
VERBS: dict[str, Callable[[Any], Awaitable[int]]] = {
    "ls": ls,
    "call": call,
    "events": events,
    "queues": _hpc.queues,
    "submit": _hpc.submit,
    "jobs": _hpc.jobs,
    "cancel": _hpc.cancel,
    "put": _staging.put,
    "get": _staging.get,
    "cp": _staging.cp,
}


def run(verb: str, args: Any) -> int:
    fn = VERBS[verb]
    # this command's own process: buffers kept in the heap, fewer collections, large socket reads (a put or
    # get of a large file: 7-12 % less CPU in the SDK, which otherwise faults in every page it moves)
    tune_process()
    try:
        return anyio.run(fn, args)
    except (RadicalEdgeError, PermissionError) as exc:  # PermissionError: a token file others can read
        sys.stderr.write(f"radical-edge {verb}: {type(exc).__name__}: {shown(exc)}\n")
        return 1
    except KeyboardInterrupt:
        following = getattr(args, "following", None)
        interrupted = getattr(args, "on_interrupt", None)
        if interrupted:  # put, get, cp: what the interrupted transfer left, and how to go on
            bar = "\n" if sys.stderr.isatty() else ""  # ends the progress bar's line
            sys.stderr.write(f"{bar}radical-edge {verb}: {shown(interrupted)}\n")
        elif following:  # submit --follow: stopping to follow does not stop the job
            sys.stderr.write(
                f"radical-edge {verb}: stopped following; job {shown(following)} goes on "
                f"(radical-edge cancel {args.edge} {shown(following)} stops it)\n"
            )
        return 130
