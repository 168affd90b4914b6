"""sysinfo: what this host is and how busy it is (CPU, memory, disks, network, GPUs)."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import psutil
from fastapi import FastAPI

from radical_edge_edge import CurrentSession, Plugin

from . import _probe


class SysInfoPlugin(Plugin):
    """System hardware and utilisation of the host the edge runs on."""

    plugin_name = "sysinfo"
    version = "0.1.0"
    description = "System information: CPU, memory, disks (shared/local), network, GPUs."
    ui: ClassVar[dict[str, Any]] = {
        "icon": "🖥️",
        "title": "System Info",
        "refresh_button": True,
        "auto_load": "metrics/{sid}",
        "monitors": [{"id": "metrics", "title": "Metrics", "type": "metrics", "auto_load": "metrics/{sid}"}],
    }

    def __init__(self, name: str | None = None, **kwargs: Any) -> None:
        self._disks = _probe.DiskProbe()
        self._cpu_model: str | None = None
        super().__init__(name, **kwargs)

    async def startup(self) -> None:
        self._cpu_model = await self.run_sync(_probe.cpu_model)
        await self.run_sync(psutil.cpu_percent, None)  # the first reading primes the counters

    def metrics(self) -> dict[str, Any]:
        """All metrics (blocking: runs in a worker thread)."""
        model = self._cpu_model or _probe.cpu_model()
        return {
            "system": _probe.system_info(),
            "cpu": _probe.cpu_info(model),
            "memory": _probe.memory_info(),
            "disks": self._disks.disks(),
            "network": _probe.network_info(),
            "gpus": _probe.gpu_info(),
        }

    def routes(self, app: FastAPI) -> None:
        @app.get("/homedir")
        async def homedir() -> dict[str, str]:
            """The home directory of the user the edge runs as."""
            return {"homedir": os.path.expanduser("~")}

        @app.get("/host_role")
        async def host_role() -> dict[str, Any]:
            """``bridge``, ``login`` or ``compute`` (inside a batch job), with the scheduler and job id."""
            return await self.run_sync(_probe.host_role, self.edge_name)

        @app.get("/metrics/{sid}")
        async def metrics(session: CurrentSession) -> dict[str, Any]:
            """CPU, memory, disks, network interfaces and GPUs, measured now."""
            return await self.run_sync(self.metrics)


__all__ = ["SysInfoPlugin"]
