"""One policy for everything that dials a bridge (edge service, SDK) and for the bridge's own token file.

A protocol-version mismatch is final for the SDK as it is for the edge, and a
token file that group or others can read is refused by the edge command, the
SDK and the bridge alike, each time with the ``chmod 600 PATH`` to run.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

from radical_edge_bridge._cli import build_parser as bridge_parser
from radical_edge_bridge._cli import config_from_args
from radical_edge_client import AsyncBridgeClient, RadicalEdgeError
from radical_edge_client.sync import BridgeClient as SyncBridgeClient
from radical_edge_proto import ErrorCode, Hello
from radical_edge_tunnel import Tunnel

from .test_edge_service import Decision, websocket_hub

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def hub_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(ctx)
    ca_file = tmp_path_factory.mktemp("hub") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca_file, ctx


@pytest.fixture
def no_bridge_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No RADICAL_BRIDGE_* variables and a HOME of its own (so no stray ~/.radical/edge/bridge.token)."""
    for name in list(os.environ):
        if name.startswith("RADICAL_BRIDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def _token_file(where: Path, mode: int) -> Path:
    path = where / ".radical" / "edge" / "bridge.token"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("tok\n")
    path.chmod(mode)
    return path


# ---------------------------------------------------------------- a protocol-version mismatch is final


async def test_the_sdk_stops_on_a_protocol_version_mismatch(hub_tls: tuple[Path, ssl.SSLContext]) -> None:
    ca_file, ctx = hub_tls
    hellos: list[Hello] = []
    tunnels: list[Tunnel] = []

    def decide(hello: Hello) -> Decision:
        hellos.append(hello)
        if len(hellos) == 1:
            return True, ErrorCode.NO_ERROR, "r1", 30.0
        # the bridge was replaced by one that speaks another protocol version
        return False, ErrorCode.UNSUPPORTED_VERSION, "this bridge speaks protocol version 99", 0.0

    async with websocket_hub(ctx, decide, [], tunnels) as port:
        client = AsyncBridgeClient(f"https://localhost:{port}", token="tok", cert=ca_file, connect_timeout=2)
        async with client:
            await tunnels[0].aclose()  # the old bridge goes away
            with anyio.fail_after(5):  # before: redialled for ever, its state going back and forth
                while client.state != "failed":
                    await anyio.sleep(0.01)
            await anyio.sleep(0.3)
            assert len(hellos) == 2  # not redialled after the refusal
            with pytest.raises(RadicalEdgeError) as info:  # every call, at once
                await client.list_edges()
            assert info.value.code == ErrorCode.UNSUPPORTED_VERSION
            assert "UNSUPPORTED_VERSION" in str(info.value)
            assert "protocol version 99" in str(info.value)


async def test_the_sdk_fails_fast_on_a_first_version_mismatch(hub_tls: tuple[Path, ssl.SSLContext]) -> None:
    ca_file, ctx = hub_tls
    hellos: list[Hello] = []

    def decide(hello: Hello) -> Decision:
        hellos.append(hello)
        return False, ErrorCode.UNSUPPORTED_VERSION, "this bridge speaks protocol version 99", 0.0

    async with websocket_hub(ctx, decide, [], []) as port:
        with anyio.fail_after(5), pytest.raises(RadicalEdgeError, match="UNSUPPORTED_VERSION"):
            async with AsyncBridgeClient(f"https://localhost:{port}", token="tok", cert=ca_file):
                pass
    assert len(hellos) == 1


# ---------------------------------------------------------------- a token file others can read is refused


def test_the_edge_cli_refuses_a_token_file_others_can_read(no_bridge_env: Path) -> None:
    path = _token_file(no_bridge_env, 0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADICAL_BRIDGE_")}
    cmd = [sys.executable, "-m", "radical_edge_edge", "--url", "https://127.0.0.1:9", "--plugins", ""]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("radical-edge-service started with a token file others can read")
    assert done.returncode == 2, done.stderr
    assert f"chmod 600 {path}" in done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("radical-edge-service: "), done.stderr


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_the_sdk_refuses_a_token_file_others_can_read(no_bridge_env: Path, mode: int) -> None:
    path = _token_file(no_bridge_env, mode)
    with pytest.raises(PermissionError) as given:
        AsyncBridgeClient("https://127.0.0.1:9", token_file=path)
    assert f"chmod 600 {path}" in str(given.value)
    with pytest.raises(PermissionError) as default:  # the default ~/.radical/edge/bridge.token
        AsyncBridgeClient("https://127.0.0.1:9")
    assert f"chmod 600 {path}" in str(default.value)
    with pytest.raises(PermissionError) as blocking:  # the blocking facade, before it dials
        SyncBridgeClient("https://127.0.0.1:9", token_file=path)
    assert f"chmod 600 {path}" in str(blocking.value)
    path.chmod(0o600)
    AsyncBridgeClient("https://127.0.0.1:9")  # private: taken


def test_the_bridge_refuses_a_token_file_others_can_read(no_bridge_env: Path) -> None:
    path = _token_file(no_bridge_env, 0o644)
    args = bridge_parser().parse_args(["--insecure-no-tls", "--token-file", str(path)])
    with pytest.raises(SystemExit) as info:
        config_from_args(args)
    message: Any = info.value.code
    assert isinstance(message, str)
    assert message.startswith("radical-edge-bridge: ")
    assert f"chmod 600 {path}" in message
    assert path.read_text() == "tok\n"  # not replaced by a new token either
