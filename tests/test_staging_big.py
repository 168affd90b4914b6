"""1 GiB up and down through a bridge and an edge (separate processes, TLS), with their memory measured.

The bridge (``python -m radical_edge_bridge``) and the edge (``python -m radical_edge_edge --plugins
staging --staging-root DIR``) run as processes of their own, so the memory measured is theirs: VmRSS
sampled through the transfers and VmHWM (the peak) after them, against VmRSS after a warm-up.  The SDK
in this process uploads a 1 GiB file and downloads it again, both verified by SHA-256 end to end,
while small requests on the same connection keep being answered.

``RADICAL_EDGE_STAGING_BIG_MIB`` changes the size (e.g. 128 for a quick run while developing).
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import trustme

from radical_edge_client import AsyncBridgeClient, AsyncStagingClient

pytestmark = pytest.mark.anyio

MiB = 1 << 20
SIZE = int(os.environ.get("RADICAL_EDGE_STAGING_BIG_MIB", "1024")) * MiB
#: how much the bridge and the edge may each grow while moving it
GROWTH_LIMIT = 64 * MiB
URL_LINE = re.compile(r"listening on (https://127\.0\.0\.1:\d+)")


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in bytes."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler:
    """Samples the VmRSS of some processes in a thread; ``peak`` is the largest seen of each."""

    def __init__(self, pids: dict[str, int], interval: float = 0.1) -> None:
        self.pids = pids
        self.interval = interval
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                with contextlib.suppress(OSError):
                    self.peak[name] = max(self.peak[name], memory(pid)["VmRSS"])
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def wait_for(what: str, predicate: object, log: Path, timeout: float = 20) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()  # type: ignore[operator]
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"{what} did not happen in {timeout} s:\n{log.read_text(errors='replace')}")


def write_pattern(path: Path, size: int) -> None:
    """``size`` bytes that differ at every MiB (a misplaced chunk changes the hash)."""
    block = os.urandom(MiB)
    with path.open("wb") as fh:
        for i in range(0, size, MiB):
            fh.write((i // MiB).to_bytes(8, "big") + block[8 : min(MiB, size - i)])


async def test_one_gib_up_and_down_with_bounded_memory(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    key_file.chmod(0o600)
    ca.cert_pem.write_to_path(str(ca_file))
    home, root = tmp_path / "home", tmp_path / "root"
    home.mkdir()
    root.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RADICAL_BRIDGE_", "RADICAL_EDGE_STAGING"))}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1")
    source, back = tmp_path / "source.bin", tmp_path / "back.bin"
    await anyio.to_thread.run_sync(write_pattern, source, SIZE)
    bridge_log, edge_log = tmp_path / "bridge.log", tmp_path / "edge.log"
    bridge_args = ["-m", "radical_edge_bridge", "--port", "0", "--cert", str(cert_file), "--key", str(key_file)]
    try:
        with process(bridge_args, env, bridge_log) as bridge:
            match = wait_for("the bridge listening", lambda: URL_LINE.search(bridge_log.read_text()), bridge_log)
            assert isinstance(match, re.Match)
            url = match.group(1)
            token = (home / ".radical" / "edge" / "bridge.token").read_text().strip()
            edge_args = ["-m", "radical_edge_edge", "--name", "e1", "--url", url, "--cert", str(ca_file)]
            edge_args += ["--plugins", "staging", "--staging-root", str(root)]
            with process(edge_args, env, edge_log) as edge:
                async with AsyncBridgeClient(url, token, ca_file, timeout=60) as client:
                    with anyio.fail_after(20):
                        while "e1" not in await client.list_edges():
                            await anyio.sleep(0.05)
                    st = await (await client.get_edge_client("e1")).get_plugin("staging")
                    assert isinstance(st, AsyncStagingClient)
                    assert (await st.roots())["roots"] == [str(root)]
                    await transfer(
                        st,
                        client,
                        bridge_pid=bridge.pid,
                        edge_pid=edge.pid,
                        source=source,
                        back=back,
                        tmp_path=tmp_path,
                    )
                assert bridge.poll() is None, bridge_log.read_text()
                assert edge.poll() is None, edge_log.read_text()
    finally:
        for big in (source, back, root / "big.bin"):
            big.unlink(missing_ok=True)


async def transfer(
    st: AsyncStagingClient,
    client: AsyncBridgeClient,
    *,
    bridge_pid: int,
    edge_pid: int,
    source: Path,
    back: Path,
    tmp_path: Path,
) -> None:
    # warm up (code paths, buffers, TLS), then the baseline
    warm = tmp_path / "warm.bin"
    warm.write_bytes(os.urandom(16 * MiB))
    await st.upload(warm, "warm.bin")
    await st.download("warm.bin", tmp_path / "warm-back.bin")
    pids = {"bridge": bridge_pid, "edge": edge_pid}
    before = {name: memory(pid)["VmRSS"] for name, pid in pids.items()}

    latencies: list[float] = []

    async def probe(done: anyio.Event) -> None:
        """Small requests on the same connection while the big one moves."""
        other = await (await client.get_edge_client("e1")).get_plugin("staging")
        assert isinstance(other, AsyncStagingClient)
        while not done.is_set():
            started = time.monotonic()
            await other.stat("warm.bin")
            latencies.append(time.monotonic() - started)
            await anyio.sleep(0.1)

    cpu: list[str] = []

    async def timed(coro_fn: object) -> float:
        done = anyio.Event()
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        cpu_before["client"] = cpu_seconds(os.getpid())
        async with anyio.create_task_group() as tg:
            tg.start_soon(probe, done)
            started = time.monotonic()
            await coro_fn()  # type: ignore[operator]
            took = time.monotonic() - started
            done.set()
        used = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in [*pids.items(), ("client", os.getpid())]}
        cpu.append(", ".join(f"{name} {100 * t / took:.0f}%" for name, t in used.items()))
        return took

    last_byte: dict[str, float] = {}

    def progress(kind: str, started: float) -> object:
        def record(done: int, total: int | None) -> None:
            if done == total:
                last_byte[kind] = time.monotonic() - started

        return record

    with Sampler(pids) as sampler:
        up: dict[str, object] = {}

        async def do_upload() -> None:
            up.update(await st.upload(source, "big.bin", progress=progress("up", time.monotonic())))

        t_up = await timed(do_upload)
        down: dict[str, object] = {}

        async def do_download() -> None:
            down.update(await st.download("big.bin", back, progress=progress("down", time.monotonic())))

        t_down = await timed(do_download)
    after = {name: memory(pid) for name, pid in pids.items()}

    assert up["size"] == down["size"] == SIZE
    assert up["sha256"] == down["sha256"]  # both checked against the edge's hash by the SDK
    assert back.stat().st_size == SIZE
    peak = {name: max(after[name]["VmHWM"], sampler.peak[name]) for name in pids}
    growth = {name: peak[name] - before[name] for name in pids}
    report = (
        f"{SIZE / MiB:.0f} MiB: upload {t_up:.1f} s ({SIZE / MiB / t_up:.0f} MiB/s; the last byte sent after "
        f"{last_byte['up']:.1f} s, {SIZE / MiB / last_byte['up']:.0f} MiB/s), download {t_down:.1f} s "
        f"({SIZE / MiB / t_down:.0f} MiB/s; the last byte in after {last_byte['down']:.1f} s, "
        f"{SIZE / MiB / last_byte['down']:.0f} MiB/s; the rest is the edge's or the client's fsync, the hash check "
        "and the rename); "
        + "; ".join(
            f"{name} RSS {before[name] / MiB:.0f} MiB before, peak {peak[name] / MiB:.0f} MiB "
            f"(growth {growth[name] / MiB:.1f} MiB)"
            for name in pids
        )
        + f"; CPU upload: {cpu[0]}; download: {cpu[1]}"
        + f"; small requests meanwhile: {len(latencies)}, median {statistics.median(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms"
    )
    print(report)
    for name in pids:
        assert growth[name] <= GROWTH_LIMIT, report
    assert len(latencies) >= 5, report
    assert max(latencies) < 2.0, report  # a functional bound, not a benchmark
