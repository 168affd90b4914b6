"""Running ``radical-edge bench`` as a user does, in a child process, for the bench tests."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import trustme


def run_bench(*args: str, drop: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess[str], float]:
    """``python -m radical_edge_cli bench ARGS``, without the caller's ``RADICAL_BRIDGE_*`` settings (nor the
    variables in ``drop``); the finished process and the seconds it took."""
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("RADICAL_BRIDGE_") and k not in drop}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "radical_edge_cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    return done, time.monotonic() - started


def tls_echo_server(ctx: ssl.SSLContext, accepted: list[int] | None = None) -> tuple[socket.socket, threading.Thread]:
    """A TLS server on 127.0.0.1 until its listener is closed: each piece a connection sends, upper-cased.
    (The relay's start-up check connects through it too.)  The file descriptor of each connection it
    accepts is appended to ``accepted``, if given (the TLS layer keeps it)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def echo(conn: socket.socket) -> None:
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                while data := tls.recv(65536):
                    tls.sendall(data.upper())
        except OSError:  # the relay's check and a killed relay end connections abruptly
            pass

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # the listener was closed
                return
            if accepted is not None:
                accepted.append(conn.fileno())
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def tls_files(tmp_path: Path, ca: trustme.CA, *names: str) -> tuple[trustme.LeafCert, Path, Path, Path]:
    """A certificate from ``ca`` for ``names`` (default 127.0.0.1), written out: cert, key, cert and CA files."""
    cert = ca.issue_cert(*(names or ("127.0.0.1",)))
    key_file, cert_file, ca_file = tmp_path / "key.pem", tmp_path / "cert.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    ca.cert_pem.write_to_path(str(ca_file))
    return cert, key_file, cert_file, ca_file


def stop_tls_echo_server(listener: socket.socket, thread: threading.Thread) -> None:
    """Stop a :func:`tls_echo_server` and wait for its thread."""
    listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not, on Linux)
    listener.close()
    thread.join(timeout=10)
    assert not thread.is_alive()


def dead_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound a moment, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def echo_through(tls: ssl.SSLSocket, data: bytes) -> None:
    """Send ``data`` to a :func:`tls_echo_server` (through a relay) and check it comes back upper-cased."""
    tls.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = tls.recv(65536)
        assert chunk, "the relay closed early"
        got += chunk
    assert got == data.upper()
