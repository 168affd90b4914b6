"""The scale bench's reference (``radical_edge_bench._echo``): a plain TCP echo server on asyncio and the
connections that beat against it at the heartbeats' rate, counted exactly; a lost connection is an error."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from radical_edge_bench._echo import MESSAGE, STALL_SECONDS
from radical_edge_proto import FrameType, encode_frame

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmark's processes are Linux's")

ECHO = [sys.executable, "-m", "radical_edge_bench._echo"]


def _line(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().decode().strip()


def _count(beats: subprocess.Popen[bytes]) -> str:
    assert beats.stdin is not None
    beats.stdin.write(b"count\n")
    beats.stdin.flush()
    return _line(beats)


def _start(fast: int, slow: int) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    server = subprocess.Popen([*ECHO, "serve", "--max-seconds", "60"], stdout=subprocess.PIPE)
    listening = _line(server)
    assert listening.startswith("ECHO-LISTENING "), listening
    port = listening.split()[1]
    argv = [*ECHO, "beat", port, "--max-seconds", "60", "--count", str(fast), "--interval", "0.1"]
    argv += ["--slow-count", str(slow), "--slow-interval", "0.5"]
    beats = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert _line(beats) == "ECHO-READY"
    return server, beats


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_each_connection_beats_once_per_interval_and_every_echo_is_counted() -> None:
    server, beats = _start(fast=10, slow=10)
    try:
        time.sleep(0.6)  # every connection past its random first phase
        first = _count(beats)
        t0 = time.monotonic()
        time.sleep(2.0)
        second = _count(beats)
        seconds = time.monotonic() - t0
        k0, k1 = int(first.split()[1]), int(second.split()[1])
        expected = seconds * (10 / 0.1 + 10 / 0.5)  # 10 connections at 0.1 s, 10 at 0.5 s
        # each connection keeps to its schedule (a late beat does not push the next ones back)
        assert 0.8 * expected <= k1 - k0 <= 1.1 * expected, (k1 - k0, expected)
        assert beats.stdin is not None
        beats.stdin.write(b"quit\n")
        beats.stdin.flush()
        assert beats.wait(10) == 0
    finally:
        _stop(beats, server)


def test_a_lost_echo_connection_fails_the_count_instead_of_lowering_it() -> None:
    server, beats = _start(fast=3, slow=0)
    try:
        server.kill()
        server.wait(10)
        time.sleep(0.5)  # every connection has tried to beat since
        assert not _count(beats).startswith("ECHO-COUNT")
        assert beats.wait(10) != 0
        assert beats.stderr is not None
        err = beats.stderr.read()
        assert b"IncompleteReadError" in err or b"ConnectionResetError" in err, err[-2000:]
    finally:
        _stop(beats, server)


def test_a_connection_left_without_an_echo_fails_the_count_instead_of_lowering_it() -> None:
    # a listener that never accepts: the connections complete in its backlog, their messages are never answered
    with socket.create_server(("127.0.0.1", 0), backlog=16) as mute:
        argv = [*ECHO, "beat", str(mute.getsockname()[1]), "--max-seconds", "60", "--count", "3", "--interval", "0.1"]
        beats = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert _line(beats) == "ECHO-READY"
            time.sleep(STALL_SECONDS + 0.5)
            assert not _count(beats).startswith("ECHO-COUNT")
            assert beats.wait(10) != 0
            assert beats.stderr is not None
            assert b"without an answer" in beats.stderr.read()
        finally:
            _stop(beats)


def test_the_message_is_a_heartbeat_ping_in_its_tls_record() -> None:
    ping = encode_frame(FrameType.PING, 0, 0, b"heartbeat")
    masked_ws_header, tls13_overhead = 2 + 4, 5 + 1 + 16
    assert len(MESSAGE) == len(ping) + masked_ws_header + tls13_overhead
