"""``radical-edge bench --scale N``: what N idle edges (and N SDK connections) cost the bridge.

Two processes on loopback with TLS: the real bridge (``python -m radical_edge_bridge``,
token in the environment) and one load process (:mod:`._swarm`) holding N edges
(each an :class:`~radical_edge_edge.EdgeService` with its own name on WS
``/register``) and N SDK connections (WS ``/connect``), all in one event loop.
Before them, with nothing else running, a plain TCP echo server on asyncio and its
2N connections at the heartbeats' rate (:mod:`._echo`): what the event loop alone
spends on that traffic, printed beside the bridge's idle CPU.
Measured:

1. the bridge's RSS before any edge and once everything is connected and idle:
   the difference over N is the cost of one edge *plus one SDK connection*;
2. the bridge's CPU while everything is idle (heartbeats only), from
   ``/proc/PID/stat``, as a percentage of one core; the load process's too;
3. ``GET /edges`` with N edges listed (p50 of a few calls on one keep-alive
   connection), and the time a new subscriber waits for the whole topology:
   on ``GET /events`` (SSE, the first frame) and on ``/connect`` (SUBSCRIBE, until
   the last snapshot part);
4. a bridge crash and restart: SIGKILL, a new bridge on the same port with the same
   certificate and token, and the time until all N edges are registered again
   (``GET /healthz``), with when each edge came back (the load process watches
   every connection's handshakes), to show how the redial jitter spreads the storm.

All connections come from 127.0.0.1, so the bridge runs with
``--max-connections-per-peer`` raised to fit them (its default of 256 per IP
address is a flood guard, not what is measured here).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from radical_edge_bridge import BridgeConfig
from radical_edge_cli import ensure_dev_tls
from radical_edge_proto import Notification, PeerRole, profile
from radical_edge_tunnel import BridgeSettings, Redialer

from ._bench import HOST, Proc, _log, _machine, bridge_argv
from ._cli import Options
from ._echo import MESSAGE as ECHO_MESSAGE
from ._load import ResponseReader, request_bytes

TARGETS = {
    "rss_kib_per_edge": 100.0,  # bridge RSS per idle edge (with its SDK connection) <=
    "idle_cpu_pct": 2.0,  # bridge CPU while idle, % of one core <=
    "restart_s": 30.0,  # all edges registered again after a bridge restart <=
    "edges_ms": 100.0,  # GET /edges p50 <=
}
EDGES_CALLS = 7
#: fewer exchanges than this in the window: no per-exchange figure for the echo server (too few clock ticks)
ECHO_MIN_EXCHANGES = 200


class ScaleBench:
    def __init__(self, options: Options, workdir: Path) -> None:
        assert options.scale is not None
        self.o = options
        self.n = options.scale
        self.dir = workdir
        self.token = secrets.token_urlsafe(24)
        self.procs: dict[str, Proc] = {}
        self.port = 0
        self.ca = ""
        self.ctx: ssl.SSLContext | None = None
        self.env: dict[str, str] = {}
        self.bridge_argv: list[str] = []
        self.starts = 0
        # the bridge's heartbeat intervals, as its command line makes them from the options (checked there too)
        busy, idle = options.heartbeat_interval, options.idle_heartbeat_interval
        config = BridgeConfig(
            heartbeat_interval=BridgeConfig.heartbeat_interval if busy is None else busy,
            idle_heartbeat_interval=BridgeConfig.idle_heartbeat_interval if idle is None else idle,
        )
        self.busy_interval = config.heartbeat_interval
        self.idle_interval = config.edge_idle_heartbeat_interval
        self.client_interval = config.client_heartbeat_interval
        self.idle_seconds = options.idle_window((self.idle_interval, self.client_interval))
        #: before the idle CPU is measured: the set-up's garbage (the window is one whole idle interval, so each
        #: connection's PING falls in it once whenever it starts)
        self.settle_seconds = min(3.0, self.idle_seconds)

    # ------------------------------------------------------------ processes

    def _run(self) -> list[str]:
        return [sys.executable, "-m", "radical_edge_bench._procs"]

    def _max_seconds(self) -> float:
        return 900 + self.n * 0.5 + self.idle_seconds

    def start_bridge(self, port: int) -> Proc:
        """Start the bridge on ``port`` (0: any free one) and wait until it listens."""
        self.starts += 1
        bridge = self.procs["bridge"] = Proc(
            "bridge",
            [*self.bridge_argv, "--port", str(port)],
            self.env,
            self.dir / f"bridge-{self.starts}.log",
        )
        self.port = int(bridge.wait_for(r"listening on https://[^:]+:(\d+)", 60).group(1))
        return bridge

    def setup(self) -> None:
        tls = ensure_dev_tls(self.dir / "tls")
        self.ca = str(tls.ca)
        self.ctx = ssl.create_default_context(cafile=self.ca)
        self.env = {**os.environ, "RADICAL_BRIDGE_TOKEN": self.token, "PYTHONUNBUFFERED": "1"}
        for name in ("RADICAL_BRIDGE_CERT", "RADICAL_BRIDGE_KEY", "RADICAL_BRIDGE_URL"):
            self.env.pop(name, None)
        conns = 2 * self.n
        self.bridge_argv = [
            *bridge_argv(tls, self.dir, self._max_seconds()),
            "--max-connections",
            str(max(4096, conns + 256)),
            "--max-connections-per-peer",
            str(conns + 64),
        ]
        if self.o.heartbeat_interval is not None:
            self.bridge_argv += ["--heartbeat-interval", str(self.o.heartbeat_interval)]
        if self.o.idle_heartbeat_interval is not None:
            self.bridge_argv += ["--idle-heartbeat-interval", str(self.o.idle_heartbeat_interval)]

    def stop(self) -> None:
        load = self.procs.get("load")
        if load is not None and load.alive() and load.popen.stdin is not None:
            try:
                load.popen.stdin.write(b"quit\n")
                load.popen.stdin.flush()
                load.popen.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for proc in self.procs.values():
            try:
                proc.stop()
            except Exception:
                proc.popen.kill()

    def _logs(self) -> str:
        return "\n".join(f"--- {p.name} log:\n{p.log_tail()}" for p in self.procs.values())

    # ------------------------------------------------------------ HTTP helpers

    async def http(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        """One GET on a new TLS connection: (status, body)."""
        assert self.ctx is not None
        with anyio.fail_after(timeout):
            reader, writer = await asyncio.open_connection(HOST, self.port, ssl=self.ctx, server_hostname=HOST)
            try:
                writer.write(request_bytes("GET", path, self.token, f"{HOST}:{self.port}"))
                parser = ResponseReader()
                while not parser.done:
                    data = await reader.read(65536)
                    if not data:
                        raise ConnectionError(f"GET {path}: the bridge closed the connection")
                    parser.feed(data)
                return parser.done.popleft()
            finally:
                writer.close()

    async def healthz_edges(self) -> int | None:
        try:
            status, body = await self.http("/healthz", 5)
        except (OSError, TimeoutError, ConnectionError, ValueError):
            return None
        return int(json.loads(body)["edges"]) if status == 200 else None

    async def time_edges(self) -> dict[str, Any]:
        """``GET /edges`` a few times on one keep-alive connection: p50, max, what it listed."""
        assert self.ctx is not None
        reader, writer = await asyncio.open_connection(HOST, self.port, ssl=self.ctx, server_hostname=HOST)
        times: list[float] = []
        body = b""
        try:
            request = request_bytes("GET", "/edges", self.token, f"{HOST}:{self.port}")
            parser = ResponseReader()
            with anyio.fail_after(60):
                for _ in range(EDGES_CALLS):
                    t0 = time.perf_counter()
                    writer.write(request)
                    while not parser.done:
                        data = await reader.read(1 << 20)
                        if not data:
                            raise ConnectionError("GET /edges: the bridge closed the connection")
                        parser.feed(data)
                    status, body = parser.done.popleft()
                    times.append((time.perf_counter() - t0) * 1000)
                    if status != 200:
                        raise RuntimeError(f"GET /edges: HTTP {status}: {body[:200]!r}")
        finally:
            writer.close()
        listed = json.loads(body)
        return {
            "calls": len(times),
            "p50_ms": round(_percentile(times, 50), 3),
            "max_ms": round(max(times), 3),
            "body_bytes": len(body),
            "total": listed["total"],
            "connected": sum(bool(e["connected"]) for e in listed["edges"]),
        }

    async def time_sse_snapshot(self) -> dict[str, Any]:
        """A new ``GET /events`` reader: time until its first frame (the whole topology) has arrived."""
        assert self.ctx is not None
        t0 = time.perf_counter()
        reader, writer = await asyncio.open_connection(HOST, self.port, ssl=self.ctx, server_hostname=HOST)
        try:
            connected = time.perf_counter()
            writer.write(request_bytes("GET", "/events", self.token, f"{HOST}:{self.port}"))
            buf = b""
            with anyio.fail_after(60):
                while b"\r\n\r\n" not in buf:
                    buf += await _read(reader)
                head, rest = buf.split(b"\r\n\r\n", 1)
                if b" 200 " not in head.split(b"\r\n", 1)[0]:
                    raise RuntimeError(f"GET /events: {head[:200]!r}")
                body = b""
                while b"\n\n" not in body:  # the first SSE frame, out of the chunked body
                    while b"\r\n" not in rest:
                        rest += await _read(reader)
                    size_line, rest = rest.split(b"\r\n", 1)
                    size = int(size_line.split(b";")[0], 16)
                    while len(rest) < size + 2:
                        rest += await _read(reader)
                    body += rest[:size]
                    rest = rest[size + 2 :]
            done = time.perf_counter()
        finally:
            writer.close()
        frame = body.split(b"\n\n", 1)[0]
        data = next(line[6:] for line in frame.split(b"\n") if line.startswith(b"data: "))
        snapshot = json.loads(data)
        return {
            "ms": round((done - connected) * 1000, 3),
            "with_connect_ms": round((done - t0) * 1000, 3),
            "bytes": len(frame),
            "edges": len(snapshot["data"]["edges"]),
        }

    async def time_connect_snapshot(self) -> dict[str, Any]:
        """A new ``/connect`` subscriber: time from SUBSCRIBE until the last part of the topology snapshot."""
        settings = BridgeSettings.create(f"https://{HOST}:{self.port}", token=self.token, cert=self.ca)
        edges: dict[str, Any] = {}
        parts = 0
        nbytes = 0
        complete = anyio.Event()

        def on_event(event: object) -> None:
            nonlocal parts, nbytes
            if isinstance(event, Notification) and event.topic == profile.TOPIC_TOPOLOGY and event.seq == 0:
                part = json.loads(event.payload)
                parts += 1
                nbytes += len(event.payload)
                edges.update(part["edges"])
                if not part["more"]:
                    complete.set()

        dialer = Redialer(settings, role=PeerRole.CLIENT, name="scale-watcher", on_event=on_event)
        t0 = time.perf_counter()
        tunnel = await dialer.connect()
        connected = time.perf_counter()
        async with anyio.create_task_group() as tg:
            await tg.start(tunnel.run)
            t1 = time.perf_counter()
            await tunnel.subscribe(1)
            with anyio.fail_after(60):
                await complete.wait()
            done = time.perf_counter()
            await tunnel.aclose()
            tg.cancel_scope.cancel()
        return {
            "ms": round((done - t1) * 1000, 3),
            "dial_ms": round((connected - t0) * 1000, 3),
            "parts": parts,
            "bytes": nbytes,
            "edges": len(edges),
        }

    async def echo_floor(self, interval: float, client_interval: float) -> dict[str, Any]:
        """What asyncio alone spends on the heartbeats' traffic (:mod:`._echo`): a plain TCP echo server with
        N connections at the edges' interval and N at the SDK connections', over the same seconds as the
        bridge's idle CPU; its CPU, and per exchange from the echoes the clients counted."""
        n = self.n
        _log(
            f"bench --scale: an asyncio echo server, {2 * n} connections at the heartbeats' rate, "
            f"over {self.idle_seconds:g} s"
        )
        echo_argv = [sys.executable, "-m", "radical_edge_bench._echo"]
        limit = ["--max-seconds", str(self._max_seconds())]
        server = self.procs["echo"] = Proc("echo", [*echo_argv, "serve", *limit], self.env, self.dir / "echo.log")
        port = server.wait_for(r"ECHO-LISTENING (\d+)", 30).group(1)
        beats = self.procs["echo-beats"] = Proc(
            "echo-beats",
            [
                *echo_argv,
                "beat",
                port,
                *limit,
                "--count",
                str(n),
                "--interval",
                str(interval),
                "--slow-count",
                str(n),
                "--slow-interval",
                str(client_interval),
            ],
            self.env,
            self.dir / "echo-beats.log",
            commands=True,
        )
        try:
            beats.wait_for(r"ECHO-READY", 60 + n * 0.05)
            await anyio.sleep(self.settle_seconds)
            cpu0, count0, t0 = server.cpu(), self._echoes(beats), time.monotonic()
            await anyio.sleep(self.idle_seconds)
            cpu, echoes, seconds = server.cpu() - cpu0, self._echoes(beats) - count0, time.monotonic() - t0
        finally:
            for name in ("echo-beats", "echo"):
                self.procs.pop(name).stop()
        return {
            "server": "a plain TCP echo server on asyncio (an asyncio.Protocol writing back what it reads: no TLS, "
            "no WebSocket, no tunnel protocol, no timers, no tasks)",
            "message_bytes": len(ECHO_MESSAGE),
            "seconds": round(seconds, 2),
            "exchanges": echoes,
            "server_pct": round(cpu / seconds * 100, 3),
            # /proc counts CPU in clock ticks: a short window says little per exchange
            "us_per_exchange": round(cpu / echoes * 1e6, 1) if echoes >= ECHO_MIN_EXCHANGES else None,
        }

    @staticmethod
    def _echoes(beats: Proc) -> int:
        return int(beats.command("count", r"ECHO-COUNT (\d+)", 30).group(1))

    # ------------------------------------------------------------ the run

    async def run(self) -> dict[str, Any]:
        n = self.n
        per_address = BridgeConfig.tls_handshake_concurrency_per_peer
        res: dict[str, Any] = {"machine": _machine()}
        res["options"] = {
            "scale": n,
            "idle_seconds": self.idle_seconds,
            "heartbeat_interval": self.o.heartbeat_interval,
            "idle_heartbeat_interval": self.o.idle_heartbeat_interval,
        }
        out: dict[str, Any] = {
            "edges": n,
            "sdk_connections": n,
            "per_peer_cap": (
                f"--max-connections-per-peer {2 * n + 64}: every connection comes from 127.0.0.1 and the "
                "default cap (256 per IP address) is a flood guard, not what is measured; the load process "
                "dials with the stock Redialer, which has no source-address option; TLS handshakes in progress: "
                f"the bridge's defaults ({BridgeConfig.tls_handshake_concurrency} at once, {per_address} per "
                f"address, so {per_address} here)"
            ),
            "heartbeat_interval_s": self.busy_interval,
            "idle_heartbeat_interval_s": self.idle_interval,
            "client_heartbeat_interval_s": self.client_interval,
        }
        res["scale"] = out
        self.setup()
        # first, with nothing else running: what asyncio alone spends on the same heartbeat traffic
        interval = self.idle_interval  # the edges are idle
        client_interval = self.client_interval
        echo = await self.echo_floor(interval, client_interval)
        bridge = self.start_bridge(0)
        _log(f"bench --scale: bridge on port {self.port}")
        await anyio.sleep(0.5)
        await self.healthz_edges()  # the HTTP path has served once
        await anyio.sleep(0.5)
        rss_before = bridge.memory()["VmRSS"]

        _log(f"bench --scale: connecting {n} edges and {n} SDK connections from one load process")
        load = self.procs["load"] = Proc(
            "load",
            [
                *self._run(),
                "scale",
                "--max-seconds",
                str(self._max_seconds()),
                "--url",
                f"https://{HOST}:{self.port}",
                "--ca",
                self.ca,
                "--count",
                str(n),
            ],
            self.env,
            self.dir / "load.log",
            commands=True,
        )
        ready = json.loads(load.wait_for(r"SCALE-READY (\{.*\})", 120 + n * 0.2).group(1))
        out["connect"] = {
            "seconds": ready["connect_s"],
            "edges_seconds": ready["edges_connect_s"],
            "concurrency": ready["concurrency"],
            "load_nofile": ready["nofile"],
        }
        seen = await self.healthz_edges()
        with anyio.move_on_after(10):  # (each edge has its WELCOME: the bridge lists it at once, or nearly)
            while seen != n:
                await anyio.sleep(0.1)
                seen = await self.healthz_edges()
        if seen != n:
            raise RuntimeError(f"the bridge lists {seen} connected edges, not {n}\n{self._logs()}")
        out["connect"]["edges_registered"] = seen

        await anyio.sleep(self.settle_seconds)
        _log(f"bench --scale: idle CPU over {self.idle_seconds:g} s")
        procs = {"bridge": bridge, "load": load}
        cpu0 = {k: p.cpu() for k, p in procs.items()}
        t0 = time.monotonic()
        await anyio.sleep(self.idle_seconds)
        seconds = time.monotonic() - t0
        cpu = {k: p.cpu() - cpu0[k] for k, p in procs.items()}
        rss_after = bridge.memory()["VmRSS"]
        delta = rss_after - rss_before
        bridge_pct = cpu["bridge"] / seconds * 100
        # an idle connection costs the bridge one PING/PONG exchange per interval (the connector pings):
        # what one exchange costs, and the idle edges' interval that meets the target at that cost
        exchanges = n * seconds * (1 / interval + 1 / client_interval)
        per_exchange = cpu["bridge"] / exchanges if exchanges else 0.0
        budget = TARGETS["idle_cpu_pct"] / 100 - n * per_exchange / client_interval
        out["idle_cpu"] = {
            "seconds": round(seconds, 2),
            "bridge_pct": round(bridge_pct, 3),
            "load_pct": round(cpu["load"] / seconds * 100, 3),
            "bridge_us_per_exchange": round(per_exchange * 1e6, 1),
            "interval_for_target_s": round(n * per_exchange / budget, 1) if budget > 0 and per_exchange else None,
            "echo_floor": echo,
        }
        out["rss"] = {
            "bridge_before_mib": round(rss_before, 2),
            "bridge_after_mib": round(rss_after, 2),
            "delta_mib": round(delta, 2),
            "per_edge_kib": round(delta * 1024 / n, 2),
            "per_connection_kib": round(delta * 1024 / (2 * n), 2),
            "per_edge_counts": "one edge (WS /register) and one SDK connection (WS /connect): (after - before) / N",
            "load_mib": round(load.memory()["VmRSS"], 2),
        }

        _log("bench --scale: GET /edges, and the topology snapshot of a new subscriber")
        out["edges_route"] = await self.time_edges()
        out["snapshot"] = {"sse": await self.time_sse_snapshot(), "connect": await self.time_connect_snapshot()}
        check = json.loads(load.command(f"check {min(n, 50)}", r"SCALE-CHECK (\{.*\})", 120).group(1))
        out["routing_check"] = {"before_restart": check}

        out["restart"] = await self.restart(load)
        check = json.loads(load.command(f"check {min(n, 50)}", r"SCALE-CHECK (\{.*\})", 120).group(1))
        out["routing_check"]["after_restart"] = check
        res["targets"] = targets(out)
        return res

    async def restart(self, load: Proc) -> dict[str, Any]:
        """SIGKILL the bridge, start a new one on the same port, time the edges' return.

        A subscriber on the new bridge (dialled as soon as it listens) notes when each
        edge registers (its ``topology_change`` event, or the snapshot for edges that
        were quicker than the subscriber); the load process notes when each edge and
        SDK connection completed its handshake; ``GET /healthz`` confirms the count.
        """
        n = self.n
        _log(f"bench --scale: SIGKILL the bridge, start a new one on port {self.port}, wait for {n} edges")
        load.command("watch", r"SCALE-WATCHING", 30)
        old = self.procs["bridge"]
        cpu_load0 = load.cpu()
        killed = time.monotonic()
        os.kill(old.pid, signal.SIGKILL)
        old.popen.wait(30)
        old.stop()
        bridge = self.start_bridge(self.port)
        listening = time.monotonic() - killed
        cpu_bridge0 = bridge.cpu()
        registered: dict[str, float] = {}
        all_back = anyio.Event()

        def on_event(event: object) -> None:
            if not isinstance(event, Notification) or event.source != profile.BRIDGE_SOURCE:
                return
            now = time.monotonic()
            if event.topic == profile.TOPIC_TOPOLOGY_CHANGE:
                change = json.loads(event.payload)
                if change["change"] == "connected":
                    registered.setdefault(change["edge"], now)
            elif event.topic == profile.TOPIC_TOPOLOGY:
                for name, state in json.loads(event.payload)["edges"].items():
                    if state["endpoint"]["connected"]:
                        registered.setdefault(name, now)
            if len(registered) >= n:
                all_back.set()

        settings = BridgeSettings.create(f"https://{HOST}:{self.port}", token=self.token, cert=self.ca)
        watcher = Redialer(settings, role=PeerRole.CLIENT, name="scale-watcher", on_event=on_event)
        timeout = 120 + n * 0.1
        async with anyio.create_task_group() as tg:
            with anyio.fail_after(30):
                tunnel = await watcher.connect()
                await tg.start(tunnel.run)
                await tunnel.subscribe(1, profile.BRIDGE_EVENTS)
            try:
                with anyio.fail_after(timeout):
                    await all_back.wait()
            except TimeoutError:
                seen = await self.healthz_edges()
                raise RuntimeError(f"after the restart only {seen} of {n} edges came back\n{self._logs()}") from None
            back = max(registered.values()) - killed
            cpu_bridge = bridge.cpu() - cpu_bridge0
            await tunnel.aclose()
            tg.cancel_scope.cancel()
        confirmed = await self.healthz_edges()
        if confirmed != n:
            raise RuntimeError(f"the subscriber saw {n} edges come back, GET /healthz says {confirmed}")
        # the edges' and SDK connections' own view (the SDK connections were dialling meanwhile)
        report: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            report = json.loads(load.command("report", r"SCALE-REPORT (\{.*\})", 30).group(1))
            if None not in report["edges_reconnected_at"] and None not in report["clients_reconnected_at"]:
                break
            await anyio.sleep(0.2)
        at_bridge = [t - killed for t in registered.values()]
        edges = [t - killed for t in report["edges_reconnected_at"] if t is not None]
        clients = [t - killed for t in report["clients_reconnected_at"] if t is not None]
        redialed = [t - killed for t in report["clients_redialed_at"] if t is not None]
        metrics = await self.metrics()
        last = max([*at_bridge, *clients], default=0.0)
        width = 0.25 if last <= 3 else 1.0 if last <= 15 else 5.0
        return {
            "signal": "SIGKILL",
            "bridge_listening_s": round(listening, 3),
            "all_edges_back_s": round(back, 3),
            "healthz_edges": confirmed,
            "edges_back": len(edges),
            "clients_back": len(clients),
            "client_redial_started_s": _spread(redialed),
            "edge_registered_s": _spread(at_bridge),
            "edge_reconnect_s": _spread(edges),
            "client_reconnect_s": _spread(clients),
            "histogram": {
                "bin_s": width,
                "edges": _histogram(at_bridge, width),
                "clients": _histogram(clients, width),
            },
            "bridge_cpu_s_until_all_edges_back": round(cpu_bridge, 3),
            "load_cpu_s": round(load.cpu() - cpu_load0, 3),
            "bridge_rss_after_mib": round(bridge.memory()["VmRSS"], 2),
            "handshakes": {"edges": report["edge_handshakes"], "clients": report["client_handshakes"]},
            # what went wrong on the way back: the load process's redialer warnings, the bridge's counters
            "load_warnings": report["warnings"],
            "bridge_tls_handshake_failures": metrics.get("radical_edge_tls_handshake_failures_total"),
        }

    async def metrics(self) -> dict[str, float]:
        """The bridge's ``GET /metrics`` samples without labels, by name."""
        status, body = await self.http("/metrics")
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            name, _, value = line.partition(" ")
            if status == 200 and line and not line.startswith("#") and "{" not in name:
                try:
                    out[name] = float(value)
                except ValueError:
                    continue
        return out


def targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, echo: float | None = None) -> None:
        met = None if value is None else value <= limit
        rows.append({"name": name, "value": value, "target": f"<= {limit:g}", "met": met, "echo": echo})

    idle = out["idle_cpu"]
    add("RSS per idle edge KiB (+ its SDK conn.)", out["rss"]["per_edge_kib"], TARGETS["rss_kib_per_edge"])
    # beside it: what a plain TCP echo server on asyncio spends on the same traffic (._echo)
    add("bridge idle CPU % of one core", idle["bridge_pct"], TARGETS["idle_cpu_pct"], idle["echo_floor"]["server_pct"])
    add("all edges back after restart s", out["restart"]["all_edges_back_s"], TARGETS["restart_s"])
    add(f"GET /edges p50 ms ({out['edges']} edges)", out["edges_route"]["p50_ms"], TARGETS["edges_ms"])
    return rows


def _percentile(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, round(q / 100 * (len(data) - 1)))]


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "p50": None, "p90": None, "max": None}
    return {
        "min": round(min(values), 3),
        "p50": round(_percentile(values, 50), 3),
        "p90": round(_percentile(values, 90), 3),
        "max": round(max(values), 3),
    }


def _histogram(values: list[float], bin_s: float) -> list[int]:
    """How many connections came back in each ``bin_s``-second bin after the kill."""
    counts: list[int] = []
    for v in values:
        i = int(max(v, 0.0) // bin_s)
        counts.extend([0] * (i + 1 - len(counts)))
        counts[i] += 1
    return counts


async def _read(reader: asyncio.StreamReader) -> bytes:
    data = await reader.read(65536)
    if not data:
        raise ConnectionError("the bridge closed the connection")
    return data


async def _run(options: Options) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="radical-edge-bench-scale-"))
    bench = ScaleBench(options, workdir)
    try:
        return await bench.run()
    finally:
        bench.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run(options: Options) -> dict[str, Any]:
    """The ``--scale N`` run (Linux only: it reads ``/proc``); the results as JSON values."""
    return anyio.run(_run, options)
