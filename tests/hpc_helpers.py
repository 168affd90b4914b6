"""The built-in HPC plugins for the live tests, or a skip that says why one cannot be used.

A plugin that is not installed (yet), or whose ``unavailable_reason`` says it cannot work here,
skips the test with that reason.
"""

from __future__ import annotations

from typing import Any

import pytest

from radical_edge_edge import Plugin


def psij_plugin(**options: Any) -> Plugin:
    psij = pytest.importorskip("radical_edge_plugins.psij", reason="the psij plugin is not there yet")
    cls = getattr(psij, "PsijPlugin", None)
    if cls is None:
        pytest.skip("the psij plugin is not there yet (no PsijPlugin)")
    reason = cls.unavailable_reason()
    if reason:
        pytest.skip(f"the psij plugin cannot run here: {reason}")
    plugin = cls(**options)
    assert isinstance(plugin, Plugin)
    return plugin


def queue_info_plugin() -> Plugin:
    module = pytest.importorskip("radical_edge_plugins.queue_info", reason="the queue_info plugin is not there yet")
    cls = getattr(module, "QueueInfoPlugin", None)
    if cls is None:
        pytest.skip("the queue_info plugin is not there yet (no QueueInfoPlugin)")
    reason = cls.unavailable_reason()
    if reason:
        pytest.skip(f"queue_info cannot run here: {reason}")
    plugin = cls()
    assert isinstance(plugin, Plugin)
    return plugin


def rhapsody_plugin() -> Plugin:
    module = pytest.importorskip("radical_edge_plugins.rhapsody", reason="the rhapsody plugin is not there yet")
    cls = getattr(module, "RhapsodyPlugin", None)
    if cls is None:
        pytest.skip("the rhapsody plugin is not there yet (no RhapsodyPlugin)")
    reason = cls.unavailable_reason()
    if reason:
        pytest.skip(f"rhapsody cannot run here: {reason}")
    plugin = cls()
    assert isinstance(plugin, Plugin)
    return plugin


__all__ = ["psij_plugin", "queue_info_plugin", "rhapsody_plugin"]
