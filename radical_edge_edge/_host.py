"""The plugin host: ASGI applications mounted at ``/{plugin}``, served from tunnel streams.

The same host serves an edge's plugins over its tunnel to the bridge and the
bridge's own in-process plugins (edge ``bridge``) over an in-memory tunnel.
Requests arrive as ``/{plugin}/{rest}?{query}`` (the edge name already
stripped by the bridge, which says where it was in ``x-radical-root-path``).

The ``x-radical-*`` headers are the bridge's word (who is calling, where the
edge is mounted).  The bridge appends its own after whatever the client
sent, so the host keeps only the last occurrence of each: a plugin or
framework reading the first copy never sees one a client forged.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import anyio
import anyio.abc

from radical_edge_proto import ErrorCode, profile
from radical_edge_tunnel import StreamResetError, TunnelStream

from ._asgi import ASGIApp, LifespanError, build_scope, run_lifespan, send_error, send_json_bytes, serve_stream
from ._body import DEFAULT_MAX_BODY_BYTES, route_streams_body
from ._discovery import ENTRY_POINT_GROUP, PluginUnavailable, discover, instantiate, select
from ._notify import DEFAULT_QUEUE_SIZE, NotificationQueue
from ._plugin import Plugin, check_plugin_name

if TYPE_CHECKING:
    from radical_edge_tunnel import BridgeSettings

log = logging.getLogger("radical_edge.edge")

#: body bytes of a request the application did not read that are discarded before the stream is cut
DISCARD_LIMIT = 1024 * 1024
#: how the manifest's ``error`` of a plugin that cannot work on this host begins
UNAVAILABLE_PREFIX = "not available on this host: "

ManifestListener = Callable[[dict[str, Any]], None]


@dataclass(eq=False)
class _Mount:
    name: str
    app: ASGIApp | None
    plugin: Plugin | None
    type: str
    version: str
    ui_config: dict[str, Any]
    error: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    scope: anyio.CancelScope | None = None
    stopped: anyio.Event | None = None

    def manifest_entry(self) -> dict[str, Any]:
        return profile.manifest_entry(self.type, self.version, ui_config=self.ui_config, error=self.error)


class PluginHost:
    """Plugins of one edge, served from tunnel streams by :meth:`handle`.

    Plugins may be added before :meth:`run` or while it runs; every change of
    the manifest is reported to ``on_manifest_change`` (with the whole new
    manifest).  ``events`` carries the plugins' notifications.

    ``max_body_bytes`` caps request bodies (0: no cap); routes marked with
    :func:`~radical_edge_edge.streaming_body` are exempt.
    """

    def __init__(
        self,
        edge_name: str,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        on_manifest_change: ManifestListener | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must be >= 0 (0: no limit)")
        self.edge_name = edge_name
        self.max_body_bytes = max_body_bytes
        self.events = NotificationQueue(queue_size)
        self.on_manifest_change = on_manifest_change
        #: how this edge reaches its bridge (the :class:`EdgeService` sets it); plugins read it as
        #: :attr:`Plugin.bridge_settings`
        self.bridge_settings: BridgeSettings | None = None
        self._mounts: dict[str, _Mount] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._pending: list[Plugin] = []

    # ------------------------------------------------------------ what is mounted

    @property
    def plugins(self) -> dict[str, Plugin]:
        """The loaded :class:`Plugin` objects by mount name."""
        return {n: m.plugin for n, m in self._mounts.items() if m.plugin is not None and m.error is None}

    def manifest(self) -> dict[str, Any]:
        """``{name: {"type", "version", "enabled", "ui_config", "error"}}`` for every mount, failed ones too."""
        return {name: mount.manifest_entry() for name, mount in sorted(self._mounts.items())}

    def _changed(self) -> None:
        if self.on_manifest_change is not None:
            try:
                self.on_manifest_change(self.manifest())
            except Exception:
                log.exception("manifest listener failed")

    # ------------------------------------------------------------ adding and removing

    async def add_plugin(self, plugin: Plugin) -> None:
        """Mount ``plugin`` at ``/{plugin.name}`` (replacing nothing: the name must be free).

        A plugin that names an :meth:`~Plugin.unavailable_reason` is listed as not enabled instead.
        """
        reason = plugin.unavailable_reason()
        if reason:
            self.add_unavailable(plugin.name, reason, plugin_type=plugin.type_name)
            return
        plugin.attach(self.edge_name, self.events.put)
        plugin._bridge_settings = lambda: self.bridge_settings
        try:
            ui = plugin.ui_config()
        except Exception as exc:
            log.exception("plugin %s: ui_config() failed", plugin.name)
            ui = {"error": f"{type(exc).__name__}: {exc}"}
        mount = _Mount(plugin.name, plugin.app, plugin, plugin.type_name, plugin.version, ui)
        await self._add(mount)

    async def add_app(
        self,
        name: str,
        app: ASGIApp,
        *,
        plugin_type: str | None = None,
        version: str = "",
        ui_config: dict[str, Any] | None = None,
    ) -> None:
        """Mount any ASGI application at ``/{name}`` (its lifespan, if it has one, is run)."""
        await self._add(_Mount(name, app, None, plugin_type or name, version, dict(ui_config or {})))

    def add_failed(self, name: str, error: str, *, plugin_type: str | None = None) -> None:
        """Report a plugin that failed to load: in the manifest with ``enabled: false`` and ``error``; logged
        as an error (something is broken)."""
        self._add_disabled(name, error, plugin_type)
        log.error("plugin %s not loaded: %s", name, error)

    def add_unavailable(self, name: str, reason: str, *, plugin_type: str | None = None) -> None:
        """Report a plugin that cannot work on this host (no scheduler, not inside an allocation, ...): in the
        manifest like a failed one, with ``error`` ``"not available on this host: {reason}"``; logged as
        information only (nothing is broken: ``--plugins all`` tries every plugin everywhere)."""
        self._add_disabled(name, f"{UNAVAILABLE_PREFIX}{reason}", plugin_type)
        log.info("plugin %s not available on this host: %s", name, reason)

    def _add_disabled(self, name: str, error: str, plugin_type: str | None) -> None:
        check_plugin_name(name)
        if name in self._mounts:
            raise ValueError(f"a plugin named {name!r} is already mounted")
        self._mounts[name] = _Mount(name, None, None, plugin_type or name, "", {}, error=error)
        self._changed()

    async def _add(self, mount: _Mount) -> None:
        check_plugin_name(mount.name)
        if mount.name in self._mounts:
            raise ValueError(f"a plugin named {mount.name!r} is already mounted")
        if self._tg is not None:
            await self._tg.start(self._serve_mount, mount)
        if mount.error:
            log.error("plugin %s not loaded: %s", mount.name, mount.error)
        else:
            log.info("plugin %s %s mounted at /%s", mount.type, mount.version, mount.name)
        self._mounts[mount.name] = mount
        self._changed()

    async def remove_plugin(self, name: str) -> None:
        """Unmount ``name``: its lifespan shuts down (sessions closed); requests in flight finish."""
        mount = self._mounts.pop(name, None)
        if mount is None:
            raise KeyError(f"no plugin named {name!r}")
        if mount.scope is not None and mount.stopped is not None:
            mount.scope.cancel()
            await mount.stopped.wait()
        if mount.plugin is not None:
            mount.plugin.detach()
        log.info("plugin %s removed", name)
        self._changed()

    def load_entry_points(self, spec: str | None = "all", group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Instantiate the plugins ``spec`` selects (see :func:`select`); returns the selected names.

        A plugin whose import or construction fails is reported (manifest and
        log), not fatal.  An unknown or ambiguous name in ``spec`` raises
        :class:`PluginSelectionError` before anything is loaded.  The plugins
        are queued for mounting: call :meth:`mount_loaded` (or :meth:`run` does).
        """
        available = discover(group)
        names = select(spec, available)
        for name in names:
            try:
                plugin = instantiate(name, available[name])
            except PluginUnavailable as exc:
                self.add_unavailable(name, str(exc))
                continue
            except Exception as exc:
                # one line for the operator; the traceback only when asked for (--log-level DEBUG)
                log.debug("plugin %s failed to load", name, exc_info=True)
                self.add_failed(name, f"{type(exc).__name__}: {exc}")
                continue
            self._pending.append(plugin)
        return names

    async def mount_loaded(self) -> None:
        """Mount the plugins :meth:`load_entry_points` made."""
        while self._pending:
            await self.add_plugin(self._pending.pop(0))

    # ------------------------------------------------------------ running

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the mounted applications (their lifespans) and keep them until cancelled."""
        async with anyio.create_task_group() as tg:
            await tg.start(self.events.run)
            self._tg = tg
            try:
                for mount in list(self._mounts.values()):
                    if mount.app is not None and mount.error is None and mount.scope is None:
                        await tg.start(self._serve_mount, mount)
                        if mount.error:
                            log.error("plugin %s not loaded: %s", mount.name, mount.error)
                            self._changed()
                await self.mount_loaded()
                task_status.started()
                await anyio.sleep_forever()
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    async def _serve_mount(self, mount: _Mount, *, task_status: anyio.abc.TaskStatus[Any]) -> None:
        assert mount.app is not None
        mount.stopped = stopped = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                mount.scope = scope
                try:
                    await run_lifespan(mount.app, mount.state, task_status=task_status)
                except LifespanError as exc:
                    mount.error = f"startup failed: {exc}"
                    task_status.started()
        finally:
            mount.scope = None  # a later run() starts it again
            stopped.set()

    # ------------------------------------------------------------ serving

    async def handle(self, stream: TunnelStream) -> None:
        """Serve one request stream (use as the :class:`Tunnel` handler)."""
        request = stream.request
        assert request is not None, "handle() serves streams the peer opened"
        path, _, query = request.path.partition("?")
        first, slash, rest = path[1:].partition("/")
        name = unquote(first)
        headers = bridge_headers_last(request.headers)
        root = _root_path(headers)
        try:
            if not name:
                body = json.dumps({"edge": self.edge_name, "plugins": self.manifest()}).encode()
                await send_json_bytes(stream, 200, body)
            elif name == "openapi.json":
                if request.method not in ("GET", "HEAD"):
                    await send_error(stream, 405, "method not allowed", [(b"allow", b"GET, HEAD")])
                else:
                    doc = await anyio.to_thread.run_sync(self.merged_openapi, root)
                    await send_json_bytes(stream, 200, json.dumps(doc).encode())
            else:
                mount = self._mounts.get(name)
                if mount is None:
                    await send_error(stream, 404, f"no plugin {name!r} on edge {self.edge_name!r}")
                elif mount.error is not None or mount.app is None:
                    await send_error(stream, 503, f"plugin {name!r} is not loaded: {mount.error}")
                else:
                    scope = build_scope(
                        method=request.method,
                        root_path=f"{root}/{first}",
                        rest=slash + rest,
                        query_string=query.encode("latin-1"),
                        headers=headers,
                        state=mount.state,
                    )
                    limit: int | None = None
                    if self.max_body_bytes and not request.end_stream and not route_streams_body(mount.app, scope):
                        limit = self.max_body_bytes
                    await serve_stream(mount.app, stream, scope, max_body=limit)
            await discard_body(stream)
        except StreamResetError:
            pass

    def merged_openapi(self, root_path: str = "") -> dict[str, Any]:
        """One OpenAPI document for the edge: every loaded FastAPI plugin's paths under ``/{plugin}``.

        Schema names two plugins define differently are prefixed with the
        plugin name (references rewritten); operation ids are prefixed too.
        """
        doc: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {"title": f"radical-edge {self.edge_name}", "version": "1"},
            "paths": {},
            "components": {"schemas": {}},
            "tags": [],
        }
        if root_path:
            doc["servers"] = [{"url": root_path}]
        for name, mount in sorted(self._mounts.items()):
            openapi = getattr(mount.app, "openapi", None)
            if mount.error is not None or not callable(openapi):
                continue
            try:
                sub = copy.deepcopy(openapi())
            except Exception:
                log.exception("plugin %s: building its OpenAPI document failed", name)
                continue
            _merge_openapi(doc, sub, name, mount)
        if not doc["components"]["schemas"]:
            del doc["components"]["schemas"]
        return doc


def bridge_headers_last(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` with every ``x-radical-*`` header that occurs more than once reduced to its last
    occurrence (the bridge's, which it appends after the client's); the others untouched, in order."""
    items = list(headers)
    last: dict[bytes, int] = {}
    count = 0
    for index, (key, _) in enumerate(items):
        if key.startswith(profile.HEADER_PREFIX):
            last[key] = index
            count += 1
    if count == len(last):
        return items  # no duplicates (the usual case)
    return [(k, v) for i, (k, v) in enumerate(items) if not k.startswith(profile.HEADER_PREFIX) or last[k] == i]


def _root_path(headers: list[tuple[bytes, bytes]]) -> str:
    """Where the edge is reachable through the bridge: the last ``x-radical-root-path`` if it is a path."""
    value = profile.bridge_header(headers, profile.ROOT_PATH_HEADER)
    if value is not None:
        text = value.decode("latin-1").rstrip("/")
        if text.startswith("/") and "?" not in text and "#" not in text:
            return text
    return ""


async def discard_body(stream: TunnelStream, limit: int = DISCARD_LIMIT) -> None:
    """Read and drop what is left of the request body; cut the stream if it is long or slow.

    An answered request whose body was not read would otherwise keep its
    stream (and its credit) forever.
    """
    seen = 0
    try:
        while stream.body_ready:  # what is here already needs no timer (the usual case: nothing, or the end)
            chunk = await stream.receive()
            if not chunk:
                return
            seen += len(chunk)
            if seen > limit:
                await stream.reset(ErrorCode.CANCEL)
                return
        with anyio.move_on_after(5):
            while chunk := await stream.receive():
                seen += len(chunk)
                if seen > limit:
                    break
            else:
                return
        await stream.reset(ErrorCode.CANCEL)
    except StreamResetError:
        pass


def _merge_openapi(doc: dict[str, Any], sub: dict[str, Any], name: str, mount: _Mount) -> None:
    schemas: dict[str, Any] = doc["components"]["schemas"]
    renames: dict[str, str] = {}
    for key, schema in (sub.get("components", {}).get("schemas", {}) or {}).items():
        if key in schemas and schemas[key] != schema:
            renames[key] = f"{name}__{key}"
    if renames:
        sub = _rewrite_refs(sub, {f"#/components/schemas/{k}": f"#/components/schemas/{v}" for k, v in renames.items()})
    for key, schema in (sub.get("components", {}).get("schemas", {}) or {}).items():
        schemas[renames.get(key, key)] = schema
    for kind, entries in (sub.get("components", {}) or {}).items():
        if kind != "schemas" and isinstance(entries, dict):
            doc["components"].setdefault(kind, {}).update(entries)
    for path, item in (sub.get("paths", {}) or {}).items():
        for op in item.values():
            if isinstance(op, dict) and "responses" in op:
                op["tags"] = [name]
                if "operationId" in op:
                    op["operationId"] = f"{name}__{op['operationId']}"
        doc["paths"][f"/{name}{path}"] = item
    info = sub.get("info", {})
    doc["tags"].append({"name": name, "description": info.get("description") or f"{mount.type} {mount.version}"})


def _rewrite_refs(node: Any, refs: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            k: (refs.get(v, v) if k == "$ref" and isinstance(v, str) else _rewrite_refs(v, refs))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(v, refs) for v in node]
    return node
