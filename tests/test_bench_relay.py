"""The bench's C relay (radical_edge_bench._relay): socat relays TLS both ways and leaves nothing running."""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

import pytest
import trustme

from radical_edge_bench import _relay

from .bench_helpers import dead_port, echo_through, stop_tls_echo_server, tls_echo_server, tls_files

pytestmark = pytest.mark.skipif(_relay.socat_path() is None, reason="socat is not installed (Debian package socat)")


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
    cert, key_file, cert_file, ca_file = tls_files(tmp_path, trustme.CA(), "127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    listener, thread = tls_echo_server(server_ctx)
    before = _socat_pids()
    client_ctx = ssl.create_default_context(cafile=str(ca_file))
    tls: ssl.SSLSocket | None = None
    try:
        with _relay.relay(listener.getsockname()[1], cert_file, key_file, ca_file, tmp_path / "socat.log") as port:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            tls = client_ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            echo_through(tls, os.urandom(300_000).hex().lower().encode())  # through socat and back, intact
            assert len(_socat_pids() - before) >= 2  # socat, and the process it forked for this connection
        # the connection is still open here: the process socat forked for it must have been killed with socat,
        # not left to end with the connection; and the port is closed
        assert not (_socat_pids() - before)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if tls is not None:
            tls.close()
        stop_tls_echo_server(listener, thread)


def test_a_server_that_is_not_there_ends_the_connection_without_a_hang(tmp_path: Path) -> None:
    _, key_file, cert_file, ca_file = tls_files(tmp_path, trustme.CA())
    dead = dead_port()
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
