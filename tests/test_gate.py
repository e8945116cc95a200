"""Proving the gate: the embedded submission passes, known-bad submissions fail on the right test.

Every run here is a real `pytest acceptance ...` in a subprocess (pytester), judged through the
report.json it writes. All runs share the repository's artifact cache, so the demo, its export, the
bins and the reference outputs are built once (the default `pytest` run reuses them for
acceptance/ afterwards).

Mutants and where they must fail (documented in the README):
  ONNX with outputs swapped      -> parity (ORT vs PyTorch) and accuracy (aux head scores ~35)
  ONNX from perturbed weights    -> parity only (mIoU stays above the threshold: parity catches it)
  ONNX with ceil_mode=False      -> well-formedness (64x128 outputs); everything using it errors
  dumps from RGB-ordered bins    -> dumps accuracy and om-vs-ONNX parity
  dumps without mean subtraction -> dumps accuracy and om-vs-ONNX parity
  dumps carrying the aux as main -> dumps accuracy and om-vs-ONNX parity
  dumps for half of the images   -> dumps accuracy and om parity error: "missing"
  dumps with NaN                 -> dumps accuracy error naming the file
  legacy benchmark (1-based) naming of correct dumps -> passes (convention detected)
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _report import accuracy
from intrada import protocol

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("INTRADA_CACHE_DIR") or REPO / ".cache" / "intrada")

pytestmark = pytest.mark.slow


# -- running the gate ------------------------------------------------------------------------------
def run_gate(pytester: pytest.Pytester, *args: str, report: Path | None = None) -> tuple[pytest.RunResult, dict]:
    report = report or pytester.path / "report"
    result = pytester.runpytest_subprocess(
        str(REPO / "acceptance"), "-c", str(REPO / "pytest.ini"), "--rootdir", str(REPO), "-p", "no:cacheprovider",
        "--cache-dir", str(CACHE), "--report", str(report), "--benchmark-disable", *args, timeout=1200)
    data = json.loads((report / "report.json").read_text()) if (report / "report.json").exists() else {}
    return result, data


def outcomes(data: dict) -> dict[str, str]:
    """test function name (with params) -> outcome, over all gates."""
    out: dict[str, str] = {}
    for verdict in data["verdicts"].values():
        for t in verdict["tests"]:
            out[t["test"].split("::", 1)[1]] = t["outcome"]
    return out


def messages(data: dict) -> dict[str, str]:
    return {t["test"].split("::", 1)[1]: t["message"] for v in data["verdicts"].values() for t in v["tests"]}


# -- the demo submission, taken from the shared cache -----------------------------------------------
@pytest.fixture(scope="module")
def demo() -> dict[str, Path]:
    from intrada.artifacts import demo_entry, onnx_export_entry
    from intrada.cache import ArtifactCache

    cache = ArtifactCache(CACHE)
    root = demo_entry(cache)
    return {"root": root, "weights": root / "checkpoint.pth", "cityscapes": root / "cityscapes",
            "thresholds": root / "thresholds.toml", "onnx": onnx_export_entry(cache, root / "checkpoint.pth")}


def real_path_args(demo: dict[str, Path]) -> list[str]:
    return ["--weights", str(demo["weights"]), "--cityscapes", str(demo["cityscapes"]),
            "--thresholds", str(demo["thresholds"])]


GATES = "parity or accuracy"


@pytest.fixture(scope="module")
def default_run(demo: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`pytest acceptance -m "parity or accuracy"` with no options: the embedded submission."""
    pytester_dir = tmp_path_factory.mktemp("default-run")
    import subprocess
    import sys

    report = pytester_dir / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "acceptance"), "-c", str(REPO / "pytest.ini"), "--rootdir",
         str(REPO), "-p", "no:cacheprovider", "--cache-dir", str(CACHE), "--report", str(report), "-m", GATES],
        cwd=pytester_dir, capture_output=True, text=True, timeout=1200)
    return {"rc": proc.returncode, "stdout": proc.stdout, "report": json.loads((report / "report.json").read_text())}


def test_embedded_submission_passes_every_gate(default_run: dict) -> None:
    assert default_run["rc"] == 0, default_run["stdout"][-3000:]
    data = default_run["report"]
    assert data["verdicts"]["parity"]["verdict"] == "PASS"
    assert data["verdicts"]["accuracy"]["verdict"] == "PASS"
    acc = accuracy(data, "onnxruntime")
    assert acc["miou"] > 85.0 and acc["images"] == 8 and acc["certified"] is False
    assert "not certified: subset" in default_run["stdout"]
    skipped = {t["test"].split("::", 1)[1]: t["message"] for v in data["verdicts"].values() for t in v["tests"]
               if t["outcome"] == "skipped"}
    assert "no --dumps DIR: recorded device outputs are not judged" in skipped["test_device_dumps_miou"]
    assert {"artifacts.checkpoint", "artifacts.onnx", "artifacts.bins"} <= set(data["sections"])
    assert len(data["sections"]["artifacts.onnx"]["sha256"]) == 64


def test_real_weights_on_the_demo_split_cannot_pass_the_accuracy_gate(pytester: pytest.Pytester, demo: dict) -> None:
    """--weights without --cityscapes: an mIoU on the synthetic split would be meaningless, so the
    accuracy test skips; the accuracy gate was asked for (-m accuracy, --weights), so the run fails."""
    result, data = run_gate(pytester, "-m", "accuracy", "--weights", str(demo["weights"]))
    assert outcomes(data)["test_onnxruntime_miou"] == "skipped"
    assert "means nothing: pass --cityscapes ROOT" in messages(data)["test_onnxruntime_miou"]
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert data["verdicts"]["accuracy"]["breaks_run"] and not data["exit_ok"]
    result.stdout.re_match_lines([r"accuracy +NOT JUDGED \(required: -m 'accuracy', --weights\): the accuracy of "
                                  r"submitted weights on the synthetic demo split means nothing.*"])


def test_a_required_gate_whose_tests_all_skip_fails_the_run(pytester: pytest.Pytester, demo: dict) -> None:
    """The general rule: parity passes, but perf (selected, benchmarks disabled) and om (--require,
    no Ascend tool here) judged nothing: exit code 1, each with its reason, in the report too."""
    result, data = run_gate(pytester, "-m", "parity or perf", "--require", "om", "--batch-sizes", "1",
                            "-k", "not openvino")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()[-3000:]
    gates = data["verdicts"]
    assert gates["parity"]["verdict"] == "PASS" and not gates["parity"]["breaks_run"]
    assert gates["perf"]["breaks_run"] and "pytest-benchmark is disabled" in gates["perf"]["reason"]
    assert gates["om"]["breaks_run"] and gates["om"]["required_by"] == ["--require"]
    assert gates["om"]["reason"].startswith("no Ascend om to judge")  # test_om_throughput is perf and om
    result.stdout.re_match_lines([r"perf +NOT JUDGED \(required: -m 'parity or perf'\): pytest-benchmark is disabled.*",
                                  r"om +NOT JUDGED \(required: --require\): no Ascend om to judge.*"])
    assert "| om | **NOT JUDGED (required)** | --require |" in (pytester.path / "report" / "report.md").read_text()


def test_demo_on_the_real_path_gives_the_same_verdict(pytester: pytest.Pytester, demo: dict, default_run: dict) -> None:
    """`intrada demo` + --weights/--cityscapes/--thresholds: nothing is special-cased for the demo."""
    result, data = run_gate(pytester, "-m", GATES, *real_path_args(demo))
    assert result.ret == 0, result.stdout.str()[-3000:]
    assert outcomes(data) == outcomes(default_run["report"])
    assert accuracy(data, "onnxruntime")["miou"] == accuracy(default_run["report"], "onnxruntime")["miou"]


def test_subset_is_not_certified_without_permission(pytester: pytest.Pytester, demo: dict) -> None:
    """--max-images on a thresholds file that does not allow subsets: the accuracy gate fails."""
    strict = pytester.path / "strict.toml"
    strict.write_text(demo["thresholds"].read_text().replace(
        'allow_subset = { value = true', 'allow_subset = { value = false'))
    result, data = run_gate(pytester, "-m", "accuracy", "--weights", str(demo["weights"]), "--cityscapes",
                            str(demo["cityscapes"]), "--thresholds", str(strict), "--max-images", "2")
    assert result.ret == 1
    assert outcomes(data)["test_onnxruntime_miou"] == "failed"
    assert "not certified: subset (2 of 500 val images)" in messages(data)["test_onnxruntime_miou"]


# -- ONNX mutants ------------------------------------------------------------------------------------
def _export_raw(model: Any, path: Path) -> Path:
    """torch.onnx.export without our interface check (the mutant must reach the gate)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, *protocol.INPUT_SHAPE_CHW),), str(path),
                          input_names=[protocol.ONNX_INPUT_NAME], output_names=list(protocol.ONNX_OUTPUT_NAMES),
                          dynamic_axes={protocol.ONNX_INPUT_NAME: {0: "batch"},
                                        **{n: {0: "batch"} for n in protocol.ONNX_OUTPUT_NAMES}},
                          opset_version=protocol.DEFAULT_OPSET, dynamo=False)
    return path


@pytest.fixture(scope="module")
def mutant_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutants")


def test_onnx_with_swapped_outputs_fails_parity_and_accuracy(pytester: pytest.Pytester, demo: dict,
                                                              mutant_dir: Path) -> None:
    import onnx

    model = onnx.load(str(demo["onnx"]))
    outs = list(model.graph.output)
    del model.graph.output[:]
    model.graph.output.extend([outs[1], outs[0]])
    path = mutant_dir / "swapped.onnx"
    onnx.save(model, str(path))
    result, data = run_gate(pytester, "-m", GATES, *real_path_args(demo), "--onnx", str(path))
    o = outcomes(data)
    assert o["test_onnx_well_formed"] == "passed"
    assert o["test_onnxruntime_matches_pytorch"] == "failed"
    assert o["test_onnxruntime_miou"] == "failed"
    assert "below the threshold" in messages(data)["test_onnxruntime_miou"]
    assert result.ret == 1


def test_onnx_from_perturbed_weights_fails_parity_only(pytester: pytest.Pytester, demo: dict, mutant_dir: Path) -> None:
    import torch

    from intrada.checkpoint import load_model

    model, _ = load_model(demo["weights"])
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            # 1% of each tensor's spread: mIoU stays ~84 (above 80), logits move by ~0.3
            p.add_(torch.randn(p.shape, generator=gen) * 0.01 * float(p.std()))
    path = _export_raw(model, mutant_dir / "perturbed.onnx")
    result, data = run_gate(pytester, "-m", GATES, *real_path_args(demo), "--onnx", str(path))
    o = outcomes(data)
    assert o["test_onnxruntime_matches_pytorch"] == "failed", messages(data)
    assert "max|diff|/scale" in messages(data)["test_onnxruntime_matches_pytorch"]
    assert o["test_onnx_well_formed"] == "passed"
    assert o["test_onnxruntime_miou"] == "passed", "the perturbation must be one only parity can see"


def test_onnx_with_floor_pooling_fails_well_formedness(pytester: pytest.Pytester, demo: dict, mutant_dir: Path) -> None:
    from intrada.checkpoint import load_model

    model, _ = load_model(demo["weights"], ceil_mode=False)
    path = _export_raw(model, mutant_dir / "floor.onnx")
    result, data = run_gate(pytester, "-m", GATES, *real_path_args(demo), "--onnx", str(path))
    o = outcomes(data)
    assert o["test_onnx_well_formed"] == "failed"
    assert "has shape ['batch', 19, 64, 128], expected [N, 19, 65, 129]" in messages(data)["test_onnx_well_formed"]
    assert o["test_onnxruntime_matches_pytorch"] == "error"
    assert o["test_onnxruntime_miou"] == "error"
    assert "Traceback" not in result.stdout.str()


# -- dump mutants ------------------------------------------------------------------------------------
def _bins(demo: dict, kind: str, out: Path) -> Path:
    """Preprocessed bins of the demo split: correct, RGB-ordered, or without the mean."""
    from intrada.cityscapes import list_samples
    from intrada.preprocess import load_resized_rgb, to_network_input

    out.mkdir(parents=True, exist_ok=True)
    for s in list_samples(demo["cityscapes"]):
        rgb = load_resized_rgb(s.image)
        if kind == "rgb":  # the flip forgotten: channels stay RGB, the BGR mean is still subtracted
            x = to_network_input(np.ascontiguousarray(rgb[:, :, ::-1]))
        elif kind == "nomean":
            x = np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32)
        else:
            x = to_network_input(rgb)
        x.astype(protocol.BIN_DTYPE).tofile(out / f"{s.name}.bin")
    return out


@pytest.fixture(scope="module")
def dumps(demo: dict, mutant_dir: Path) -> dict[str, Path]:
    """ONNX Runtime outputs (ais_bench layout) for correct, RGB and no-mean bins. The bins are read
    raw: intrada.preprocess.read_bins rightly refuses values outside the BGR-minus-mean range."""
    from intrada.dumps import write_dumps
    from intrada.runners.cpu import OnnxRuntimeRunner

    out = {}
    with OnnxRuntimeRunner(demo["onnx"]) as runner:
        for kind in ("good", "rgb", "nomean"):
            bins = _bins(demo, kind, mutant_dir / f"bins-{kind}")
            out[kind] = mutant_dir / f"dumps-{kind}"
            for f in sorted(bins.glob("*.bin")):
                x = np.fromfile(f, dtype=protocol.BIN_DTYPE).reshape(1, *protocol.INPUT_SHAPE_CHW)
                aux, main = runner.infer(x)
                write_dumps(out[kind], f.stem, aux[0], main[0])
    return out


def _derived(src: Path, dst: Path, rename: dict[str, str], keep: Any = None) -> Path:
    dst.mkdir()
    for f in sorted(src.glob("*.bin")):
        stem, idx = f.stem.rsplit("_", 1)
        if keep is not None and not keep(stem):
            continue
        shutil.copy(f, dst / f"{stem}_{rename[idx]}.bin")
    return dst


DUMP_GATES = "accuracy or om"


def _run_dumps(pytester: pytest.Pytester, dumps_dir: Path, *extra: str) -> tuple[pytest.RunResult, dict]:
    return run_gate(pytester, "-m", DUMP_GATES, "--dumps", str(dumps_dir), *extra)


def test_faithful_dumps_pass(pytester: pytest.Pytester, dumps: dict) -> None:
    result, data = _run_dumps(pytester, dumps["good"])
    o = outcomes(data)
    assert o["test_device_dumps_miou"] == "passed"
    assert o["test_om_matches_onnx[dumps]"] == "passed"
    assert result.ret == 0, result.stdout.str()[-3000:]


@pytest.mark.parametrize("kind", ["rgb", "nomean"])
def test_dumps_from_wrong_preprocessing_fail(pytester: pytest.Pytester, dumps: dict, kind: str) -> None:
    result, data = _run_dumps(pytester, dumps[kind])
    o = outcomes(data)
    assert o["test_device_dumps_miou"] == "failed"
    assert o["test_om_matches_onnx[dumps]"] == "failed"
    assert o["test_onnxruntime_miou"] == "passed"
    assert accuracy(data, "dumps")["miou"] < 30


def test_dumps_with_aux_as_main_fail(pytester: pytest.Pytester, dumps: dict, mutant_dir: Path) -> None:
    swapped = _derived(dumps["good"], mutant_dir / "dumps-aux", {"0": "1", "1": "0"})
    result, data = _run_dumps(pytester, swapped)
    o = outcomes(data)
    assert o["test_device_dumps_miou"] == "failed"
    assert o["test_om_matches_onnx[dumps]"] == "failed"
    assert o["test_onnxruntime_miou"] == "passed"


def test_dumps_for_half_the_images_fail(pytester: pytest.Pytester, dumps: dict, mutant_dir: Path) -> None:
    names = sorted({f.stem.rsplit("_", 1)[0] for f in dumps["good"].glob("*.bin")})
    half = _derived(dumps["good"], mutant_dir / "dumps-half", {"0": "0", "1": "1"}, keep=set(names[:4]).__contains__)
    result, data = _run_dumps(pytester, half)
    o = outcomes(data)
    assert o["test_device_dumps_miou"] in ("failed", "error")
    assert "missing" in messages(data)["test_device_dumps_miou"]
    assert o["test_onnxruntime_miou"] == "passed"
    assert "Traceback" not in result.stdout.str()


def test_dumps_with_nan_fail_naming_the_file(pytester: pytest.Pytester, dumps: dict, mutant_dir: Path) -> None:
    bad = _derived(dumps["good"], mutant_dir / "dumps-nan", {"0": "0", "1": "1"})
    victim = sorted(bad.glob("*_1.bin"))[2]
    data = np.fromfile(victim, dtype=np.float32)
    data[100:110] = np.nan
    data.tofile(victim)
    result, rep = _run_dumps(pytester, bad)
    assert outcomes(rep)["test_device_dumps_miou"] in ("failed", "error")
    assert victim.name in messages(rep)["test_device_dumps_miou"]


def test_legacy_benchmark_naming_is_detected(pytester: pytest.Pytester, dumps: dict, mutant_dir: Path) -> None:
    legacy = _derived(dumps["good"], mutant_dir / "dumps-legacy", {"0": "1", "1": "2"})
    result, data = _run_dumps(pytester, legacy)
    assert outcomes(data)["test_device_dumps_miou"] == "passed"
    assert accuracy(data, "dumps")["miou"] == accuracy(data, "onnxruntime")["miou"]
