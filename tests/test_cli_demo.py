"""`radical-edge demo`: the one-command local system, as a user starts it."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx


def test_demo_starts_everything_and_stops_cleanly(tmp_path: Path) -> None:
    # the venv as a user has it: without the test-only plugins the example_plugin fixture puts on PYTHONPATH
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HOME"] = str(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "radical_edge_cli", "demo", "--port", "0", "--name", "local"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip() == "PY":  # the end of the snippet after "Try it from another shell"
                break
        out = "".join(lines)
        url = re.search(r"portal:\s+(https://\S+?)/\s", out)
        assert url, out
        home = tmp_path / ".radical" / "edge"
        token_file, ca = home / "bridge.token", home / "dev-ca.pem"
        assert f"token:   {token_file}" in out
        token = token_file.read_text().strip()
        assert token not in out  # the token is never printed
        assert token_file.stat().st_mode & 0o077 == 0
        assert (home / "dev-key.pem").stat().st_mode & 0o077 == 0
        assert "put README.md local:~/staged/" in out  # the snippet has a line to try the staging verbs
        ctx = ssl.create_default_context(cafile=str(ca))  # verified TLS with the dev CA
        with httpx.Client(base_url=url.group(1), verify=ctx, headers={"Authorization": f"Bearer {token}"}) as c:
            assert c.get("/healthz").json()["status"] == "ok"
            edges = c.get("/edges").json()["edges"]
            assert [e["name"] for e in edges] == ["local"]
            assert {"sysinfo", "staging", "psij"} <= set(edges[0]["plugins"])
            assert "homedir" in c.get("/local/sysinfo/homedir").json()
            page = c.get("/")  # the portal: the Explorer, never inline script
            assert page.status_code == 200
            assert "<title>radical-edge Explorer</title>" in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out + rest
        assert "radical-edge demo stopped" in rest
        assert "Traceback" not in out + rest
        assert not [line for line in (out + rest).splitlines() if "ERROR" in line], out + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_demo_without_a_batch_system_says_so_without_errors(tmp_path: Path) -> None:
    """A plugin that cannot work on this host (queue_info without Slurm or PBS) is information, not an error."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HOME=str(tmp_path), PATH=str(tmp_path / "bin"))  # no sinfo, squeue, qstat here
    proc = subprocess.Popen(
        [sys.executable, "-m", "radical_edge_cli", "--log-level", "INFO", "demo", "--port", "0", "--name", "local"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline and not (lines and lines[-1].startswith("Try it")):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=20)
        out = "".join(lines) + rest
        assert proc.returncode == 0, out
        assert "plugin queue_info not available on this host: no batch system found" in out
        assert "(queue_info: not available on this host" in out  # in the summary the demo prints
        assert not [line for line in out.splitlines() if " ERROR " in line or "Traceback" in line], out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
