"""The tests leave the venv a user runs ``scripts/demo`` from as they found it.

The example plugin (``tests/example_plugin``) is installed for the tests only: the ``example_plugin``
fixture puts it in a throw-away directory on ``sys.path`` and ``PYTHONPATH``.  This test asks for that
fixture, so by the time it runs the plugin is installed for this session (and, in a whole run, every
plugin test has run before it: the file sorts last); then a fresh interpreter of the same venv, without
the tests' ``PYTHONPATH``, must not see the plugin at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from .edge_helpers import EXAMPLE_DIST, EXAMPLE_PACKAGE, example_plugin

__all__ = ["example_plugin"]  # the fixture, imported for pytest

# -I: no PYTHON* variables, no user site, no script directory on sys.path: the venv as a user has it
SCRIPT = """
import importlib.metadata as md, importlib.util, json, os, site, sys
dists = list(md.distributions())
print(json.dumps({
    "prefix": sys.prefix,
    "dists": sorted(d.metadata["Name"] for d in dists),
    "plugins": sorted(ep.name for d in dists for ep in d.entry_points.select(group="radical_edge.plugins")),
    "package": importlib.util.find_spec(sys.argv[1]) is not None,
    "files": sorted(n for d in site.getsitepackages() if os.path.isdir(d) for n in os.listdir(d)),
}))
"""


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_the_example_plugin_is_seen_by_the_tests_but_not_installed_in_the_venv(
    example_plugin: str, tmp_path: Path
) -> None:
    assert example_plugin in {ep.name for ep in entry_points(group="radical_edge.plugins")}  # the tests see it
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run(
        [sys.executable, "-I", "-c", SCRIPT, EXAMPLE_PACKAGE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    venv = json.loads(done.stdout)
    assert venv["prefix"] == sys.prefix
    assert "sysinfo" in venv["plugins"]  # the check sees the venv's entry points...
    assert example_plugin not in venv["plugins"], venv["plugins"]  # ...and the example plugin is not among them
    assert "hello_broken" not in venv["plugins"]
    assert _normal(EXAMPLE_DIST) not in {_normal(name) for name in venv["dists"]}, venv["dists"]
    assert not venv["package"], f"{EXAMPLE_PACKAGE} is importable from the venv"
    leftovers = [n for n in venv["files"] if _normal(n).startswith(_normal(EXAMPLE_PACKAGE))]
    assert not leftovers, f"left in the venv's site-packages: {leftovers}"
