"""`radical-edge put/get/cp/ls EDGE:PATH`, run as a user runs them (a process) against a real bridge over TLS
and two edges with the staging plugin (``e1``: roots ``r1``, ``r2``, ``~`` is ``r1``; ``e2``: ``e2root``)."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from radical_edge_plugins.sysinfo import SysInfoPlugin

from radical_edge_cli._staging import ProgressBar, explain, human_bytes, parse_remote
from radical_edge_cli._stdio import DaemonReader
from radical_edge_client import ChecksumMismatch, HTTPError
from radical_edge_edge import Backoff as EdgeBackoff
from radical_edge_edge import EdgeService, PluginHost

from .client_helpers import TOKEN, TLSFiles, tls
from .test_staging import MiB, Site, pattern, sha, site, staging

pytestmark = pytest.mark.anyio
__all__ = ["tls"]  # the fixture, imported for pytest


def cli(s: Site, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "radical_edge_cli", *args,
        "--url", s.url, "--token", TOKEN, "--cert", str(s.tls.ca),
    ]  # fmt: skip


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADICAL_BRIDGE_")}
    env["HOME"] = str(home)
    return env


async def run(
    s: Site, home: Path, *args: str, stdin: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(60):
        done = await anyio.run_process(cli(s, *args), input=stdin, env=environment(home), check=False, cwd=home)
    if check:
        assert done.returncode == 0, done.stderr.decode()
    return done


def one_line(done: subprocess.CompletedProcess[bytes]) -> str:
    """The error of a failed verb: exit status 1, one line on stderr, no traceback."""
    err = done.stderr.decode()
    assert done.returncode == 1, (done.returncode, err)
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    return err


@contextlib.asynccontextmanager
async def three_edges(tmp_path: Path, tls: TLSFiles) -> AsyncIterator[Site]:
    """:func:`site` plus ``e3``, an edge without the staging plugin."""
    async with site(tmp_path, tls) as s, anyio.create_task_group() as tg:
        host = PluginHost("e3")
        await host.add_plugin(SysInfoPlugin())
        service = EdgeService(
            "e3", url=s.url, host=host, plugins=None, token=TOKEN, ca_file=tls.ca, backoff=EdgeBackoff(0.05, 0.2)
        )
        tg.start_soon(service.run)
        with anyio.fail_after(10):
            await service.wait_connected()
        try:
            yield s
        finally:
            service.stop()
            with anyio.move_on_after(5):
                while service.state != "stopped":
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()


# ---------------------------------------------------------------- transfers


async def test_put_get_roundtrip_and_streams(tmp_path: Path, tls: TLSFiles) -> None:
    data = pattern(3 * MiB + 17)
    local = tmp_path / "data.bin"
    local.write_bytes(data)
    async with site(tmp_path, tls) as s:
        put = await run(s, tmp_path, "put", str(local), "e1:in/data.bin")
        stored = s.r1 / "in" / "data.bin"
        assert stored.read_bytes() == data
        assert put.stdout.decode() == f"uploaded to e1:{stored} ({len(data)} bytes, sha256 {sha(data)})\n"
        assert put.stderr == b""  # piped: no progress bar
        # into a directory (an existing one, or a path ending with '/'): the file keeps its name
        again = await run(s, tmp_path, "put", str(local), "e1:in", "--quiet", "--overwrite")
        assert again.stdout == b""
        assert not (s.r1 / "in" / "in").exists()
        await run(s, tmp_path, "put", str(local), f"e1:{s.r2}/", "-q")
        assert (s.r2 / "data.bin").read_bytes() == data
        # back, as JSON
        got = await run(s, tmp_path, "get", "e1:~/in/data.bin", str(tmp_path / "back.bin"), "--json")
        assert json.loads(got.stdout) == {
            "remote": "e1:~/in/data.bin",
            "path": str(tmp_path / "back.bin"),
            "size": len(data),
            "sha256": sha(data),
        }
        assert (tmp_path / "back.bin").read_bytes() == data
        # no FILE: the current directory, under the file's name
        cwd = tmp_path / "cwd"
        cwd.mkdir()
        await run(s, cwd, "get", f"e1:{s.r2}/data.bin", "-q")
        assert (cwd / "data.bin").read_bytes() == data
        again = one_line(await run(s, cwd, "get", f"e1:{s.r2}/data.bin", check=False))
        assert again == "radical-edge get: ./data.bin exists (use --overwrite to replace it)\n"
        # '-': standard input and standard output
        streamed = pattern(MiB + 5, seed=1)
        answer = await run(s, tmp_path, "put", "-", "e1:piped.bin", "--json", stdin=streamed)
        assert json.loads(answer.stdout)["sha256"] == sha(streamed)
        assert (s.r1 / "piped.bin").read_bytes() == streamed
        out = await run(s, tmp_path, "get", "e1:piped.bin", "-")
        assert out.stdout == streamed  # the bytes only
        assert out.stderr == b""
        as_json = await run(s, tmp_path, "get", "e1:piped.bin", "-", "--json")
        assert as_json.stdout == streamed
        assert json.loads(as_json.stderr)["sha256"] == sha(streamed)  # stdout is the file: the JSON on stderr
        nameless = await run(s, tmp_path, "put", "-", "e1:in/", stdin=b"x", check=False)
        assert "give the file's name on the edge" in one_line(nameless)


async def interrupt(process: subprocess.Popen[bytes]) -> float:
    """SIGINT to ``process`` (as Ctrl-C); the seconds until it is gone (at most 20)."""
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    with anyio.fail_after(20):
        while process.poll() is None:
            await anyio.sleep(0.05)
    return time.monotonic() - started


async def test_ctrl_c_ends_put_and_get_even_when_their_pipe_is_stuck(tmp_path: Path, tls: TLSFiles) -> None:
    """`producer | radical-edge put - ...` whose producer hangs, `radical-edge get ... - | consumer` whose
    consumer stops reading: Ctrl-C ends the command at once (it used to wait for the pipe to move, its
    read or write being in a thread Python waits for at exit), and what reached the edge is kept."""
    data = pattern(5 * MiB)
    async with site(tmp_path, tls) as s:
        # put: a producer that sent 1 MiB and then hangs (the pipe stays open)
        put = subprocess.Popen(
            cli(s, "put", "-", "e1:stuck.bin"), stdin=subprocess.PIPE, stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL, env=environment(tmp_path), cwd=tmp_path,
        )  # fmt: skip
        assert put.stdin is not None
        assert put.stderr is not None
        try:
            # in a thread: the bridge the command talks to runs in this event loop
            await anyio.to_thread.run_sync(put.stdin.write, data[:MiB])
            await anyio.to_thread.run_sync(put.stdin.flush)
            partial = s.r1 / ".stuck.bin.radical-partial"
            with anyio.fail_after(20):
                while not partial.exists() or partial.stat().st_size < MiB:  # the edge has that MiB
                    await anyio.sleep(0.05)
            took = await interrupt(put)
            assert put.returncode == 130
            said = put.stderr.read().decode()
            assert "interrupted: the upload to e1:stuck.bin stopped; from a pipe it cannot resume" in said
            assert took < 10
            assert partial.read_bytes() == data[:MiB]  # kept for the resume
        finally:
            put.kill()
            put.stdin.close()
            put.wait()
            put.stderr.close()
        # get: a consumer that never reads (the pipe fills up and the write blocks)
        (s.r1 / "big.bin").write_bytes(data)
        get = subprocess.Popen(
            cli(s, "get", "e1:big.bin", "-"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=environment(tmp_path), cwd=tmp_path,
        )  # fmt: skip
        assert get.stdout is not None
        try:
            with anyio.fail_after(20):
                while _unread(get.stdout.fileno()) < 64 * 1024:  # the pipe is full: the command is blocked on it
                    await anyio.sleep(0.05)
            took = await interrupt(get)
            assert get.returncode == 130
            assert took < 10
        finally:
            get.kill()
            get.wait()
            get.stdout.close()
            assert get.stderr is not None
            get.stderr.close()


def _unread(fd: int) -> int:
    """Bytes waiting in a pipe."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


async def test_put_from_stdin_redirected_from_a_file_resumes_and_knows_its_size(tmp_path: Path, tls: TLSFiles) -> None:
    """`radical-edge put - e1:f < FILE`: stdin is a regular file, read as one (its size known: the progress
    bar shows the total; an interrupted upload resumes, as the Ctrl-C message says)."""
    data = pattern(3 * MiB)
    local = tmp_path / "data.bin"
    local.write_bytes(data)
    async with site(tmp_path, tls) as s, s.client() as bridge, s.http() as http:
        st = await staging(bridge)
        # an earlier upload cut short after 1 MiB (the edge keeps it for a resume)
        r = await http.put(
            f"/e1/staging/upload/{st.sid}", params={"path": "~/resumed.bin", "size": len(data)}, content=data[:MiB]
        )
        assert r.status_code == 400
        assert (await st.upload_state("~/resumed.bin"))["offset"] == MiB

        def put_with_stderr_on_a_terminal() -> tuple[int, bytes]:
            master, slave = pty.openpty()
            seen = bytearray()
            reader = threading.Thread(target=_read_all, args=(master, seen), daemon=True)
            reader.start()
            with local.open("rb") as stdin:
                done = subprocess.run(
                    cli(s, "put", "-", "e1:resumed.bin"), stdin=stdin, stderr=slave, stdout=subprocess.PIPE,
                    env=environment(tmp_path), cwd=tmp_path, timeout=60, check=False,
                )  # fmt: skip
            os.close(slave)
            reader.join(10)
            os.close(master)
            return done.returncode, bytes(seen)

        code, seen = await anyio.to_thread.run_sync(put_with_stderr_on_a_terminal)
        assert code == 0, seen
        assert (s.r1 / "resumed.bin").read_bytes() == data
        bar = seen.decode()
        assert "/ 3.0 MiB" in bar, bar  # the size is known (so is the ETA)
        assert bar.split("\r")[1].startswith("stdin  1.0 MiB / 3.0 MiB"), bar  # resumed after the MiB it had


async def test_get_to_a_stdout_in_non_blocking_mode_writes_it_all(tmp_path: Path, tls: TLSFiles) -> None:
    """stdout shared with a program that put it in non-blocking mode: a consumer slower than the download
    still gets every byte (a full pipe makes os.write raise BlockingIOError: it is waited on)."""
    data = pattern(8 * MiB, seed=5)
    async with site(tmp_path, tls) as s:
        (s.r1 / "f.bin").write_bytes(data)
        started = threading.Event()

        def get_into_a_non_blocking_pipe() -> tuple[int, bytes, bytes]:
            r, w = os.pipe()
            os.set_blocking(w, False)
            process = subprocess.Popen(
                cli(s, "get", "e1:f.bin", "-"), stdout=w, stderr=subprocess.PIPE, env=environment(tmp_path),
                cwd=tmp_path,
            )  # fmt: skip
            os.close(w)
            started.set()
            while _unread(r) < 64 * 1024 and process.poll() is None:  # the consumer starts once the pipe is full
                time.sleep(0.01)
            got = bytearray()
            while chunk := os.read(r, MiB):
                got += chunk
            os.close(r)
            assert process.stderr is not None
            err = process.stderr.read()
            process.stderr.close()
            process.wait(30)
            return process.returncode, bytes(got), err

        code, got, err = await anyio.to_thread.run_sync(get_into_a_non_blocking_pipe)
        assert (code, err) == (0, b"")
        assert got == data


async def test_the_stdin_reader_hands_over_what_is_ready_and_remembers_the_end() -> None:
    """A slow producer's bytes go out as they come (not held until a MiB is there: the client's silence
    timeout would fire); a terminal's Ctrl-D ends the input once."""
    r, w = os.pipe()
    try:
        reader = DaemonReader(r)
        os.write(w, b"first")
        with anyio.fail_after(10):  # the pipe stays open: a read that waited for a MiB would hang here
            assert await reader.read(MiB) == b"first"
        writer = threading.Thread(target=os.write, args=(w, b"x" * 300_000))  # more than a pipe holds
        writer.start()
        got = b""
        with anyio.fail_after(10):
            while len(got) < 300_000:
                got += await reader.read(MiB)
        writer.join()
        assert got == b"x" * 300_000
    finally:
        os.close(w)
        os.close(r)
    master, slave = pty.openpty()
    try:
        reader = DaemonReader(slave)
        os.write(master, b"line\n\x04")  # a line, then Ctrl-D
        with anyio.fail_after(10):
            assert await reader.read(MiB) == b"line\n"
            assert await reader.read(MiB) == b""
            assert await reader.read(MiB) == b""  # without a second Ctrl-D
    finally:
        os.close(master)
        os.close(slave)


async def test_cp_between_two_edges(tmp_path: Path, tls: TLSFiles) -> None:
    data = pattern(2 * MiB + 3, seed=2)
    async with site(tmp_path, tls) as s:
        (s.r1 / "src.bin").write_bytes(data)
        done = await run(s, tmp_path, "cp", "e1:src.bin", "e2:copies/", "--json")
        answer = json.loads(done.stdout)
        target = s.e2root / "copies" / "src.bin"
        assert answer == {"edge": "e2", "path": str(target), "size": len(data), "sha256": sha(data)}
        assert target.read_bytes() == data
        assert not list(tmp_path.glob("**/*.radical-partial"))  # never on the local disk, nothing left
        text = await run(s, tmp_path, "cp", "e1:src.bin", "e2:copies/again.bin")
        assert text.stdout.decode() == (
            f"copied e1:{s.r1}/src.bin to e2:{s.e2root}/copies/again.bin ({len(data)} bytes, sha256 {sha(data)})\n"
        )
        exists = one_line(await run(s, tmp_path, "cp", "e1:src.bin", "e2:copies/again.bin", check=False))
        assert exists == "radical-edge cp: e2:copies/again.bin exists (use --overwrite to replace it)\n"
        await run(s, tmp_path, "cp", "e1:src.bin", "e2:copies/again.bin", "--overwrite", "-q")
        missing = one_line(await run(s, tmp_path, "cp", "e1:nope.bin", "e2:x", check=False))
        assert missing.startswith("radical-edge cp: e1:nope.bin: no such file")
        assert missing.endswith(f": {s.r1}/nope.bin\n")  # the path as the edge resolved it
        local = one_line(await run(s, tmp_path, "cp", str(tmp_path / "x"), "e2:x", check=False))
        assert "is not EDGE:PATH" in local


async def test_ls_lists_edges_and_files(tmp_path: Path, tls: TLSFiles) -> None:
    async with site(tmp_path, tls) as s:
        (s.r1 / "sub").mkdir()
        (s.r1 / "a.txt").write_bytes(b"12345")
        os.utime(s.r1 / "a.txt", (1_700_000_000, 1_700_000_000))
        edges = (await run(s, tmp_path, "ls")).stdout.decode().splitlines()
        assert edges[0].split() == ["EDGE", "CONNECTED", "PLUGINS"]
        assert [line.split()[0] for line in edges[1:]] == ["e1", "e2"]
        one = (await run(s, tmp_path, "ls", "e2")).stdout.decode().splitlines()
        assert [line.split()[0] for line in one[1:]] == ["e2"]
        table = (await run(s, tmp_path, "ls", "e1:")).stdout.decode().splitlines()
        assert table[0].split() == ["TYPE", "MODE", "SIZE", "MODIFIED", "NAME"]
        rows = [line.split() for line in table[1:]]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(1_700_000_000))
        assert rows[0] == ["file", "-rw-r--r--", "5", *when.split(), "a.txt"]
        assert rows[1][0] == "dir"
        assert rows[1][1].startswith("d")
        assert rows[1][2] == "-"
        assert rows[1][-1] == "sub/"
        assert (await run(s, tmp_path, "ls", "e1:~/sub")).stdout.decode() == f"e1:{s.r1}/sub: empty\n"
        single = (await run(s, tmp_path, "ls", "e1:a.txt")).stdout.decode().splitlines()
        assert single[1].split()[-1] == "a.txt"
        listing = json.loads((await run(s, tmp_path, "ls", f"e1:{s.r1}", "--json")).stdout)
        assert sorted(e["name"] for e in listing["entries"]) == ["a.txt", "sub"]
        assert listing["path"] == str(s.r1)
        refused = one_line(await run(s, tmp_path, "ls", f"e1:{s.outside}", check=False))
        assert f"refused: outside the staging roots: {s.outside}" in refused
        assert one_line(await run(s, tmp_path, "ls", "nowhere", check=False)).startswith("radical-edge ls: ")


async def test_clear_errors(tmp_path: Path, tls: TLSFiles) -> None:
    local = tmp_path / "f.txt"
    local.write_bytes(b"first")
    async with three_edges(tmp_path, tls) as s:
        await run(s, tmp_path, "put", str(local), "e1:f.txt")
        # 409 without --overwrite, then with it
        exists = one_line(await run(s, tmp_path, "put", str(local), "e1:f.txt", check=False))
        assert exists == "radical-edge put: e1:f.txt exists (use --overwrite to replace it)\n"
        local.write_bytes(b"second")
        await run(s, tmp_path, "put", str(local), "e1:f.txt", "--overwrite")
        assert (s.r1 / "f.txt").read_bytes() == b"second"
        # the local side of a get, likewise
        local_exists = one_line(await run(s, tmp_path, "get", "e1:f.txt", str(local), check=False))
        assert local_exists == f"radical-edge get: {local} exists (use --overwrite to replace it)\n"
        await run(s, tmp_path, "get", "e1:f.txt", str(local), "--overwrite")
        # 403: outside the roots, with the roots named
        outside = one_line(await run(s, tmp_path, "put", str(local), f"e1:{s.outside}/f.txt", check=False))
        assert outside == (
            f"radical-edge put: e1:{s.outside}/f.txt: refused: outside the staging roots: {s.outside}/f.txt "
            f"(the staging roots of e1: {s.r1}, {s.r2})\n"
        )
        assert not list(s.outside.iterdir())
        # 404
        missing = one_line(await run(s, tmp_path, "get", "e1:nothing.bin", str(tmp_path), check=False))
        assert missing.startswith("radical-edge get: e1:nothing.bin: no such file")
        assert missing.endswith(f": {s.r1}/nothing.bin\n")
        assert not list(tmp_path.glob("*nothing*"))
        # an unknown edge; an edge without the staging plugin
        unknown = one_line(await run(s, tmp_path, "put", str(local), "nowhere:f.txt", check=False))
        assert unknown == "radical-edge put: no edge named 'nowhere' (radical-edge ls lists the edges)\n"
        plain = one_line(await run(s, tmp_path, "get", "e3:f.txt", check=False))
        assert "no plugin 'staging' on edge 'e3'" in plain
        assert "--plugins staging" in plain
        # a local file that is not there, a directory, the wrong way round
        absent = one_line(await run(s, tmp_path, "put", str(tmp_path / "absent"), "e1:x", check=False))
        assert absent == f"radical-edge put: {tmp_path / 'absent'}: No such file or directory\n"
        assert "is a directory" in one_line(await run(s, tmp_path, "put", str(tmp_path), "e1:x", check=False))
        backwards = one_line(await run(s, tmp_path, "get", str(local), "e1:x", check=False))
        assert "is not EDGE:PATH (radical-edge put moves the other way)" in backwards


# ---------------------------------------------------------------- the progress bar


async def _stderr_on_a_terminal(command: list[str], env: dict[str, str]) -> tuple[Any, bytes]:
    """Run ``command`` with its stderr on a pseudo-terminal (stdout piped): the process and what it wrote there."""
    master, slave = pty.openpty()
    seen = bytearray()
    reader = threading.Thread(target=_read_all, args=(master, seen), daemon=True)
    reader.start()
    try:
        with anyio.fail_after(60):
            done = await anyio.run_process(command, stderr=slave, env=env, check=False)
    finally:
        os.close(slave)
    await anyio.to_thread.run_sync(reader.join, 10)
    os.close(master)
    return done, bytes(seen)


def _read_all(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the terminal's other end closed
            return
        if not chunk:
            return
        into += chunk


async def test_a_progress_bar_on_a_terminal_only(tmp_path: Path, tls: TLSFiles) -> None:
    data = pattern(8 * MiB, seed=3)
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    async with site(tmp_path, tls) as s:
        done, seen = await _stderr_on_a_terminal(cli(s, "put", str(local), "e1:big.bin"), environment(tmp_path))
        assert done.returncode == 0
        bar = seen.decode()
        assert "\r" in bar
        assert "big.bin" in bar
        assert "8.0 MiB / 8.0 MiB 100%" in bar
        assert re.search(r"\[#{5,30}\]", bar)  # full, as wide as the first one drawn
        widths = {len(m) for m in re.findall(r"\[[#-]+\]", bar)}
        assert len(widths) == 1
        assert "MiB/s" in bar
        assert bar.endswith("\r\n")  # the last line is ended (the terminal shows \n as \r\n)
        assert done.stdout.decode().startswith("uploaded to e1:")
        # piped (the other tests), or --quiet on a terminal: nothing on stderr
        piped = await run(s, tmp_path, "get", "e1:big.bin", str(tmp_path / "back.bin"))
        assert piped.stderr == b""
        assert (tmp_path / "back.bin").read_bytes() == data
        quiet, seen = await _stderr_on_a_terminal(
            cli(s, "get", "e1:big.bin", str(tmp_path / "q.bin"), "-q"), environment(tmp_path)
        )
        assert quiet.returncode == 0
        assert bytes(seen) == b""
        assert quiet.stdout == b""


def test_progress_bar_lines() -> None:
    now = [100.0]
    out = io.StringIO()
    bar = ProgressBar("file.bin", out, clock=lambda: now[0], columns=80)
    bar(0, 100 * MiB)
    now[0] += 1.0
    bar(25 * MiB, 100 * MiB)
    line = out.getvalue().split("\r")[-1]
    assert "25.0 MiB / 100.0 MiB  25%" in line
    assert "25.0 MiB/s" in line
    assert "ETA 0:03" in line
    assert len(line) <= 79
    bar(50 * MiB, 100 * MiB)  # within the redraw interval: not drawn
    assert "50.0 MiB" not in out.getvalue()
    now[0] += 1.0
    bar(100 * MiB, 100 * MiB)
    bar.close()
    assert out.getvalue().endswith("in 2.0 s\n")
    assert re.search(r"\[#{5,30}\]", out.getvalue())
    unknown = io.StringIO()
    stream = ProgressBar("stdin", unknown, clock=lambda: now[0], columns=80)
    stream(3 * MiB, None)
    assert "3.0 MiB" in unknown.getvalue()
    assert "%" not in unknown.getvalue()
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(12) == "12 B"


def test_remote_names() -> None:
    assert parse_remote("e1:~/a") is not None
    assert str(parse_remote("e1:")) == "e1:."
    assert parse_remote("plain.txt") is None
    assert parse_remote("./a:b") is None
    assert parse_remote(":x") is None


async def test_checksum_mismatch_is_one_line() -> None:
    message = await explain(ChecksumMismatch("x: received sha256 aa, the edge's file has bb"), "e1:x")
    assert message.startswith("checksum mismatch, nothing was put in place: ")
    assert "\n" not in message
    busy = await explain(HTTPError("an upload to /r/x is in progress", 409), "e1:x")
    assert busy == "e1:x: an upload to /r/x is in progress"


# ---------------------------------------------------------------- what an edge sends is never obeyed

#: a file name that would retitle and clear the terminal, overwrite the line, forge a new one, reverse text
EVIL_NAME = "evil\x1b]0;owned\x07\x1b[2J\rforged\nline\u202etxt.exe"
EVIL_SHOWN = "evil\\x1b]0;owned\\x07\\x1b[2J\\rforged\\nline\\u202etxt.exe"


def assert_no_controls(text: str) -> None:
    for raw in ("\x1b", "\x07", "\r", "\u202e"):
        assert raw not in text, (raw, text)


async def test_hostile_names_and_details_reach_the_terminal_escaped(tmp_path: Path, tls: TLSFiles) -> None:
    local = tmp_path / "local.bin"
    local.write_bytes(b"12345")
    (tmp_path / "sub-dir").mkdir()
    async with site(tmp_path, tls) as s:
        (s.r1 / EVIL_NAME).write_bytes(b"12345")  # a file someone made on the edge
        listing = (await run(s, tmp_path, "ls", "e1:")).stdout.decode()
        assert_no_controls(listing)
        assert listing.count("\n") == 2  # the header and one row: no forged line
        assert listing.splitlines()[1].endswith(EVIL_SHOWN)
        exact = json.loads((await run(s, tmp_path, "ls", "e1:", "--json")).stdout)
        assert [e["name"] for e in exact["entries"]] == [EVIL_NAME]  # --json: the name as it is
        # the summary line names the path the edge answered with
        put = (await run(s, tmp_path, "put", str(local), f"e1:sub/{EVIL_NAME}")).stdout.decode()
        assert_no_controls(put)
        assert put == f"uploaded to e1:{s.r1}/sub/{EVIL_SHOWN} (5 bytes, sha256 {sha(b'12345')})\n"
        # an error's detail (the edge repeats the path it could not find) stays one line
        missing = one_line(await run(s, tmp_path, "get", f"e1:no-{EVIL_NAME}", str(tmp_path), check=False))
        assert_no_controls(missing)
        assert missing.endswith(f": {s.r1}/no-{EVIL_SHOWN}\n")
        # a remote path that names no file, downloaded into a directory: one line, nothing written
        nameless = one_line(await run(s, tmp_path, "get", "e1:~/sub/..", str(tmp_path / "sub-dir"), check=False))
        assert "give the local file's name" in nameless


async def test_cp_names_the_copy_after_the_source_the_user_named(
    tmp_path: Path, tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile source edge answers ``stat`` with a path of its choosing: the copy into a directory is still
    named after the source the user gave (never ``.bashrc`` in the target's home)."""
    from radical_edge_cli import _staging  # noqa: PLC0415
    from radical_edge_cli._cli import build_parser  # noqa: PLC0415
    from radical_edge_client import AsyncStagingClient  # noqa: PLC0415

    real_stat = AsyncStagingClient.stat

    async def lying_stat(self: AsyncStagingClient, path: str) -> dict[str, Any]:
        info = await real_stat(self, path)
        if self.edge.name == "e1":
            info["path"] = "/somewhere/.bashrc"
        return info

    monkeypatch.setattr(AsyncStagingClient, "stat", lying_stat)
    async with site(tmp_path, tls) as s:
        (s.r1 / "src.bin").write_bytes(b"data")
        (s.e2root / ".bashrc").write_bytes(b"# mine")
        words = ["cp", "e1:src.bin", "e2:", "--overwrite", "--url", s.url, "--token", TOKEN, "--cert", str(s.tls.ca)]
        out = io.StringIO()
        assert await _staging.cp(build_parser().parse_args(words), out, io.StringIO()) == 0
        assert (s.e2root / ".bashrc").read_bytes() == b"# mine"
        assert (s.e2root / "src.bin").read_bytes() == b"data"
