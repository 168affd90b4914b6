"""A C relay: the same measurements through one TLS-terminating relay written in C.

The tunnel puts one process, the bridge, between the client and the process that runs the app
(the edge): a second TLS termination, two more passes through the loopback, and a third busy
process on the same cores.  socat (C, OpenSSL) relaying between the client and the direct server
has that same shape with no Python at all.  Its ratios to the direct server show how much of a
ratio target this machine itself takes before any of our code runs; the bench prints them next to
the targets.

socat forks one process per connection, so it gives no fair figure for 64 concurrent connections:
only the 1-client latency and the bulk rates are measured through it.  Without socat (Debian's
``socat`` package) the section says so and the rest of the bench runs as before.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

#: socat's copy buffer (its default is 8 KiB): as large as the tunnel's frames, so the relay is not held back
BUFFER = 256 * 1024

DETAIL = (
    "socat (C, OpenSSL; one process per connection, 256 KiB copy buffer): the client's TLS ended, "
    "a new TLS connection to the server, its certificate verified against the run's CA"
)


def socat_path() -> str | None:
    return shutil.which("socat")


def socat_version() -> str:
    path = socat_path()
    if path is None:
        return "not installed"
    out = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=10, check=False).stdout
    for line in out.splitlines():
        if line.startswith("socat version"):
            return line.split()[2]
    return "unknown version"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], ca: Path, log: Path, seconds: float = 10.0) -> None:
    """Until a TLS handshake with the relay succeeds (so socat, not a process that took the port meanwhile,
    answers with the run's certificate, and its log gets no aborted handshake)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"socat exited with status {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
                ctx.wrap_socket(raw, server_hostname="127.0.0.1"),
            ):
                pass
        except OSError:  # ssl.SSLError included
            time.sleep(0.05)
        else:
            if proc.poll() is None:
                return
    raise RuntimeError(f"socat did not answer TLS on port {port} within {seconds:g} s")


@contextlib.contextmanager
def relay(target_port: int, cert: Path, key: Path, ca: Path, log: Path) -> Iterator[int]:
    """A socat relay on 127.0.0.1 in front of ``127.0.0.1:target_port`` (TLS both ways); yields its port.

    It and every process it forked are killed on the way out (they share a new session)."""
    path = socat_path()
    if path is None:
        raise RuntimeError("socat is not installed")
    for _attempt in range(3):  # the free port can be taken between the probe and socat's bind
        port = _free_port()
        listen = f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={cert},key={key},verify=0,nodelay"
        connect = f"OPENSSL:127.0.0.1:{target_port},cafile={ca},nodelay"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [path, "-b", str(BUFFER), listen, connect],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        try:
            _wait_listening(port, proc, ca, log)
        except RuntimeError:
            _kill(proc)
            continue
        try:
            yield port
        finally:
            _kill(proc)
        return
    raise RuntimeError(f"socat could not start: {log.read_text(errors='replace')[-2000:]}")


def _kill(proc: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    """Kill socat and the processes it forked (its session's group); wait a little for them to be gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + grace  # the forked ones are reaped by init, not by us
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
