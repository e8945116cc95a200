"""Shared fixtures for the suite's own tests (tests/).

The repository-root conftest.py loads the gate's plugins (fixtures.*); the fixtures here are only
for the unit tests and use names that do not collide with the plugin's (``onnx_file``,
``torch_model``, ``thresholds`` ... belong to the gate).

Cost control (2 cores): the full-size DeepLabv2 is saved once (``random_checkpoint``, ~180 MB) and
exported once (``exported_onnx``, ~30 s, through ``intrada pth2onnx --verify`` so the CLI's verify
path is exercised by the same run); everything else uses the meta device or the toy model below, a
few-layer network with the exact IntraDA interface (input ``image`` [N,3,512,1024], outputs
[N,19,65,129] aux then main) that exports and runs in well under a second.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pytest
import torch
from torch import nn

from intrada.model.tiny import TinyIntraDA

REPO_ROOT = Path(__file__).resolve().parents[1]

# --- the inner loop: `pytest -m "not slow"` ----------------------------------------------------

# Fixtures of the tests that are `slow`: they run the real DeepLabv2 at full size (3x512x1024: ~4 s
# per forward on 2 cores), the gate, or tool processes. A test that uses one, directly or through
# another fixture, is marked `slow` here (others carry the mark themselves), and so is every gate
# test of acceptance/ in the README's run (they judge the embedded demo). What is left for
# `pytest -m "not slow"` runs in this process on toy models, crops and the meta device.
SLOW_FIXTURES = frozenset({
    "gate_seed", "own_cache", "demo",  # the gate on the embedded demo (tests/_gate.py, test_robustness.py)
    "tiny_seed", "tiny_demo",  # the gate on the demo for TinyIntraDA (cheap, but a whole gate run)
    "seed_onnx", "big_io",  # the session seed's export of the demo checkpoint and its forwards
    "demo_model",  # tests/test_layerdiff.py: the demo network on crops and full images
    "net",  # tests/test_demo.py: the demo network on full images
    "no_ascend",  # tests/test_ascend_contract.py: the gate and the Ascend fakes as tool processes
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    acceptance = REPO_ROOT / "acceptance"
    for item in items:
        if item.path.is_relative_to(acceptance) or SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# --- independent references ------------------------------------------------------------------


def reference_dir() -> Path | None:
    """$INTRADA_REFERENCE_DIR: a folder with ``advent_deeplabv2_state_dict.json`` (every state_dict key
    and shape, made by instantiating valeoai/ADVENT's get_deeplab_v2) and
    ``advent_deeplabv2_param_counts.json``; None where it is not given. Tests that use it also carry
    the numbers inline (the listing's sha256, the counts), so a clone without it still checks everything."""
    folder = os.environ.get("INTRADA_REFERENCE_DIR")
    if folder and (Path(folder) / "advent_deeplabv2_state_dict.json").is_file():
        return Path(folder)
    return None


def load_reference_json(name: str) -> Any:
    d = reference_dir()
    if d is None:
        return None
    with open(d / name, encoding="utf-8") as f:
        return json.load(f, object_pairs_hook=OrderedDict)


# --- a random-weights checkpoint of the real architecture --------------------------------------


def randomize_batchnorm(module: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BN statistics and affine parameters: with the init's identity BN (mean 0, var 1,
    weight 1, bias 0) a wrong eps, a swapped mean/var or a train-mode BN would go unnoticed."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=generator))
                m.bias.copy_(torch.empty(c).normal_(0.0, 0.05, generator=generator))
                m.running_mean.copy_(torch.empty(c).normal_(0.0, 0.05, generator=generator))
                m.running_var.copy_(torch.empty(c).uniform_(0.5, 2.0, generator=generator))
                m.num_batches_tracked.fill_(1234)


@pytest.fixture(scope="session")
def random_state_dict() -> "OrderedDict[str, torch.Tensor]":
    """The 640-entry state_dict of get_deeplab_v2() with seeded random weights (read-only: tests
    that derive variants copy the dict, never modify the tensors in place)."""
    from intrada.model.deeplab import get_deeplab_v2

    torch.manual_seed(0)
    model = get_deeplab_v2()
    randomize_batchnorm(model, torch.Generator().manual_seed(1))
    return OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())


@pytest.fixture(scope="session")
def random_model(random_state_dict: "OrderedDict[str, torch.Tensor]") -> nn.Module:
    """The architecture in eval mode with ``random_state_dict`` loaded directly (not through
    intrada.model.checkpoint), as the reference for export parity."""
    from intrada.model.deeplab import get_deeplab_v2

    model = get_deeplab_v2()
    model.load_state_dict(random_state_dict, strict=True)
    return model.eval()


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory,
                      random_state_dict: "OrderedDict[str, torch.Tensor]") -> Iterator[Path]:
    """``torch.save(state_dict)`` exactly as upstream's train_UDA.py writes snapshots."""
    path = tmp_path_factory.mktemp("checkpoint") / "random.pth"
    torch.save(random_state_dict, path)
    yield path
    path.unlink(missing_ok=True)  # 180 MB; pytest keeps the last 3 basetemps


@pytest.fixture
def save_checkpoint(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``save_checkpoint(obj, name="bad.pth", legacy=False)`` -> path; big files removed afterwards."""
    written: list[Path] = []

    def save(obj: Any, name: str = "bad.pth", *, legacy: bool = False) -> Path:
        path = tmp_path / name
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
        written.append(path)
        return path

    yield save
    for p in written:
        p.unlink(missing_ok=True)


# --- the full export, made through the CLI once per session ------------------------------------


@dataclass(frozen=True)
class CliRun:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    seconds: float


def run_cli_inprocess(argv: Sequence[str]) -> CliRun:
    """``intrada.cli.main(argv)`` with stdout/stderr captured (usable from session fixtures, where
    capsys is not). An exception escaping main() propagates: the CLI must not raise for user errors."""
    from intrada.cli import main

    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return CliRun(tuple(argv), rc, out.getvalue(), err.getvalue(), time.perf_counter() - t0)


@dataclass(frozen=True)
class Exported:
    path: Path
    cli: CliRun


@pytest.fixture(scope="session")
def exported_onnx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """``intrada pth2onnx random.pth model.onnx --verify`` with ``INTRADA_NETWORK=tiny``: the CLI's export
    round trip (load, export, write by rename, inspect, ONNX Runtime vs PyTorch) on TinyIntraDA with
    random weights, the CLI's result kept for the CLI tests. The real network's export is the session
    seed's (``seed_onnx``), made by the same exporter."""
    from intrada.model.checkpoint import save_state_dict
    from intrada.model.network import ENV

    out_dir = tmp_path_factory.mktemp("export")
    checkpoint, path = out_dir.parent / f"{out_dir.name}-tiny.pth", out_dir / "intrada_deeplabv2.onnx"
    save_state_dict(make_toy(seed=3).state_dict(), checkpoint)
    old = os.environ.get(ENV)
    os.environ[ENV] = "tiny"
    try:
        run = run_cli_inprocess(["pth2onnx", str(checkpoint), str(path), "--verify"])
    finally:
        os.environ.pop(ENV) if old is None else os.environ.__setitem__(ENV, old)
    if not path.is_file():
        pytest.fail(f"intrada pth2onnx wrote no ONNX (rc {run.rc}): {run.stderr.strip()}")
    yield Exported(path, run)


@pytest.fixture(scope="session")
def seed_onnx(gate_seed: Any) -> Exported:
    """The real network's export (the demo checkpoint's, made by the gate in the session seed)."""
    return Exported(gate_seed.onnx, CliRun((), 0, "", "", 0.0))


@dataclass(frozen=True)
class BigIO:
    x: np.ndarray
    torch_out: tuple[np.ndarray, np.ndarray]  # (aux, main) from the demo checkpoint's network
    ort_out: tuple[np.ndarray, ...]  # every ONNX output, by index, from a bare onnxruntime session


@pytest.fixture(scope="session")
def big_io(gate_seed: Any) -> BigIO:
    """One input scaled like the real one (BGR minus mean: roughly N(0, 50)), run once through the
    demo checkpoint's DeepLabv2 in torch and once through its export (the session seed's) in a plain
    onnxruntime session (not intrada's runner)."""
    import onnxruntime as ort

    from intrada.model.checkpoint import load_model

    x = np.random.default_rng(123).normal(0.0, 50.0, (1, 3, 512, 1024)).astype(np.float32)
    model, _ = load_model(gate_seed.weights)
    with torch.inference_mode():
        aux, main = model(torch.from_numpy(x))
    sess = ort.InferenceSession(str(gate_seed.onnx), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: x})
    return BigIO(x, (aux.numpy(), main.numpy()), tuple(outs))


# --- a toy network with the exact IntraDA interface ---------------------------------------------


class ToyDeepLab(TinyIntraDA):
    """intrada.model.tiny.TinyIntraDA (the IntraDA interface on seven layers: [N,3,512,1024] ->
    ([N,19,65,129] aux, [N,19,65,129] main)), with random weights from :func:`make_toy`.
    ``ceil_mode=False`` gives 64x128, the wrong shape; ``heads=1`` returns only the main head."""

    def __init__(self, *, ceil_mode: bool = True, heads: int = 2, num_classes: int = 19) -> None:
        super().__init__(ceil_mode=ceil_mode, num_classes=num_classes)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> Any:
        aux, main = super().forward(x)
        return main if self.heads == 1 else (aux, main)


def make_toy(seed: int = 0, **kwargs: Any) -> ToyDeepLab:
    torch.manual_seed(seed)
    model = ToyDeepLab(**kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    randomize_batchnorm(model, torch.Generator().manual_seed(seed + 1))
    return model.eval()


def export_toy(model: nn.Module, path: Path, *, input_name: str = "image",
               output_names: Sequence[str] = ("aux_logits", "main_logits"), dynamic: bool = True,
               opset: int = 11) -> Path:
    """Plain torch.onnx.export (not intrada's export_onnx), so runner tests do not depend on it."""
    axes = {n: {0: "batch"} for n in (input_name, *output_names)} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(model, (torch.zeros(1, 3, 512, 1024),), str(path), input_names=[input_name],
                          output_names=list(output_names), dynamic_axes=axes, opset_version=opset, dynamo=False)
    return path


@pytest.fixture(scope="session")
def reference_json() -> Callable[[str], Any]:
    """``reference_json(name)``: a file of $INTRADA_REFERENCE_DIR, or None where it is not given."""
    return load_reference_json


@pytest.fixture(scope="session")
def toy_factory() -> Callable[..., ToyDeepLab]:
    """``toy_factory(seed=0, ceil_mode=True, heads=2)``: a fresh toy model in eval mode."""
    return make_toy


@pytest.fixture(scope="session")
def toy_exporter() -> Callable[..., Path]:
    """``toy_exporter(model, path, input_name=, output_names=, dynamic=, opset=)``."""
    return export_toy


@pytest.fixture(scope="session")
def cli() -> Callable[[Sequence[str]], CliRun]:
    """``cli([...])``: intrada.cli.main in-process -> CliRun(rc, stdout, stderr)."""
    return run_cli_inprocess


@pytest.fixture(scope="session")
def toy_model() -> ToyDeepLab:
    return make_toy()


@pytest.fixture(scope="session")
def toy_onnx(tmp_path_factory: pytest.TempPathFactory, toy_model: ToyDeepLab) -> Path:
    return export_toy(toy_model, tmp_path_factory.mktemp("toy") / "toy.onnx")


@pytest.fixture(scope="session")
def toy_batch() -> np.ndarray:
    """Two images scaled like BGR-minus-mean input."""
    return np.random.default_rng(7).normal(0.0, 50.0, (2, 3, 512, 1024)).astype(np.float32)


# --- the gate's session cache ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def gate_seed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The session cache with the embedded demo's artifacts built by running the gate in this
    process (tests/_gate.py: build_session_seed); acceptance/ reuses them in the README's run."""
    from _gate import build_session_seed

    return build_session_seed(tmp_path_factory.mktemp("gate-seed"))


@pytest.fixture(scope="session")
def tiny_seed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny session cache with the embedded demo's artifacts for TinyIntraDA, built by running the
    gate on it in this process (tests/_gate.py: build_tiny_seed): what the tests of the gate's
    mechanics start from."""
    from _gate import build_tiny_seed

    return build_tiny_seed(tmp_path_factory.mktemp("tiny-seed"))


@pytest.fixture
def own_cache(tmp_path: Path, gate_seed: Any) -> Path:
    """This test's own artifact cache: hard links of the session cache's entries the seed used."""
    return gate_seed.copy(tmp_path / "cache")
