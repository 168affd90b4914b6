"""The bench's asyncio relay (radical_edge_bench._aiorelay): it carries TLS both ways intact, verifies the server
against the CA it is given, and ends a client's connection when the server is not there."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from .bench_helpers import dead_port, echo_through, stop_tls_echo_server, tls_echo_server, tls_files


@contextlib.contextmanager
def _relay_process(upstream: int, cert: Path, key: Path, ca: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    argv = [sys.executable, "-m", "radical_edge_bench._aiorelay", "--cert", str(cert), "--key", str(key)]
    argv += ["--ca", str(ca), "--upstream", str(upstream), "--max-seconds", "60"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("RELAY-LISTENING "), line + proc.stderr.read().decode() if proc.stderr else line
        yield int(line.split()[1]), proc
    finally:
        proc.kill()
        proc.wait(10)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@contextlib.contextmanager
def _relay(upstream: int, cert: Path, key: Path, ca: Path) -> Iterator[int]:
    with _relay_process(upstream, cert, key, ca) as (port, _):
        yield port


#: tcpi_state (the first byte of TCP_INFO) while our FIN awaits the peer's (linux/tcp_states.h)
TCP_FIN_WAIT1, TCP_FIN_WAIT2 = 4, 5


def _tcp_state(conn: socket.socket) -> int:
    return conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def _command(proc: subprocess.Popen[bytes], line: str, timeout: float = 10.0) -> str:
    """One command to a relay started by :func:`_relay_process`, and its answer line (no answer within
    ``timeout`` fails the test rather than hanging it)."""
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(line.encode() + b"\n")
    proc.stdin.flush()
    assert select.select([proc.stdout], [], [], timeout)[0], f"no answer to {line!r} within {timeout:g} s"
    return proc.stdout.readline().decode().strip()


def _client(port: int, ca_file: Path) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.settimeout(10)  # a hang fails the test with TimeoutError
    return ssl.create_default_context(cafile=str(ca_file)).wrap_socket(raw, server_hostname="127.0.0.1")


def _serve(cert: trustme.LeafCert, accepted: list[int] | None = None) -> tuple[socket.socket, threading.Thread]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    return tls_echo_server(server_ctx, accepted)


def test_the_relay_carries_tls_both_ways_intact_while_much_is_in_flight(tmp_path: Path) -> None:
    cert, key_file, cert_file, ca_file = tls_files(tmp_path, trustme.CA())
    listener, thread = _serve(cert)
    try:
        with _relay(listener.getsockname()[1], cert_file, key_file, ca_file) as port, _client(port, ca_file) as tls:
            # 8 MiB each way, sent while reading
            payload = os.urandom(4 * 1024 * 1024).hex().lower().encode()
            sent = 0
            got = bytearray()
            tls.setblocking(False)
            while len(got) < len(payload):
                if sent < len(payload):
                    with contextlib.suppress(ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                        sent += tls.send(payload[sent : sent + 65536])
                try:
                    chunk = tls.recv(262144)
                    assert chunk, "the relay closed early"
                    got += chunk
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    if sent >= len(payload):
                        assert select.select([tls], [], [], 10)[0], f"no data for 10 s at {len(got)} bytes"
            assert bytes(got) == payload.upper()  # through the relay, to the server and back, intact
    finally:
        stop_tls_echo_server(listener, thread)


def test_a_client_that_does_not_read_holds_the_server_back_instead_of_filling_the_relay(tmp_path: Path) -> None:
    cert, key_file, cert_file, ca_file = tls_files(tmp_path, trustme.CA())
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    listener = socket.create_server(("127.0.0.1", 0))
    total, sent = 256 * 1024 * 1024, [0]

    def flood() -> None:  # a server that sends 256 MiB as fast as it is allowed to, after one byte from the client
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
                chunk = b"x" * 65536
                while sent[0] < total:
                    tls.sendall(chunk)
                    sent[0] += len(chunk)

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        with _relay(listener.getsockname()[1], cert_file, key_file, ca_file) as port, _client(port, ca_file) as tls:
            tls.sendall(b"g")
            time.sleep(2)  # the client reads nothing: the relay must stop reading the server, not buffer it all
            assert sent[0] < 64 * 1024 * 1024, f"the relay took {sent[0] >> 20} MiB from the server meanwhile"
            got = 0
            while got < total:  # and reading again resumes the flow, to the last byte
                chunk = tls.recv(1 << 20)
                assert chunk, f"the relay closed after {got} bytes"
                got += len(chunk)
    finally:
        listener.close()
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_a_primed_connection_to_the_server_is_taken_first_and_one_the_server_closed_is_passed_over(
    tmp_path: Path,
) -> None:
    cert, key_file, cert_file, ca_file = tls_files(tmp_path, trustme.CA())
    accepted: list[int] = []  # the server's connections (file descriptors)
    listener, thread = _serve(cert, accepted)

    try:
        with _relay_process(listener.getsockname()[1], cert_file, key_file, ca_file) as (port, proc):
            assert _command(proc, "prime 1") == "RELAY-PRIMED 1"
            assert len(accepted) == 1  # dialled, its handshake done, before the answer
            # the server closes it while it waits in the pool (as a server closes idle connections)
            with socket.socket(fileno=os.dup(accepted[0])) as conn:
                conn.shutdown(socket.SHUT_RDWR)
                deadline = time.monotonic() + 10
                while _tcp_state(conn) in (TCP_FIN_WAIT1, TCP_FIN_WAIT2):  # until the relay has closed its end
                    assert time.monotonic() < deadline, "the relay did not notice the server's close"
                    time.sleep(0.01)
            with _client(port, ca_file) as tls:
                echo_through(tls, b"not through the closed one")
            assert len(accepted) == 2  # it was passed over: a new connection to the server
            assert _command(proc, "stats") == "RELAY-STATS 0 1"  # none from the pool, one dialled
            assert _command(proc, "prime 1") == "RELAY-PRIMED 1"
            assert len(accepted) == 3
            with _client(port, ca_file) as tls:
                echo_through(tls, b"through the primed one")
            assert len(accepted) == 3  # no new connection to the server: the primed one was taken
            assert _command(proc, "stats") == "RELAY-STATS 1 1"
    finally:
        stop_tls_echo_server(listener, thread)


def test_priming_a_server_that_is_not_there_answers_at_once_with_what_it_got(tmp_path: Path) -> None:
    _, key_file, cert_file, ca_file = tls_files(tmp_path, trustme.CA())
    with _relay_process(dead_port(), cert_file, key_file, ca_file) as (_, proc):
        assert _command(proc, "prime 2") == "RELAY-PRIMED 0"  # not a hang, not a dead command loop
        assert _command(proc, "prime two") == "RELAY-UNKNOWN 'prime two'"
        assert _command(proc, "stats") == "RELAY-STATS 0 0"
        proc.kill()
        assert proc.stderr is not None
        assert b"prime 2: 2 dial(s) failed" in proc.stderr.read()


def test_the_relay_refuses_a_server_whose_certificate_the_ca_does_not_sign(tmp_path: Path) -> None:
    _, key_file, cert_file, ca_file = tls_files(tmp_path, trustme.CA())
    impostor = trustme.CA().issue_cert("127.0.0.1")  # the server, signed by another CA
    listener, thread = _serve(impostor)
    try:
        with _relay(listener.getsockname()[1], cert_file, key_file, ca_file) as port, _client(port, ca_file) as tls:
            tls.sendall(b"secret")
            assert tls.recv(1) == b""  # the relay ended the connection: nothing reached the impostor
    finally:
        stop_tls_echo_server(listener, thread)


def test_a_server_that_is_not_there_ends_the_connection_without_a_hang(tmp_path: Path) -> None:
    _, key_file, cert_file, ca_file = tls_files(tmp_path, trustme.CA())
    dead = dead_port()
    with _relay(dead, cert_file, key_file, ca_file) as port:
        for _ in range(2):  # and the relay goes on serving
            with _client(port, ca_file) as tls:
                tls.sendall(b"x")
                with contextlib.suppress(ConnectionResetError):  # closed, or reset: either way at once
                    assert tls.recv(1) == b""


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmark's processes are Linux's")
