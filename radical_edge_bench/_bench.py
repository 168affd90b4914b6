"""The benchmark run: how fast is the tunnel, next to the same app served directly?

One run starts, on loopback with TLS (a dev CA and certificate in a temporary
directory), three processes: a bridge, an edge whose only plugin is the
benchmark app (:mod:`._app`), and the same app served directly over
HTTPS by uvicorn.  Then it measures:

1. small GETs through the tunnel: p50/p99 latency with one client, req/s with
   64 concurrent connections, over HTTP/1.1 keep-alive and over the SDK's
   WebSocket (``/connect``, concurrent streams); CPU per request of the bridge
   and edge processes (utime + stime from ``/proc/PID/stat``);
2. the same against the direct server (the floor), and the ratios;
3. bulk download and upload (256 MiB) through the tunnel and directly;
4. peak RSS (VmHWM, and VmRSS sampled) of bridge and edge during a 1 GiB
   download and a 1 GiB upload, over their idle baseline;
5. small-request latency while a 1 GiB download runs through the same edge;
6. where the CPU of a small request goes: each layer's real code timed in this process
   (:mod:`._layers`), next to the CPU the processes spent per request;
7. staging: a file (256 MiB) up and down through the edge's staging plugin with the SDK,
   next to a raw TLS socket copy on loopback (:mod:`._staging`);
8. the 1-client small GET and the bulk transfers through one TLS relay in C (socat,
   :mod:`._relay`) and one on asyncio (:mod:`._aiorelay`) in front of the direct server:
   what the machine, and Python's event loop, take of those ratios in the tunnel's shape.

Every subprocess is killed in a ``finally``; every measurement has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import secrets
import select
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from radical_edge_cli import DevTLS, ensure_dev_tls
from radical_edge_tunnel import PURE_PYTHON_ENV, enable_speedups

from . import _aiorelay as aio_relay
from . import _layers as layer_costs
from . import _load as load
from . import _relay as c_relay
from . import _staging as staging_bench
from ._app import SMALL_BODY
from ._cli import Options
from ._staging import _per_gib, _ratio

EDGE = "bench-edge"
HOST = "127.0.0.1"
MIB = 1 << 20
T = TypeVar("T")

TARGETS = {
    "p50_ratio": 2.0,  # tunnel p50 / direct p50 at 1 client <=
    "cpu_ratio": 1.5,  # bridge + edge CPU per small request / the direct server's, 64 concurrent <=
    "p99_ratio": 1.5,  # tunnel p99 / direct p99, 64 concurrent <=
    "bulk_ratio": 0.5,  # tunnel MiB/s / direct MiB/s >=
    "rss_growth_mib": 64.0,  # <=
    "loaded_ratio": 3.0,  # loaded latency / idle latency <=
}


# ---------------------------------------------------------------------------- processes


class Proc:
    """A server subprocess: started, read until ready, sampled from /proc, always killed."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, *, commands: bool = False) -> None:
        self.name = name
        self.log = log
        self._log_fh = log.open("w")
        self.popen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._log_fh,
            stdin=subprocess.PIPE if commands else subprocess.DEVNULL,
            env=env,
        )
        self.pid = self.popen.pid
        self._pending = b""  # stdout read but not yet matched (complete lines and a partial one)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """Read the process's stdout until a complete line matches ``pattern`` (within ``timeout`` seconds).

        The lines before it are skipped; what follows it is kept for the next call.
        """
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            while b"\n" in self._pending:
                raw, self._pending = self._pending.split(b"\n", 1)
                line = raw.decode("utf-8", "replace")
                match = re.search(pattern, line)
                if match:
                    return match
                seen.append(line)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self._pending += chunk
        text = "\n".join(seen[-20:]) + self._pending.decode("utf-8", "replace")[-2000:]
        raise RuntimeError(f"{self.name}: no line matching {pattern!r} in {timeout:g} s: {text}\n{self.log_tail()}")

    def command(self, line: str, answer: str, timeout: float) -> re.Match[str]:
        """Send one command line (a process started with ``commands=True``) and wait for its answer line."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()
        return self.wait_for(answer, timeout)

    def log_tail(self) -> str:
        try:
            return self.log.read_text()[-3000:]
        except OSError:
            return ""

    def cpu(self) -> float:
        """utime + stime in seconds."""
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory(self) -> dict[str, float]:
        """VmRSS and VmHWM in MiB."""
        out: dict[str, float] = {}
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) / 1024
        return out

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (``clear_refs`` 5); False where the kernel refuses."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as fh:
                fh.write("5")
            return True
        except OSError:
            return False

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for pipe in (self.popen.stdout, self.popen.stdin):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._log_fh.close()


async def _with_cpu(procs: dict[str, Proc], work: Awaitable[T]) -> tuple[T, dict[str, float]]:
    """Await ``work``; its result and the CPU seconds each process spent meanwhile."""
    before = {name: proc.cpu() for name, proc in procs.items()}
    result = await work
    return result, {name: proc.cpu() - before[name] for name, proc in procs.items()}


# ---------------------------------------------------------------------------- the run


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        # what the bridge, the edge and the bench's own SDK driver use (they share this environment)
        "masking": enable_speedups(),
    }


def bridge_argv(tls: DevTLS, workdir: Path, max_seconds: float) -> list[str]:
    """The command line of a benchmark's bridge: the real CLI in its own process, on loopback with the dev
    certificate, quiet; the token comes in the environment (a token file that is never made is named, so no
    user's ~/.radical token is read)."""
    return [
        *[sys.executable, "-m", "radical_edge_bench._procs", "bridge", "--max-seconds", str(max_seconds)],
        *["--cert", str(tls.cert), "--key", str(tls.key), "--host", HOST, "--log-level", "WARNING"],
        *["--token-file", str(workdir / "unused.token")],
    ]


class Bench:
    def __init__(self, options: Options, workdir: Path) -> None:
        self.o = options
        self.dir = workdir
        self.token = secrets.token_urlsafe(24)
        self.procs: dict[str, Proc] = {}
        self.bridge_port = 0
        self.direct_port = 0
        self.ctx: ssl.SSLContext | None = None
        self.ca = ""
        self.results: dict[str, Any] = {}
        self._env: dict[str, str] = {}

    # ------------------------------------------------------------ setup

    def start(self) -> None:
        tls = ensure_dev_tls(self.dir / "tls")
        self.ca = str(tls.ca)
        self.ctx = ssl.create_default_context(cafile=self.ca)
        env = {**os.environ, "RADICAL_BRIDGE_TOKEN": self.token, "PYTHONUNBUFFERED": "1"}
        env.pop("RADICAL_BRIDGE_CERT", None)
        env.pop("RADICAL_BRIDGE_KEY", None)
        run = [sys.executable, "-m", "radical_edge_bench._procs"]
        limit = ["--max-seconds", str(self._max_seconds())]
        self._env = env
        self.bridge_port = self._start_tunnel(env, "")
        direct = self.procs["direct"] = Proc(
            "direct",
            [*run, "direct", *limit, "--cert", str(tls.cert), "--key", str(tls.key)],
            env,
            self.dir / "direct.log",
        )
        self.direct_port = int(direct.wait_for(r"BENCH-READY (\d+)", 30).group(1))

    def _start_tunnel(self, env: dict[str, str], suffix: str) -> int:
        """Start a bridge and the bench edge (``procs["bridge" + suffix]``, ...); return the bridge's port."""
        tls = ensure_dev_tls(self.dir / "tls")
        run = [sys.executable, "-m", "radical_edge_bench._procs"]
        limit = ["--max-seconds", str(self._max_seconds())]
        # the bridge: the real CLI, in its own process
        bridge = self.procs["bridge" + suffix] = Proc(
            "bridge" + suffix,
            [*bridge_argv(tls, self.dir, self._max_seconds()), "--port", "0", "--request-timeout", "600"],
            env,
            self.dir / f"bridge{suffix}.log",
        )
        port = int(bridge.wait_for(r"listening on https://[^:]+:(\d+)", 30).group(1))
        edge = self.procs["edge" + suffix] = Proc(
            "edge" + suffix,
            [
                *[*run, "edge", *limit, "--url", f"https://{HOST}:{port}", "--ca", self.ca],
                *["--name", EDGE, *staging_bench.edge_args(self.dir)],  # the staging plugin too (section 7)
            ],
            env,
            self.dir / f"edge{suffix}.log",
        )
        edge.wait_for(r"BENCH-READY", 40)
        return port

    def _max_seconds(self) -> float:
        return 600 + 40 * self.o.duration + 4 * (self.o.size_mib + 2 * self.o.big_mib) / 10

    def stop(self) -> None:
        for proc in self.procs.values():
            try:
                proc.stop()
            except Exception:
                proc.popen.kill()

    # ------------------------------------------------------------ helpers

    @property
    def driver(self) -> str:
        if self.o.driver == "auto":
            return "wrk" if load.wrk_path() else "python"
        if self.o.driver == "wrk" and not load.wrk_path():
            raise SystemExit("radical-edge bench: --driver wrk, but wrk is not installed (apt-get install wrk)")
        return self.o.driver

    def _small_path(self, via: str) -> tuple[int, str]:
        if via == "direct":
            return self.direct_port, "/small"
        return self.bridge_port, f"/{EDGE}/bench/small"

    async def http_run(self, via: str, connections: int, duration: float) -> load.LoadResult:
        port, path = self._small_path(via)
        return await self.http_run_at(port, path, connections, duration)

    async def http_run_at(self, port: int, path: str, connections: int, duration: float) -> load.LoadResult:
        """The small-GET load (wrk or the Python driver) against ``https://HOST:port/path``."""
        if self.driver == "wrk":
            url = f"https://{HOST}:{port}{path}"
            return await anyio.to_thread.run_sync(load.run_wrk, url, self.token, connections, duration)
        assert self.ctx is not None
        depth = self.o.pipeline if connections > 1 else 1
        return await load.run_http_load(self._target(port), path, connections, duration, depth=depth, expect=SMALL_BODY)

    def _target(self, port: int) -> load.Target:
        assert self.ctx is not None
        return load.Target(HOST, port, self.ctx, self.token)

    def _servers(self, via: str) -> dict[str, Proc]:
        if via == "direct":
            return {"server": self.procs["direct"]}
        return {"bridge": self.procs["bridge"], "edge": self.procs["edge"]}

    def _record(self, result: load.LoadResult, cpu: dict[str, float]) -> dict[str, Any]:
        out = result.summary()
        n = max(result.requests, 1)
        out["cpu_ms_per_request"] = {k: round(v * 1000 / n, 4) for k, v in cpu.items()}
        if "bridge" in cpu:
            out["cpu_ms_per_request"]["bridge+edge"] = round((cpu["bridge"] + cpu["edge"]) * 1000 / n, 4)
        if result.client_cpu is not None:
            out["cpu_ms_per_request"]["client"] = round(result.client_cpu * 1000 / n, 4)
        return out

    async def _check(self) -> None:
        """Every path answers what it should before anything is timed."""
        assert self.ctx is not None
        for via in ("tunnel", "direct"):
            port, path = self._small_path(via)
            result = await load.run_http_load(self._target(port), path, 1, 0.2, expect=SMALL_BODY)
            if result.errors or not result.requests:
                raise RuntimeError(f"{via}: GET {path} failed ({result.errors} errors)\n{self._logs()}")
            prefix = "" if via == "direct" else f"/{EDGE}/bench"
            got = await load.download(self._target(port), f"{prefix}/download?size=1000003", 30)
            if got.status != 200 or got.nbytes != 1000003:
                raise RuntimeError(f"{via}: download gave {got}\n{self._logs()}")
            sent = await load.upload(self._target(port), f"{prefix}/upload", 1000003, 30)
            if sent.status != 200 or sent.nbytes != 1000003:
                raise RuntimeError(f"{via}: upload gave {sent}\n{self._logs()}")

    def _logs(self) -> str:
        return "\n".join(f"--- {p.name} log:\n{p.log_tail()}" for p in self.procs.values())

    # ------------------------------------------------------------ the measurements

    async def run(self) -> dict[str, Any]:
        o = self.o
        res = self.results
        res["machine"] = _machine()
        res["options"] = {
            "quick": o.quick,
            "duration_s": o.duration,
            "size_mib": o.size_mib,
            "big_mib": o.big_mib,
            "connections": o.connections,
            "pipeline": o.pipeline,
        }
        driver = self.driver
        res["driver"] = {
            "name": driver,
            "detail": (
                f"{load.wrk_version()} (C, 1 thread, keep-alive; does not verify TLS certificates, "
                "acceptable on loopback)"
                if driver == "wrk"
                else "Python raw-socket keep-alive client (asyncio protocol, no HTTP library; verifies TLS; "
                f"{o.pipeline} request(s) in flight per connection)"
            ),
            "websocket": "the SDK's protocol on WS /connect, driven with radical_edge_tunnel in the bench process",
            "direct_server": "uvicorn (h11, asyncio) with ssl_certfile/ssl_keyfile, the same FastAPI app",
        }
        await self._check()
        await self.small(res)
        await self.layers(res)
        await self.bulk(res)
        await self.relayed(res)
        await staging_bench.measure(self, res)
        await self.memory(res)
        await self.loaded(res)
        res["targets"] = self.targets(res)
        return res

    async def small(self, res: dict[str, Any]) -> None:
        o = self.o
        small: dict[str, Any] = {}
        tunnel_procs = self._servers("tunnel")
        rss_before = {n: p.memory()["VmRSS"] for n, p in tunnel_procs.items()}
        for via in ("tunnel_http", "direct"):
            key = "direct" if via == "direct" else "tunnel"
            _log(f"bench: small GET, {via}: 1 client, {o.duration:g} s")
            servers = self._servers(key)
            one, one_cpu = await _with_cpu(servers, self.http_run(key, 1, o.duration))
            _log(f"bench: small GET, {via}: {o.connections} connections, {o.duration:g} s")
            many, many_cpu = await _with_cpu(servers, self.http_run(key, o.connections, o.duration))
            small[via] = {"one_client": self._record(one, one_cpu), "concurrent": self._record(many, many_cpu)}

        _log(f"bench: small GET over WS /connect: 1 stream, then {o.connections} concurrent streams")
        client = load.TunnelClient(f"https://{HOST}:{self.bridge_port}", self.token, self.ca)
        path = f"/{EDGE}/bench/small"
        async with anyio.create_task_group() as tg:
            with anyio.fail_after(30):
                await tg.start(client.run)
            servers = self._servers("tunnel")
            one, one_cpu = await _with_cpu(
                servers, load.run_tunnel_load(client, path, 1, o.duration, expect=SMALL_BODY)
            )
            many, many_cpu = await _with_cpu(
                servers, load.run_tunnel_load(client, path, o.connections, o.duration, expect=SMALL_BODY)
            )
            await client.aclose()
            tg.cancel_scope.cancel()
        small["tunnel_ws"] = {"one_client": self._record(one, one_cpu), "concurrent": self._record(many, many_cpu)}

        direct = small["direct"]
        ratios: dict[str, float | None] = {}
        for via in ("tunnel_http", "tunnel_ws"):
            for q in ("p50_ms", "p99_ms"):
                ratios[f"{via}_{q[:3]}_over_direct"] = _ratio(small[via]["one_client"][q], direct["one_client"][q])
            ratios[f"{via}_rps_over_direct"] = _ratio(small[via]["concurrent"]["rps"], direct["concurrent"]["rps"])
            # under load: the tail, and what the two processes spend per request next to the one server
            ratios[f"{via}_p99_concurrent_over_direct"] = _ratio(
                small[via]["concurrent"]["p99_ms"], direct["concurrent"]["p99_ms"]
            )
            ratios[f"{via}_cpu_concurrent_over_direct"] = _ratio(
                small[via]["concurrent"]["cpu_ms_per_request"]["bridge+edge"],
                direct["concurrent"]["cpu_ms_per_request"]["server"],
            )
        small["ratios"] = ratios
        # memory must not grow with the number of requests served (nothing kept per request)
        small["rss_mib"] = {
            n: {"before": round(rss_before[n], 1), "after": round(p.memory()["VmRSS"], 1)}
            for n, p in tunnel_procs.items()
        }
        small["requests_total"] = sum(
            small[v][r]["requests"] for v in ("tunnel_http", "tunnel_ws") for r in ("one_client", "concurrent")
        )
        res["small"] = small

    async def layers(self, res: dict[str, Any]) -> None:
        """Where the CPU of a small request goes: each layer's real code timed in this process (:mod:`._layers`),
        next to the CPU per request the processes spent (the small-GET runs over HTTP) and the remainder."""
        tls = ensure_dev_tls(self.dir / "tls")  # this run's files (made by start(), reused as they are)
        files = layer_costs.TLSFiles(tls.ca, tls.cert, tls.key)
        seconds = 0.1 if self.o.quick else 0.3
        host = f"{HOST}:{self.bridge_port}"
        _log(f"bench: per-layer CPU of a small request, in this process ({9 * seconds:.1f} s)")
        measured = await anyio.to_thread.run_sync(
            lambda: layer_costs.measure(files, token=self.token, host=host, seconds=seconds)
        )
        res["layers"] = layer_costs.with_measured(measured, res["small"])

    async def bulk(self, res: dict[str, Any]) -> None:
        assert self.ctx is not None
        out: dict[str, Any] = {"size_mib": self.o.size_mib}
        for via in ("tunnel", "direct"):
            port, _ = self._small_path(via)
            prefix = "" if via == "direct" else f"/{EDGE}/bench"
            _log(f"bench: {self.o.size_mib} MiB download and upload, {via}")
            out[via] = await self._bulk_run(via, self._servers(via), port, prefix)
        out["ratios"] = {
            "download": _ratio(out["tunnel"]["download_mib_s"], out["direct"]["download_mib_s"]),
            "upload": _ratio(out["tunnel"]["upload_mib_s"], out["direct"]["upload_mib_s"]),
        }
        out["masking"] = res["machine"]["masking"]
        if out["masking"] != "pure Python":
            # the accelerators are an extra: the pure-Python path is measured too, by a second bridge and
            # edge started with RADICAL_EDGE_PURE_PYTHON=1
            _log(f"bench: {self.o.size_mib} MiB download and upload, tunnel, pure Python (no accelerators)")
            port = self._start_tunnel({**self._env, PURE_PYTHON_ENV: "1"}, "-pure")
            servers = {"bridge": self.procs["bridge-pure"], "edge": self.procs["edge-pure"]}
            try:
                pure = out["tunnel_pure"] = await self._bulk_run(
                    "tunnel (pure Python)", servers, port, f"/{EDGE}/bench"
                )
            finally:
                for name in ("edge-pure", "bridge-pure"):
                    self.procs.pop(name).stop()
            out["ratios"]["download_pure"] = _ratio(pure["download_mib_s"], out["direct"]["download_mib_s"])
            out["ratios"]["upload_pure"] = _ratio(pure["upload_mib_s"], out["direct"]["upload_mib_s"])
        res["bulk"] = out

    async def relayed(self, res: dict[str, Any]) -> None:
        """The same small GET (1 client) and bulk transfers (one run each, as in section 3) through one TLS relay in
        C (:mod:`._relay`; skipped without socat) and through one on asyncio (:mod:`._aiorelay`), each in front of
        the direct server, next to the direct server measured again before both."""
        tls = ensure_dev_tls(self.dir / "tls")
        direct = await self._relay_baseline()
        if c_relay.socat_path() is None:
            res["relay"] = {"skipped": "socat is not installed (Debian package socat)"}
        else:
            with c_relay.relay(self.direct_port, tls.cert, tls.key, tls.ca, self.dir / "socat.log") as port:
                res["relay"] = {
                    "program": f"socat {c_relay.socat_version()}",
                    "detail": c_relay.DETAIL,
                    **await self._through_relay("a C relay", port, direct),
                }
        with aio_relay.relay(
            self.procs,
            "aio-relay",
            tls=(tls.cert, tls.key, tls.ca),
            upstream=self.direct_port,
            env=self._env,
            log=self.dir / "aio-relay.log",
            max_seconds=self._max_seconds(),
        ) as (port, relay):
            res["aio_relay"] = {
                "program": f"asyncio, Python {platform.python_version()}",
                "detail": aio_relay.DETAIL,
                **await self._through_relay("an asyncio relay", port, direct, concurrent=relay),
            }

    async def _small_at(self, name: str, port: int, connections: int, cpu: dict[str, Proc]) -> dict[str, Any]:
        """The small GET at ``port`` over ``connections`` connections: p50, p99, and the CPU ms per request of the
        processes in ``cpu`` together."""
        run, spent = await _with_cpu(cpu, self.http_run_at(port, "/small", connections, self.o.duration))
        if run.errors or not run.requests:
            raise RuntimeError(f"the relays' section, {name}: {run.errors} errors, {run.requests} requests")
        summary = run.summary()
        ms = round(sum(spent.values()) * 1000 / run.requests, 4)
        return {"p50_ms": summary["p50_ms"], "p99_ms": summary["p99_ms"], "cpu_ms_per_request": ms}

    async def _relay_baseline(self) -> dict[str, Any]:
        """The direct server's 1-client p50, its p99 and CPU per request at ``--connections``, and its bulk rates,
        measured again for the relays' section."""
        conc = self.o.connections
        _log(f"bench: small GET, direct again for the relays: 1 client, then {conc} ({self.o.duration:g} s each)")
        servers = {"server": self.procs["direct"]}
        one = await self._small_at("direct", self.direct_port, 1, servers)
        many = await self._small_at("direct", self.direct_port, conc, servers)
        _log(f"bench: {self.o.size_mib} MiB download and upload, direct again for the relays")
        bulk = await self._bulk_run("direct", {}, self.direct_port, "")
        return {"p50_ms": one["p50_ms"], "concurrent": many, **bulk}

    async def _through_relay(
        self, name: str, port: int, direct: dict[str, Any], concurrent: Proc | None = None
    ) -> dict[str, Any]:
        """The small GET and the bulk transfers through the relay on ``port``, beside ``direct`` and as ratios;
        with ``concurrent`` (the relay's process), the small GET at ``--connections`` too: p99, and the CPU per
        request of the relay and the direct server behind it together, against the direct server's alone."""
        _log(f"bench: small GET, 1 client, through {name} ({self.o.duration:g} s)")
        one = await self._small_at(name, port, 1, {})
        _log(f"bench: {self.o.size_mib} MiB download and upload through {name}")
        bulk = await self._bulk_run(name, {}, port, "")
        out: dict[str, Any] = {"p50_ms": {"direct": direct["p50_ms"], "relay": one["p50_ms"]}}
        for kind in ("download", "upload"):
            out[f"{kind}_mib_s"] = {"direct": direct[f"{kind}_mib_s"], "relay": bulk[f"{kind}_mib_s"]}
        out["ratios"] = {
            "p50": _ratio(out["p50_ms"]["relay"], out["p50_ms"]["direct"]),
            "download": _ratio(out["download_mib_s"]["relay"], out["download_mib_s"]["direct"]),
            "upload": _ratio(out["upload_mib_s"]["relay"], out["upload_mib_s"]["direct"]),
        }
        if concurrent is not None:
            conc = self.o.connections
            _log(f"bench: small GET, {conc} connections, through {name} ({self.o.duration:g} s)")
            # its connections to the server dialled first, as the tunnel's to the edge are: no handshake burst
            # of its own at the start of the run (the direct server's and the bridge's with wrk remain)
            primed = int(concurrent.command(f"prime {conc}", r"RELAY-PRIMED (\d+)", 60).group(1))
            if primed < conc:
                raise RuntimeError(
                    f"{name}: {primed} of {conc} connections to the server dialled ahead\n{concurrent.log_tail()}"
                )
            before = aio_relay.stats(concurrent)
            many = await self._small_at(name, port, conc, {"relay": concurrent, "server": self.procs["direct"]})
            after = aio_relay.stats(concurrent)
            # how the run's client connections were paired: from the primed pool, or by dialling (a handshake)
            out["concurrent_connections"] = {"primed": after[0] - before[0], "dialled": after[1] - before[1]}
            base = direct["concurrent"]
            out["p99_concurrent_ms"] = {"direct": base["p99_ms"], "relay": many["p99_ms"]}
            out["cpu_ms_per_request_concurrent"] = {
                "direct": base["cpu_ms_per_request"],
                "relay": many["cpu_ms_per_request"],  # the relay and the server behind it
            }
            out["ratios"]["p99"] = _ratio(many["p99_ms"], base["p99_ms"])
            out["ratios"]["cpu"] = _ratio(many["cpu_ms_per_request"], base["cpu_ms_per_request"])
        return out

    async def _bulk_run(self, via: str, servers: dict[str, Proc], port: int, prefix: str) -> dict[str, Any]:
        """A ``--size-mib`` download, then an upload, through ``port``: the rates and the servers' CPU per GiB."""
        size = self.o.size_mib * MIB
        timeout = 60 + size / MIB  # >= 1 MiB/s
        down, down_cpu = await _with_cpu(
            servers, load.download(self._target(port), f"{prefix}/download?size={size}", timeout)
        )
        up, up_cpu = await _with_cpu(servers, load.upload(self._target(port), f"{prefix}/upload", size, timeout))
        for name, t in (("download", down), ("upload", up)):
            if t.status != 200 or t.nbytes != size:
                raise RuntimeError(f"{via} {name}: status {t.status}, {t.nbytes} of {size} bytes\n{self._logs()}")
        return {
            "download_mib_s": round(down.mib_s, 1),
            "upload_mib_s": round(up.mib_s, 1),
            "download_cpu_s_per_gib": {k: _per_gib(v, size) for k, v in down_cpu.items()},
            "upload_cpu_s_per_gib": {k: _per_gib(v, size) for k, v in up_cpu.items()},
        }

    async def memory(self, res: dict[str, Any]) -> None:
        assert self.ctx is not None
        big = self.o.big_mib * MIB
        timeout = 60 + big / MIB
        servers = self._servers("tunnel")
        prefix = f"/{EDGE}/bench"
        out: dict[str, Any] = {"size_mib": self.o.big_mib}
        for kind in ("download", "upload"):
            _log(f"bench: peak RSS during a {self.o.big_mib} MiB {kind} through the tunnel")
            reset = all(p.reset_peak() for p in servers.values())
            idle = {n: p.memory() for n, p in servers.items()}
            peak = {n: m["VmRSS"] for n, m in idle.items()}
            done = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(_sample_rss, servers, peak, done)
                try:
                    target = self._target(self.bridge_port)
                    if kind == "download":
                        t = await load.download(target, f"{prefix}/download?size={big}", timeout)
                    else:
                        t = await load.upload(target, f"{prefix}/upload", big, timeout)
                finally:
                    done.set()
            if t.status != 200 or t.nbytes != big:
                raise RuntimeError(f"{kind} of {big} bytes: status {t.status}, {t.nbytes} bytes\n{self._logs()}")
            after = {n: p.memory() for n, p in servers.items()}
            entry: dict[str, Any] = {"mib_s": round(t.mib_s, 1), "hwm_reset": reset}
            for n in servers:
                base = idle[n]["VmRSS"]
                hwm_growth = after[n]["VmHWM"] - (base if reset else idle[n]["VmHWM"])
                entry[n] = {
                    "idle_rss_mib": round(base, 1),
                    "peak_rss_sampled_mib": round(peak[n], 1),
                    "vmhwm_mib": round(after[n]["VmHWM"], 1),
                    "growth_mib": round(max(peak[n] - base, hwm_growth, 0.0), 1),
                }
            out[kind] = entry
        res["rss"] = out

    async def loaded(self, res: dict[str, Any]) -> None:
        assert self.ctx is not None
        big = self.o.big_mib * MIB
        prefix = f"/{EDGE}/bench"
        _log(f"bench: small-GET latency (1 client, {self.o.duration:g} s) while {self.o.big_mib} MiB downloads run")
        progress = load.Progress()
        transfers = 0
        stop = anyio.Event()

        async def background() -> None:
            nonlocal transfers
            target = self._target(self.bridge_port)
            while not stop.is_set():
                await load.download(target, f"{prefix}/download?size={big}", 60 + big / MIB, progress)
                transfers += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(background)
            with anyio.fail_after(30):
                while progress.nbytes < min(big, 8 * MIB):  # the transfer is under way
                    await anyio.sleep(0.02)
            moved0, t0 = progress.nbytes, time.perf_counter()
            probe = await self.http_run("tunnel", 1, self.o.duration)
            moved, seconds = progress.nbytes - moved0, time.perf_counter() - t0
            stop.set()
            tg.cancel_scope.cancel()
        idle = res["small"]["tunnel_http"]["one_client"]
        loaded = probe.summary()
        loaded["background_mib_s"] = round(moved / MIB / seconds, 1)
        loaded["background_transfers_completed"] = transfers
        res["loaded"] = {
            "size_mib": self.o.big_mib,
            "idle": {"p50_ms": idle["p50_ms"], "p99_ms": idle["p99_ms"]},
            "loaded": loaded,
            "ratios": {
                "p50": _ratio(loaded["p50_ms"], idle["p50_ms"]),
                "p99": _ratio(loaded["p99_ms"], idle["p99_ms"]),
            },
        }

    # ------------------------------------------------------------ verdicts

    def targets(self, res: dict[str, Any]) -> list[dict[str, Any]]:
        small, bulk, rss, loaded = res["small"], res["bulk"], res["rss"], res["loaded"]
        rows: list[dict[str, Any]] = []

        # the same ratios through one relay in C (._relay) and through one on asyncio (._aiorelay)
        relays = {key: res.get(key, {}).get("ratios", {}) for key in ("relay", "aio_relay")}

        def add(
            name: str, value: float | None, op: str, limit: float, refs: dict[str, float | None] | None = None
        ) -> None:
            met = None if value is None else (value <= limit if op == "<=" else value >= limit)
            references = {"relay": None, "aio_relay": None, **(refs or {})}
            rows.append({"name": name, "value": value, "target": f"{op} {limit:g}", "met": met, **references})

        def relayed(ratio: str) -> dict[str, float | None]:
            return {key: ratios.get(ratio) for key, ratios in relays.items()}

        conc = self.o.connections
        for via in ("tunnel_http", "tunnel_ws"):
            ratio = small["ratios"][f"{via}_p50_over_direct"]
            add(f"p50 {via}/direct, 1 client", ratio, "<=", TARGETS["p50_ratio"], relayed("p50"))
        for via in ("tunnel_http", "tunnel_ws"):
            ratio = small["ratios"][f"{via}_cpu_concurrent_over_direct"]
            add(f"CPU/request {via}/direct, {conc} conc.", ratio, "<=", TARGETS["cpu_ratio"], relayed("cpu"))
        for via in ("tunnel_http", "tunnel_ws"):
            ratio = small["ratios"][f"{via}_p99_concurrent_over_direct"]
            add(f"p99 {via}/direct, {conc} conc.", ratio, "<=", TARGETS["p99_ratio"], relayed("p99"))
        for kind in ("download", "upload"):
            add(f"bulk {kind} tunnel/direct", bulk["ratios"][kind], ">=", TARGETS["bulk_ratio"], relayed(kind))
        for row in staging_bench.target_rows(res):  # staging over the raw TLS copy
            add(*row)
        for kind in ("download", "upload"):
            for proc in ("bridge", "edge"):
                add(f"RSS growth MiB, {proc}, {kind}", rss[kind][proc]["growth_mib"], "<=", TARGETS["rss_growth_mib"])
        add("p50 loaded/idle", loaded["ratios"]["p50"], "<=", TARGETS["loaded_ratio"])
        add("p99 loaded/idle", loaded["ratios"]["p99"], "<=", TARGETS["loaded_ratio"])
        return rows


async def _sample_rss(servers: dict[str, Proc], peak: dict[str, float], done: anyio.Event) -> None:
    """Keep the highest VmRSS of each process in ``peak`` (every 20 ms) until ``done``."""
    while not done.is_set():
        for name, proc in servers.items():
            peak[name] = max(peak[name], proc.memory()["VmRSS"])
        with anyio.move_on_after(0.02):
            await done.wait()


# ---------------------------------------------------------------------------- entry point


async def _run(options: Options) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="radical-edge-bench-"))
    bench = Bench(options, workdir)
    try:
        bench.start()
        return await bench.run()
    finally:
        bench.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run(options: Options) -> dict[str, Any]:
    """Run the whole benchmark (Linux only: it reads ``/proc``); the results as JSON values."""
    if not sys.platform.startswith("linux"):
        raise SystemExit("radical-edge bench reads /proc: it runs on Linux only")
    if options.scale is not None:
        from . import _scale  # noqa: PLC0415  (it imports this module)

        return _scale.run(options)
    return anyio.run(_run, options)
