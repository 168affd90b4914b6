"""The server processes' garbage-collector settings (radical_edge_tunnel.tune_gc, freeze_startup_objects)."""

from __future__ import annotations

import gc

from radical_edge_tunnel import GEN0_THRESHOLD, freeze_startup_objects, tune_gc


def test_tune_gc_raises_the_young_generation_threshold_and_never_lowers_it() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        tune_gc()
        assert gc.get_threshold() == (GEN0_THRESHOLD, 10, 10)
        gc.set_threshold(GEN0_THRESHOLD * 5, 3, 4)
        tune_gc()
        assert gc.get_threshold() == (GEN0_THRESHOLD * 5, 3, 4)
        before = gc.get_freeze_count()
        freeze_startup_objects()
        assert gc.get_freeze_count() > before  # what is alive now is no longer walked by collections
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
