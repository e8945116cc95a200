"""Cache keys cover the code that built the entry, by construction (intrada.cache.fingerprint).

The refs each builder passes to ``code_identity`` are captured from the builders themselves (a cache
that records the key parts and builds nothing), then evaluated on a copy of the package in which one
module at a time gets one more byte: exactly the entries whose code reaches that module change key.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from intrada.cache import fingerprint
from intrada.cache.fingerprint import code_identity, code_modules
from intrada.core import protocol
from intrada.dataset.cityscapes import Sample
from intrada.diagnosis.fp16_emulation import Fp16EmulationRunner
from intrada.gate import artifacts, preflight
from intrada.parity.compare import Limits
from intrada.runners.cpu import OnnxRuntimeRunner, TorchRunner

PKG = Path(fingerprint.__file__).resolve().parents[1]


class _Captured(Exception):
    pass


class RecordingCache:
    """Records what a builder asks for and builds nothing."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.asked: list[tuple[str, dict[str, Any]]] = []

    def get_or_build(self, kind: str, parts: dict[str, Any], build: Any, *, description: str = "") -> Any:
        self.asked.append((kind, dict(parts)))
        raise _Captured

    def complete(self, kind: str) -> list[Any]:
        return []


def _refs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, tuple[Any, ...]]:
    """The code refs each builder passes to code_identity, by entry."""
    seen: list[tuple[Any, ...]] = []

    def spy(*code: Any, root: Path | None = None) -> dict[str, Any]:
        seen.append(code)
        return code_identity(*code, root=root)

    monkeypatch.setattr(artifacts, "code_identity", spy)
    monkeypatch.setattr(preflight, "code_identity", spy)
    cache = RecordingCache(tmp_path / "cache")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    bins_dir = tmp_path / "bins"
    bins_dir.mkdir()
    np.zeros(8, np.float32).tofile(bins_dir / "a.bin")
    bins = artifacts.Bins(bins_dir, "k", ("a",))
    sample = Sample("a", "city", tmp_path / "a.png", tmp_path / "a_gtFine_labelIds.png")
    dumps = type("D", (), {"directory": bins_dir, "convention": "ais_bench"})()
    calls = {
        "demo": lambda: artifacts.demo_entry(cache),  # type: ignore[arg-type]
        "onnx": lambda: artifacts.onnx_export_entry(cache, weights),  # type: ignore[arg-type]
        "bins": lambda: artifacts.bins_entry(cache, [sample]),  # type: ignore[arg-type]
        "outputs onnxruntime": lambda: artifacts.outputs_entry(cache, OnnxRuntimeRunner(weights), {}, bins,  # type: ignore[arg-type]
                                                                [sample], "x"),
        "outputs pytorch": lambda: artifacts.outputs_entry(cache, TorchRunner(weights), {}, bins, [sample], "x"),  # type: ignore[arg-type]
        "eval": lambda: artifacts.evaluation_entry(cache, [sample], dumps, "x"),  # type: ignore[arg-type]
        "noise": lambda: artifacts.noise_floor_entry(cache, weights, bins, [sample]),  # type: ignore[arg-type]
        "outputs fp16 emulation": lambda: artifacts.outputs_entry(cache, Fp16EmulationRunner(weights), {}, bins,  # type: ignore[arg-type]
                                                                   [sample], "x"),
        "fp16 support": lambda: preflight.unsupported_entry(cache, weights, "sha"),
        "fp16 diagnosis": lambda: preflight.diagnosis_entry(cache, weights, "sha", bins.path("a"), "a", Limits()),
    }
    for f in ("a_gtFine_labelIds.png", "a.png"):
        (tmp_path / f).write_bytes(b"")
    refs = {}
    for name, call in calls.items():
        seen.clear()
        with pytest.raises(_Captured):
            call()
        assert len(seen) == 1, f"{name}: the builder computed its code identity {len(seen)} times"
        refs[name] = seen[0]
    from intrada.ascend import session

    refs["om"] = (session.atc_builder,)
    return refs


def _ref_strings(code: tuple[Any, ...]) -> tuple[str, ...]:
    """The refs as names, so they can be read from a copy of the package."""
    out = []
    for c in code:
        if isinstance(c, type):
            out.append(c.__module__)
        else:
            out.append(f"{c.__module__}:{c.__qualname__.split('.')[0]}")
    return tuple(out)


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pkg") / "intrada"
    shutil.copytree(PKG, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_one_byte_in_a_module_changes_exactly_the_entries_that_reach_it(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path, package_copy: Path) -> None:
    refs = {name: _ref_strings(code) for name, code in _refs(monkeypatch, tmp_path).items()}
    reach = {name: set(code_modules(*code, root=package_copy)) for name, code in refs.items()}
    before = {name: code_identity(*code, root=package_copy)["code"] for name, code in refs.items()}
    modules = sorted(package_copy.rglob("*.py"))
    assert len(modules) > 60
    for path in modules:
        original = path.read_bytes()
        rel = path.relative_to(package_copy.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        try:
            path.write_bytes(original + b"\n#")
            changed = {n for n, code in refs.items() if code_identity(*code, root=package_copy)["code"] != before[n]}
        finally:
            path.write_bytes(original)
        expected = {n for n, mods in reach.items() if module in mods}
        assert changed == expected, f"one byte in {module}: changed {sorted(changed)}, expected {sorted(expected)}"


def test_the_code_that_computes_the_outputs_is_in_their_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The runner, how its outputs are written and its inputs read, the checks and the protocol's
    head indices: the code a runner's outputs depend on (the outputs entry once covered none of it)."""
    refs = _refs(monkeypatch, tmp_path)
    for runner in ("outputs onnxruntime", "outputs pytorch"):
        reached = set(code_modules(*refs[runner]))
        for module in ("intrada.runners.cpu", "intrada.runners.base", "intrada.dataset.dumps",
                       "intrada.dataset.preprocess", "intrada.core.checks", "intrada.core.protocol"):
            assert module in reached, f"{runner}: {module} is not in its key"
    assert "intrada.model.deeplab" in code_modules(*refs["outputs pytorch"])  # the network TorchRunner builds
    assert {"intrada.model.onnx_export", "intrada.model.checkpoint", "intrada.model.deeplab"} <= \
        set(code_modules(*refs["onnx"]))
    assert "intrada.dataset.preprocess" in code_modules(*refs["bins"])
    assert {"intrada.evaluation.evaluate", "intrada.evaluation.postprocess", "intrada.evaluation.metrics"} <= \
        set(code_modules(*refs["eval"]))
    assert "intrada.ascend.atc" in code_modules(*refs["om"])
    for fp16_entry in ("outputs fp16 emulation", "fp16 support", "fp16 diagnosis"):
        assert {"intrada.diagnosis.fp16", "intrada.diagnosis.fp16_emulation"} <= set(code_modules(*refs[fp16_entry]))
    # and nothing the builder does not run: the gate's verdicts are not in the bins' key
    assert "intrada.gate.verdict" not in code_modules(*refs["bins"])


def test_a_change_to_a_builders_own_source_moves_only_its_key(package_copy: Path) -> None:
    path = package_copy / "gate" / "artifacts.py"
    original = path.read_text()
    refs = {"bins": ("intrada.gate.artifacts:bins_entry",),
            "outputs": ("intrada.gate.artifacts:outputs_entry", "intrada.runners.cpu"),
            "onnx": ("intrada.gate.artifacts:onnx_export_entry",)}
    before = {n: code_identity(*r, root=package_copy)["code"] for n, r in refs.items()}
    try:
        # a helper only outputs_entry calls (the reuse of other entries' outputs)
        path.write_text(original.replace("def _reusable(", "def _reusable(  ", 1))
        after = {n: code_identity(*r, root=package_copy)["code"] for n, r in refs.items()}
        # a constant the outputs' keying reads
        path.write_text(original.replace("CONTENT_KEYED_IMAGES = 8", "CONTENT_KEYED_IMAGES = 9", 1))
        constant = {n: code_identity(*r, root=package_copy)["code"] for n, r in refs.items()}
    finally:
        path.write_text(original)
    assert [n for n in refs if after[n] != before[n]] == ["outputs"]
    assert [n for n in refs if constant[n] != before[n]] == ["outputs"]


def test_library_versions_are_part_of_the_key() -> None:
    libs = code_identity("intrada.gate.artifacts:bins_entry")["libraries"]
    assert {k.lower() for k in libs} >= {"pillow", "numpy"}
    assert "onnxruntime" in code_identity("intrada.gate.artifacts:outputs_entry", OnnxRuntimeRunner)["libraries"]
    onnx_libs = code_identity("intrada.gate.artifacts:onnx_export_entry")["libraries"]
    assert {"torch", "onnx"} <= set(onnx_libs)
    assert "onnxruntime" not in onnx_libs  # only what the builder's code imports


def test_an_absent_optional_library_is_recorded_as_such() -> None:
    fingerprint._versions.cache_clear()
    assert dict(fingerprint._versions(frozenset({"numpy", "no_such_module_xyz", "os"}))) == {
        "no_such_module_xyz": "not installed", "numpy": np.__version__}


def test_the_keys_exist_without_importing_the_builders_libraries() -> None:
    """Reading the source is enough: a copy on disk answers like the imported package."""
    assert code_identity("intrada.core.protocol")["code"] == code_identity(protocol)["code"]
