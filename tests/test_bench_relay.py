"""The bench's C relay (radical_edge_bench._relay): socat relays TLS both ways and leaves nothing running."""

from __future__ import annotations

import os
import socket
import ssl
import threading
from pathlib import Path

import pytest
import trustme

from radical_edge_bench import _relay

pytestmark = pytest.mark.skipif(_relay.socat_path() is None, reason="socat is not installed (Debian package socat)")


def _tls_echo_server(ctx: ssl.SSLContext) -> tuple[socket.socket, threading.Thread]:
    """A TLS server on 127.0.0.1 that answers one connection: each piece it reads, upper-cased."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            while data := tls.recv(65536):
                tls.sendall(data.upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def _socat_pids() -> set[int]:
    """The socat processes alive now (a zombie waiting for init to reap it is not running)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
            if name == "socat" and state != "Z":
                pids.add(int(entry.name))
    return pids


def test_the_relay_carries_tls_both_ways_and_is_gone_afterwards(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    key_file, cert_file, ca_file = tmp_path / "key.pem", tmp_path / "cert.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    ca.cert_pem.write_to_path(str(ca_file))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    listener, thread = _tls_echo_server(server_ctx)
    before = _socat_pids()
    client_ctx = ssl.create_default_context(cafile=str(ca_file))
    try:
        with _relay.relay(listener.getsockname()[1], cert_file, key_file, ca_file, tmp_path / "socat.log") as port:
            assert _socat_pids() - before  # socat runs
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                payload = os.urandom(300_000).hex().lower().encode()
                tls.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    chunk = tls.recv(65536)
                    assert chunk, "the relay closed early"
                    got += chunk
                assert got == payload.upper()  # through socat, to the server and back, intact
        # the relay and the process it forked for this connection are gone, and the port is closed
        assert not (_socat_pids() - before)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        listener.close()
        thread.join(timeout=10)


def test_a_server_that_is_not_there_ends_the_connection_without_a_hang(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    key_file, cert_file, ca_file = tmp_path / "key.pem", tmp_path / "cert.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    ca.cert_pem.write_to_path(str(ca_file))
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    client_ctx = ssl.create_default_context(cafile=str(ca_file))

    def first_answer(port: int) -> bytes | None:
        """What the client reads first through the relay: b"" (closed) or None (the TLS layer failed)."""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                raw.settimeout(10)  # a hang fails the test with TimeoutError
                with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"x")
                    return tls.recv(1)
        except (ssl.SSLError, ConnectionError):
            return None

    with _relay.relay(dead, cert_file, key_file, ca_file, tmp_path / "socat.log") as port:
        assert first_answer(port) in (b"", None)
    assert "Connection refused" in (tmp_path / "socat.log").read_text()  # socat said why
