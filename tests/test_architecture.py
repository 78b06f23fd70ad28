"""The house's boundaries, read from the source: no import cycle, the core imports no outer package, no core
file over 400 lines, wrappers import only what the core exports.

Imports are read with `ast`, function-level ones included (a lazy import is still a dependency); those under
`if TYPE_CHECKING:` are left out, since they never run.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import flexguard_plugins

CORE = "flexguard_plugins"
OUTER = ("flexguard_training", "langchain_flexguard", "flexguard_nemo", "guardrails_ai.flexguard")
WRAPPERS = ("langchain_flexguard", "flexguard_nemo", "guardrails_ai.flexguard")
MAX_CORE_LINES = 400


def package_folder(package: str) -> Path:
    """Where `package` is installed, found without importing (running) it."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


def module_files(package: str, folder: Path) -> dict[str, Path]:
    """Module name → file, for every .py file under `folder` (the package `package`)."""
    modules = {}
    for path in sorted(folder.rglob("*.py")):
        parts = list(path.relative_to(folder).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([package, *parts])] = path
    return modules


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return skipped


def imports_of(module: str, path: Path) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(imported module, names taken from it) for every import statement that can run in `module`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skipped = _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, tuple(alias.name for alias in node.names)


def import_graph(files: Mapping[str, Path]) -> dict[str, set[str]]:
    """module → the known modules it imports (`from package import submodule` counts as the submodule)."""
    graph: dict[str, set[str]] = {module: set() for module in files}
    for module, path in files.items():
        for target, names in imports_of(module, path):
            found = {f"{target}.{name}" for name in names if f"{target}.{name}" in files}
            if len(found) < len(names) or not names:  # some names are attributes of `target` itself
                found |= {target} if target in files else set()
            graph[module] |= found - {module}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle (a → … → a) per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(_cycle_through(component, graph) for component in components)


def _cycle_through(component: list[str], graph: Mapping[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start} in {component}")


def project_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for package in (CORE, *OUTER):
        files |= module_files(package, package_folder(package))
    return files


# --- the checks ------------------------------------------------------------------------------------------

def test_no_import_cycle_in_the_core_the_wrappers_or_training():
    found = cycles(import_graph(project_files()))
    assert not found, "import cycles:\n" + "\n".join(" → ".join(cycle) for cycle in found)


def test_the_core_imports_no_outer_package():
    graph = import_graph(project_files())
    outward = sorted(f"{module} → {target}" for module, targets in graph.items() if module.split(".")[0] == CORE
                     for target in targets if target.split(".")[0] != CORE)
    assert not outward, "the core imports an outer package:\n" + "\n".join(outward)


def test_nemo_config_path_does_not_run_the_nemo_wrapper():
    code = ("import sys, flexguard_plugins as f\npath = f.nemo_config_path()\n"
            "print(path.is_dir() and (path / 'config.yml').is_file(), "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('flexguard_nemo', 'langchain_flexguard', "
            "'guardrails_ai', 'flexguard_training', 'nemoguardrails')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split("\n")[0] == "True []", result.stdout + result.stderr


def test_no_core_file_is_over_400_lines():
    long = {str(path.relative_to(package_folder(CORE).parent)): n for path in package_folder(CORE).rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_CORE_LINES}
    assert not long, f"files in {CORE}/ over {MAX_CORE_LINES} lines: {dict(sorted(long.items()))}"


def test_wrappers_import_only_names_the_core_exports():
    exported = set(flexguard_plugins.__all__)
    wrong = []
    for package in WRAPPERS:
        for module, path in module_files(package, package_folder(package)).items():
            for target, names in imports_of(module, path):
                if target.split(".")[0] != CORE:
                    continue
                if target != CORE or not names:
                    wrong.append(f"{module}: import {target}{' (' + ', '.join(names) + ')' if names else ''}")
                wrong += [f"{module}: {name} is not in {CORE}.__all__" for name in names if name not in exported]
    assert not wrong, "wrappers reach past the core's exports:\n" + "\n".join(sorted(set(wrong)))


# --- the checker itself ----------------------------------------------------------------------------------

def _write(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return module_files("pkg", root / "pkg")


def test_the_checker_finds_a_cycle_through_a_function_level_relative_import(tmp_path):
    files = _write(tmp_path, {
        "pkg/__init__.py": "from .a import run\n",
        "pkg/a.py": "from .sub import b\n\ndef run():\n    return b.go()\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "def go():\n    from ..a import run  # lazy: still a cycle\n    return run\n",
        "pkg/c.py": "import pkg.a\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import d\n",
        "pkg/d.py": "from . import c\n",
    })
    graph = import_graph(files)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.a"]]  # c ↔ d is typing only
    (tmp_path / "pkg/c.py").write_text("import pkg.d\n", encoding="utf-8")
    assert cycles(import_graph(files)) == [["pkg.a", "pkg.sub.b", "pkg.a"], ["pkg.c", "pkg.d", "pkg.c"]]
