"""The user verbs of `radical-edge` (ls, call, events), run as a user runs them: a process."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys

import anyio
import pytest

from .client_helpers import TOKEN, Live, example_plugin, live, tls

pytestmark = pytest.mark.anyio
__all__ = ["example_plugin", "live", "tls"]  # fixtures, imported for pytest


def verb(system: Live, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "radical_edge_cli", *args,
        "--url", system.url, "--token", TOKEN, "--cert", str(system.tls.ca),
    ]  # fmt: skip


async def run(system: Live, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(60):
        return await anyio.run_process(verb(system, *args), check=check)


async def test_ls_table_and_json(live: Live) -> None:
    table = (await run(live, "ls")).stdout.decode()
    header, row = table.splitlines()[:2]
    assert header.split() == ["EDGE", "CONNECTED", "PLUGINS"]
    assert row.startswith("e1")
    assert "sysinfo" in row
    assert "probe" in row
    listing = json.loads((await run(live, "ls", "--json")).stdout)
    assert set(listing["e1"]["plugins"]) >= {"sysinfo", "probe", "hello"}


async def test_call_with_and_without_data(live: Live, tmp_path) -> None:
    homedir = json.loads((await run(live, "call", "e1", "sysinfo", "homedir")).stdout)
    assert "homedir" in homedir
    posted = json.loads((await run(live, "call", "e1", "probe", "count", "--data", '{"a": 1}', "--json")).stdout)
    assert posted["status"] == 200
    assert posted["body"]["bytes"] == len(json.dumps({"a": 1}, separators=(",", ":")))
    payload = bytes(range(256)) * 1000
    (tmp_path / "payload.bin").write_bytes(payload)
    upload = await run(live, "call", "e1", "probe", "count", "--data", f"@{tmp_path / 'payload.bin'}")
    sent = json.loads(upload.stdout)
    assert sent["sha256"] == hashlib.sha256(payload).hexdigest()  # the file's bytes, exactly
    text = (await run(live, "call", "e1", "probe", "text")).stdout.decode()
    assert text == "this is not JSON\n"


async def test_call_errors_are_clear_and_exit_non_zero(live: Live) -> None:
    missing = await run(live, "call", "nowhere", "sysinfo", "homedir", check=False)
    assert missing.returncode == 1
    assert b"EdgeNotFound" in missing.stderr
    assert b"Traceback" not in missing.stderr
    wrong = await anyio.run_process(
        [*verb(live, "ls")[:-4], "--url", live.url, "--token", "wrong", "--cert", str(live.tls.ca)], check=False
    )
    assert wrong.returncode == 1
    assert b"AuthError" in wrong.stderr


async def test_events_tails_notifications(live: Live) -> None:
    async with await anyio.open_process(verb(live, "events", "--topic", "tick", "--json", "--count", "2")) as proc:
        lines: list[dict[str, object]] = []

        async def read() -> None:
            assert proc.stdout is not None
            buffer = b""
            async for chunk in proc.stdout:
                buffer += chunk
            lines.extend(json.loads(line) for line in buffer.decode().splitlines())

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            async with live.client() as client:
                with anyio.fail_after(30):
                    # keep notifying until the tail has subscribed and seen two
                    n = 0
                    while proc.returncode is None:
                        await client.request("POST", "/e1/probe/tick", json={"n": n})
                        n += 1
                        with anyio.move_on_after(0.2):
                            await proc.wait()
        assert proc.returncode == 0
    assert len(lines) == 2
    assert all(line["topic"] == "tick" for line in lines)
    assert lines[1]["data"]["n"] == lines[0]["data"]["n"] + 1  # consecutive: nothing lost in between


def test_every_sub_command_has_a_handler() -> None:
    from radical_edge_cli._cli import COMMANDS, PASS_THROUGH, build_parser  # noqa: PLC0415

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)  # every name and alias, nothing else
    assert set(COMMANDS) >= PASS_THROUGH


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "radical_edge_cli", "bench", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_bench_runs_as_its_own_program_with_its_own_options() -> None:
    done = bench("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: radical-edge bench ")
    assert "--quick" in done.stdout
    refused = bench("--no-such-option")
    assert refused.returncode == 2
    assert "radical-edge bench: error: unrecognized arguments: --no-such-option" in refused.stderr


async def test_a_token_file_others_can_read_is_one_clear_line(live: Live, tmp_path) -> None:
    token_file = tmp_path / ".radical" / "edge" / "bridge.token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "RADICAL_BRIDGE_URL": live.url}
    env["RADICAL_BRIDGE_CERT"] = str(live.tls.ca)
    with anyio.fail_after(60):
        done = await anyio.run_process([sys.executable, "-m", "radical_edge_cli", "ls"], check=False, env=env)
    err = done.stderr.decode()
    assert done.returncode == 1
    assert "Traceback" not in err
    assert err.count("\n") == 1
    assert f"chmod 600 {token_file}" in err
