"""The architecture, checked on the real import graph: which package may import what.

Every ``.py`` file of every package is parsed with :mod:`ast`.  Every ``import`` and ``from ... import``
counts wherever it is (module level, inside a function, under ``if TYPE_CHECKING:``, in a ``try``), relative
imports are resolved, and ``importlib.import_module("name")`` / ``__import__("name")`` with a literal name
count too.  The rules (DESIGN.md's package table; the issue "one home for each mechanism"):

- the core (``radical_edge_proto``) imports the standard library and itself, nothing else;
- the tunnel imports no role (bridge, edge, SDK, CLI, bench, plugins, portal);
- the SDK imports neither the bridge, the edge, the CLI, the bench nor a plugin module;
- the edge imports neither the bridge nor a plugin module (it finds plugins through entry points);
- the bridge imports no plugin module, and the edge only where :data:`EXCEPTIONS` says (inside a function);
- the bridge and the edge import neither the CLI nor the bench (the tools sit on top of the libraries);
- the CLI, the bench, the plugins and the portal are constrained by the next two rules only;
- no two packages import each other, directly or through others (the bench uses the CLI's ``ensure_dev_tls``,
  so ``radical-edge bench`` runs the benchmark as a program instead of importing it);
- a package uses only the public API of another: no ``radical_edge_x._private`` module or ``_private`` name
  imported across packages.

A "plugin module" is ``radical_edge_plugins`` and every package registered in the ``radical_edge.plugins``
entry-point group by a ``pyproject.toml`` of this repository (the built-ins and ``tests/example_plugin``).

The allowed exceptions are in :data:`EXCEPTIONS`, each with its reason; one that no import needs any more
fails :func:`test_every_exception_is_still_needed`.  The self-tests at the end feed the checker synthetic
offending sources to prove each rule can fail.
"""

from __future__ import annotations

import ast
import itertools
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CORE = "radical_edge_proto"
TUNNEL = "radical_edge_tunnel"
BRIDGE = "radical_edge_bridge"
EDGE = "radical_edge_edge"
CLIENT = "radical_edge_client"
CLI = "radical_edge_cli"
BENCH = "radical_edge_bench"
PLUGINS = "radical_edge_plugins"
PORTAL = "radical_edge_portal"

#: every package of the project: import name -> folder (a folder that does not exist yet is skipped)
PACKAGES = {
    CORE: "radical_edge_proto",
    TUNNEL: "radical_edge_tunnel",
    BRIDGE: "radical_edge_bridge",
    EDGE: "radical_edge_edge",
    CLIENT: "radical_edge_client",
    CLI: "radical_edge_cli",
    BENCH: "radical_edge_bench",
    PLUGINS: "plugins",
    PORTAL: "portal",
}

#: everything above the tunnel
ROLES = frozenset({BRIDGE, EDGE, CLIENT, CLI, BENCH, PLUGINS, PORTAL})
#: the command-line tools, on top of the libraries
TOOLS = frozenset({CLI, BENCH})


def _plugin_modules() -> frozenset[str]:
    """``radical_edge_plugins`` and the top package of each ``radical_edge.plugins`` entry point declared here."""
    found = {PLUGINS}
    for pyproject in [ROOT / "pyproject.toml", *sorted((ROOT / "tests").glob("*/pyproject.toml"))]:
        project = tomllib.loads(pyproject.read_text())["project"]
        for value in project.get("entry-points", {}).get("radical_edge.plugins", {}).values():
            found.add(value.split(":")[0].split(".")[0])
    return frozenset(found)


PLUGIN_MODULES = _plugin_modules()

#: importer package -> (the top-level packages it must not import, why)
RULES: dict[str, tuple[frozenset[str], str]] = {
    TUNNEL: (ROLES, "the tunnel runs the core for every role, so it must not depend on one"),
    CLIENT: (
        frozenset({BRIDGE, EDGE} | TOOLS | PLUGIN_MODULES),
        "the SDK installs alone ('[client]') and talks to bridge and edges over the wire only",
    ),
    EDGE: (
        frozenset({BRIDGE} | TOOLS | PLUGIN_MODULES),
        "the edge finds plugins through entry points only and reaches the bridge over the tunnel",
    ),
    BRIDGE: (
        frozenset({EDGE} | TOOLS | PLUGIN_MODULES),
        "the bridge reaches edges and plugins over the tunnel (in-process plugins: see EXCEPTIONS)",
    ),
}
#: packages whose imports only the public-API rule constrains (the tools may use every library's public API;
#: a plugin may use what it needs, the edge API above all; the portal is static files)
UNRESTRICTED = frozenset({CLI, BENCH, PLUGINS, PORTAL})


@dataclass(frozen=True)
class Allowed:
    why: str
    #: allowed only inside a function (imported when used, so the importer's own install needs none of it)
    lazy_only: bool = False


#: (importer package, imported top-level package) -> when and why the rule does not apply.  Keep it small.
EXCEPTIONS: dict[tuple[str, str], Allowed] = {
    (BRIDGE, EDGE): Allowed(
        "the bridge hosts its in-process plugins (edge name 'bridge') with the edge's public EdgeService over "
        "an in-memory carrier; only when asked to, since 'pip install radical-edge[bridge]' has no fastapi. "
        "It still never imports a plugin module: the edge finds the plugins through their entry points.",
        lazy_only=True,
    ),
}


@dataclass(frozen=True)
class Import:
    """One imported name: ``target`` is the absolute dotted name (``from a.b import c`` -> ``a.b.c``)."""

    file: str
    line: int
    importer: str  # the importing module
    target: str
    lazy: bool  # inside a function

    @property
    def package(self) -> str:
        return self.importer.split(".")[0]

    @property
    def top(self) -> str:
        return self.target.split(".")[0]

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.importer} imports {self.target}"


def module_name(package: str, folder: Path, path: Path) -> str:
    parts = [package, *path.relative_to(folder).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


class _Collector(ast.NodeVisitor):
    def __init__(self, file: str, module: str, is_package: bool) -> None:
        self.file = file
        self.module = module
        self.is_package = is_package
        self.depth = 0  # enclosing functions
        self.found: list[Import] = []

    def add(self, node: ast.AST, target: str) -> None:
        self.found.append(Import(self.file, getattr(node, "lineno", 0), self.module, target, self.depth > 0))

    def visit_function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = visit_function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.module.split(".") if self.is_package else self.module.split(".")[:-1]
            if node.level - 1 >= len(base):
                raise AssertionError(f"{self.file}:{node.lineno}: relative import beyond the top-level package")
            base = base[: len(base) - (node.level - 1)]
            source = ".".join([*base, node.module] if node.module else base)
        else:
            source = node.module or ""
        for alias in node.names:
            self.add(node, source if alias.name == "*" else f"{source}.{alias.name}")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("import_module", "__import__") and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and not first.value.startswith("."):
                self.add(node, first.value)
        self.generic_visit(node)


def imports_in(source: str, module: str, file: str, *, is_package: bool = False) -> list[Import]:
    collector = _Collector(file, module, is_package)
    collector.visit(ast.parse(source, file))
    return collector.found


def project_imports() -> Iterator[Import]:
    for package, folder_name in PACKAGES.items():
        folder = ROOT / folder_name
        for path in sorted(folder.rglob("*.py")):
            module = module_name(package, folder, path)
            file = str(path.relative_to(ROOT))
            yield from imports_in(path.read_text(), module, file, is_package=path.name == "__init__.py")


def _is_private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def violations(imports: Iterator[Import] | list[Import]) -> list[str]:
    """One line per forbidden import: ``file:line: importer imports target: why``."""
    found = []
    for imp in imports:
        package, top = imp.package, imp.top
        if package == top:
            continue
        if package == CORE:
            if top not in sys.stdlib_module_names:
                found.append(f"{imp}: the core imports the standard library only")
            continue
        forbidden, why = RULES.get(package, (frozenset(), ""))
        if top in forbidden:
            exception = EXCEPTIONS.get((package, top))
            if exception is None:
                found.append(f"{imp}: {why}")
            elif exception.lazy_only and not imp.lazy:
                found.append(f"{imp} at module level: allowed only inside a function ({exception.why})")
        if top in PACKAGES and any(_is_private(part) for part in imp.target.split(".")[1:]):
            found.append(f"{imp}: a private module or name of {top}; use its public API (its __init__)")
    return found


def package_cycles(imports: Iterator[Import] | list[Import]) -> list[str]:
    """One line per cycle of packages importing each other (directly, or through other packages)."""
    edges: dict[str, dict[str, Import]] = {}  # importer package -> imported package -> one import that does it
    for imp in imports:
        if imp.top != imp.package and imp.top in PACKAGES:
            edges.setdefault(imp.package, {}).setdefault(imp.top, imp)

    def path(start: str, goal: str) -> list[str] | None:
        """The packages from ``start`` to ``goal`` along imports (breadth first), or None."""
        came: dict[str, str] = {start: start}
        todo = [start]
        while todo:
            here = todo.pop(0)
            if here == goal:
                way = [here]
                while way[-1] != start:
                    way.append(came[way[-1]])
                return way[::-1]
            for there in sorted(edges.get(here, {})):
                if there not in came:
                    came[there] = here
                    todo.append(there)
        return None

    found: dict[tuple[str, ...], str] = {}
    for package in sorted(edges):
        for top in sorted(edges[package]):
            back = path(top, package)
            if back is None:
                continue
            cycle = [package, *back]  # package -> top -> ... -> package
            turn = cycle.index(min(cycle[:-1]))
            key = tuple(cycle[turn:-1] + cycle[:turn])
            if key not in found:
                ring = [*key, key[0]]
                steps = "; ".join(str(edges[a][b]) for a, b in itertools.pairwise(ring))
                found[key] = f"{' -> '.join(ring)}: packages must not import each other ({steps})"
    return list(found.values())


def check_source(module: str, source: str) -> list[str]:
    return violations(imports_in(source, module, f"<{module}>"))


# ---------------------------------------------------------------- the real graph


def test_the_import_graph_keeps_the_architecture() -> None:
    found = violations(project_imports())
    assert not found, "forbidden imports:\n  " + "\n  ".join(found)


def test_no_two_packages_import_each_other() -> None:
    found = package_cycles(project_imports())
    assert not found, "import cycles between packages:\n  " + "\n  ".join(found)


def test_every_package_is_known_to_the_rules() -> None:
    """A new package (or one renamed) must be placed in the rules, not silently left out of them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    installed = {name for name in config["packages"] if "." not in name}
    folders = {p.parent.name for p in ROOT.glob("radical_edge_*/__init__.py")}
    unknown = (installed | folders) - set(PACKAGES)
    assert not unknown, f"packages the architecture test does not know: {sorted(unknown)}"
    for package in PACKAGES:
        assert package in RULES or package in UNRESTRICTED or package == CORE, package
    for name in installed:
        assert config.get("package-dir", {}).get(name, name) == PACKAGES[name], name


def test_the_walker_sees_the_whole_graph() -> None:
    """Guards the guard: imports inside functions are seen, relative imports resolved, every package walked."""
    imports = list(project_imports())
    packages = {imp.package for imp in imports}
    assert packages >= {p for p, folder in PACKAGES.items() if (ROOT / folder / "__init__.py").exists()} - {PORTAL}
    lazy = [imp for imp in imports if imp.lazy and imp.package == BRIDGE and imp.top == EDGE]
    assert lazy, "the bridge's lazy import of the edge (in-process plugins) was not found"
    resolved = {(imp.importer, imp.target) for imp in imports}
    assert (f"{PLUGINS}.sysinfo", f"{PLUGINS}.sysinfo._probe") in resolved  # from . import _probe


def test_every_exception_is_still_needed() -> None:
    imports = list(project_imports())
    for (package, top), exception in EXCEPTIONS.items():
        assert top in RULES.get(package, (frozenset(), ""))[0], f"({package}, {top}) is not forbidden to begin with"
        used = [imp for imp in imports if imp.package == package and imp.top == top]
        assert used, f"no import needs the exception ({package}, {top}) any more; remove it: {exception.why}"


# ---------------------------------------------------------------- the checker can fail

#: (test id, importing module, its source, a piece of the message that must name the violation)
CAUGHT = [
    ("core-anyio", f"{CORE}._fake", "import anyio\n", "radical_edge_proto._fake imports anyio: the core"),
    (
        "core-tunnel-in-function",
        f"{CORE}._fake",
        "def f():\n    import radical_edge_tunnel\n",
        "<radical_edge_proto._fake>:2:",
    ),
    (
        "core-dynamic-h11",
        f"{CORE}._fake",
        "import importlib\nimportlib.import_module('h11')\n",
        "imports h11: the core",
    ),
    (
        "tunnel-client-type-checking",
        f"{TUNNEL}._fake",
        "import typing\nif typing.TYPE_CHECKING:\n    import radical_edge_client\n",
        "the tunnel",
    ),
    (
        "tunnel-edge",
        f"{TUNNEL}._fake",
        "from radical_edge_edge import PluginHost\n",
        "imports radical_edge_edge.PluginHost",
    ),
    ("client-bridge", f"{CLIENT}._fake", "import radical_edge_bridge\n", "the SDK installs alone"),
    ("client-cli-in-function", f"{CLIENT}._fake", "def f():\n    from radical_edge_cli import main\n", "the SDK"),
    ("client-plugin", f"{CLIENT}._fake", "from radical_edge_plugins.sysinfo import SysInfoPlugin\n", "the SDK"),
    (
        "edge-bridge-in-function",
        f"{EDGE}._fake",
        "def f():\n    from radical_edge_bridge import x\n",
        "<radical_edge_edge._fake>:2:",
    ),
    ("edge-plugin", f"{EDGE}._fake", "import radical_edge_plugins.sysinfo\n", "entry points only"),
    ("edge-third-party-plugin", f"{EDGE}._fake", "__import__('radical_edge_example_plugin')\n", "entry points only"),
    (
        "bridge-plugin-in-function",
        f"{BRIDGE}._fake",
        "async def f():\n    from radical_edge_plugins import sysinfo\n",
        "radical_edge_plugins.sysinfo",
    ),
    (
        "bridge-edge-at-module-level",
        f"{BRIDGE}._fake",
        "from radical_edge_edge import EdgeService\n",
        "at module level: allowed only inside",
    ),
    (
        "bridge-edge-private",
        f"{BRIDGE}._fake",
        "def f():\n    from radical_edge_edge._host import PluginHost\n",
        "a private module",
    ),
    ("bridge-cli", f"{BRIDGE}._fake", "from radical_edge_cli import main\n", "imports radical_edge_cli.main"),
    (
        "cli-private-module",
        f"{CLI}._fake",
        "from radical_edge_bridge._auth import y\n",
        "radical_edge_bridge._auth.y: a private",
    ),
    (
        "cli-private-from-import",
        f"{CLI}._fake",
        "from radical_edge_bridge import _auth\n",
        "a private module or name of radical_edge_bridge",
    ),
    ("cli-private-import", f"{CLI}._fake", "import radical_edge_bridge._cli as c\n", "a private module or name"),
    (
        "bench-private-in-function",
        f"{BENCH}._fake",
        "def f():\n    from radical_edge_cli._devcerts import make\n",
        "a private module",
    ),
    ("plugin-private", f"{PLUGINS}.x._fake", "from radical_edge_edge._plugin import Plugin\n", "a private module"),
]

#: (test id, importing module, its source): all allowed
ALLOWED = [
    (
        "core-stdlib-and-itself",
        f"{CORE}._fake",
        "from __future__ import annotations\nimport json\nfrom . import _frames\nfrom ._state import S\n",
    ),
    ("core-dynamic-stdlib", f"{CORE}._fake", "import importlib\nimportlib.import_module('json')\n"),
    (
        "tunnel-anyio-core-itself",
        f"{TUNNEL}._fake",
        "import anyio\nfrom radical_edge_proto import Connection\nfrom ._carrier import Carrier\n",
    ),
    ("bridge-edge-in-function", f"{BRIDGE}._fake", "def f():\n    from radical_edge_edge import EdgeService\n"),
    ("edge-tunnel-itself", f"{EDGE}._fake", "from radical_edge_tunnel import Tunnel\nfrom ._plugin import Plugin\n"),
    (
        "cli-public-apis",
        f"{CLI}._fake",
        "from radical_edge_bridge import Bridge\nfrom radical_edge_edge import EdgeService\n",
    ),
    (
        "plugin-edge-api-own-deps",
        f"{PLUGINS}.sysinfo",
        "from radical_edge_edge import Plugin\nfrom . import _probe\nimport psutil\n",
    ),
    ("dunder-is-public", f"{CLI}._fake", "from radical_edge_proto import __version__\n"),
]


@pytest.mark.parametrize(("module", "source", "expected"), [pytest.param(*case[1:], id=case[0]) for case in CAUGHT])
def test_the_checker_catches(module: str, source: str, expected: str) -> None:
    found = check_source(module, source)
    assert found, f"not caught: {source!r}"
    assert any(expected in line for line in found), found


@pytest.mark.parametrize(("module", "source"), [pytest.param(*case[1:], id=case[0]) for case in ALLOWED])
def test_the_checker_allows(module: str, source: str) -> None:
    assert check_source(module, source) == []


def test_relative_imports_are_resolved() -> None:
    init = imports_in("from . import _probe\nfrom .. import x\n", f"{PLUGINS}.sysinfo", "f", is_package=True)
    assert [i.target for i in init] == [f"{PLUGINS}.sysinfo._probe", f"{PLUGINS}.x"]
    mod = imports_in("from ._probe import p\nfrom .. import y\n", f"{PLUGINS}.sysinfo.m", "f")
    assert [i.target for i in mod] == [f"{PLUGINS}.sysinfo._probe.p", f"{PLUGINS}.y"]
    with pytest.raises(AssertionError, match="beyond the top-level"):
        imports_in("from ... import z\n", f"{EDGE}._fake", "f")


def _sources(*modules_and_sources: tuple[str, str]) -> list[Import]:
    return [imp for module, source in modules_and_sources for imp in imports_in(source, module, f"<{module}>")]


#: (test id, (importing module, its source) of each module): the packages they name import each other
CYCLES = [
    (
        "cli-bench-both-ways",
        ((f"{BENCH}._fake", "from radical_edge_cli import ensure_dev_tls\n"),
         (f"{CLI}._fake", "def f():\n    from radical_edge_bench import main\n")),
        "radical_edge_bench -> radical_edge_cli -> radical_edge_bench",
    ),
    (
        "through-a-third-package",
        ((f"{CLI}._fake", "import radical_edge_bench\n"),
         (f"{BENCH}._fake", "from radical_edge_plugins import x\n"),
         (f"{PLUGINS}.x._fake", "import importlib\nimportlib.import_module('radical_edge_cli')\n")),
        "radical_edge_bench -> radical_edge_plugins -> radical_edge_cli -> radical_edge_bench",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("sources", "expected"), [pytest.param(*case[1:], id=case[0]) for case in CYCLES])
def test_the_checker_catches_packages_importing_each_other(sources: tuple[tuple[str, str], ...], expected: str) -> None:
    found = package_cycles(_sources(*sources))
    assert len(found) == 1, found  # one cycle, however many of its packages it starts from
    assert found[0].startswith(expected), found
    assert "<radical_edge_cli._fake>:" in found[0]  # it names an import of each step


def test_the_checker_allows_imports_one_way() -> None:
    one_way = _sources(
        (f"{BENCH}._fake", "from radical_edge_cli import ensure_dev_tls\nimport radical_edge_client\n"),
        (f"{CLI}._fake", "import radical_edge_client\nfrom . import _demo\n"),
        (f"{CLIENT}._fake", "from radical_edge_tunnel import Tunnel\n"),
    )
    assert package_cycles(one_way) == []
