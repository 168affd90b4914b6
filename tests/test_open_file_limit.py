"""raise_open_file_limit(): the one way the bridge and the benchmark's processes raise their open-file limit.

Run in a child process whose limits are set first, so this process is left as it is.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import radical_edge_tunnel

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX resource limits, as on Linux")

SCRIPT = """
import resource, sys
from radical_edge_tunnel import raise_open_file_limit

soft, hard, wanted = (int(a) for a in sys.argv[1:])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
answer = raise_open_file_limit(wanted)
print(answer, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def limit_after(soft: int, hard: int, wanted: int) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(soft), str(hard), str(wanted)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(radical_edge_tunnel.__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_soft_limit_rises_to_what_is_wanted_within_the_hard_limit() -> None:
    assert limit_after(128, 4096, 1000) == ["1000", "1000"]
    assert limit_after(128, 512, 1000) == ["512", "512"]  # the hard limit is as far as it goes


def test_a_higher_soft_limit_is_never_lowered() -> None:
    assert limit_after(2048, 4096, 1000) == ["2048", "2048"]
