"""What the sysinfo plugin measures.  Everything here blocks (files, psutil, subprocesses):
call it from a worker thread, never from the event loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil

#: file systems shared between nodes (the parallel and network ones HPC centres run)
SHARED_FS = frozenset(
    {
        "lustre",
        "gpfs",
        "nfs",
        "nfs4",
        "beegfs",
        "dvs",
        "cephfs",
        "ceph",
        "fuse.ceph",
        "fuse.cephfs",
        "glusterfs",
        "fuse.glusterfs",
        "panfs",
        "pvfs2",
        "orangefs",
        "wekafs",
        "fuse.quobyte",
        "quobyte",
        "cifs",
        "smb3",
        "smbfs",
        "afs",
        "fuse.sshfs",
        "xtreemfs",
    }
)
#: local file systems that hold no user data (or are memory): not reported
_SKIP_FS = frozenset({"squashfs", "iso9660", "udf", "tmpfs", "devtmpfs", "ramfs", "efivarfs"})
#: how long one mount's usage may take before it is reported unreachable (a hung NFS server)
STAT_TIMEOUT = 2.0
#: how long a GPU tool may run
TOOL_TIMEOUT = 10.0

_SCHEDULER_JOB_VARS = (("slurm", "SLURM_JOB_ID"), ("pbs", "PBS_JOBID"), ("lsf", "LSB_JOBID"), ("flux", "FLUX_JOB_ID"))
_SCHEDULER_COMMANDS = (("slurm", "sbatch"), ("pbs", "qsub"), ("lsf", "bsub"), ("flux", "flux"))


# ---------------------------------------------------------------- host role


def host_role(edge_name: str, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``{role: bridge|login|compute, scheduler, job_id}``: compute inside a batch job."""
    env = os.environ if environ is None else environ
    for name, var in _SCHEDULER_JOB_VARS:
        if env.get(var):
            return {"role": "compute", "scheduler": name, "job_id": env[var]}
    scheduler = next((name for name, cmd in _SCHEDULER_COMMANDS if shutil.which(cmd)), None)
    role = "bridge" if edge_name == "bridge" else "login"
    return {"role": role, "scheduler": scheduler, "job_id": None}


# ---------------------------------------------------------------- CPU, memory, system


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model"):
                return value.strip()
    return platform.processor() or platform.machine()


def system_info() -> dict[str, Any]:
    uname = platform.uname()
    boot = psutil.boot_time()
    return {
        "hostname": socket.gethostname(),
        "fqdn": socket.getfqdn(),
        "os": _os_name(),
        "kernel": f"{uname.system} {uname.release}",
        "arch": uname.machine,
        "boot_time": boot,
        "uptime": max(0.0, time.time() - boot),
        "python": platform.python_version(),
    }


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip().strip('"')
    return platform.system()


def cpu_info(model: str) -> dict[str, Any]:
    freq = None
    with contextlib.suppress(Exception):
        current = psutil.cpu_freq()
        freq = current.current if current else None
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
    return {
        "model": model,
        "vendor": _cpu_vendor(),
        "cores_physical": psutil.cpu_count(logical=False) or 0,
        "cores_logical": psutil.cpu_count(logical=True) or 0,
        "percent": psutil.cpu_percent(interval=None),
        "per_cpu_percent": psutil.cpu_percent(interval=None, percpu=True),
        "load_avg": load,
        "freq_mhz": freq,
    }


def _cpu_vendor() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("vendor_id", "CPU implementer"):
                return value.strip()
    return platform.processor()


def memory_info() -> dict[str, Any]:
    mem = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return {
        "total": mem.total,
        "available": mem.available,
        "used": mem.used,
        "percent": mem.percent,
        "swap_total": swap.total,
        "swap_used": swap.used,
    }


# ---------------------------------------------------------------- disks


def block_device_rotational(device: str, sys_root: str = "/sys") -> bool | None:
    """Whether the block device behind ``device`` (``/dev/sda1``, ``/dev/mapper/x``) spins; None if unknown."""
    try:
        name = os.path.basename(os.path.realpath(device))
        node = Path(sys_root, "class", "block", name)
        if not node.exists():
            return None
        real = node.resolve()
        if (real / "partition").exists():
            real = real.parent  # a partition: the disk is its parent
        text = (Path(sys_root, "block", real.name, "queue", "rotational")).read_text().strip()
    except OSError:
        return None
    return {"0": False, "1": True}.get(text)


def classify_disk(fstype: str, device: str, sys_root: str = "/sys") -> str:
    """``shared``, ``local ssd``, ``local hdd`` or ``local`` (rotation unknown)."""
    if fstype.lower() in SHARED_FS or fstype.lower().startswith("nfs"):
        return "shared"
    if device.startswith("/dev/"):
        rotational = block_device_rotational(device, sys_root)
        if rotational is not None:
            return "local hdd" if rotational else "local ssd"
    return "local"


class DiskProbe:
    """Disk usage with a per-mount timeout: a hung network mount is reported, not waited for.

    A ``statvfs`` on a dead NFS server can block forever and no thread can be
    killed, so each mount is measured in its own daemon thread; while one is
    still stuck, the mount is reported ``reachable: false`` without a new try.
    """

    def __init__(self, timeout: float = STAT_TIMEOUT) -> None:
        self.timeout = timeout
        self._stuck: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def _usage(self, mount: str) -> Any:
        with self._lock:
            stuck = self._stuck.get(mount)
            if stuck is not None:
                if stuck.is_alive():
                    return None
                del self._stuck[mount]
        result: list[Any] = []

        def measure() -> None:
            try:
                result.append(psutil.disk_usage(mount))
            except Exception as exc:
                result.append(exc)

        thread = threading.Thread(target=measure, name=f"statvfs {mount}", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            with self._lock:
                self._stuck[mount] = thread
            return None
        return result[0]

    def disks(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for part in psutil.disk_partitions(all=True):
            fstype = part.fstype.lower()
            shared = fstype in SHARED_FS or fstype.startswith("nfs")
            local_block = part.device.startswith("/dev/") and not part.device.startswith("/dev/loop")
            if not (shared or local_block or part.mountpoint == "/") or fstype in _SKIP_FS:
                continue
            key = part.device if part.device not in ("", "none") else part.mountpoint
            if key in seen:
                continue  # the same file system bind-mounted again
            seen.add(key)
            entry: dict[str, Any] = {
                "mount": part.mountpoint,
                "device": part.device,
                "fstype": part.fstype,
                "type": classify_disk(part.fstype, part.device),
                "shared": shared,
                "reachable": True,
            }
            usage = self._usage(part.mountpoint)
            if isinstance(usage, PermissionError):
                continue
            if usage is None or isinstance(usage, Exception):
                entry.update(reachable=False, total=None, used=None, free=None, percent=None)
            else:
                entry.update(total=usage.total, used=usage.used, free=usage.free, percent=usage.percent)
            out.append(entry)
        return out


# ---------------------------------------------------------------- network


def network_info() -> list[dict[str, Any]]:
    addrs = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    counters = psutil.net_io_counters(pernic=True)
    out = []
    for name, entries in sorted(addrs.items()):
        st = stats.get(name)
        if name == "lo" or (st is not None and "loopback" in getattr(st, "flags", "")):
            continue
        if st is not None and not st.isup:
            continue
        ipv4 = [a.address for a in entries if a.family == socket.AF_INET]
        ipv6 = [a.address for a in entries if a.family == socket.AF_INET6]
        mac = next((a.address for a in entries if a.family == psutil.AF_LINK), None)
        io = counters.get(name)
        out.append(
            {
                "interface": name,
                "ip": ipv4[0] if ipv4 else None,
                "ipv4": ipv4,
                "ipv6": ipv6,
                "mac": mac,
                "is_up": bool(st.isup) if st is not None else None,
                "speed_mbps": st.speed if st is not None else None,
                "mtu": st.mtu if st is not None else None,
                "rx_bytes": io.bytes_recv if io else 0,
                "tx_bytes": io.bytes_sent if io else 0,
            }
        )
    return out


# ---------------------------------------------------------------- GPUs

_NVIDIA_FIELDS = (
    "index,name,uuid,driver_version,memory.total,memory.used,utilization.gpu,utilization.memory,temperature.gpu"
)


def _run(cmd: list[str]) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """Parse ``nvidia-smi --query-gpu=<_NVIDIA_FIELDS> --format=csv,noheader,nounits``."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 9 or not parts[0].isdigit():
            continue
        total, used = _number(parts[4]), _number(parts[5])
        gpus.append(
            {
                "vendor": "NVIDIA",
                "index": int(parts[0]),
                "name": parts[1],
                "uuid": parts[2],
                "driver_version": parts[3],
                "memory_total_mb": total,
                "memory_used_mb": used,
                "memory_free_mb": total - used if total is not None and used is not None else None,
                "utilization_percent": _number(parts[6]),
                "memory_utilization_percent": _number(parts[7]),
                "temperature_c": _number(parts[8]),
                "source": "nvidia-smi",
            }
        )
    return gpus


def parse_rocm_smi(text: str) -> list[dict[str, Any]]:
    """Parse ``rocm-smi --showproductname --showuniqueid --showmeminfo vram --showuse --showtemp --json``."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    gpus: list[dict[str, Any]] = []
    for key, info in sorted(data.items()):
        if not key.startswith("card") or not isinstance(info, dict):
            continue
        total = _number(str(info.get("VRAM Total Memory (B)", "")))
        used = _number(str(info.get("VRAM Total Used Memory (B)", "")))
        temp = next((_number(str(v)) for k, v in info.items() if k.startswith("Temperature")), None)
        gpus.append(
            {
                "vendor": "AMD",
                "index": int(key[4:]) if key[4:].isdigit() else len(gpus),
                "name": info.get("Card Series") or info.get("Card series") or info.get("Card model") or "AMD GPU",
                "uuid": str(info.get("Unique ID", "")),
                "driver_version": str(info.get("Driver version", "")),
                "memory_total_mb": total / 2**20 if total is not None else None,
                "memory_used_mb": used / 2**20 if used is not None else None,
                "memory_free_mb": (total - used) / 2**20 if total is not None and used is not None else None,
                "utilization_percent": _number(str(info.get("GPU use (%)", ""))),
                "memory_utilization_percent": None,
                "temperature_c": temp,
                "source": "rocm-smi",
            }
        )
    return gpus


def sysfs_gpus(sys_root: str = "/sys", skip_vendors: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Intel (and AMD, when rocm-smi is absent) GPUs from ``/sys/class/drm``."""
    names = {"0x8086": "Intel", "0x1002": "AMD", "0x10de": "NVIDIA"}
    gpus = []
    drm = Path(sys_root, "class", "drm")
    for card in sorted(drm.glob("card[0-9]*")) if drm.is_dir() else []:
        if not card.name[4:].isdigit():
            continue  # connectors like card0-HDMI-A-1
        device = card / "device"
        try:
            vendor_id = (device / "vendor").read_text().strip()
        except OSError:
            continue
        vendor = names.get(vendor_id)
        if vendor is None or vendor in skip_vendors:
            continue
        total = _read_int(device / "mem_info_vram_total")
        used = _read_int(device / "mem_info_vram_used")
        gpus.append(
            {
                "vendor": vendor,
                "index": int(card.name[4:]),
                "name": _read_text(device / "product_name") or _read_text(device / "label") or f"{vendor} GPU",
                "uuid": _read_text(device / "unique_id") or "",
                "driver_version": _read_text(device / "driver" / "module" / "version") or "",
                "pci_device": _read_text(device / "device"),
                "memory_total_mb": total / 2**20 if total is not None else None,
                "memory_used_mb": used / 2**20 if used is not None else None,
                "memory_free_mb": (total - used) / 2**20 if total is not None and used is not None else None,
                "utilization_percent": _read_int(device / "gpu_busy_percent"),
                "memory_utilization_percent": None,
                "temperature_c": None,
                "source": "sysfs",
            }
        )
    return gpus


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def gpu_info() -> list[dict[str, Any]]:
    """Every GPU found: NVIDIA via nvidia-smi, AMD via rocm-smi, Intel (and the rest) via sysfs."""
    gpus: list[dict[str, Any]] = []
    found: set[str] = set()
    nvidia = os.environ.get("NVIDIA_SMI_PATH") or shutil.which("nvidia-smi")
    if nvidia:
        text = _run([nvidia, f"--query-gpu={_NVIDIA_FIELDS}", "--format=csv,noheader,nounits"])
        if text:
            gpus += parse_nvidia_smi(text)
            found.add("NVIDIA")
    rocm = os.environ.get("ROCM_SMI_PATH") or shutil.which("rocm-smi")
    if rocm:
        args = ["--showproductname", "--showuniqueid", "--showmeminfo", "vram", "--showuse", "--showtemp", "--json"]
        text = _run([rocm, *args])
        if text:
            amd = parse_rocm_smi(text)
            if amd:
                gpus += amd
                found.add("AMD")
    # NVIDIA GPUs need their driver's tool for anything useful; report sysfs ones only without it
    gpus += sysfs_gpus(skip_vendors=frozenset(found))
    return gpus
