"""The protocol core is standard library only and works without anything installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# -I: ignore PYTHON* variables and the user site; -S: no site, so no site-packages
# (and no editable-install finder) at all: only the standard library and the repo root.
SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import radical_edge_proto as p

allowed = set(sys.stdlib_module_names) | set(sys.builtin_module_names) | {"__main__", "radical_edge_proto"}
foreign = sorted(m for m in sys.modules if m.split(".")[0] not in allowed)

connector = p.Connection(p.Side.CONNECTOR)
hub = p.Connection(p.Side.HUB)
connector.send_hello(role="edge", name="isolated", credential="c")
(hello,) = hub.receive_data(connector.data_to_send())
hub.accept(heartbeat_interval=1.0, resume_token="t")
(welcome,) = connector.receive_data(hub.data_to_send())
sid = connector.send_request("GET", "/ping", end_stream=True)
(request,) = hub.receive_data(connector.data_to_send())
hub.send_response(sid, 200)
hub.send_data(sid, b"pong", end_stream=True)
response, data = connector.receive_data(hub.data_to_send())
print(json.dumps({
    "file": p.__file__,
    "foreign": foreign,
    "hello": hello.name,
    "welcome": type(welcome).__name__,
    "states": [connector.state.value, hub.state.value],
    "request": request.path,
    "response": [response.status, data.data.decode(), data.end_stream],
}))
"""


def test_core_imports_only_the_standard_library_and_works_alone():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", SCRIPT, str(REPO_ROOT)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert Path(out["file"]).resolve().is_relative_to(REPO_ROOT / "radical_edge_proto")
    assert out["foreign"] == []
    assert out["hello"] == "isolated"
    assert out["welcome"] == "Welcome"
    assert out["states"] == ["open", "open"]
    assert out["request"] == "/ping"
    assert out["response"] == [200, "pong", True]


def test_subprocess_really_has_no_third_party_packages():
    # guard for the test above: under -I -S a package installed in the venv must not be importable
    probe = "import sys; sys.path.insert(0, sys.argv[1]); import pytest"
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(REPO_ROOT)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr
