"""The docs name only things that exist: every test (``file.py::test_name[param]``), every file path
and every dotted name of the package that README.md and docs/*.md cite resolves here.

A doc that outlives a renamed test or a removed function misleads exactly the reader who checks it.
"""
from __future__ import annotations

import ast
import importlib
import re
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
TEST_DIRS = ("tests", "acceptance", "benchmarks")
PATH_RE = re.compile(r"(?<![\w/.-])((?:lib|tests|fixtures|acceptance|benchmarks|docs|\.ci)/[\w./-]*[\w/])")
# test_file.py::test_name[param], or ::test_name[param] continuing the last file named on the line
TEST_REF_RE = re.compile(r"(?:(\b[\w/]*test_\w+\.py|\b_\w+\.py|\bbench_\w+\.py))?::(\w+)((?:\[[^\]\s|]*\])?)")
BARE_TEST_RE = re.compile(r"`(test_\w+)`")
DOTTED_RE = re.compile(r"`((?:intrada|fixtures)(?:\.\w+)+|[a-z_]+\.[A-Za-z_][\w.]*)`")


FILE_SUFFIXES = {"md", "json", "jsonl", "png", "py", "toml", "txt", "bin", "onnx", "pth", "om", "info", "log", "npy"}


@lru_cache(maxsize=None)
def _package_modules() -> dict[str, str]:
    """leaf module name -> dotted name, for every module of lib/intrada and every flat name of an
    earlier release (``pipeline.run_to_dumps`` is checked against the module that name maps to now)."""
    import intrada

    out: dict[str, str] = {old.split(".")[-1]: f"intrada.{new}" for old, new in intrada.MOVED.items()}
    for path in (REPO / "lib" / "intrada").rglob("*.py"):
        parts = list(path.relative_to(REPO / "lib").with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.setdefault(parts[-1], ".".join(parts))
    return out


@lru_cache(maxsize=None)
def _tests_in(path: Path) -> tuple[set[str], str]:
    source = path.read_text()
    tree = ast.parse(source)
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}, source


def _test_file(name: str) -> Path | None:
    for folder in TEST_DIRS:
        for candidate in (REPO / name, REPO / folder / Path(name).name):
            if candidate.is_file():
                return candidate
    return None


def _all_test_names() -> set[str]:
    names: set[str] = set()
    for folder in TEST_DIRS:
        for path in (REPO / folder).rglob("*.py"):
            names |= _tests_in(path)[0]
    return names


def _resolve(dotted: str) -> bool:
    parts = dotted.split(".")
    if parts[-1] in FILE_SUFFIXES:
        return True  # a file name (report.md), not a dotted name
    if parts[0] in ("intrada", "fixtures"):
        module_name = parts[0]
    elif parts[0] in _package_modules():
        module_name = _package_modules()[parts[0]]
    else:
        return True  # not ours (np.argmax, torch.func ...)
    module = importlib.import_module(module_name)
    for i, attr in enumerate(parts[1:], start=1):
        if hasattr(module, attr):
            module = getattr(module, attr)
            continue
        try:
            module = importlib.import_module(".".join([module_name if i == 1 else module.__name__, attr]))
        except ImportError:
            return False
    return True


def _lines() -> list[tuple[str, int, str]]:
    return [(doc.name, i, line) for doc in DOCS for i, line in enumerate(doc.read_text().splitlines(), 1)]


def test_cited_paths_exist() -> None:
    missing = [f"{doc}:{i}: {m}" for doc, i, line in _lines() for m in PATH_RE.findall(line)
               if not (REPO / m.rstrip("/")).exists() and "*" not in m and "<" not in m]
    assert not missing, "\n".join(missing)


def test_cited_tests_exist() -> None:
    missing = []
    for doc, i, line in _lines():
        current: Path | None = None
        for m in TEST_REF_RE.finditer(line):
            file, name, param = m.group(1), m.group(2), m.group(3)
            if file:
                current = _test_file(file)
                if current is None:
                    missing.append(f"{doc}:{i}: no test file {file}")
                    continue
            if current is None:
                continue
            defined, source = _tests_in(current)
            if name not in defined:
                missing.append(f"{doc}:{i}: {current.name}::{name} does not exist")
            elif param and param.strip("[]") and not all(p in source for p in param.strip("[]").split("-")):
                missing.append(f"{doc}:{i}: {current.name}::{name}{param}: no such parameter")
    everything = _all_test_names()
    missing += [f"{doc}:{i}: {name} does not exist" for doc, i, line in _lines()
                for name in BARE_TEST_RE.findall(line) if name not in everything]
    assert not missing, "\n".join(missing)


def test_cited_names_of_the_package_exist() -> None:
    missing = [f"{doc}:{i}: {m}" for doc, i, line in _lines() for m in DOTTED_RE.findall(line) if not _resolve(m)]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("text, ok", [("`intrada.cache.fingerprint.code_identity`", True),
                                      ("`intrada.cache.fingerprint.no_such_function`", False),
                                      ("`postprocess_dense.fill_dense_rows`", True),
                                      ("`pipeline.run_to_dumps`", False)])
def test_the_name_check_can_fail(text: str, ok: bool) -> None:
    assert all(_resolve(m) for m in DOTTED_RE.findall(text)) is ok


def test_the_performance_table_is_rendered_from_the_benchmarks_results() -> None:
    """docs/performance.md's table is benchmarks/results.py's rendering of docs/performance.json (the
    benchmarks' own records, --bench-results), never typed by hand."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("bench_results", REPO / "benchmarks" / "results.py")
    assert spec is not None and spec.loader is not None
    results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results)
    data = json.loads((REPO / "docs" / "performance.json").read_text())
    text = (REPO / "docs" / "performance.md").read_text()
    start, end = text.index(results.TABLE_START), text.index(results.TABLE_END) + len(results.TABLE_END)
    assert data["rows"] and text[start:end] == results.render(data), \
        "re-render it: python benchmarks/results.py docs/performance.json"
