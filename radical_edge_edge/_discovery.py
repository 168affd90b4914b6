"""Finding plugins: the ``radical_edge.plugins`` entry-point group, and ``--plugins`` selection.

Built-in plugins register in that group exactly like a third-party package
does (``pyproject.toml``: ``[project.entry-points."radical_edge.plugins"]``,
``NAME = "package.module:PluginClass"``).  The entry point's name is where
the plugin is mounted.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Sequence
from importlib.metadata import EntryPoint, distributions

from ._plugin import Plugin

log = logging.getLogger("radical_edge.edge")

ENTRY_POINT_GROUP = "radical_edge.plugins"


class PluginSelectionError(ValueError):
    """A ``--plugins`` selection names a plugin that is not installed, or a prefix that is ambiguous."""


def discover(group: str = ENTRY_POINT_GROUP) -> dict[str, EntryPoint]:
    """The installed plugins by name; for a name registered twice the first wins (with a warning).

    Unlike ``importlib.metadata.entry_points()`` this looks at every
    distribution on ``sys.path``, also one shadowed by another copy of the
    same project: a stale ``*.egg-info`` in a source checkout (common when an
    edge runs from a git clone) must not hide the installed plugins.
    """
    found: dict[str, EntryPoint] = {}
    for dist in distributions():
        for ep in dist.entry_points.select(group=group):
            if ep.name not in found:
                found[ep.name] = ep
            elif found[ep.name].value != ep.value:
                first = found[ep.name].value
                log.warning("plugin %r is registered twice (%s and %s); using the first", ep.name, first, ep.value)
    return found


def select(spec: str | Sequence[str] | None, available: Iterable[str]) -> list[str]:
    """Resolve a selection: ``None``/``"all"`` for every plugin, else a comma list of names or unique prefixes.

    Returns the chosen names in the order given (``all``: sorted), without duplicates.
    """
    names = sorted(set(available))
    if spec is None:
        return names
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    items = [s for s in items if s]
    if not items or items == ["all"]:
        return names
    chosen: list[str] = []
    for item in items:
        if item == "all":
            raise PluginSelectionError("'all' cannot be combined with other plugin names")
        if item in names:
            match = item
        else:
            candidates = [n for n in names if n.startswith(item)]
            if not candidates:
                raise PluginSelectionError(
                    f"no installed plugin matches {item!r}; installed: {', '.join(names) or 'none'}"
                )
            if len(candidates) > 1:
                raise PluginSelectionError(f"{item!r} is ambiguous: it matches {', '.join(candidates)}")
            match = candidates[0]
        if match not in chosen:
            chosen.append(match)
    return chosen


def instantiate(name: str, ep: EntryPoint) -> Plugin:
    """Import the entry point and make the plugin mounted as ``name``.

    The entry point names a :class:`Plugin` subclass (called with ``name=``)
    or a factory taking the name and returning a plugin.  Raises whatever the
    import or the constructor raises, or ``TypeError`` for anything else.
    """
    obj = ep.load()
    if inspect.isclass(obj):
        if not issubclass(obj, Plugin):
            raise TypeError(f"entry point {ep.value} is a class but not a radical_edge_edge.Plugin subclass")
        reason = obj.unavailable_reason()
        if reason:
            raise PluginUnavailable(reason)
        return obj(name=name)
    if callable(obj):
        plugin = obj(name)
        if not isinstance(plugin, Plugin):
            raise TypeError(f"entry point {ep.value} returned {type(plugin).__name__}, not a Plugin")
        return plugin
    raise TypeError(f"entry point {ep.value} is neither a Plugin subclass nor a factory")


class PluginUnavailable(Exception):
    """The plugin says it cannot work on this host (its :meth:`Plugin.unavailable_reason`)."""
