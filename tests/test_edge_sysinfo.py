"""The sysinfo plugin on this machine, through a real tunnel; and its parsers on real tool output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from radical_edge_plugins.sysinfo import SysInfoPlugin, _probe

from radical_edge_edge import PluginHost, discover

from .edge_helpers import call, hub_for

pytestmark = pytest.mark.anyio


def test_registered_as_an_entry_point() -> None:
    eps = discover()
    assert "sysinfo" in eps, f"sysinfo not found among {sorted(eps)}: is the project installed (pip install -e .)?"
    assert eps["sysinfo"].load() is SysInfoPlugin


async def test_routes_and_field_shapes() -> None:
    host = PluginHost("e1")
    await host.add_plugin(SysInfoPlugin())
    async with hub_for(host) as hub:
        assert (await call(hub, "GET", "/sysinfo/homedir")).json() == {"homedir": os.path.expanduser("~")}

        role = (await call(hub, "GET", "/sysinfo/host_role")).json()
        assert set(role) == {"role", "scheduler", "job_id"}
        assert role["role"] in ("login", "compute")
        assert (role["role"] == "compute") == bool(os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID"))

        assert (await call(hub, "GET", "/sysinfo/metrics/0123")).status == 404
        sid = (await call(hub, "POST", "/sysinfo/register_session")).json()["sid"]
        reply = await call(hub, "GET", f"/sysinfo/metrics/{sid}")
        assert reply.status == 200, reply
        m = reply.json()

    assert set(m) == {"system", "cpu", "memory", "disks", "network", "gpus"}
    assert m["system"]["hostname"]
    assert m["system"]["uptime"] > 0
    assert m["system"]["arch"]
    cpu = m["cpu"]
    assert cpu["cores_logical"] == os.cpu_count()
    assert cpu["cores_physical"] >= 1
    assert isinstance(cpu["model"], str)
    assert cpu["model"]
    assert len(cpu["load_avg"]) == 3
    assert 0 <= cpu["percent"] <= 100
    mem = m["memory"]
    assert 0 < mem["available"] <= mem["total"]
    assert 0 <= mem["percent"] <= 100

    assert m["disks"], "the root file system at least"
    for disk in m["disks"]:
        assert disk["type"] in ("shared", "local ssd", "local hdd", "local")
        assert disk["shared"] == (disk["type"] == "shared")
        assert {"mount", "device", "fstype", "total", "used", "free", "percent", "reachable"} <= set(disk)
    root = next(d for d in m["disks"] if d["mount"] == "/")
    assert root["reachable"]
    assert root["total"] > 0

    for nic in m["network"]:
        assert nic["interface"] != "lo"
        assert nic["is_up"]
        assert {"ip", "ipv4", "ipv6", "mac", "speed_mbps", "mtu", "rx_bytes", "tx_bytes"} <= set(nic)
    assert isinstance(m["gpus"], list)
    for gpu in m["gpus"]:
        assert gpu["vendor"] in ("NVIDIA", "AMD", "Intel")


def test_host_role_from_the_environment() -> None:
    assert _probe.host_role("e1", {"SLURM_JOB_ID": "42"}) == {"role": "compute", "scheduler": "slurm", "job_id": "42"}
    assert _probe.host_role("e1", {"PBS_JOBID": "7.pbs"})["scheduler"] == "pbs"
    assert _probe.host_role("bridge", {})["role"] == "bridge"
    assert _probe.host_role("e1", {})["role"] == "login"


def test_disk_classification_uses_sysfs(tmp_path: Path) -> None:
    # a miniature /sys: sda (spinning) with partition sda1, nvme0n1 (solid state)
    sys_root = tmp_path / "sys"
    for disk, rotational in (("sda", "1"), ("nvme0n1", "0")):
        queue = sys_root / "devices" / disk / "queue"
        queue.mkdir(parents=True)
        (queue / "rotational").write_text(rotational + "\n")
        (sys_root / "block").mkdir(exist_ok=True)
        (sys_root / "block" / disk).symlink_to(sys_root / "devices" / disk)
        (sys_root / "class" / "block").mkdir(parents=True, exist_ok=True)
        (sys_root / "class" / "block" / disk).symlink_to(sys_root / "devices" / disk)
    part = sys_root / "devices" / "sda" / "sda1"
    part.mkdir()
    (part / "partition").write_text("1\n")
    (sys_root / "class" / "block" / "sda1").symlink_to(part)

    assert _probe.classify_disk("ext4", "/dev/sda1", str(sys_root)) == "local hdd"
    assert _probe.classify_disk("xfs", "/dev/sda", str(sys_root)) == "local hdd"
    assert _probe.classify_disk("ext4", "/dev/nvme0n1", str(sys_root)) == "local ssd"
    assert _probe.classify_disk("ext4", "/dev/unknown9", str(sys_root)) == "local"
    for fstype in ("lustre", "gpfs", "nfs", "nfs4", "beegfs", "dvs", "cephfs"):
        assert _probe.classify_disk(fstype, "server:/export", str(sys_root)) == "shared"
    assert _probe.classify_disk("overlay", "overlay", str(sys_root)) == "local"


def test_this_machines_root_disk_type() -> None:
    root = Path("/sys/block")
    devices = [p.name for p in root.iterdir()] if root.is_dir() else []
    for name in devices:
        rotational = (root / name / "queue" / "rotational").read_text().strip()
        expected = "local hdd" if rotational == "1" else "local ssd"
        assert _probe.classify_disk("ext4", f"/dev/{name}") == expected


def test_gpu_tool_parsers() -> None:
    nvidia = (
        "0, NVIDIA A100-SXM4-40GB, GPU-1c6ebd5d-5d4c-bd6d-b3f1-6a0b1c2d3e4f, 535.104.05, 40960, 1024, 37, 5, 41\n"
        "1, NVIDIA A100-SXM4-40GB, GPU-2c6ebd5d-5d4c-bd6d-b3f1-6a0b1c2d3e4f, 535.104.05, 40960, [N/A], 0, 0, 30\n"
    )
    gpus = _probe.parse_nvidia_smi(nvidia)
    assert [g["index"] for g in gpus] == [0, 1]
    assert gpus[0]["memory_free_mb"] == 39936
    assert gpus[0]["utilization_percent"] == 37
    assert gpus[1]["memory_used_mb"] is None
    assert gpus[1]["memory_free_mb"] is None
    rocm = (
        '{"card0": {"Card Series": "AMD Instinct MI250X", "Unique ID": "0x1234", "GPU use (%)": "12",'
        ' "VRAM Total Memory (B)": "68702699520", "VRAM Total Used Memory (B)": "10485760",'
        ' "Temperature (Sensor edge) (C)": "35.0"}, "system": {"Driver version": "6.2"}}'
    )
    (amd,) = _probe.parse_rocm_smi(rocm)
    assert amd["name"] == "AMD Instinct MI250X"
    assert amd["memory_used_mb"] == 10
    assert amd["temperature_c"] == 35
    assert _probe.parse_rocm_smi("not json") == []


def test_gpus_absent_here() -> None:
    # this machine has neither nvidia-smi nor rocm-smi nor a DRM device: the list is empty, not an error
    if Path("/sys/class/drm").exists() or any(
        Path(d, tool).exists() for d in os.environ.get("PATH", "").split(":") for tool in ("nvidia-smi", "rocm-smi")
    ):
        pytest.skip("this machine has GPU tooling")
    assert _probe.gpu_info() == []
