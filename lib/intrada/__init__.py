"""intrada: the IntraDA DeepLabv2 model-zoo pipeline (pth -> ONNX -> bins -> device outputs -> mIoU)
and its acceptance gate.

The package is grouped in layers; a group imports only the groups in the layers below it
(tests/test_layout.py checks it):

=====  =========================================================================================
layer  groups
=====  =========================================================================================
0      ``core`` (protocol constants, errors, atomic writes, hashing, filesystem helpers, checks)
1      ``model`` (DeepLabv2, checkpoint, ONNX export), ``dataset`` (Cityscapes, bins, .info, dumps),
       ``cache`` (the artifact cache and its keys)
2      ``runners`` (ONNX Runtime, PyTorch, OpenVINO), ``evaluation`` (dumps -> mIoU),
       ``demo`` (the embedded synthetic submission)
3      ``parity`` (tensor comparison, noise floor, class maps, upstream cross-check),
       ``ascend`` (atc, the device tools and their runners)
4      ``diagnosis`` (the first diverging layer)
5      ``gate`` (submission, artifacts, thresholds, config, plan, verdicts, report)
6      ``cli``, then ``__main__`` (``python -m intrada``)
=====  =========================================================================================

The flat module names of earlier releases (``intrada.protocol``, ``intrada.verdict``, ...) still
import: :data:`MOVED` maps each to its home, and a finder on ``sys.meta_path`` answers an import of
an old name with the module itself (one module object, two names).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

#: the groups by layer (the table above): a group imports only groups of lower layers
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("model", "dataset", "cache"),
    ("runners", "evaluation", "demo"),
    ("parity", "ascend"),
    ("diagnosis",),
    ("gate",),
    ("cli",),
    ("__main__",),
)

#: old flat name -> current module (both relative to ``intrada``)
MOVED: dict[str, str] = {
    "protocol": "core.protocol", "errors": "core.errors", "atomic": "core.atomic", "hashing": "core.hashing",
    "cache_fs": "core.fs", "checks": "core.checks",
    "checkpoint": "model.checkpoint", "onnx_export": "model.onnx_export",
    "cityscapes": "dataset.cityscapes", "preprocess": "dataset.preprocess", "info": "dataset.info",
    "dumps": "dataset.dumps",
    "roofline": "runners.roofline",
    "metrics": "evaluation.metrics", "postprocess": "evaluation.postprocess",
    "postprocess_dense": "evaluation.postprocess_dense", "bilinear": "evaluation.bilinear",
    "evaluate": "evaluation.evaluate",
    "compare": "parity.compare", "noise": "parity.noise", "classdiff": "parity.classdiff",
    "upstream": "parity.upstream",
    "layerdiff": "diagnosis.layerdiff", "layermap": "diagnosis.layermap", "layerstats": "diagnosis.layerstats",
    "onnxstream": "diagnosis.onnxstream",
    "cache_events": "cache.events", "cache_lock": "cache.lock", "cache_manifest": "cache.manifest",
    "pipeline": "cache.fingerprint",
    "demo_scene": "demo.scene", "demo_checkpoint": "demo.checkpoint",
    "verdict": "gate.verdict", "requirements": "gate.requirements", "plan": "gate.plan", "config": "gate.config",
    "artifacts": "gate.artifacts", "thresholds": "gate.thresholds", "report": "gate.report",
    "report_figures": "gate.report_figures", "ascend.perf": "gate.perf",
}


class _Alias(importlib.abc.Loader):
    """Loads an old name as the module of its new name. The import system stamps the old name's
    spec on the module it is given; :meth:`exec_module` puts the module's own spec back, so its
    relative imports keep resolving from its real package."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.own_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self.own_spec


class _MovedModules(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname.removeprefix(f"{__name__}.")) if fullname.startswith(f"{__name__}.") else None
        return None if new is None else importlib.util.spec_from_loader(fullname, _Alias(f"{__name__}.{new}"))


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
