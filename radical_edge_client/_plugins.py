"""Clients of the built-in plugins, with the method names radical.edge users know.

They need no server-side code: each is a thin layer over the plugin's routes
(see ``PARITY.md``).  :meth:`AsyncEdgeClient.get_plugin` picks the class by the
plugin's ``type`` in the edge's manifest.  Their blocking forms
(``radical_edge_client.SysInfoClient``, ...) are derived from them.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.to_thread

from ._client import AsyncPluginClient, register_plugin_client
from ._errors import BridgeProtocolError
from ._http import quote_segment


def _expect_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BridgeProtocolError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _query(user: str | None, force: bool) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if user is not None:
        params["user"] = user
    if force:
        params["force"] = True
    return params


@register_plugin_client
class AsyncSysInfoClient(AsyncPluginClient):
    """The ``sysinfo`` plugin: what the edge's host is and how busy it is."""

    plugin_type: ClassVar[str] = "sysinfo"

    async def get_metrics(self) -> dict[str, Any]:
        """``{system, cpu, memory, disks, network, gpus}``, measured now."""
        return _expect_dict(await self.get_json(self.session_path("metrics")), "sysinfo metrics")

    async def homedir(self) -> str:
        """The home directory of the account the edge runs as."""
        answer = _expect_dict(await self.get_json("homedir"), "sysinfo homedir")
        return str(answer["homedir"])

    async def host_role(self) -> dict[str, Any]:
        """``{role: bridge|login|compute, scheduler, job_id}``."""
        return _expect_dict(await self.get_json("host_role"), "sysinfo host_role")


@register_plugin_client
class AsyncQueueInfoClient(AsyncPluginClient):
    """The ``queue_info`` plugin: queues, jobs and allocations of the batch system.

    ``user`` defaults to the edge's user (``"*"``: everyone); ``force`` skips the plugin's cache.
    """

    plugin_type: ClassVar[str] = "queue_info"

    async def backend(self) -> str:
        """``slurm``, ``pbs`` or ``none``."""
        answer = await self.get_json("backend")
        return str(answer.get("backend") if isinstance(answer, dict) else answer)

    async def job_allocation(self) -> dict[str, Any] | None:
        """The allocation the edge runs inside, or ``None``."""
        answer = await self.get_json("job_allocation")
        if isinstance(answer, dict) and set(answer) == {"allocation"}:
            answer = answer["allocation"]
        return answer if isinstance(answer, dict) else None

    async def get_info(self, *, user: str | None = None, force: bool = False) -> dict[str, Any]:
        """``{queues: {NAME: {state, time_limit, nodes_total, ...}}}``."""
        return _expect_dict(await self.get_json(self.session_path("get_info"), params=_query(user, force)), "get_info")

    async def list_jobs(self, queue: str, *, user: str | None = None, force: bool = False) -> dict[str, Any]:
        """``{jobs: [...]}`` of one queue."""
        path = f"{self.session_path('list_jobs')}/{quote_segment(queue)}"
        return _expect_dict(await self.get_json(path, params=_query(user, force)), "list_jobs")

    async def list_all_jobs(self, *, user: str | None = None, force: bool = False) -> dict[str, Any]:
        """``{jobs: [...]}`` of every queue."""
        path = self.session_path("list_all_jobs")
        return _expect_dict(await self.get_json(path, params=_query(user, force)), "list_all_jobs")

    async def list_allocations(self, *, user: str | None = None, force: bool = False) -> dict[str, Any]:
        """``{allocations: [{account, user, fairshare, qos, ...}]}``."""
        path = self.session_path("list_allocations")
        return _expect_dict(await self.get_json(path, params=_query(user, force)), "list_allocations")

    async def cancel_job(self, job_id: str) -> Any:
        """Cancel a batch job."""
        return await self.post_json(f"{self.session_path('cancel')}/{quote_segment(str(job_id))}")


@register_plugin_client
class AsyncPSIJClient(AsyncPluginClient):
    """The ``psij`` plugin: batch jobs through PSI/J (local, slurm, pbs, lsf, flux executors)."""

    plugin_type: ClassVar[str] = "psij"

    async def submit_job(self, job_spec: dict[str, Any], executor: str = "local") -> dict[str, Any]:
        """Submit ``job_spec`` (``executable, arguments, directory, environment, attributes, ...``).

        Returns ``{job_id, native_id}``.
        """
        answer = await self.post_json(self.session_path("submit"), json={"job_spec": job_spec, "executor": executor})
        return _expect_dict(answer, "psij submit")

    async def get_job_status(self, job_id: str, *, stdout_offset: int = 0, stderr_offset: int = 0) -> dict[str, Any]:
        """State, exit code and the new stdout/stderr text from those offsets (with the new offsets)."""
        path = f"{self.session_path('status')}/{quote_segment(str(job_id))}"
        params = {"stdout_offset": stdout_offset, "stderr_offset": stderr_offset}
        return _expect_dict(await self.get_json(path, params=params), "psij status")

    async def list_jobs(self) -> Any:
        """The jobs of this session."""
        return await self.get_json(self.session_path("list_jobs"))

    async def cancel_job(self, job_id: str) -> Any:
        """Cancel a job."""
        return await self.post_json(f"{self.session_path('cancel')}/{quote_segment(str(job_id))}")


@register_plugin_client
class AsyncStagingClient(AsyncPluginClient):
    """The ``staging`` plugin: small files whole (``put``/``get``, base64 on the wire) and listings.

    Paths are absolute or start with ``~`` (the edge user's home).
    """

    plugin_type: ClassVar[str] = "staging"

    async def put(self, filename: str, content: bytes | str, *, overwrite: bool = False) -> dict[str, Any]:
        """Write ``content`` to ``filename`` on the edge; returns ``{path, size}``."""
        raw = content.encode() if isinstance(content, str) else bytes(content)
        body = {"filename": filename, "content": base64.b64encode(raw).decode("ascii"), "overwrite": overwrite}
        return _expect_dict(await self.post_json(self.session_path("put"), json=body), "staging put")

    async def get(self, filename: str) -> bytes:
        """The content of ``filename`` on the edge, as bytes."""
        got = await self.post_json(self.session_path("get"), json={"filename": filename})
        answer = _expect_dict(got, "staging get")
        try:
            return base64.b64decode(answer["content"], validate=True)
        except (KeyError, ValueError, TypeError):
            raise BridgeProtocolError("staging get: no valid base64 'content' in the answer") from None

    async def list(self, path: str = "~") -> dict[str, Any]:
        """``{path, entries: [{name, type, size}]}`` of a directory on the edge."""
        return _expect_dict(await self.post_json(self.session_path("list"), json={"path": path}), "staging list")

    async def put_file(
        self, local: str | os.PathLike[str], filename: str, *, overwrite: bool = False
    ) -> dict[str, Any]:
        """Copy a small local file to ``filename`` on the edge."""
        content = await anyio.to_thread.run_sync(Path(local).read_bytes)
        return await self.put(filename, content, overwrite=overwrite)


__all__ = ["AsyncPSIJClient", "AsyncQueueInfoClient", "AsyncStagingClient", "AsyncSysInfoClient"]
