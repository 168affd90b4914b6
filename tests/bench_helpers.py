"""Running ``radical-edge bench`` as a user does, in a child process, for the bench tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any


def run_bench(*args: str, drop: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess[str], float]:
    """``python -m radical_edge_cli bench ARGS``, without the caller's ``RADICAL_BRIDGE_*`` settings (nor the
    variables in ``drop``); the finished process and the seconds it took."""
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("RADICAL_BRIDGE_") and k not in drop}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "radical_edge_cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    return done, time.monotonic() - started
