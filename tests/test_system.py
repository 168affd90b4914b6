"""System tests: the bridge and an edge as real, separate processes (the console entry points via ``-m``).

Real TLS (trustme certificates in files, the key mode 0600), ``HOME`` in a temporary directory so the
token file the bridge makes lands there (and the edge finds it there), free ports from the kernel
(``--port 0`` and the URL the bridge prints), and a plain ``httpx`` client that verifies the
certificate.  Every wait has a deadline; every process is killed in the fixture's ``finally``.

The edge loads the test-only ``bulk`` plugin of ``tests/example_plugin`` (installed like a third-party
plugin, on ``PYTHONPATH``: see the ``example_plugin`` fixture): streaming download, hashing upload, a slow route.

"Edge killed with 20 requests in flight -> all 503 within 1 s" is not repeated here:
``test_bridge.py::test_edge_killed_with_requests_in_flight_all_get_503_fast`` drives the same bridge
path (the edge's TCP connection drops without a WebSocket close or GOAWAY).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from .edge_helpers import example_plugin
from .slurm_helpers import Slurm

__all__ = ["example_plugin"]  # the fixture, imported for pytest

MiB = 1 << 20
#: the bridge's URL line on stdout
URL_LINE = re.compile(r"listening on (https://127\.0\.0\.1:(\d+))")
#: chunk size of the bulk plugin's download stream (its ``CHUNK``)
BULK_CHUNK = MiB


# ---------------------------------------------------------------- processes


class Proc:
    """A child process whose stdout and stderr go to files (no pipe can fill up and stall it)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.out_path = workdir / f"{name}.stdout"
        self.err_path = workdir / f"{name}.stderr"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=workdir
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def output(self) -> str:
        return self.stdout() + self.stderr()

    def wait_stdout(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            match = pattern.search(self.stdout())
            if match:
                return match
            if not self.alive():
                pytest.fail(f"{self.name} exited ({self.popen.returncode}) before printing it:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} did not print {pattern.pattern!r} in {timeout} s:\n{self.output()}")
            time.sleep(0.02)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not exit within {timeout} s:\n{self.output()}")

    def signal(self, signum: int) -> None:
        if self.alive():
            self.popen.send_signal(signum)

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):  # only a process in the kernel outlives SIGKILL
            self.popen.wait(5)

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS) in bytes, from /proc."""
        values: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                number, unit = rest.split()
                assert unit == "kB"
                values[key] = int(number) * 1024
        return values


class System:
    """Starts bridges and edges for one test; the fixture kills whatever is left."""

    def __init__(self, tmp_path: Path, tls: dict[str, Path]) -> None:
        self.dir = tmp_path
        self.tls = tls
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RADICAL_BRIDGE_")}
        self.env.update(HOME=str(self.home), PYTHONUNBUFFERED="1")
        self.procs: list[Proc] = []
        self._count = 0

    @property
    def token_file(self) -> Path:
        return self.home / ".radical" / "edge" / "bridge.token"

    def token(self) -> str:
        return self.token_file.read_text().strip()

    def spawn(self, name: str, args: list[str]) -> Proc:
        self._count += 1
        proc = Proc(f"{self._count:02d}-{name}", args, self.env, self.dir)
        self.procs.append(proc)
        return proc

    def bridge_cmd(self, *extra: str, port: int = 0) -> list[str]:
        tls = ["--cert", str(self.tls["cert"]), "--key", str(self.tls["key"])]
        return ["-m", "radical_edge_bridge", "--port", str(port), *tls, "--request-timeout", "20", *extra]

    def start_bridge(self, *extra: str, port: int = 0, timeout: float = 15) -> tuple[Proc, str]:
        """A bridge process; returns it with the URL it printed."""
        proc = self.spawn("bridge", self.bridge_cmd(*extra, port=port))
        url = proc.wait_stdout(URL_LINE, timeout).group(1)
        return proc, url

    def start_edge(self, url: str, name: str = "e1", plugins: str = "bulk") -> Proc:
        """An edge process; it reads the token from the token file in ``HOME``, trusts only our CA."""
        args = ["-m", "radical_edge_edge", "--name", name, "--url", url, "--cert", str(self.tls["ca"])]
        return self.spawn(f"edge-{name}", [*args, "--plugins", plugins])

    def client(self, url: str, token: str | None = None) -> httpx.Client:
        """A verifying HTTP client (trusts our CA only) with the bridge token."""
        token = token if token is not None else self.token()
        return httpx.Client(
            base_url=url,
            verify=ssl.create_default_context(cafile=str(self.tls["ca"])),
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=httpx.Timeout(20, connect=5),
        )

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls(ca: trustme.CA, tmp_path: Path) -> dict[str, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem", "ca": tmp_path / "ca.pem"}
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(paths["cert"]), append=True)
    cert.private_key_pem.write_to_path(str(paths["key"]))
    paths["key"].chmod(0o600)
    ca.cert_pem.write_to_path(str(paths["ca"]))
    return paths


@pytest.fixture
def system(tmp_path: Path, tls: dict[str, Path], example_plugin: str) -> Iterator[System]:
    s = System(tmp_path, tls)  # after example_plugin: its environment has the plugin's PYTHONPATH
    try:
        yield s
    finally:
        s.close()


def poll(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.TransportError as exc:  # the bridge is not (yet) there
            last = exc
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"{what}: not within {timeout} s (last: {last!r})")


def edge_connected(client: httpx.Client, name: str) -> bool:
    edges = client.get("/edges").json()["edges"]
    return any(e["name"] == name and e["connected"] for e in edges)


def bulk_works(client: httpx.Client, edge: str = "e1") -> None:
    r = client.get(f"/{edge}/bulk/sleep", params={"seconds": 0})
    assert r.status_code == 200, r.text
    assert r.json() == {"slept": 0}
    r = client.post(f"/{edge}/bulk/sha256", content=b"abc")
    assert r.json() == {"bytes": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}


def pseudo_random(n: int, seed: int) -> Iterator[bytes]:
    """The bytes the bulk plugin's ``GET bytes?n=&seed=`` sends (regenerated here, independently)."""
    rng = random.Random(seed)
    while n > 0:
        size = min(BULK_CHUNK, n)
        yield rng.randbytes(size)
        n -= size


# ---------------------------------------------------------------- 1. the bridge command line


def test_bridge_cli_prints_url_and_token_location_never_the_token(system: System, example_plugin: str) -> None:
    assert not system.token_file.exists()
    bridge, url = system.start_bridge("--log-level", "DEBUG")
    token_file = system.token_file
    assert token_file.is_file()
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token_file.parent.stat().st_mode & 0o077 == 0  # ~/.radical/edge is private too
    token = system.token()
    assert len(token) >= 32
    assert int(url.rsplit(":", 1)[1]) > 0  # --port 0: the port the kernel chose is in the URL

    with system.client(url) as http, system.client(url, token="") as anon:
        assert anon.get("/healthz").json()["status"] == "ok"
        assert anon.get("/edges").status_code == 401
        assert http.get("/edges").json() == {"edges": [], "total": 0}
        # an edge registers with the token from the file, and a request goes through
        edge = system.start_edge(url)
        poll("the edge connects", lambda: edge_connected(http, "e1"), 20)
        bulk_works(http)
        assert http.post("/auth", json={"token": token}).status_code == 200

    output = bridge.output()
    assert str(token_file) in output  # where the token is ...
    assert token not in output  # ... but never the token itself, not even at DEBUG
    assert token not in edge.output()
    bridge.signal(signal.SIGTERM)
    bridge.wait(10)
    # a second start keeps the token (it was made only on the first start)
    bridge, url = system.start_bridge()
    assert system.token() == token
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token not in bridge.output()


def _combined_cert_and_key(system: System, mode: int) -> Path:
    """The key and the certificate chain in one file (given as ``--cert`` alone)."""
    combined = system.dir / "combined.pem"
    combined.write_bytes(system.tls["key"].read_bytes() + system.tls["cert"].read_bytes())
    combined.chmod(mode)
    return combined


def _refusal_case(case: str, system: System, busy: socket.socket) -> tuple[list[str], list[str]]:
    """The bridge arguments of a refusal case and the words its message must contain."""
    cert, key = str(system.tls["cert"]), str(system.tls["key"])
    if case == "key-readable-by-others":
        system.tls["key"].chmod(0o644)
        return ["--cert", cert, "--key", key], ["refusing the key", key, "chmod 600"]
    if case == "combined-cert-and-key-readable-by-others":
        combined = str(_combined_cert_and_key(system, 0o644))
        return ["--cert", combined], ["refusing the key", combined, "chmod 600"]
    if case == "no-tls-options":
        return [], ["--cert", "--insecure-no-tls"]
    if case == "missing-cert":
        missing = str(system.dir / "missing.pem")
        return ["--cert", missing, "--key", key], ["cannot load the certificate", missing, "No such file"]
    if case == "cert-and-key-do-not-match":
        ca = str(system.tls["ca"])
        return ["--cert", ca, "--key", key], ["cannot load the certificate", ca]
    assert case == "port-in-use"
    port = str(busy.getsockname()[1])
    return ["--cert", cert, "--key", key, "--port", port], ["cannot listen on", port, "in use"]


@pytest.mark.parametrize(
    "case",
    [
        "key-readable-by-others",
        "combined-cert-and-key-readable-by-others",
        "no-tls-options",
        "missing-cert",
        "cert-and-key-do-not-match",
        "port-in-use",
    ],
)
def test_bridge_refuses_to_start_with_a_clear_message(system: System, case: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args, words = _refusal_case(case, system, busy)
        if "--port" not in args:
            args += ["--port", "0"]
        bridge = system.spawn("bridge", ["-m", "radical_edge_bridge", *args])
        code = bridge.wait(10)
    err = bridge.stderr()
    assert code != 0, err
    for word in words:
        assert word in err
    assert "Traceback" not in err
    assert "listening on" not in bridge.stdout()
    if case != "port-in-use":
        assert not system.token_file.exists()  # it stopped before doing anything


def test_bridge_accepts_a_private_combined_cert_and_key(system: System) -> None:
    combined = _combined_cert_and_key(system, 0o600)
    bridge = system.spawn("bridge", ["-m", "radical_edge_bridge", "--port", "0", "--cert", str(combined)])
    url = bridge.wait_stdout(URL_LINE, 15).group(1)
    with system.client(url) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/edges").status_code == 200


# ---------------------------------------------------------------- 2. big bodies, bounded bridge memory


def test_64_mib_each_way_with_bounded_bridge_memory(system: System, example_plugin: str) -> None:
    size = 64 * MiB
    bridge, url = system.start_bridge()
    edge = system.start_edge(url)
    with system.client(url) as http:
        poll("the edge connects", lambda: edge_connected(http, "e1"), 20)

        def upload(n: int, seed: int) -> tuple[dict[str, Any], str]:
            sent = hashlib.sha256()

            def body() -> Iterator[bytes]:
                for chunk in pseudo_random(n, seed):
                    sent.update(chunk)
                    yield chunk

            r = http.post("/e1/bulk/sha256", content=body())
            assert r.status_code == 200, r.text
            return r.json(), sent.hexdigest()

        def download(n: int, seed: int) -> tuple[int, str]:
            got = hashlib.sha256()
            total = 0
            with http.stream("GET", "/e1/bulk/bytes", params={"n": n, "seed": seed}) as r:
                assert r.status_code == 200
                assert r.headers["content-length"] == str(n)
                for chunk in r.iter_bytes():
                    got.update(chunk)
                    total += len(chunk)
            return total, got.hexdigest()

        def expected(n: int, seed: int) -> str:
            digest = hashlib.sha256()
            for chunk in pseudo_random(n, seed):
                digest.update(chunk)
            return digest.hexdigest()

        # warm up (code paths, buffers, TLS sessions), then the baseline
        upload(2 * MiB, 1)
        download(2 * MiB, 1)
        before = bridge.memory()

        t0 = time.monotonic()
        answer, sent = upload(size, 2)
        t_up = time.monotonic() - t0
        assert answer == {"bytes": size, "sha256": sent}
        after_upload = bridge.memory()

        t0 = time.monotonic()
        total, got = download(size, 3)
        t_down = time.monotonic() - t0
        assert total == size
        assert got == expected(size, 3)
        after = bridge.memory()

    growth_peak = after["VmHWM"] - before["VmRSS"]
    growth_rss = after["VmRSS"] - before["VmRSS"]
    report = (
        f"bridge RSS before {before['VmRSS'] / MiB:.1f} MiB (peak so far {before['VmHWM'] / MiB:.1f}); "
        f"after the upload RSS {after_upload['VmRSS'] / MiB:.1f} peak {after_upload['VmHWM'] / MiB:.1f}; "
        f"after the download RSS {after['VmRSS'] / MiB:.1f} peak {after['VmHWM'] / MiB:.1f} MiB; "
        f"peak growth {growth_peak / MiB:.1f} MiB, RSS growth {growth_rss / MiB:.1f} MiB; "
        f"upload {t_up:.2f} s, download {t_down:.2f} s"
    )
    print(report)
    assert growth_peak < 48 * MiB, report
    assert bridge.alive()
    assert edge.alive()


# ---------------------------------------------------------------- 3. the bridge restarts, the edge comes back


def test_edge_reconnects_after_a_bridge_restart(system: System, example_plugin: str) -> None:
    bridge, url = system.start_bridge()
    port = int(url.rsplit(":", 1)[1])
    token = system.token()
    edge = system.start_edge(url)
    with system.client(url) as http:
        poll("the edge connects", lambda: edge_connected(http, "e1"), 20)
        bulk_works(http)

        bridge.signal(signal.SIGTERM)
        assert bridge.wait(10) == 0  # SIGTERM is a clean stop, not a death by signal
        with pytest.raises(httpx.TransportError):
            http.get("/healthz")

        started = time.monotonic()
        bridge, url2 = system.start_bridge(port=port)  # same port, same token file, same certificate
        assert url2 == url
        assert system.token() == token
        poll("the edge reconnects by itself", lambda: edge_connected(http, "e1"), 20)
        print(f"edge back {time.monotonic() - started:.2f} s after the new bridge was started")
        bulk_works(http)

    assert edge.alive()
    assert "Traceback" not in edge.stderr()
    assert token not in edge.output() + bridge.output()


@pytest.mark.parametrize("froze", ["with a request in flight", "while idle"])
def test_a_frozen_edge_is_dropped_and_its_request_answered_503_within_15_s(
    system: System, example_plugin: str, froze: str
) -> None:
    """SIGSTOP: the edge's TCP connection stays up but nothing comes back; the default heartbeat finds it.

    An idle edge pings only every 30 s, so one that froze while idle is still listed for a while; a request
    sent to it must not wait for that: the bridge asks the edge with a PING as it forwards, and gives up 15 s
    later."""
    bridge, url = system.start_bridge()
    edge = system.start_edge(url)
    with system.client(url) as http, concurrent.futures.ThreadPoolExecutor(1) as pool:
        poll("the edge connects", lambda: edge_connected(http, "e1"), 20)
        bulk_works(http)

        def ask() -> concurrent.futures.Future[httpx.Response]:
            return pool.submit(http.get, "/e1/bulk/sleep", params={"seconds": 60}, timeout=60)

        if froze == "while idle":
            edge.signal(signal.SIGSTOP)
            time.sleep(6)  # silent for more than the busy interval (5 s): only idle, as far as the bridge knows
            assert edge_connected(http, "e1")
            pending, since = ask(), time.monotonic()
        else:
            pending = ask()
            time.sleep(0.5)  # the request is at the edge, waiting
            edge.signal(signal.SIGSTOP)
            since = time.monotonic()
        try:
            r = pending.result(timeout=40)
            took = time.monotonic() - since
            print(f"503 {took:.2f} s after the edge froze or the request was sent, the later")
            assert r.status_code == 503, r.text
            assert took <= 15.5
            assert not edge_connected(http, "e1")
        finally:
            edge.signal(signal.SIGCONT)
        poll("the thawed edge reconnects", lambda: edge_connected(http, "e1"), 20)
        bulk_works(http)
    assert "Traceback" not in edge.stderr() + bridge.stderr()


def test_an_edge_whose_loop_blocks_for_5_s_is_not_dropped(system: System, example_plugin: str) -> None:
    """A busy plugin (``time.sleep`` in ``async def``) freezes the edge's loop: slow, not dead."""
    bridge, url = system.start_bridge()
    edge = system.start_edge(url)
    with system.client(url) as http:
        poll("the edge connects", lambda: edge_connected(http, "e1"), 20)
        bulk_works(http)
        for _ in range(2):  # a second block right after the first: another phase of the heartbeat
            r = http.get("/e1/bulk/block", params={"seconds": 5})
            assert r.status_code == 200, r.text
            assert r.json() == {"blocked": 5}
        assert edge_connected(http, "e1")
        bulk_works(http)
    assert "disconnected" not in bridge.output()
    assert "Traceback" not in edge.stderr() + bridge.stderr()


# ---------------------------------------------------------------- 5. POST /bridge/terminate


def test_terminate_route_stops_the_bridge_and_the_edge_waits_for_the_next(system: System, example_plugin: str) -> None:
    bridge, url = system.start_bridge()
    port = int(url.rsplit(":", 1)[1])
    edge = system.start_edge(url)
    with system.client(url) as http, system.client(url, token="") as anon:
        poll("the edge connects", lambda: edge_connected(http, "e1"), 20)
        bulk_works(http)

        assert anon.post("/bridge/terminate").status_code == 401  # not without the token
        assert bridge.alive()
        r = http.post("/bridge/terminate")
        assert r.status_code == 200
        assert r.json() == {"status": "terminating"}
        assert bridge.wait(10) == 0
        assert "Traceback" not in bridge.stderr()

        time.sleep(0.5)  # the edge lost its bridge: it keeps trying, it does not exit
        assert edge.alive(), edge.output()

        bridge, _ = system.start_bridge(port=port)
        poll("the edge reconnects to the new bridge", lambda: edge_connected(http, "e1"), 20)
        bulk_works(http)
    assert edge.alive()
    assert "Traceback" not in edge.stderr()


def test_a_slurm_job_through_bridge_and_edge_processes(system: System, slurm: Slurm) -> None:
    """The whole path a user takes, every part its own process over verified TLS: the CLI submits to
    the real Slurm through a bridge and an edge, follows the output and exits with the job's code."""
    bridge, url = system.start_bridge()
    system.start_edge(url, name="hpc", plugins="psij,queue_info,sysinfo")
    with system.client(url) as client:
        poll("the edge to connect", lambda: edge_connected(client, "hpc"), timeout=30)
    cli = [sys.executable, "-m", "radical_edge_cli"]
    opts = ["--url", url, "--cert", str(system.tls["ca"])]  # the token: from the token file in HOME
    env = {**system.env, "PYTHONPATH": system.env.get("PYTHONPATH", "")}
    queues = subprocess.run(
        [*cli, "queues", "hpc", *opts], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert queues.returncode == 0, queues.stderr
    for partition in slurm.partitions:
        assert partition in queues.stdout
    submit = [*cli, "submit", "hpc", *opts, "--executor", "slurm", "--time", "1", "--follow", "--"]
    job = ["sh", "-c", "echo out-$SLURM_JOB_ID; echo err >&2; exit 5"]
    done = subprocess.run(
        [*submit, *job], check=False, env=env, capture_output=True, text=True, timeout=120, cwd=system.dir
    )
    assert done.returncode == 5, done.stdout + done.stderr
    native = re.search(r"out-(\d+)", done.stdout)
    assert native, done.stdout
    slurm.submitted.append(native.group(1))  # cancelled at the end if anything is left
    assert "err" in done.stderr
    assert "Traceback" not in done.stderr
    accounted = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", native.group(1), "-o", "State"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert accounted.stdout.strip() in ("COMPLETED", "FAILED"), accounted.stdout  # it really ran in Slurm
    assert bridge.alive


def test_jobs_an_edge_starts_do_not_inherit_the_bridge_token(system: System) -> None:
    """An edge given its token in RADICAL_BRIDGE_TOKEN keeps it to itself: a user's job never sees it."""
    bridge, url = system.start_bridge()
    token = system.token()
    args = ["-m", "radical_edge_edge", "--name", "tok", "--url", url, "--cert", str(system.tls["ca"])]
    edge = Proc("edge-tok", [*args, "--plugins", "psij"], {**system.env, "RADICAL_BRIDGE_TOKEN": token}, system.dir)
    system.procs.append(edge)
    with system.client(url) as client:
        poll("the edge to connect", lambda: edge_connected(client, "tok"), timeout=30)
    cli = [sys.executable, "-m", "radical_edge_cli", "submit", "tok", "--url", url, "--cert", str(system.tls["ca"])]
    job = ["--executor", "local", "--follow", "--", "sh", "-c", 'echo "token=[${RADICAL_BRIDGE_TOKEN:-}]"']
    done = subprocess.run([*cli, *job], check=False, env=system.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "token=[]" in done.stdout
    assert token not in done.stdout
    assert bridge.alive
