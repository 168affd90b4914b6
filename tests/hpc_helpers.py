"""The built-in HPC plugins for the live tests.

They are installed with the ``[test]`` extra, so a missing one is an error, not a skip.  A plugin
that cannot work on this host (``unavailable_reason``: queue_info without a scheduler) skips the
test with that reason, or fails it when Slurm is required (``RADICAL_EDGE_REQUIRE_SLURM=1``).
"""

from __future__ import annotations

from typing import Any

from radical_edge_plugins.psij import PsijPlugin
from radical_edge_plugins.queue_info import QueueInfoPlugin
from radical_edge_plugins.rhapsody import RhapsodyPlugin

from radical_edge_edge import Plugin

from .slurm_helpers import skip_or_fail


def _usable(cls: type[Plugin], **options: Any) -> Plugin:
    reason = cls.unavailable_reason()
    if reason:
        skip_or_fail(f"{cls.plugin_name} cannot run here: {reason}")
    return cls(**options)


def psij_plugin(**options: Any) -> Plugin:
    return _usable(PsijPlugin, **options)


def queue_info_plugin() -> Plugin:
    return _usable(QueueInfoPlugin)


def rhapsody_plugin() -> Plugin:
    return _usable(RhapsodyPlugin)


__all__ = ["psij_plugin", "queue_info_plugin", "rhapsody_plugin"]
