"""Fingerprints for the artifact cache's keys: the code that made an artifact, the libraries it ran
with, and the identity of the files it was made from.

:func:`code_identity` derives "the code that made it" from the builder itself instead of a list kept
by hand: the source of the builder function (and of the functions of its own module that it calls),
every ``intrada`` module it refers to, and, transitively, every ``intrada`` module those import
(module-level and function-level imports alike: a lazy import is still code that runs). Together with
the versions of the third-party distributions imported anywhere in that closure. So a change to a
runner, to ``dumps.write_dumps`` or to a protocol constant changes the key of exactly the entries whose
builders reach it, and nothing else.

Imports are read from the source with :mod:`ast` (nothing is imported to find them), so the same
function answers for a copy of the package on disk (``root``), which is how tests/test_fingerprint.py
proves the property by changing one byte in each module.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

PACKAGE = __name__.split(".")[0]
ROOT = Path(__file__).resolve().parents[1]  # lib/intrada

Code = Callable[..., Any] | type | ModuleType | str  # str: "intrada.x.y" (a module) or "intrada.x.y:function"


def stat_fingerprint(paths: Iterable[str | os.PathLike[str]]) -> str:
    """Cheap identity of many input files (name, size, mtime_ns), like make: dataset images are
    keyed this way so a warm run does not re-hash gigabytes; checkpoints and ONNX use content sha256."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.fspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# -- reading the package's source -----------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Module:
    name: str
    source: bytes
    is_package: bool

    @property
    def tree(self) -> ast.Module:
        return _tree(self.name, self.source)

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]


@lru_cache(maxsize=None)
def _path_of(root: Path, module: str) -> Path | None:
    rel = Path(*module.split(".")[1:])
    for candidate in (root / rel / "__init__.py", (root / rel).with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=None)
def _read(root: Path, module: str, stamp: tuple[int, int]) -> _Module:
    path = _path_of(root, module)
    assert path is not None
    return _Module(module, path.read_bytes(), path.name == "__init__.py")


@lru_cache(maxsize=64)
def _tree(module: str, source: bytes) -> ast.Module:
    return ast.parse(source, filename=module)


def _stamp(root: Path, module: str) -> tuple[int, int]:
    path = _path_of(root, module)
    if path is None:
        return (0, -1)
    st = path.stat()
    return (st.st_mtime_ns, st.st_size)


def _module(root: Path, module: str) -> _Module | None:
    stamp = _stamp(root, module)
    return None if stamp[1] < 0 else _read(root, module, stamp)


def _bindings(mod: _Module, node: ast.AST, root: Path) -> tuple[dict[str, str], set[str]]:
    """The import statement ``node``: (local name -> package module it binds or imports from,
    third-party top-level names)."""
    ours: dict[str, str] = {}
    theirs: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == PACKAGE:
                ours[alias.asname or alias.name] = alias.name
            else:
                theirs.add(alias.name.split(".")[0])
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = mod.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if target.split(".")[0] != PACKAGE:
            if target:
                theirs.add(target.split(".")[0])
            return ours, theirs
        for alias in node.names:  # `from . import x` binds the module x; `from .x import f`, a name of x
            sub = f"{target}.{alias.name}"
            ours[alias.asname or alias.name] = sub if _path_of(root, sub) is not None else target
    return {k: v for k, v in ours.items() if v != PACKAGE}, theirs


_FROM_RE = re.compile(r"^[ \t]*from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]*)", re.MULTILINE)
_IMPORT_RE = re.compile(r"^[ \t]*import[ \t]+([^\n#]+)", re.MULTILINE)


@lru_cache(maxsize=None)
def _imports_anywhere(root: Path, module: str, stamp: tuple[int, int]) -> tuple[frozenset[str], frozenset[str]]:
    """Every import statement of a module, at any depth (a lazy import is still a dependency):
    (package modules, third-party top-level names). Read with a regular expression over the source,
    which is ~20x faster than walking its syntax tree; a docstring line that reads like an import can
    only add a dependency, never hide one."""
    mod = _module(root, module)
    assert mod is not None
    text = mod.source.decode()
    ours: set[str] = set()
    theirs: set[str] = set()
    for m in _FROM_RE.finditer(text):
        names = [n.split(" as ")[0].strip() for n in m.group(2).strip("()").replace("\\\n", " ").split(",")]
        level = len(m.group(1)) - len(m.group(1).lstrip("."))
        o, t = _bindings(mod, ast.ImportFrom(module=m.group(1).lstrip(".") or None, level=level,
                                             names=[ast.alias(name=n) for n in names if n]), root)
        ours |= set(o.values())
        theirs |= t
    for m in _IMPORT_RE.finditer(text):
        o, t = _bindings(mod, ast.Import(names=[ast.alias(name=n.split(" as ")[0].strip())
                                                for n in m.group(1).split(",") if n.strip()]), root)
        ours |= set(o.values())
        theirs |= t
    return frozenset(ours), frozenset(theirs)


def _top_level(mod: _Module, root: Path) -> tuple[dict[str, str], dict[str, ast.AST]]:
    """(name -> package module it is imported from, name -> its top-level def or assignment here)."""
    imported: dict[str, str] = {}
    defs: dict[str, ast.AST] = {}
    for node in mod.tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported.update(_bindings(mod, node, root)[0])
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    defs[target.id] = node
    return imported, defs


def _walk_code(node: ast.AST) -> Iterator[ast.AST]:
    """:func:`ast.walk` without type annotations: a name in an annotation is not code that runs."""
    todo = [node]
    while todo:
        current = todo.pop()
        yield current
        for field, value in ast.iter_fields(current):
            if field in ("annotation", "returns"):
                continue
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, ast.AST):
                    todo.append(child)


def _function_refs(mod: _Module, name: str, root: Path) -> tuple[set[str], set[str], list[bytes]]:
    """What the top-level def ``name`` of ``mod`` reaches: package modules (its own imports and the
    module-level names it uses), third-party names, and the sources of the defs and constants of its
    own module it uses (itself included)."""
    imported, defs = _top_level(mod, root)
    lines = mod.source.decode().splitlines(keepends=True)
    ours: set[str] = set()
    theirs: set[str] = set()
    sources: list[bytes] = []
    todo, seen = [name], set()
    while todo:
        current = todo.pop()
        if current in seen or current not in defs:
            continue
        seen.add(current)
        node = defs[current]
        sources.append("".join(lines[node.lineno - 1: node.end_lineno]).encode())  # type: ignore[attr-defined]
        for sub in _walk_code(node):
            o, t = _bindings(mod, sub, root)
            ours |= set(o.values())
            theirs |= t
            if isinstance(sub, ast.Name):
                if sub.id in imported:
                    ours.add(imported[sub.id])
                elif sub.id in defs:
                    todo.append(sub.id)
    return ours, theirs, sources


def _closure(modules: Iterable[str], root: Path) -> tuple[list[_Module], set[str]]:
    found: dict[str, _Module] = {}
    theirs: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        mod = _module(root, name)
        if mod is None:
            continue
        found[name] = mod
        ours, t = _imports_anywhere(root, name, _stamp(root, name))
        theirs |= t
        parent = name.rpartition(".")[0]
        todo.extend(ours | ({parent} if parent and parent != PACKAGE else set()))  # a package's __init__ runs first
    return [found[n] for n in sorted(found)], theirs


_EXTERNAL = "<outside the package>"


def _external_source(code: Code) -> bytes:
    """Code from outside the package (a test's runner, a user's): the whole file it is defined in."""
    import inspect

    path = inspect.getsourcefile(code)  # type: ignore[arg-type]
    if path is None:
        raise TypeError(f"{code!r} has no source file to key the cache with")
    return Path(path).read_bytes()


def _reference(code: Code) -> tuple[str, str | None]:
    """(module, top-level def or None for the whole module, or _EXTERNAL)."""
    if isinstance(code, str):
        module, _, name = code.partition(":")
        return module, name or None
    if isinstance(code, ModuleType):
        return code.__name__, None
    owner = getattr(code, "__module__", None)
    if not isinstance(owner, str):
        raise TypeError(f"{code!r} has no module")
    if owner.split(".")[0] != PACKAGE:
        return owner, _EXTERNAL
    if isinstance(code, type):
        return owner, None  # a class: its whole module (a runner's run_split, infer, describe ...)
    return owner, code.__qualname__.split(".")[0]


@lru_cache(maxsize=None)
def _versions(names: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """Installed version of the distribution of each top-level import name ("not installed" for an
    optional library that is absent: that too is part of what ran)."""
    out: dict[str, str] = {}
    for name in sorted(names - set(sys.stdlib_module_names) - {"__future__"}):
        try:  # most distributions are named as their import (numpy, torch, onnx); a lookup is ~1 ms
            out[name] = importlib.metadata.version(name)
            continue
        except importlib.metadata.PackageNotFoundError:
            pass
        dists = _distributions().get(name, [])  # PIL -> Pillow: the ~0.5 s scan, once, when needed
        for dist in dists:
            out[dist] = importlib.metadata.version(dist)
        if not dists:
            out[name] = "not installed"
    return tuple(sorted(out.items()))


@lru_cache(maxsize=1)
def _distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def code_identity(*code: Code, root: Path | None = None) -> dict[str, Any]:
    """The key parts for "the code that made it": ``{"code": sha256 prefix, "libraries": {distribution:
    version}}`` over everything ``code`` reaches (see the module docstring).

    ``code``: builder functions (their source and what they use), classes and modules (whole), or
    their dotted names; code from outside the package counts with the whole file that defines it.
    ``root``: the package's source folder (default: this package's).
    """
    root = (root or ROOT).resolve()
    ours: set[str] = set()
    theirs: set[str] = set()
    own_sources: list[bytes] = []
    for item in code:
        module, name = _reference(item)
        if name == _EXTERNAL:
            own_sources += [module.encode(), _external_source(item)]
            continue
        mod = _module(root, module)
        if mod is None:
            raise ValueError(f"no source for {module} under {root}")
        if name is None:
            ours.add(module)
            continue
        o, t, sources = _function_refs(mod, name, root)
        ours |= o
        theirs |= t
        own_sources += [module.encode(), *sources]
    closure, closure_theirs = _closure(ours, root)
    h = hashlib.sha256()
    for part in own_sources:
        h.update(part + b"\0")
    for mod in closure:
        h.update(mod.name.encode() + b"\0" + mod.source + b"\0")
    return {"code": h.hexdigest()[:16], "libraries": dict(_versions(frozenset(theirs | closure_theirs)))}


def code_modules(*code: Code, root: Path | None = None) -> list[str]:
    """The package modules :func:`code_identity` covers whole for ``code``: a change anywhere in one
    of them moves the key. (A builder's own module counts only through the defs it uses.) Public as
    the answer to "why did this entry rebuild?", and as what tests/test_fingerprint.py checks keys against."""
    root = (root or ROOT).resolve()
    ours: set[str] = set()
    for item in code:
        module, name = _reference(item)
        if name == _EXTERNAL:
            continue
        mod = _module(root, module)
        if mod is None:
            raise ValueError(f"no source for {module} under {root}")
        ours |= {module} if name is None else _function_refs(mod, name, root)[0]
    return [m.name for m in _closure(ours, root)[0]]
