"""Proving the gate: the embedded submission passes, known-bad submissions fail on the right test.

Every scenario is a real `pytest acceptance ...` run judged through its exit code, its output and
the report.json it writes (tests/_gate.py). Most run in this process; two run as subprocesses, for
the exit code a shell sees: a required gate that judged nothing (exit 1 with no failed test) and a
known-bad submission (the swapped outputs). The embedded submission's own run is the session seed
(`pytest acceptance` in this process, which builds the artifacts every run here and acceptance/
reuses); its exit code as a new process is pinned by tests/test_warm_rerun.py.

Runs of the demo's default mode (no --weights/--cityscapes) use the session cache, the others their
own hard-linked copy of it. Mutant runs judge 2 images where the property allows (--max-images 2:
each mutant costs ONNX Runtime forwards of its own) and leave out the optional OpenVINO runner,
which no assertion here reads.

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

import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _gate import TINY, GateRun, GateSeed, run_gate
from _report import accuracy, results
from intrada.core import protocol

pytestmark = pytest.mark.slow

GATES = "parity or accuracy"
MUTANT = ("-m", GATES, "-k", "not openvino", "--max-images", "2")


def test_embedded_submission_passes_every_gate(gate_seed: GateSeed) -> None:
    """`pytest acceptance` with no submission options (the session seed): the embedded submission."""
    run = gate_seed.default
    assert run.ret == 0, run.tail()
    data = run.report
    assert data["verdicts"]["parity"]["verdict"] == "PASS"
    assert data["verdicts"]["accuracy"]["verdict"] == "PASS"
    acc = accuracy(data, "onnxruntime")
    assert acc["miou"] > 85.0 and acc["images"] == 8 and acc["certified"] is False
    assert "not certified: subset" in run.stdout
    skipped = {name: t["message"] for name, t in run.tests.items() if t["outcome"] == "skipped"}
    assert "no --dumps DIR: recorded device outputs are not judged" in skipped["test_device_dumps_miou"]
    assert {"artifacts.checkpoint", "artifacts.onnx", "artifacts.bins"} <= set(data["sections"])
    assert len(data["sections"]["artifacts.onnx"]["sha256"]) == 64


def test_real_weights_on_the_demo_split_cannot_pass_the_accuracy_gate(tmp_path: Path,
                                                                      gate_seed: GateSeed) -> None:
    """--weights without --cityscapes: an mIoU on the synthetic split would be meaningless, so the
    accuracy test skips; the accuracy gate was asked for (-m accuracy, --weights), so the run fails."""
    run = run_gate(tmp_path, "--benchmark-disable", "-m", "accuracy", "--weights", str(gate_seed.weights),
                   cache=gate_seed.cache)
    assert run.outcomes()["test_onnxruntime_miou"] == "skipped"
    assert "means nothing: pass --cityscapes ROOT" in run.messages()["test_onnxruntime_miou"]
    assert run.ret == pytest.ExitCode.TESTS_FAILED
    assert run.report["verdicts"]["accuracy"]["breaks_run"] and not run.report["exit_ok"]
    assert run.result is not None
    run.result.stdout.re_match_lines([r"accuracy +NOT JUDGED \(required: -m 'accuracy', --weights\): the accuracy of "
                                      r"submitted weights on the synthetic demo split means nothing.*"])


def test_a_required_gate_whose_tests_all_skip_fails_the_run(tmp_path: Path, tiny_seed: GateSeed) -> None:
    """The general rule, as a shell sees it (subprocess): parity passes, but perf (selected, benchmarks
    disabled) and om (--require, no Ascend tool here) judged nothing: exit code 1, each with its
    reason, in the report too. On TinyIntraDA: the point is the plugin's exit status."""
    report = tmp_path / "report"
    run = run_gate(tmp_path, "--benchmark-disable", "-m", "parity or perf", "--require", "om", "--batch-sizes", "1",
                   "-k", "not openvino", cache=tiny_seed.cache, report=report, subprocess=True, env=TINY)
    assert run.ret == pytest.ExitCode.TESTS_FAILED, run.tail()
    gates = run.report["verdicts"]
    assert gates["parity"]["verdict"] == "PASS" and not gates["parity"]["breaks_run"]
    assert gates["perf"]["breaks_run"] and "pytest-benchmark is disabled" in gates["perf"]["reason"]
    assert gates["om"]["breaks_run"] and gates["om"]["required_by"] == ["--require"]
    assert gates["om"]["reason"].startswith("no Ascend om to judge")  # test_om_throughput is perf and om
    assert run.result is not None
    run.result.stdout.re_match_lines([
        r"perf +NOT JUDGED \(required: -m 'parity or perf'\): pytest-benchmark is disabled.*",
        r"om +NOT JUDGED \(required: --require\): no Ascend om to judge.*"])
    assert "| om | **NOT JUDGED (required)** | --require |" in (report / "report.md").read_text()


def test_demo_on_the_real_path_gives_the_same_verdict(tmp_path: Path, gate_seed: GateSeed,
                                                      own_cache: Path) -> None:
    """`intrada demo` + --weights/--cityscapes/--thresholds: nothing is special-cased for the demo.
    The default run is the seed (every gate); its parity and accuracy tests are what -m selects here."""
    run = run_gate(tmp_path, "--benchmark-disable", "-m", GATES, *gate_seed.real_args(), cache=own_cache)
    assert run.ret == 0, run.tail()
    default = gate_seed.default.report["verdicts"]
    expected = {t["test"].split("::", 1)[1]: t["outcome"] for g in ("parity", "accuracy") for t in default[g]["tests"]}
    assert run.outcomes() == expected
    assert accuracy(run.report, "onnxruntime")["miou"] == accuracy(gate_seed.default.report, "onnxruntime")["miou"]


def test_parity_alone_runs_onnx_runtime_on_the_parity_images_only(tmp_path: Path, gate_seed: GateSeed,
                                                                  own_cache: Path) -> None:
    """-m parity reads ONNX Runtime's outputs on the 2 parity images only: it runs on those, not on
    the 8 images of the split (on a 500-image split: seconds instead of ~35 min). Here everything is
    a cache hit: the seed computed those 2 images (content-keyed outputs), nothing is built."""
    from intrada.cache.events import read_events

    run = run_gate(tmp_path, "--benchmark-disable", "-m", "parity", "-k", "not openvino", *gate_seed.real_args(),
                   cache=own_cache)
    assert run.ret == 0, run.tail()
    plan = run.report["sections"]["plan"]
    assert plan["parity_only"] and plan["images"] == 8 and plan["onnx_indices"] == [0, 1], plan
    assert ("intrada gate: plan (for the selected tests): ONNX Runtime on 2 of 8 images (~" in run.stdout
            and "s): only parity tests read ONNX Runtime's outputs: the 2 parity images" in run.stdout), run.stdout[:3000]
    assert [e for e in read_events(own_cache) if e["event"] == "build"] == []
    # with the ONNX mIoU selected too, ONNX Runtime covers the split again
    both = run_gate(tmp_path, "--benchmark-disable", "-m", "parity or accuracy", "-k", "not openvino",
                    *gate_seed.real_args(), cache=own_cache)
    assert not both.report["sections"]["plan"]["parity_only"] and both.report["sections"]["plan"]["onnx_images"] == 8


def test_subset_is_not_certified_without_permission(tmp_path: Path, gate_seed: GateSeed,
                                                    own_cache: Path) -> None:
    """--max-images on a thresholds file that does not allow subsets: the accuracy gate fails."""
    strict = tmp_path / "strict.toml"
    strict.write_text(gate_seed.thresholds.read_text().replace(
        'allow_subset = { value = true', 'allow_subset = { value = false'))
    run = run_gate(tmp_path, "--benchmark-disable", "-m", "accuracy", "--weights", str(gate_seed.weights),
                   "--cityscapes", str(gate_seed.cityscapes), "--thresholds", str(strict), "--max-images", "2",
                   cache=own_cache)
    assert run.ret == 1
    assert run.outcomes()["test_onnxruntime_miou"] == "failed"
    assert "not certified: subset (2 of 500 val images)" in run.messages()["test_onnxruntime_miou"]


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


def _perturbed_onnx(src: Path, dst: Path, *, fraction: float, seed: int, only: Any = None) -> Path:
    """``src`` with its float32 weight initializers (the BatchNorm-folded conv weights and biases) moved
    by N(0, (fraction x the tensor's std)^2), one generator over them in graph order; ``only(graph)``
    names the one initializer to move instead of all."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    name = only(model.graph) if only is not None else None
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if (name is None or init.name == name) and w.dtype == np.float32 and w.size > 1:
            moved = w + rng.standard_normal(w.shape).astype(np.float32) * np.float32(fraction * w.std())
            init.CopyFrom(numpy_helper.from_array(moved.astype(np.float32), init.name))
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="module")
def mutant_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutants")


def test_onnx_with_swapped_outputs_fails_parity_and_accuracy(tmp_path: Path, gate_seed: GateSeed,
                                                              own_cache: Path, mutant_dir: Path) -> None:
    """A known-bad submission as a shell sees it (subprocess): exit code 1."""
    import onnx

    model = onnx.load(str(gate_seed.onnx))
    outs = list(model.graph.output)
    del model.graph.output[:]
    model.graph.output.extend([outs[1], outs[0]])
    path = mutant_dir / "swapped.onnx"
    onnx.save(model, str(path))
    run = run_gate(tmp_path, "--benchmark-disable", *MUTANT, *gate_seed.real_args(), "--onnx", str(path),
                   cache=own_cache, subprocess=True)
    o = run.outcomes()
    assert o["test_onnx_well_formed"] == "passed"
    assert o["test_onnxruntime_matches_pytorch"] == "failed"
    # where: read from the stored outputs (no layer diff: every layer agrees, only the order differs)
    assert ("where: onnxruntime's output 0 is the main head and output 1 the aux head"
            in run.messages()["test_onnxruntime_matches_pytorch"])
    assert o["test_onnxruntime_miou"] == "failed"
    assert "below the threshold" in run.messages()["test_onnxruntime_miou"]
    assert run.ret == 1


def test_onnx_from_perturbed_weights_fails_parity_only(tmp_path: Path, gate_seed: GateSeed,
                                                       own_cache: Path, mutant_dir: Path) -> None:
    """Every weight of the exported graph (its initializers: the BatchNorm-folded conv weights and
    biases) moved by 1% of its tensor's spread: the logits move by ~0.3, the mIoU stays above the
    threshold, and only parity can see it. Edited in the ONNX, so no second export is needed."""
    path = _perturbed_onnx(gate_seed.onnx, mutant_dir / "perturbed.onnx", fraction=0.01, seed=1)
    run = run_gate(tmp_path, "--benchmark-disable", *MUTANT, *gate_seed.real_args(), "--onnx", str(path),
                   cache=own_cache)
    o = run.outcomes()
    assert o["test_onnxruntime_matches_pytorch"] == "failed", run.messages()
    assert "max|diff|/scale" in run.messages()["test_onnxruntime_matches_pytorch"]
    assert o["test_onnx_well_formed"] == "passed"
    assert o["test_onnxruntime_miou"] == "passed", "the perturbation must be one only parity can see"


def test_one_perturbed_layer4_conv_fails_parity_naming_that_layer(tmp_path: Path, gate_seed: GateSeed,
                                                                  own_cache: Path, mutant_dir: Path) -> None:
    """One conv inside layer4 perturbed by 5% of its weights' spread: the main head moves by ~1e-4
    of its scale, which the old fixed limit (1e-3) let through. The noise-derived limit (10 x the
    float32 floor measured in the run) fails it, and the failure names the layer where it starts."""
    path = _perturbed_onnx(gate_seed.onnx, mutant_dir / "layer4_conv.onnx", fraction=0.05, seed=0,
                           only=lambda graph: [n for n in graph.node if n.op_type == "Conv"
                                               and n.name.startswith("/layer4/")][3].input[1])
    report = tmp_path / "report"
    run = run_gate(tmp_path, "--benchmark-disable", "-m", "parity", "-k", "matches_pytorch", *gate_seed.real_args(),
                   "--onnx", str(path), "--max-images", "2", cache=own_cache, report=report)
    assert run.outcomes()["test_onnxruntime_matches_pytorch"] == "failed"
    message = run.messages()["test_onnxruntime_matches_pytorch"]
    assert "main: max|diff|/scale" in message and "where: first diverging layer: layer4.0.conv3" in message
    (verdict,) = results(run.report, gate="parity", subject="onnx")
    limits = verdict["details"]["limits"]
    assert limits["max_abs_over_scale"] < 1e-4 and not limits["bound_by_outer"]  # derived, far under 1e-3
    assert verdict["details"]["layer_diff"]["first"].startswith("layer4.0.conv3")
    assert "### Layer diff: first diverging layer: **layer4.0.conv3" in (report / "report.md").read_text()


def test_onnx_with_floor_pooling_fails_well_formedness(tmp_path: Path, gate_seed: GateSeed, own_cache: Path,
                                                       mutant_dir: Path, toy_factory: Any) -> None:
    """The conftest toy network (IntraDA's interface in a few layers) exported with ceil_mode=False
    pooling: 64x128 outputs. Every consumer of the ONNX errors before running it, so the toy stands
    for the full model here at a fraction of an export's cost."""
    path = _export_raw(toy_factory(ceil_mode=False), mutant_dir / "floor.onnx")
    run = run_gate(tmp_path, "--benchmark-disable", *MUTANT, *gate_seed.real_args(), "--onnx", str(path),
                   cache=own_cache)
    o = run.outcomes()
    assert o["test_onnx_well_formed"] == "failed"
    assert "has shape ['batch', 19, 64, 128], expected [N, 19, 65, 129]" in run.messages()["test_onnx_well_formed"]
    assert o["test_onnxruntime_matches_pytorch"] == "error"
    assert o["test_onnxruntime_miou"] == "error"
    assert "Traceback" not in run.stdout


# -- dump mutants ------------------------------------------------------------------------------------
# Default mode (the embedded demo judged with --dumps): on the session cache, whose ONNX Runtime
# outputs of the demo split are the faithful dumps. Wrong preprocessing needs ONNX Runtime on wrong
# bins, so those two judge the first image (--max-images 1); the rest judge all 8. With --dumps the
# run plan runs ONNX Runtime on a sample only and its mIoU is then not judged; --onnx-accuracy full
# keeps it judged (the ONNX accuracy these runs must pass) at no cost: the seed has those outputs.
def _bins(gate_seed: GateSeed, kind: str, out: Path, images: int) -> Path:
    """Preprocessed bins of the first ``images`` demo images, RGB-ordered or without the mean."""
    from intrada.dataset.cityscapes import list_samples
    from intrada.dataset.preprocess import load_resized_rgb, to_network_input

    out.mkdir(parents=True, exist_ok=True)
    for s in list_samples(gate_seed.cityscapes)[:images]:
        rgb = load_resized_rgb(s.image)
        if kind == "rgb":  # the flip forgotten: channels stay RGB, the BGR mean is still subtracted
            x = to_network_input(np.ascontiguousarray(rgb[:, :, ::-1]))
        else:  # nomean
            x = np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32)
        x.astype(protocol.BIN_DTYPE).tofile(out / f"{s.name}.bin")
    return out


@pytest.fixture(scope="module")
def dumps(gate_seed: GateSeed, mutant_dir: Path) -> dict[str, Path]:
    """Device-output dumps (ais_bench layout) of the demo: "good" are ONNX Runtime's outputs of the
    correct bins (the gate's own, from the seed: ais_bench layout already); "rgb" and "nomean" are
    ONNX Runtime outputs of wrongly preprocessed bins of the first image. Those bins are read raw:
    intrada.dataset.preprocess.read_bins rightly refuses values outside the BGR-minus-mean range."""
    from intrada.dataset.dumps import write_dumps
    from intrada.runners.cpu import OnnxRuntimeRunner

    ort_entry = Path(gate_seed.default.report["overlays"][0]["logits"]).parent
    good = mutant_dir / "dumps-good"
    good.mkdir()
    for f in sorted(ort_entry.glob("*.bin")):
        shutil.copy(f, good / f.name)
    assert len(list(good.glob("*.bin"))) == 2 * 8
    out = {"good": good}
    with OnnxRuntimeRunner(gate_seed.onnx) as runner:
        for kind in ("rgb", "nomean"):
            bins = _bins(gate_seed, kind, mutant_dir / f"bins-{kind}", images=1)
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


def _run_dumps(tmp_path: Path, gate_seed: GateSeed, dumps_dir: Path, *extra: str) -> GateRun:
    return run_gate(tmp_path, "--benchmark-disable", "-m", DUMP_GATES, "--dumps", str(dumps_dir), "--onnx-accuracy",
                    "full", *extra, cache=gate_seed.cache)


def test_faithful_dumps_pass(tmp_path: Path, gate_seed: GateSeed, dumps: dict) -> None:
    run = _run_dumps(tmp_path, gate_seed, dumps["good"])
    o = run.outcomes()
    assert o["test_device_dumps_miou"] == "passed"
    assert o["test_om_matches_onnx[dumps]"] == "passed"
    assert run.ret == 0, run.tail()


@pytest.mark.parametrize("kind", ["rgb", "nomean"])
def test_dumps_from_wrong_preprocessing_fail(tmp_path: Path, gate_seed: GateSeed, dumps: dict,
                                             kind: str) -> None:
    run = _run_dumps(tmp_path, gate_seed, dumps[kind], "--max-images", "1")
    o = run.outcomes()
    assert o["test_device_dumps_miou"] == "failed"
    assert o["test_om_matches_onnx[dumps]"] == "failed"
    assert o["test_onnxruntime_miou"] == "passed"
    # measured on this image with onnxruntime 1.32 (RGB-ordered 18.96, no mean subtraction 13.19; on the first
    # 2 images 20.56 and 12.57, with torch 2.13 as an independent forward); the demo threshold is 80
    assert accuracy(run.report, "dumps")["miou"] == pytest.approx(MEASURED_1_IMAGE[kind], abs=0.5)


MEASURED_1_IMAGE = {"rgb": 18.96, "nomean": 13.19}


def test_dumps_with_aux_as_main_fail(tmp_path: Path, gate_seed: GateSeed, dumps: dict,
                                     mutant_dir: Path) -> None:
    swapped = _derived(dumps["good"], mutant_dir / "dumps-aux", {"0": "1", "1": "0"})
    run = _run_dumps(tmp_path, gate_seed, swapped)
    o = run.outcomes()
    assert o["test_device_dumps_miou"] == "failed"
    assert o["test_om_matches_onnx[dumps]"] == "failed"
    assert o["test_onnxruntime_miou"] == "passed"


def test_dumps_for_half_the_images_fail(tmp_path: Path, gate_seed: GateSeed, dumps: dict,
                                        mutant_dir: Path) -> None:
    names = sorted({f.stem.rsplit("_", 1)[0] for f in dumps["good"].glob("*.bin")})
    half = _derived(dumps["good"], mutant_dir / "dumps-half", {"0": "0", "1": "1"}, keep=set(names[:4]).__contains__)
    run = _run_dumps(tmp_path, gate_seed, half)
    o = run.outcomes()
    assert o["test_device_dumps_miou"] in ("failed", "error")
    assert "missing" in run.messages()["test_device_dumps_miou"]
    assert o["test_onnxruntime_miou"] == "passed"
    assert "Traceback" not in run.stdout


def test_dumps_with_nan_fail_naming_the_file(tmp_path: Path, gate_seed: GateSeed, dumps: dict,
                                             mutant_dir: Path) -> None:
    bad = _derived(dumps["good"], mutant_dir / "dumps-nan", {"0": "0", "1": "1"})
    victim = sorted(bad.glob("*_1.bin"))[2]
    data = np.fromfile(victim, dtype=np.float32)
    data[100:110] = np.nan
    data.tofile(victim)
    run = _run_dumps(tmp_path, gate_seed, bad)
    assert run.outcomes()["test_device_dumps_miou"] in ("failed", "error")
    assert victim.name in run.messages()["test_device_dumps_miou"]


def test_legacy_benchmark_naming_is_detected(tmp_path: Path, gate_seed: GateSeed, dumps: dict,
                                             mutant_dir: Path) -> None:
    legacy = _derived(dumps["good"], mutant_dir / "dumps-legacy", {"0": "1", "1": "2"})
    run = _run_dumps(tmp_path, gate_seed, legacy)
    assert run.outcomes()["test_device_dumps_miou"] == "passed"
    assert accuracy(run.report, "dumps")["miou"] == accuracy(run.report, "onnxruntime")["miou"]
