"""The package layout: groups in layers with no upward import, no import cycle between modules,
modules of a readable size, and the flat names of earlier releases still importing.

Imports are read from the source (ast), function-level ones included: a lazy import is still a
dependency. The groups and their layers are declared once, in ``intrada.LAYERS``.
"""
from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

import intrada

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "lib" / "intrada"
MAX_LINES = 350


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["intrada", *parts])


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Modules of the package that ``path`` imports (``from . import x`` counts as the module x)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("intrada"):
                continue
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                found.add(candidate if _is_module(candidate) else module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("intrada"))
    return {m for m in found if m != "intrada"}


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PKG / rel).with_suffix(".py").is_file() or (PKG / rel / "__init__.py").is_file()


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}
LAYER_OF = {group: layer for layer, groups in enumerate(intrada.LAYERS) for group in groups}


def _group(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_group_has_a_layer() -> None:
    groups = {_group(m) for m in MODULES} - {None}
    assert groups == set(LAYER_OF), "a new group must be placed in intrada.LAYERS (and the table in its docstring)"
    doc_rows = {int(m.group(1)): m.group(2) for m in re.finditer(r"^(\d)\s{2,}(.*(?:\n {7}.*)*)", intrada.__doc__ or "",
                                                                  re.MULTILINE)}
    for layer, groups_here in enumerate(intrada.LAYERS):
        for group in groups_here:
            if group != "__main__":
                assert f"``{group}``" in doc_rows.get(layer, ""), f"{group} missing from layer {layer} of the docstring"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module: str) -> None:
    group = _group(module)
    if group is None:
        return
    upward = sorted(f"{dep} ({_group(dep)}, layer {LAYER_OF[_group(dep)]})"  # type: ignore[index]
                    for dep in _imports(MODULES[module])
                    if _group(dep) not in (None, group) and LAYER_OF[_group(dep)] >= LAYER_OF[group])  # type: ignore[index]
    assert not upward, f"{module} (layer {LAYER_OF[group]}) imports a group at its layer or above: {upward}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (depth-first), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (cycle := visit(d)) is not None:
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)) is not None:
            return cycle
    return None


def test_no_import_cycle_between_modules() -> None:
    """Module-level imports (what runs when a module is imported) form no cycle."""
    graph = {m: {d for d in _imports(p, top_level_only=True) if d in MODULES and d != m} for m, p in MODULES.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checks_see_what_they_guard() -> None:
    """The import reader sees relative, lazy and ``from . import module`` imports, and the cycle
    finder finds a cycle."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert "intrada.gate.verdict" in _imports(PKG / "gate" / "perf.py")
    assert "intrada.cache.fingerprint" in _imports(PKG / "ascend" / "session.py")  # imported inside a function
    assert "intrada.ascend.atc" in _imports(PKG / "ascend" / "session.py")  # from . import atc


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_readable(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (> {MAX_LINES}): split it by concern"


@pytest.mark.parametrize("old", sorted(intrada.MOVED))
def test_flat_names_of_earlier_releases_still_import(old: str) -> None:
    module = importlib.import_module(f"intrada.{old}")
    assert module is importlib.import_module(f"intrada.{intrada.MOVED[old]}")
    assert sys.modules[f"intrada.{old}"] is module
    # the module keeps its own identity: its relative imports resolve from its real package
    assert module.__spec__.name == f"intrada.{intrada.MOVED[old]}" and module.__package__ == module.__spec__.parent


def test_the_project_itself_uses_current_names() -> None:
    """The old names are for users' code: ours imports each module by its home."""
    pattern = re.compile(r"\bintrada\.(" + "|".join(re.escape(k) for k in sorted(intrada.MOVED, key=len, reverse=True))
                         + r")\b(?!\.)|from intrada import .*\b(" + "|".join(
                             k for k in intrada.MOVED if "." not in k) + r")\b")
    offenders = []
    for folder in ("lib", "fixtures", "acceptance", "tests", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path in (Path(__file__), PKG / "__init__.py"):
                continue
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
