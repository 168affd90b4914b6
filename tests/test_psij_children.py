"""Child edges (the psij plugin's ``submit_tunneled``): an edge service started in a job dials the bridge back.

Each test runs a real bridge and the edge ``e1`` with the psij plugin over TLS (``client_helpers``);
the child ``e1.N`` is a real ``python -m radical_edge_edge`` started by the job (the local executor, the
real Slurm, or through an SSH local forward to a throw-away ``sshd`` on loopback).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from radical_edge_plugins.psij import PsijPlugin
from radical_edge_plugins.psij._children import ChildError, check_body

from radical_edge_client import AsyncBridgeClient, AsyncPSIJClient, ChildEdgeFailed

from .client_helpers import TOKEN, Live, TLSFiles, live_system, tls
from .edge_helpers import example_plugin
from .slurm_helpers import Slurm

pytestmark = pytest.mark.anyio
__all__ = ["example_plugin", "tls"]  # fixtures, imported for pytest


@contextlib.asynccontextmanager
async def psij_system(tls: TLSFiles, tmp_path: Path) -> AsyncIterator[tuple[Live, PsijPlugin]]:
    plugin = PsijPlugin(base_dir=tmp_path / "psij", child_tick=0.1)
    async with live_system(tls, extra_plugins=(plugin,)) as system:
        try:
            yield system, plugin
        finally:
            for child in plugin.children.values():  # never leave a child edge running
                record = child.job
                if not record.final and record.psij_job is not None:
                    with contextlib.suppress(Exception):
                        await anyio.to_thread.run_sync(plugin._backend.cancel, record.psij_job)


async def psij_client(bridge: AsyncBridgeClient) -> AsyncPSIJClient:
    psij = await (await bridge.get_edge_client("e1")).get_plugin("psij")
    assert isinstance(psij, AsyncPSIJClient)
    return psij


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await anyio.sleep(0.1)


async def check_child_lifecycle(bridge: AsyncBridgeClient, psij: AsyncPSIJClient, child: dict[str, Any]) -> None:
    """The child registers, answers sysinfo, is ``active``; cancelling its job disconnects it (``done``)."""
    name = child["edge"]
    status = await psij.wait_child_edge(name, timeout=90)
    assert status["edge"] == name
    assert status["job_id"] == child["job_id"]
    sysinfo = await (await bridge.get_edge_client(name)).get_plugin("sysinfo")
    home = await sysinfo.get_json("homedir")
    assert home, home

    async def active() -> bool:
        return (await psij.tunnel_status(name))["state"] == "active"

    await until(active, 10, f"{name} active")
    await psij.cancel_job(child["job_id"])

    async def gone() -> bool:
        return name not in await bridge.list_edges()

    await until(gone, 40, f"{name} disconnected after its job was cancelled")

    async def done() -> bool:
        return (await psij.tunnel_status(name))["state"] == "done"

    await until(done, 20, f"{name} done")
    final = await psij.tunnel_status(name)
    assert final["job_state"] == "CANCELLED", final


# ---------------------------------------------------------------- the body


def test_submit_tunneled_body_is_checked() -> None:
    assert check_body({}) == ({}, "sysinfo", None)
    spec, plugins, tunnel = check_body(
        {"job_spec": {"attributes": {"duration": 60}}, "plugins": "sysinfo,psij", "tunnel": {"via": "login1"}}
    )
    assert spec == {"attributes": {"duration": 60}}
    assert plugins == "sysinfo,psij"
    assert tunnel == {"via": "login1", "ssh_options": []}
    for bad in (
        {"job_spec": {"executable": "/bin/sh"}},
        {"plugins": "sysinfo; rm -rf ~"},
        {"tunnel": {"via": "-oProxyCommand=evil"}},
        {"tunnel": {"via": "login1", "ssh_options": "-p 22"}},
        {"tunnel": {"via": "login1", "port": 22}},
        {"surprise": 1},
    ):
        with pytest.raises(ChildError):
            check_body(bad)


async def test_tls_server_name_is_verified_instead_of_the_url_host(tls: TLSFiles, example_plugin: str) -> None:
    """A bridge dialled at an address its certificate does not name (a port forward) is verified for
    ``tls_server_name``: the right name connects, a wrong one is refused (verification stays on)."""
    from radical_edge_tunnel import BridgeSettings, TLSVerificationError, connect_websocket  # noqa: PLC0415

    async with live_system(tls) as system:
        for name, ok in (("localhost", True), ("not-the-bridge.example", False)):
            settings = BridgeSettings.create(system.url, token=TOKEN, cert=tls.ca, tls_server_name=name)
            url = settings.websocket_url("/connect")
            if ok:
                carrier = await connect_websocket(
                    url, token=TOKEN, ssl_context=settings.ssl_context, tls_server_name=settings.tls_server_name
                )
                await carrier.aclose()
            else:
                with pytest.raises(TLSVerificationError):
                    await connect_websocket(
                        url, token=TOKEN, ssl_context=settings.ssl_context, tls_server_name=settings.tls_server_name
                    )


# ---------------------------------------------------------------- the local executor


async def test_child_edge_through_the_local_executor(tls: TLSFiles, example_plugin: str, tmp_path: Path) -> None:
    async with psij_system(tls, tmp_path) as (system, plugin), system.client() as bridge:
        psij = await psij_client(bridge)
        events: list[dict[str, Any]] = []
        await psij.register_notification_callback(lambda _e, _p, _t, data: events.append(data), topic="tunnel_status")
        child = await psij.submit_tunneled(executor="local")
        assert child["edge"] == "e1.1"
        assert child["state"] == "pending"
        # the token never appears in the job's command line: it is in a 0600 file the child reads
        record = plugin.jobs.get(child["job_id"])
        assert record is not None
        assert not any("sdk-test-token" in a for a in record.arguments)
        token_copy = plugin.children["e1.1"].token_copy
        assert token_copy is not None
        assert stat.S_IMODE(token_copy.stat().st_mode) == 0o600
        await check_child_lifecycle(bridge, psij, child)
        assert not token_copy.exists(), "the token copy is deleted when the child's job ended"
        # the next child gets the next number
        second = await psij.submit_tunneled(executor="local", plugins="nosuchplugin")
        assert second["edge"] == "e1.2"
        with pytest.raises(ChildEdgeFailed):
            await psij.wait_child_edge("e1.2", timeout=30)

        async def heard() -> bool:
            states = [(e["edge"], e["state"]) for e in events]
            return ("e1.1", "done") in states and ("e1.2", "failed") in states

        await until(heard, 10, "tunnel_status events for both children")
        seen = [e["state"] for e in events if e["edge"] == "e1.1"]
        assert seen == ["pending", "active", "done"], seen


async def test_child_whose_job_fails_at_once_is_reported_within_seconds(
    tls: TLSFiles, example_plugin: str, tmp_path: Path
) -> None:
    async with psij_system(tls, tmp_path) as (_system, _plugin), _system.client() as bridge:
        psij = await psij_client(bridge)
        child = await psij.submit_tunneled(executor="local", plugins="nosuchplugin")
        began = time.monotonic()
        with pytest.raises(ChildEdgeFailed) as caught:
            await psij.wait_child_edge(child["edge"], timeout=30)
        assert time.monotonic() - began < 8
        status = caught.value.detail
        assert status["state"] == "failed"
        assert status["job_state"] == "FAILED"
        assert status["exit_code"] == 2
        assert "before the child edge registered" in status["reason"]
        assert "nosuchplugin" in status["stderr_tail"], status
        assert "nosuchplugin" in str(caught.value)


async def test_submit_tunneled_refusals(tls: TLSFiles, example_plugin: str, tmp_path: Path) -> None:
    async with psij_system(tls, tmp_path) as (_system, _plugin), _system.client() as bridge:
        psij = await psij_client(bridge)
        from radical_edge_client import HTTPError, NotFound  # noqa: PLC0415

        with pytest.raises(HTTPError) as bad:
            await psij.post_json(psij.session_path("submit_tunneled"), json={"job_spec": {"executable": "/bin/sh"}})
        assert bad.value.status == 422
        with pytest.raises(NotFound):
            await psij.tunnel_status("e1.99")


# ---------------------------------------------------------------- the real Slurm


async def test_child_edge_through_slurm(tls: TLSFiles, example_plugin: str, tmp_path: Path, slurm: Slurm) -> None:
    async with psij_system(tls, tmp_path) as (system, _plugin), system.client() as bridge:
        psij = await psij_client(bridge)
        spec = {"attributes": {"duration": 300, "queue_name": slurm.default_partition}, "directory": slurm.workdir}
        child = await psij.submit_tunneled(spec, executor="slurm")
        assert child["native_id"], child
        slurm.submitted.append(str(child["native_id"]))
        assert child["edge"] == "e1.1"
        await check_child_lifecycle(bridge, psij, child)


async def test_slurm_child_that_fails_at_once(tls: TLSFiles, example_plugin: str, tmp_path: Path, slurm: Slurm) -> None:
    async with psij_system(tls, tmp_path) as (system, _plugin), system.client() as bridge:
        psij = await psij_client(bridge)
        spec = {"attributes": {"duration": 120, "queue_name": slurm.default_partition}, "directory": slurm.workdir}
        child = await psij.submit_tunneled(spec, executor="slurm", plugins="nosuchplugin")
        slurm.submitted.append(str(child["native_id"]))
        began = time.monotonic()
        with pytest.raises(ChildEdgeFailed) as caught:
            await psij.wait_child_edge(child["edge"], timeout=60)
        assert time.monotonic() - began < 15
        assert caught.value.detail["state"] == "failed"
        assert "nosuchplugin" in caught.value.detail["stderr_tail"]


# ---------------------------------------------------------------- through an SSH local forward


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A throw-away OpenSSH server on 127.0.0.1 (its own host key and config; the current user, root
    included, may log in with a fresh key only); yields ``(port, client key)``.  Skips with the reason
    when OpenSSH is missing or sshd cannot start (``.ci/run`` installs it, like Slurm, best effort)."""
    daemon = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if daemon is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH is not installed (apt-get install openssh-server openssh-client)")
    work = tmp_path / "sshd"
    work.mkdir(mode=0o700)
    host_key, client_key = work / "host_key", work / "client_key"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = work / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    port = _free_port()
    config = work / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {work / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nAllowTcpForwarding yes\n"
        "StrictModes no\nUsePAM no\n"
    )
    log = work / "sshd.log"
    with log.open("wb") as log_fh:
        proc = subprocess.Popen([daemon, "-D", "-e", "-f", str(config)], stderr=log_fh)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.skip(f"sshd did not start: {log.read_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.skip(f"sshd did not listen: {log.read_text()[-500:]}")
                time.sleep(0.1)
        yield port, client_key
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_child_edge_through_an_ssh_forward(
    tls: TLSFiles, example_plugin: str, tmp_path: Path, sshd: tuple[int, Path]
) -> None:
    port, key = sshd
    options = ["-p", str(port), "-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    async with psij_system(tls, tmp_path) as (system, _plugin), system.client() as bridge:
        psij = await psij_client(bridge)
        child = await psij.submit_tunneled(executor="local", via="127.0.0.1", ssh_options=options)
        assert child["edge"] == "e1.1"
        await check_child_lifecycle(bridge, psij, child)
        out = (await psij.tunnel_status("e1.1"))["stderr_tail"]
        assert "through the forward: https://127.0.0.1:" in out
        assert f":{system.port}" not in out.split("forward:")[-1]


async def test_ssh_forward_that_cannot_open_fails_the_child(tls: TLSFiles, example_plugin: str, tmp_path: Path) -> None:
    if shutil.which("ssh") is None:
        pytest.skip("OpenSSH's client is not installed (apt-get install openssh-client)")
    closed = _free_port()  # nothing listens there
    options = ["-p", str(closed), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    async with psij_system(tls, tmp_path) as (_system, _plugin), _system.client() as bridge:
        psij = await psij_client(bridge)
        child = await psij.submit_tunneled(executor="local", via="127.0.0.1", ssh_options=options)
        with pytest.raises(ChildEdgeFailed) as caught:
            await psij.wait_child_edge(child["edge"], timeout=30)
        detail = caught.value.detail
        assert detail["exit_code"] == 3, detail
        assert "cannot open the SSH forward" in detail["stderr_tail"], detail
