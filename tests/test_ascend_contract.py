"""Contract tests of the Ascend path, run against fakes of the Ascend tools (tests/fakes/).

The fakes follow the command lines, file layouts and APIs of atc, npu-smi, ais_bench (CLI and Python
API, in both generations: github.com/Ascend/tools and github.com/Ascend/msit, each fake citing the
source it imitates) and the legacy benchmark tool, run the om with ONNX Runtime, and misbehave on
request (INTRADA_FAKE_* variables, see tests/fakes/python/intrada_fake_npu.py). These tests prove
the command lines the gate builds, the files it reads, its skips, that the om gate fails a broken om
and passes a faithful one, and that it does so with either ais_bench generation: every test that runs
ais_bench takes the ``generation`` parameter (tests/_ascend_fakes.py).

They are contract tests: they say nothing about a real device, and every record made on a fake
says so (``contract_fake``, and "FAKE" in the device label).
"""
from __future__ import annotations

import json
import shutil
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _ascend_fakes import (DECLARED, DEFAULT_GENERATION, FAKE_ATC_BIN, FAKE_BIN, FAKE_ENV_VARS, FAKES, GENERATIONS,
                           acl_events, base_path, drop_fake_modules, fake_env, generation_path, tool_path)
from _report import results
from intrada.core import protocol
from intrada.ascend import aisbench, atc, parsers, pathrules, provenance, runners, tools
from intrada.ascend.device import AscendRunner, stage_inputs
from intrada.core.errors import ToolError
from intrada.runners.base import RunnerError


REPO = Path(__file__).resolve().parents[1]
_base_path = base_path
_drop_fake_modules = drop_fake_modules


@pytest.fixture
def no_ascend(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Ascend tool reachable: minimal PATH, no PYTHONPATH, no fake settings."""
    monkeypatch.setenv("PATH", _base_path())
    monkeypatch.delenv("PYTHONPATH", raising=False)
    for var in FAKE_ENV_VARS + ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def fake_npu_memo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One INTRADA_FAKE_NPU_MEMO for the session: the fake runtime computes each (om, input) once, and
    every misbehaviour mode is applied to those outputs."""
    return tmp_path_factory.mktemp("fake-npu-memo")


@pytest.fixture(params=GENERATIONS)
def generation(request: pytest.FixtureRequest) -> str:
    """The ais_bench generation the fakes present (tests/_ascend_fakes.py)."""
    return str(request.param)


def use_generation(monkeypatch: pytest.MonkeyPatch, generation: str, frontend: Path | None = None) -> None:
    """ais_bench of ``generation`` importable by subprocesses (PYTHONPATH) and by this process."""
    paths = generation_path(generation, frontend)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(map(str, paths)))
    for path in reversed(paths):
        monkeypatch.syspath_prepend(str(path))
    _drop_fake_modules()


@pytest.fixture
def fakes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, no_ascend: None, fake_npu_memo: Path):
    """Every fake reachable the way the real tools are: atc and npu-smi / benchmark on PATH, the
    ais_bench package of the test's ``generation`` (default: msit's, what is installed today)
    importable in this process and in subprocesses."""
    callspec = getattr(request.node, "callspec", None)
    gen = callspec.params.get("generation", DEFAULT_GENERATION) if callspec is not None else DEFAULT_GENERATION
    monkeypatch.setenv("INTRADA_FAKE_NPU_MEMO", str(fake_npu_memo))
    monkeypatch.setenv("PATH", tool_path())
    monkeypatch.setenv("INTRADA_CONTRACT_FAKES", DECLARED)  # the fakes run only where they are declared
    use_generation(monkeypatch, gen)
    yield monkeypatch
    _drop_fake_modules()


# ---------------------------------------------------------------------------------------------
# a toy model with the IntraDA interface, so the tool contracts are tested in milliseconds

def _toy_onnx(path: Path) -> Path:
    """image [N,3,512,1024] -> two [N,19,65,129] outputs (1x1 convs, stride 8, bottom/right pad 1)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((19, 3, 1, 1)) * 0.05).astype(np.float32), name)
             for name in ("w_aux", "w_main")]
    inits.append(numpy_helper.from_array(rng.standard_normal(19).astype(np.float32), "b"))
    conv = dict(kernel_shape=[1, 1], strides=[8, 8], pads=[0, 0, 1, 1])
    nodes = [helper.make_node("Conv", ["image", "w_aux", "b"], ["aux_logits"], **conv),
             helper.make_node("Conv", ["image", "w_main", "b"], ["main_logits"], **conv)]
    out = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 19, 65, 129])
           for n in ("aux_logits", "main_logits")]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                           ["batch", 3, 512, 1024])], out, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("toy")
    onnx_path = _toy_onnx(root / "toy.onnx")
    bins = root / "bins"
    bins.mkdir()
    rng = np.random.default_rng(1)
    names = [f"city_00000{i}_000019_leftImg8bit" for i in range(3)]
    for name in names:
        pixels = rng.integers(0, 256, protocol.INPUT_SHAPE_CHW).astype(np.float32)
        (pixels - protocol.MEAN_BGR[:, None, None]).astype(np.float32).tofile(bins / f"{name}.bin")
    return {"root": root, "onnx": onnx_path, "bins": bins, "names": names}


def _ort_outputs(onnx_path: Path, bins: Path, name: str, fp16: bool = True) -> list[np.ndarray]:
    """What a faithful om gives. force_fp16 (``fp16``): float16 input, weights and results, the
    convolution in float32 (the toy is one conv per head, so its result is the output, rounded once)."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    x = np.fromfile(bins / f"{name}.bin", dtype=np.float32).reshape(1, *protocol.INPUT_SHAPE_CHW)
    model = onnx.load(str(onnx_path))
    if fp16:
        x = x.astype(np.float16).astype(np.float32)
        for i, init in enumerate(model.graph.initializer):
            rounded = numpy_helper.to_array(init).astype(np.float16).astype(np.float32)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(rounded, init.name))
    outs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    return [o[0].astype(np.float16).astype(np.float32) if fp16 else o[0] for o in outs]


def _convert(toy: dict, batch_size: int, soc: str = "Ascend310P3", out: str = "om") -> Path:
    tool = tools.find_atc()
    assert tool is not None
    return atc.convert(tool.path, toy["onnx"], toy["root"] / out, batch_size, soc)


# ---------------------------------------------------------------------------------------------
# npu-smi

NPU_SMI_310P3 = """\
+--------------------------------------------------------------------------------------------------------+
| npu-smi 23.0.rc2                                 Version: 23.0.rc2                                     |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 4       310P3                 | OK              | NA           41                0     / 0             |
| 0       0                     | 0000:3B:00.0    | 0            1660 / 21527                            |
+===============================+=================+======================================================+
| 5       310P1                 | OK              | NA           43                0     / 0             |
| 0       1                     | 0000:86:00.0    | 0            1655 / 21527                            |
+===============================+=================+======================================================+
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Chip                  | Process id      | Process name             | Process memory(MB)        |
+===============================+=================+======================================================+
| No running processes found in NPU 4                                                                    |
+===============================+=================+======================================================+
"""

NPU_SMI_310_FOUR_CHIPS = """\
+------------------------------------------------------------------------------+
| npu-smi 20.2.0                       Version: 20.2.0                         |
+-------------------+-----------------+----------------------------------------+
| NPU     Name      | Health          | Power(W)          Temp(C)              |
| Chip    Device    | Bus-Id          | AICore(%)         Memory-Usage(MB)     |
+===================+=================+========================================+
| 1       310       | OK              | 12.8              45                   |
| 0       0         | 0000:05:00.0    | 0                 2703 / 8192          |
| 1       1         | 0000:06:00.0    | 0                 2703 / 8192          |
| 2       2         | 0000:07:00.0    | 0                 2703 / 8192          |
| 3       3         | 0000:08:00.0    | 0                 2703 / 8192          |
+===================+=================+========================================+
"""


def test_npu_smi_table_gives_the_chip_of_each_device() -> None:
    info = parsers.parse_npu_smi_info(NPU_SMI_310P3)
    assert info.version == "23.0.rc2"
    assert info.chip_name(0) == "310P3" and info.chip_name(1) == "310P1"
    with pytest.raises(ToolError, match=r"no device 7 \(devices: 0, 1\)"):
        info.chip_name(7)
    four = parsers.parse_npu_smi_info(NPU_SMI_310_FOUR_CHIPS)
    assert [(c.npu_id, c.name, c.chip_id, c.device_id) for c in four.chips] == [
        (1, "310", 0, 0), (1, "310", 1, 1), (1, "310", 2, 2), (1, "310", 3, 3)]
    assert four.chip_name(3) == "310"
    assert parsers.parse_npu_smi_info("command not found").chips == ()


def test_soc_version_always_carries_the_ascend_prefix() -> None:
    # the seed's bs16 atc line passed the bare chip name, which atc rejects
    assert tools.soc_version_of("310P3") == "Ascend310P3"
    assert tools.soc_version_of("Ascend310") == "Ascend310"
    with pytest.raises(ToolError, match="empty SoC version"):
        tools.soc_version_of(" ")


def test_fake_npu_smi_is_parsed_and_declared_as_fake(fakes) -> None:
    fakes.setenv("INTRADA_FAKE_NPU_CHIP", "310")
    fakes.setenv("INTRADA_FAKE_NPU_DEVICES", "2")
    info = tools.query_npu_smi()
    assert info is not None and info.version == "intrada-contract-fake"
    assert info.chip_name(1) == "310"
    assert "npu-smi" in provenance.declared_fakes()  # what labels records FAKE: the environment's word


@pytest.mark.parametrize("tool", ["npu-smi", "atc", "benchmark.x86_64"])
def test_an_undeclared_fake_refuses_to_run(fakes, tool: str) -> None:
    """Provenance is declared once, by the environment; a fake without that declaration never runs,
    so it can never be reported as a device."""
    fakes.delenv(provenance.ENV)
    proc = subprocess.run([tool, "info"] if tool == "npu-smi" else [tool], capture_output=True, text=True)
    assert proc.returncode == 3 and "contract-test fake refused to run" in proc.stderr
    fakes.setenv(provenance.ENV, "atc,npu-smi,ais_bench,benchmark,om")
    assert provenance.run_is_fake("ais_bench-cli") and provenance.run_is_fake("benchmark")
    assert provenance.declared_fakes({}) == () and not provenance.run_is_fake("benchmark", {})


# ---------------------------------------------------------------------------------------------
# atc

def test_atc_command_is_the_seeds(tmp_path: Path) -> None:
    cmd = atc.atc_command("atc", tmp_path / "intraDA_deeplabv2.onnx", tmp_path / "intraDA_deeplabv2_bs4", 4,
                          "Ascend310")
    assert cmd == ["atc", "--framework=5", f"--model={tmp_path}/intraDA_deeplabv2.onnx",
                   f"--output={tmp_path}/intraDA_deeplabv2_bs4", "--input_format=NCHW",
                   "--input_shape=image:4,3,512,1024", "--soc_version=Ascend310", "--log=error"]
    # the cache key holds the flags without the two paths
    assert atc.seed_flags(16, "Ascend310P3") == ["--framework=5", "--input_format=NCHW",
                                                 "--input_shape=image:16,3,512,1024", "--soc_version=Ascend310P3",
                                                 "--log=error"]


def test_cann_version_is_read_from_the_toolkit_install_info(fakes) -> None:
    found = tools.find_atc()
    assert found is not None and found.path == FAKE_ATC_BIN / "atc"
    assert found.version == "0.0.0.intrada-contract-fake"
    assert found.version_source.endswith("ascend_toolkit_install.info")


@pytest.mark.parametrize("flags, message", [
    (["--framework=5", "--model={onnx}", "--output={out}", "--input_shape=image:1,3,512,1024", "--soc_version=310P3"],
     r"Value \[310P3\] for parameter \[--soc_version\] is invalid"),
    (["--framework=5", "--model={onnx}", "--output={out}", "--input_shape=image:1,3,512,1024"],
     r"Argument \[--soc_version\] must be set"),
    (["--framework=5", "--model={onnx}", "--output={out}", "--input_shape=input:1,3,512,1024",
      "--soc_version=Ascend310"], r"opname \[input\] is not exist in model"),
    (["--framework=5", "--model={onnx}", "--output={out}", "--input_shape=image:1,3,1024,512",
      "--soc_version=Ascend310"], r"does not match the model's image shape"),
    (["--framework=5", "--model={onnx}", "--output={out}", "--input_shape=image:-1,3,512,1024",
      "--soc_version=Ascend310"], r"-1 needs --dynamic_batch_size"),
    (["--framework=5", "--model={onnx}", "--output={out}", "--input_shape", "image:1,3,512,1024",
      "--soc_version=Ascend310"], r"atc takes --name=value"),
    (["--framework=5", "--model={onnx}", "--output={out}", "--soc_version=Ascend310", "--batch=1"],
     r"unknown command line flag 'batch'"),
    (["--framework=3", "--model={onnx}", "--output={out}", "--soc_version=Ascend310"], r"converts ONNX only"),
], ids=["bare-chip-name", "no-soc", "wrong-input-name", "wrong-dims", "dynamic-batch", "no-equals", "unknown-flag",
        "tensorflow"])
def test_fake_atc_rejects_what_atc_rejects(fakes, toy: dict, tmp_path: Path, flags: list[str], message: str) -> None:
    """The fake is strict like atc, so the gate's own command line is really checked by it."""
    argv = [f.format(onnx=toy["onnx"], out=tmp_path / "m") for f in flags]
    proc = subprocess.run(["atc", *argv], capture_output=True, text=True)
    assert proc.returncode == 1
    assert re.search(message, proc.stdout), proc.stdout
    assert "ATC run failed" in proc.stdout and not list(tmp_path.glob("*.om"))


def test_atc_writes_a_static_om_for_the_seed_command(fakes, toy: dict) -> None:
    om = _convert(toy, 4, "Ascend310")
    assert om == toy["root"] / "om" / "intraDA_deeplabv2_bs4.om"
    assert tools.om_batch_size_from_name(om) == 4
    header = json.loads(om.read_bytes().split(b"\n", 2)[1])
    assert header["inputs"] == [{"name": "image", "shape": [4, 3, 512, 1024]}]
    assert header["soc_version"] == "Ascend310" and header["precision_mode"] == "force_fp16"
    assert header["atc_argv"] == atc.atc_command("atc", toy["onnx"].absolute(), om.with_suffix(""), 4,
                                                 "Ascend310")[1:]
    log = (om.parent / "atc_bs4.log").read_text()
    assert "ATC run success" in log and "--input_shape=image:4,3,512,1024" in log


def test_atc_failure_quotes_the_log_tail_and_keeps_the_log(fakes, toy: dict, tmp_path: Path) -> None:
    fakes.setenv("INTRADA_FAKE_ATC_FAIL", "Op[Conv_17] has no kernel for Ascend310P3")
    kept = tmp_path / "logs" / "atc_bs1_key.log"
    with pytest.raises(ToolError) as err:
        atc.convert(tools.find_atc().path, toy["onnx"], tmp_path / "build", 1, "Ascend310P3", keep_failed_log=kept)
    text = str(err.value)
    assert "exited with code 1" in text and "Op[Conv_17] has no kernel for Ascend310P3" in text
    assert "ATC run failed" in text and f"full log: {kept}" in text and "\n" not in text
    assert "E19999" in kept.read_text()


# ---------------------------------------------------------------------------------------------
# --om

def test_om_option_maps_batch_sizes_from_the_seed_names(tmp_path: Path) -> None:
    for name in ("intraDA_deeplabv2_bs1.om", "intraDA_deeplabv2_bs16_linux_x86_64.om"):
        (tmp_path / name).write_bytes(b"x")
    assert tools.resolve_om_option(tmp_path) == {1: tmp_path / "intraDA_deeplabv2_bs1.om",
                                                 16: tmp_path / "intraDA_deeplabv2_bs16_linux_x86_64.om"}
    (tmp_path / "model.om").write_bytes(b"x")
    with pytest.raises(ToolError, match=r"cannot tell the om's static batch size from its name.*_bs<N>\.om"):
        tools.resolve_om_option(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ToolError, match="holds no .om"):
        tools.resolve_om_option(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------
# runners

def _runner(kind: str, om: Path, batch_size: int) -> AscendRunner:
    return runners.make_runner(kind, om, batch_size=batch_size)


AIS_KINDS = ("ais_bench-api", "ais_bench-cli")
# every runner; the ais_bench ones with either generation
RUNNER_CASES = [pytest.param(k, g, id=f"{k}-{g}") for k in AIS_KINDS for g in GENERATIONS] + \
    [pytest.param("benchmark", DEFAULT_GENERATION, id="benchmark")]


@pytest.mark.parametrize("kind, generation", RUNNER_CASES)
def test_runner_reads_the_documented_outputs_and_the_tools_own_throughput(fakes, toy: dict, tmp_path: Path,
                                                                          kind: str, generation: str) -> None:
    """bs2 om, 3 images: the last batch is padded; per-sample files in the tool's naming; outputs
    are the model's (fp16-rounded); the throughput is the tool's 1000*bs/mean(NPU ms), whether the
    tool's times are durations (tools) or (start, end) pairs (msit)."""
    fakes.setenv("INTRADA_FAKE_NPU_MS", "40")  # NPU compute time per batch -> 1000 * 2 / 40 = 50 fps
    om = _convert(toy, 2)
    run = _runner(kind, om, 2).run_split(toy["bins"], toy["names"], tmp_path / "out")
    assert run.tool == kind and run.fake and run.batch_size == 2 and run.names == tuple(toy["names"])
    assert run.throughput == pytest.approx(50.0, rel=1e-4)
    expected_files = {f"{n}{suffix}" for n in toy["names"]
                      for suffix in ({"_1.bin", "_2.bin"} if kind == "benchmark" else {"_0.bin", "_1.bin"})}
    assert {p.name for p in run.dumps.iterdir()} == expected_files  # nothing for the padded sample
    assert run.convention == ("benchmark" if kind == "benchmark" else "ais_bench")
    dumps = run.open()
    for name in toy["names"]:
        aux, main = _ort_outputs(toy["onnx"], toy["bins"], name)
        np.testing.assert_array_equal(dumps.read(name, "aux"), aux)
        np.testing.assert_array_equal(dumps.read(name, "main"), main)
    staged = tmp_path / "out" / "inputs"
    if kind != "ais_bench-api":  # directory tools run real files, never symlinks, in a 0o750 folder
        assert sorted(p.name for p in staged.iterdir()) == sorted(f"{n}.bin" for n in toy["names"])
        assert not any(p.is_symlink() for p in staged.iterdir()) and stat.S_IMODE(staged.stat().st_mode) == 0o750
        assert all(pathrules.file_problem(str(p)) is None for p in staged.iterdir())
    if kind == "ais_bench-api":
        assert run.details["ais_bench_generation"] == generation
        assert run.details["ais_bench_interface"] == str(FAKES / f"ais_bench_{generation}" / "ais_bench" / "infer" /
                                                         "interface.py")
        assert run.details["ais_bench_version"] == "0.0.2" and run.details["aclruntime_version"] == "0.0.2"
        pairs = "(start, end) pairs: end - start" if generation == "msit" else "durations"
        assert run.throughput_field.endswith(f"exec_time_list ({pairs})")
        assert run.throughput_field.startswith("ais_bench 1000*batchsize/mean(NPU compute time) from InferSession."
                                               + ("summary()" if generation == "msit" else "sumary()"))
    if kind == "ais_bench-cli":
        out = tmp_path / "out"
        assert list(run.command) == [sys.executable, "-m", "ais_bench", "--model", str(om.resolve()), "--input",
                                     "inputs", "--output", ".", "--output_dirname", "bs2",
                                     "--device", "0"]  # no --batchsize: ais_bench reads it from the om
        assert run.details["cwd"] == str(out)  # relative folders: only [_A-Za-z0-9/.-], whatever out's path
        summary = json.loads((out / "bs2_summary.json").read_text())
        assert summary["args"][1:] == list(run.command[3:])  # what the tool received
        assert run.dumps == out / "bs2"
        assert run.details["ais_bench_cli_generation"] == generation
        assert run.details["ais_bench_cli_checks_paths"] is (generation == "msit")
    if kind == "benchmark":
        work = tmp_path / "out"
        info = work / "intraDA_deeplabv2_pre_bin_512_1024.info"
        assert list(run.command) == [str(tools.find_benchmark()), "-model_type=vision", "-device_id=0",
                                     "-batch_size=2", f"-om_path={om}", f"-input_text_path={info}",
                                     "-input_width=1024", "-input_height=512", "-output_binary=True",
                                     "-useDvpp=False"]
        assert run.dumps == work / "result" / "dumpOutput_device0"
        lines = info.read_text().split("\n")
        assert sorted(ln.split()[1] for ln in lines if ln) == sorted(str(staged / f"{n}.bin") for n in toy["names"])
        assert all(ln.endswith(" 512 1024") for ln in lines if ln)  # the seed's swapped width/height


def test_runner_interface_pads_and_splits_batches(fakes, toy: dict, generation: str) -> None:
    """The ais_bench Python API is the one device runner with a per-batch infer()."""
    om = _convert(toy, 2)
    batch = np.stack([np.fromfile(toy["bins"] / f"{n}.bin", dtype=np.float32).reshape(protocol.INPUT_SHAPE_CHW)
                      for n in toy["names"]])
    with _runner("ais_bench-api", om, 2) as runner:
        aux, main = runner.infer(batch)
    assert aux.shape == main.shape == (3, *protocol.OUTPUT_SHAPE_CHW)
    for i, name in enumerate(toy["names"]):
        ref_aux, ref_main = _ort_outputs(toy["onnx"], toy["bins"], name)
        np.testing.assert_array_equal(aux[i], ref_aux)
        np.testing.assert_array_equal(main[i], ref_main)


@pytest.mark.parametrize("kind", ["ais_bench-cli", "benchmark"])
def test_directory_tools_have_no_per_batch_infer(fakes, toy: dict, kind: str) -> None:
    """The CLI and the legacy tool run whole directories (run_split); a per-batch infer() would have
    to fake it with temporary files and a whole tool run per batch, so it says so instead."""
    batch = np.zeros((1, *protocol.INPUT_SHAPE_CHW), dtype=np.float32)
    with _runner(kind, _convert(toy, 1), 1) as runner, pytest.raises(RunnerError, match="runs whole directories"):
        runner.infer(batch)


def test_fake_misbehaviour_is_what_the_gate_must_catch(fakes, toy: dict, generation: str) -> None:
    """swap writes the heads in the wrong order; noise and perturb change the logits."""
    om = _convert(toy, 1)
    x = np.fromfile(toy["bins"] / f"{toy['names'][0]}.bin", dtype=np.float32).reshape(1, *protocol.INPUT_SHAPE_CHW)
    ref_aux, ref_main = _ort_outputs(toy["onnx"], toy["bins"], toy["names"][0])
    got = {}
    for mode in ("fp16", "exact", "swap", "noise", "perturb"):
        fakes.setenv("INTRADA_FAKE_NPU_OUTPUTS", mode)
        with _runner("ais_bench-api", om, 1) as runner:
            got[mode] = runner.infer(x)
    np.testing.assert_array_equal(got["fp16"][1][0], ref_main)
    np.testing.assert_array_equal(got["swap"][0][0], ref_main)
    np.testing.assert_array_equal(got["swap"][1][0], ref_aux)
    exact_main = _ort_outputs(toy["onnx"], toy["bins"], toy["names"][0], fp16=False)[1]
    np.testing.assert_allclose(got["exact"][1][0], exact_main, rtol=1e-6, atol=1e-5)
    assert not np.allclose(got["exact"][1][0], ref_main, rtol=0, atol=0)  # fp16 rounding is visible
    assert not np.allclose(got["noise"][1][0], ref_main, rtol=0.01)
    assert (got["perturb"][1][0].argmax(0) != ref_main.argmax(0)).mean() > 0.05


@pytest.mark.parametrize("kind, generation", RUNNER_CASES)
def test_tool_failure_is_a_one_line_tool_error(fakes, toy: dict, tmp_path: Path, kind: str, generation: str) -> None:
    om = _convert(toy, 1)
    fakes.setenv("INTRADA_FAKE_NPU_FAIL", "aclrtMalloc failed, error code 207001")
    with pytest.raises(ToolError) as err:
        _runner(kind, om, 1).run_split(toy["bins"], toy["names"][:1], tmp_path / "out")
    text = str(err.value)
    assert "aclrtMalloc failed, error code 207001" in text and "\n" not in text
    if kind != "ais_bench-api":
        assert "exited with code 1" in text and "full log: " in text
    else:
        assert text.startswith(f"ais_bench ({generation} generation) InferSession.__init__(0, ")
        assert "RuntimeError: aclrtMalloc failed" in text


@pytest.mark.parametrize("kind", AIS_KINDS)
def test_a_renamed_om_cannot_claim_another_batch_size(fakes, toy: dict, tmp_path: Path, kind: str,
                                                      generation: str) -> None:
    """A bs1 om copied to <name>_bs4.om: ais_bench would report 4x its throughput if it were told
    --batchsize 4. The runners read the batch from the om and name both numbers."""
    renamed = tmp_path / "intraDA_deeplabv2_bs4.om"
    shutil.copyfile(_convert(toy, 1), renamed)
    assert tools.resolve_om_option(renamed) == {4: renamed}  # what the name claims
    with pytest.raises(ToolError, match=r"the om's batch size is 1 \(.*\) but it was given as bs4.*4x its real"):
        _runner(kind, renamed, 4).run_split(toy["bins"], toy["names"], tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# ais_bench generations: what differs, and how the gate handles it (intrada.ascend.aisbench)

def test_exec_time_entries_are_read_by_their_shape() -> None:
    """tools: durations; msit: (start, end) pairs, whose durations are end - start (its own summary's
    arithmetic); anything else is the tool's line, never a TypeError."""
    assert aisbench.npu_compute_ms([40.0, 41.5], "t") == [40.0, 41.5]
    assert aisbench.npu_compute_ms([(100.0, 140.0), (140.5, 182.0)], "t") == [40.0, 41.5]
    assert aisbench.npu_compute_ms([np.float32(20.0)], "t") == [20.0]
    assert aisbench.throughput_fps(2, [40.0, 40.0]) == (50.0, 40.0)
    for bad, message in ([[(1.0, 2.0, 3.0)], "neither a duration nor a \\(start, end\\) pair"],
                         [["40"], "neither a duration"], [[40.0, (1.0, 2.0)], "mixes durations and"],
                         [[], "no usable NPU compute times"], [[(5.0, 5.0)], "no usable NPU compute times"],
                         [[True], "neither a duration"]):
        with pytest.raises(ToolError, match=message):
            aisbench.npu_compute_ms(bad, "ais_bench InferSession.summary()")


def test_frontend_features_decide_the_generation_not_its_version(fakes, generation: str) -> None:
    """Both generations' wheels are ais_bench 0.0.2 / aclruntime 0.0.2: the gate tells them apart by
    the methods InferSession has."""
    import ais_bench.infer.interface as interface

    front = aisbench.detect_frontend(interface)
    assert (front.generation, front.version, front.aclruntime_version) == (generation, "0.0.2", "0.0.2")
    assert (front.summary, front.reset) == (("summary", "reset_summaryinfo") if generation == "msit" else
                                            ("sumary", "reset_sumaryinfo"))
    assert front.free_resource is front.static_finalize is front.dymbatch_mode is (generation == "msit")
    assert front.module_file == interface.__file__ and front.aclruntime_file == sys.modules["aclruntime"].__file__
    package = aisbench.find_package()
    assert package.inference_tool and package.layout == generation and package.checks_paths is (generation == "msit")
    assert package.location == FAKES / f"ais_bench_{generation}" / "ais_bench" and package.version == "0.0.2"


def test_an_api_the_gate_does_not_know_is_one_line(tmp_path: Path, fakes, toy: dict) -> None:
    """An InferSession without summary()/sumary(), or one whose infer raises TypeError: a ToolError line
    naming the call, not an AttributeError or TypeError traceback."""
    pkg = tmp_path / "odd" / "ais_bench"
    (pkg / "infer").mkdir(parents=True)
    for f in ("__init__.py", "__main__.py", "infer/__init__.py"):
        (pkg / f).write_text("")
    interface = pkg / "infer" / "interface.py"
    interface.write_text("class InferSession:\n    def __init__(self, *a):\n        pass\n")
    use_generation(fakes, DEFAULT_GENERATION, frontend=pkg.parent)
    om = _convert(toy, 1)
    with pytest.raises(ToolError, match=r"InferSession: has no summary\(\)/sumary\(\), reset_summaryinfo\(\)"
                       r"/reset_sumaryinfo\(\), infer, get_inputs, get_outputs. Hint: this ais_bench is neither"):
        _runner("ais_bench-api", om, 1).run_split(toy["bins"], toy["names"][:1], tmp_path / "out")
    interface.write_text(
        "import aclruntime\n"
        "class InferSession:\n"
        "    def __init__(self, device_id, model_path):\n"
        "        self.s = aclruntime.InferenceSession(model_path, device_id, aclruntime.session_options())\n"
        "    def get_inputs(self): return self.s.get_inputs()\n"
        "    def get_outputs(self): return self.s.get_outputs()\n"
        "    def infer(self, feeds, mode='static'): raise TypeError('infer() got an unexpected keyword argument')\n"
        "    def summary(self): return self.s.sumary()\n"
        "    def reset_summaryinfo(self): self.s.reset_sumaryinfo()\n"
        "    @staticmethod\n"
        "    def finalize(): aclruntime.InferenceSession.finalize()\n")
    _drop_fake_modules()
    with pytest.raises(ToolError) as err:
        _runner("ais_bench-api", om, 1).run_split(toy["bins"], toy["names"][:1], tmp_path / "out")
    assert str(err.value).startswith("ais_bench (msit generation) InferSession.infer(mode='static') on ")
    assert "TypeError: infer() got an unexpected keyword argument" in str(err.value) and "\n" not in str(err.value)


def test_the_fake_acl_ends_at_finalize_as_aclruntime_does(fakes, toy: dict, tmp_path: Path, generation: str) -> None:
    """aclruntime finalizes ACL for the whole process: a session made after InferSession.finalize()
    fails (what the gate's runner used to do between batch sizes), and the runner says so in a line."""
    om = _convert(toy, 1)
    import ais_bench.infer.interface as interface

    session = interface.InferSession(0, str(om))
    session.finalize()  # tools: the instance method; msit: the static one
    with pytest.raises(RuntimeError, match=r"aclrtSetDevice failed, error code 100001: ACL was finalized"):
        interface.InferSession(0, str(om))
    with pytest.raises(ToolError, match=r"InferSession.__init__\(0, intraDA_deeplabv2_bs1.om\) on intraDA_deeplabv2_"
                       r"bs1.om: RuntimeError: aclrtSetDevice failed, error code 100001"):
        _runner("ais_bench-api", om, 1).run_split(toy["bins"], toy["names"][:1], tmp_path / "out")


def test_api_sessions_are_released_and_acl_finalized_once_at_exit(tmp_path: Path, fakes, toy: dict,
                                                                  generation: str) -> None:
    """In one process: bs1, bs2, then bs1 again through the API runner (a session each, as the gate
    runs batch sizes), on the fake ACL that refuses every call after aclFinalize. Each session is
    released when its run ends (msit: free_resource; tools: the destructor), ACL is initialized once
    and finalized once, at exit (msit: the static InferSession.finalize(); tools: aclruntime's own
    TensorContext destructor)."""
    log = tmp_path / "acl.log"
    oms = {bs: _convert(toy, bs) for bs in (1, 2)}
    script = (
        "import sys\n"
        "from intrada.ascend.runners import AisBenchApiRunner\n"
        "from intrada.ascend import aisbench\n"
        "import intrada_fake_acl as acl\n"
        f"oms = {{1: {str(oms[1])!r}, 2: {str(oms[2])!r}}}\n"
        "for i, bs in enumerate((1, 2, 1)):\n"
        f"    run = AisBenchApiRunner(oms[bs], batch_size=bs).run_split({str(toy['bins'])!r}, "
        f"{toy['names']!r}, {str(tmp_path)!r} + f'/out{{i}}')\n"
        "    assert acl.alive(), 'ACL finalized between sessions'\n"
        "print('runs', acl.counts())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "lib"), os.environ["PYTHONPATH"]]),
           "INTRADA_FAKE_ACL_LOG": str(log), "INTRADA_FAKE_NPU_MS": "20"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "runs {'inits': 1, 'finalizes': 0}" in proc.stdout
    (events,) = acl_events(log).values()
    assert events == ["aclInit", "aclmdlUnload intraDA_deeplabv2_bs1.om", "aclmdlUnload intraDA_deeplabv2_bs2.om",
                      "aclmdlUnload intraDA_deeplabv2_bs1.om", "aclFinalize"], events
    assert "[ERROR]" not in proc.stderr


def test_staged_inputs_are_real_files_the_strictest_frontend_accepts(tmp_path: Path) -> None:
    """Hard links where the source already passes msit's checks, else 0o640 copies; never symlinks;
    the folder 0o750; a bins folder holding more than the samples is no problem."""
    src = tmp_path / "bins"
    src.mkdir()
    for name, mode in (("a", 0o644), ("b", 0o664), ("c", 0o600), ("extra", 0o644)):
        (src / f"{name}.bin").write_bytes(name.encode() * 4)
        os.chmod(src / f"{name}.bin", mode)
    os.symlink(src / "a.bin", src / "link.bin")
    dest = stage_inputs(src, ["a", "b", "c"], tmp_path / "inputs")
    assert sorted(p.name for p in dest.iterdir()) == ["a.bin", "b.bin", "c.bin"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o750 and not any(p.is_symlink() for p in dest.iterdir())
    assert os.path.samefile(dest / "a.bin", src / "a.bin") and os.path.samefile(dest / "c.bin", src / "c.bin")
    assert not os.path.samefile(dest / "b.bin", src / "b.bin")  # group-writable source: copied
    assert stat.S_IMODE((dest / "b.bin").stat().st_mode) & ~0o640 == 0 and (dest / "b.bin").read_bytes() == b"bbbb"
    assert all(pathrules.file_problem(str(p)) is None for p in dest.iterdir())
    assert stat.S_IMODE((src / "b.bin").stat().st_mode) == 0o664  # the source is never chmod'ed
    again = stage_inputs(dest, ["a"], tmp_path / "inputs2")  # a staged folder stages by links
    assert os.path.samefile(again / "a.bin", src / "a.bin")


def test_msit_path_rules() -> None:
    assert pathrules.path_string_problem("/tmp/pytest-of-x/run_1/bs1.om") is None
    assert pathrules.path_string_problem("/home/me/my models/bs1.om") == "characters ' ' are outside [_A-Za-z0-9/.-]"
    assert "'+'" in pathrules.path_string_problem("/a+b/c~d.om") and "'~'" in pathrules.path_string_problem("/a+b/c~d")
    assert "longer than 255" in pathrules.path_string_problem("/" + "x" * 256)


@pytest.mark.parametrize("generation", GENERATIONS)
def test_the_cli_runner_passes_msits_input_checks(fakes, toy: dict, tmp_path: Path, generation: str) -> None:
    """msit's CLI refuses a symlinked or group-writable input and odd path characters (the fake shows
    it: the command the gate once built, on a bins folder of symlinks, fails); the runner stages real
    files and runs from the output folder, so a bins folder of symlinks whose paths hold a space runs
    in both generations."""
    fakes.setenv("INTRADA_FAKE_NPU_MS", "20")
    om = _convert(toy, 1)
    bins = tmp_path / "my bins"
    bins.mkdir()
    for n in toy["names"]:
        os.symlink(toy["bins"] / f"{n}.bin", bins / f"{n}.bin")
    out = tmp_path / "raw"
    out.mkdir(mode=0o750)
    links = tmp_path / "links"
    links.mkdir(mode=0o750)
    for n in toy["names"]:
        os.symlink(toy["bins"] / f"{n}.bin", links / f"{n}.bin")
    proc = subprocess.run([sys.executable, "-m", "ais_bench", "--model", str(om), "--input", str(links), "--output",
                           str(out), "--output_dirname", "bs1"], capture_output=True, text=True)
    if generation == "msit":
        assert proc.returncode == 1 and "is a soft link, not supported" in proc.stdout, proc.stdout[-2000:]
        assert "RuntimeError: input data:" in proc.stderr and "is illegal" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr[-2000:]
    run = _runner("ais_bench-cli", om, 1).run_split(bins, toy["names"], tmp_path / "out dir")
    assert run.throughput == pytest.approx(50.0, rel=1e-4) and len(list(run.dumps.iterdir())) == 2 * len(toy["names"])


def test_an_om_path_msit_refuses_is_one_line_before_the_tool_runs(fakes, toy: dict, tmp_path: Path,
                                                                 generation: str) -> None:
    """--om (or the cache) on a path msit's CLI refuses: the CLI runner says which path and why, in one
    line; the tools generation checks no path and runs it."""
    fakes.setenv("INTRADA_FAKE_NPU_MS", "20")
    odd = tmp_path / "my oms" / "intraDA_deeplabv2_bs1.om"
    odd.parent.mkdir()
    shutil.copyfile(_convert(toy, 1), odd)
    runner = _runner("ais_bench-cli", odd, 1)
    if generation == "tools":
        assert runner.run_split(toy["bins"], toy["names"][:1], tmp_path / "out").throughput == pytest.approx(50.0)
        return
    with pytest.raises(ToolError) as err:
        runner.run_split(toy["bins"], toy["names"][:1], tmp_path / "out")
    assert str(err.value) == (f"{odd}: msit's ais_bench CLI refuses this om path (characters ' ' are outside "
                              "[_A-Za-z0-9/.-]). Hint: keep oms (--om, or the gate's cache: --cache-dir) on a path "
                              "of [_A-Za-z0-9/.-] only, owned by you and not group/other-writable (chmod go-w), or use "
                              "--om-runner ais_bench-api, which does not check paths")
    assert not (tmp_path / "out" / "bs1.log").exists()  # refused before the tool ran
    link = tmp_path / "intraDA_deeplabv2_bs1.om"  # a symlinked om is run by its resolved path
    os.chmod(odd, 0o644)
    good = tmp_path / "oms" / "intraDA_deeplabv2_bs1.om"
    good.parent.mkdir()
    shutil.copyfile(odd, good)
    link.symlink_to(good)
    run = _runner("ais_bench-cli", link, 1).run_split(toy["bins"], toy["names"][:1], tmp_path / "out2")
    assert run.command[4] == str(good) and run.om == link
    os.chmod(good, 0o664)
    with pytest.raises(ToolError, match=r"refuses this om path \(is group- or other-writable \(mode 664\)\)"):
        _runner("ais_bench-cli", good, 1).run_split(toy["bins"], toy["names"][:1], tmp_path / "out3")


@pytest.mark.parametrize("kind", AIS_KINDS)
def test_a_dynamic_batch_om_runs_at_the_batch_it_is_judged_with(fakes, toy: dict, tmp_path: Path, kind: str,
                                                              generation: str) -> None:
    """atc --input_shape=image:-1,... --dynamic_batch_size=1,2: the API selects the profile the way its
    generation does (msit infer(mode="dymbatch"), tools set_dynamic_batchsize); the CLI, which msit
    refuses to run without --dymBatch (and tools runs at batchsize -1), is run with --dymBatch. A batch
    the om lacks is the binding's line."""
    fakes.setenv("INTRADA_FAKE_NPU_MS", "40")
    out = tmp_path / "om"
    out.mkdir()
    subprocess.run(["atc", "--framework=5", f"--model={toy['onnx']}", f"--output={out / 'dyn_bs2'}",
                    "--input_shape=image:-1,3,512,1024", "--dynamic_batch_size=1,2", "--soc_version=Ascend310P3"],
                   check=True, capture_output=True)
    om = out / "dyn_bs2.om"
    run = _runner(kind, om, 2).run_split(toy["bins"], toy["names"], tmp_path / "run")
    assert run.throughput == pytest.approx(50.0, rel=1e-4) and run.batch_verified
    assert "dynamic-batch om run at its bs2 profile" in run.batch_source
    for name in toy["names"]:
        np.testing.assert_array_equal(run.open().read(name, "main"), _ort_outputs(toy["onnx"], toy["bins"], name)[1])
    if kind == "ais_bench-cli":
        assert run.command[-2:] == ("--dymBatch", "2")
        first = (tmp_path / "run" / "bs2.log").read_text()
        assert "try get model batchsize:-1" in first
        assert ("dynamic batch om model detected" in first) is (generation == "msit")
    with pytest.raises(ToolError, match=r"the dymBatch parameter is not correct: 4 is not one of the om's batch "
                       r"sizes \[1, 2\]"):
        _runner(kind, om, 4).run_split(toy["bins"], toy["names"], tmp_path / "run4")


def test_a_cli_failing_without_pkg_resources_says_what_to_do(fakes, toy: dict, tmp_path: Path) -> None:
    """msit's CLI reads aclruntime's version with pkg_resources and fails with an UnboundLocalError
    where setuptools 82+ removed it: the tool's own line, and what to do."""
    blocker = tmp_path / "no_pkg_resources"
    blocker.mkdir()
    (blocker / "pkg_resources.py").write_text("raise ImportError(\"No module named 'pkg_resources'\")\n")
    paths = [str(p) for p in generation_path("msit", compat=False)]
    fakes.setenv("PYTHONPATH", os.pathsep.join([str(blocker), *paths]))
    with pytest.raises(ToolError) as err:
        _runner("ais_bench-cli", _convert(toy, 1), 1).run_split(toy["bins"], toy["names"][:1], tmp_path / "out")
    text = str(err.value)
    assert "UnboundLocalError: cannot access local variable 'aclruntime_version'" in text and "\n" not in text
    assert "Hint: this ais_bench reads aclruntime's version with pkg_resources, which setuptools 82 removed: pip " \
           "install 'setuptools<82', or use --om-runner ais_bench-api; full log: " in text


def test_an_unrelated_ais_bench_package_is_not_the_inference_tool(tmp_path: Path, no_ascend,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The AISBench LLM evaluation tool (github.com/AISBench/benchmark) installs a top-level ais_bench
    too: it is reported, never offered as a runner, never imported."""
    site = tmp_path / "site"
    (site / "ais_bench" / "benchmark").mkdir(parents=True)
    (site / "ais_bench" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (site / "ais_bench" / "benchmark" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    _drop_fake_modules()
    found = tools.discover()
    assert not found.ais_bench_cli and not found.ais_bench_api and found.runtimes == []
    assert found.ais_bench is not None and found.ais_bench.location == site / "ais_bench"
    assert found.runner_lines()[0] == (f"ais_bench at {site / 'ais_bench'}: is not the inference tool: it has no "
                                       "infer/interface.py (the AISBench LLM evaluation tool, github.com/AISBench/"
                                       "benchmark, also installs a top-level ais_bench); no ais_bench-api / "
                                       "ais_bench-cli runner")
    assert "ais_bench" not in sys.modules
    from intrada.ascend.setup import resolve_setup

    setup = resolve_setup(found, om_option=None, soc_option="Ascend310P3", device_id=0, runner_option="ais_bench-cli",
                          dumps_given=False, npu=None, fakes=())
    assert setup.problem is not None and setup.problem.broken
    assert setup.problem.message.startswith(f"--om-runner ais_bench-cli: ais_bench at {site / 'ais_bench'}: is not "
                                            "the inference tool")


def test_benchmark_runs_record_that_the_batch_was_not_read_from_the_om(fakes, toy: dict, tmp_path: Path) -> None:
    run = _runner("benchmark", _convert(toy, 1), 1).run_split(toy["bins"], toy["names"][:1], tmp_path / "out")
    assert run.batch_verified is False and "-batch_size flag only" in run.batch_source


def test_ais_bench_batch_comes_from_its_log_and_agrees_with_its_summary(tmp_path: Path) -> None:
    summary = {"throughput": 50.0, "NPU_compute_time": {"mean": 20.0}}  # 1000 * 1 / 20
    where = tmp_path / "bs1_summary.json"
    assert parsers.ais_bench_model_batch("[INFO] try get model batchsize:1\n", summary, where)[0] == 1
    assert parsers.ais_bench_model_batch("no such line", summary, where) == (
        1, "ais_bench summary: throughput x NPU_compute_time.mean / 1000")
    with pytest.raises(ToolError, match=r"implies batch size 1.00, but ais_bench read 4 from the om"):
        parsers.ais_bench_model_batch("try get model batchsize:4", summary, where)
    with pytest.raises(ToolError, match="cannot tell the batch size"):
        parsers.ais_bench_model_batch("", {"throughput": 37.0, "NPU_compute_time": {"mean": 20.0}}, where)


def test_an_om_for_another_chip_does_not_load(fakes, toy: dict, tmp_path: Path) -> None:
    om = _convert(toy, 1, "Ascend310", out="om310")  # the fake device is a 310P3
    with pytest.raises(ToolError, match=r"built for Ascend310 but device 0 is Ascend310P3"):
        _runner("ais_bench-cli", om, 1).run_split(toy["bins"], toy["names"][:1], tmp_path / "out")


def test_benchmark_perf_file_is_parsed_like_the_seeds_parse_py(tmp_path: Path) -> None:
    seed_style = ("[e2e] throughputRate: 5.43018, latency: 695926\n"
                  "[data read] throughputRate: 5.6839, moduleLatency: 175.935\n"
                  "[preprocess] throughputRate: 5.52475, moduleLatency: 181.004\n"
                  "[infer] throughputRate: 5.43899, Interface throughputRate: 7.67659, moduleLatency: 181.881\n"
                  "[post] throughputRate: 5.43898, moduleLatency: 183.858\n")
    assert parsers.parse_benchmark_perf(seed_style) == {"interface_throughput": 7.67659, "e2e_throughput": 5.43018}
    older = seed_style.replace("[infer]", "[inference]").replace("7.67659", "7.67659samples/s")
    assert parsers.parse_benchmark_perf(older)["interface_throughput"] == 7.67659
    with pytest.raises(ToolError, match="no positive 'Interface throughputRate'"):
        parsers.parse_benchmark_perf(seed_style.replace("Interface ", ""), tmp_path / "perf.txt")


def test_ais_bench_summary_without_timing_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bs1_summary.json"
    path.write_text(json.dumps({"throughput": 0, "NPU_compute_time": {"mean": 0}}))
    with pytest.raises(ToolError, match=r"'throughput' is 0, expected a positive number"):
        parsers.read_ais_bench_summary(path)
    with pytest.raises(ToolError, match="wrote no summary file"):
        parsers.read_ais_bench_summary(tmp_path / "missing_summary.json")


def test_importing_the_ascend_package_needs_no_ascend_software(no_ascend) -> None:
    code = ("import sys, intrada.ascend, intrada.ascend.runners, intrada.ascend.atc, intrada.ascend.tools; "
            "assert not [m for m in sys.modules if m.startswith(('ais_bench', 'aclruntime', 'acl'))]")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# the om gate end to end (runs of acceptance/, tests/_gate.py), on the toy model and a 2-image split

def _toy_cityscapes(root: Path, n: int = 2) -> Path:
    """A tiny split in the official layout: smooth 2048x1024 images, blocky labelIds."""
    from PIL import Image

    rng = np.random.default_rng(2)
    label_ids = np.array(sorted(protocol.LABEL_ID_TO_TRAIN_ID), dtype=np.uint8)
    for i in range(n):
        city = ("frankfurt", "lindau", "munster")[i % 3]
        name = f"{city}_000000_{i:06d}"
        for sub in ("leftImg8bit", "gtFine"):
            (root / sub / "val" / city).mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (24, 48, 3), dtype=np.uint8)
        Image.fromarray(small).resize((protocol.IMAGE_W, protocol.IMAGE_H), Image.Resampling.BILINEAR).save(
            root / "leftImg8bit" / "val" / city / f"{name}{protocol.IMAGE_SUFFIX}")
        labels = label_ids[rng.integers(0, len(label_ids), (16, 32))]
        Image.fromarray(labels).resize((protocol.LABEL_W, protocol.LABEL_H), Image.Resampling.NEAREST).save(
            root / "gtFine" / "val" / city / f"{name}{protocol.LABEL_SUFFIX}")
    return root


@pytest.fixture(scope="module")
def toy_gate(toy: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The toy submission (--onnx, --cityscapes) and an artifact cache holding its bins and ONNX Runtime
    outputs, built once here by a gate run (in this process); each test copies it (``toy_cache``)."""
    from _gate import run_gate_here

    root = tmp_path_factory.mktemp("toy-gate")
    split = _toy_cityscapes(root / "cityscapes")
    args = ["--onnx", str(toy["onnx"]), "--cityscapes", str(split)]
    cache = root / "cache"
    seed = run_gate_here(root, "--benchmark-disable", "-m", "accuracy", "-k", "test_onnxruntime_miou", *args,
                         cache=cache)
    assert seed.outcomes() == {"test_onnxruntime_miou": "failed"}, seed.tail()  # the toy scores nothing
    assert {p.name for p in cache.iterdir() if p.is_dir()} >= {"bins", "outputs"}, seed.tail()
    return {"cache": cache, "args": args, "split": split, "onnx": toy["onnx"]}


@pytest.fixture
def toy_cache(tmp_path: Path, toy_gate: dict) -> Path:
    """This test's own cache: hard links of the toy's bins and ONNX Runtime outputs."""
    from _gate import seed_cache

    return seed_cache(tmp_path / "cache", toy_gate["cache"])


def run_gate(workdir: Path, cache: Path, *args: str, subprocess: bool = False) -> pytest.RunResult:
    """The gate in this process (``subprocess=True``: in a new one), with this test's environment."""
    from _gate import run_gate as run

    argv = list(args)
    report = None
    if "--report" in argv:
        i = argv.index("--report")
        report = Path(argv[i + 1])
        del argv[i:i + 2]
    return run(workdir, *argv, cache=cache, report=report, subprocess=subprocess).result


def without_fake_ais_bench(fakes: pytest.MonkeyPatch) -> None:
    """ais_bench no longer importable, by subprocesses (PYTHONPATH) nor by this process (sys.path)."""
    fakes.delenv("PYTHONPATH")
    fakes.setattr(sys, "path", [p for p in sys.path if not p.startswith(str(FAKES))])
    _drop_fake_modules()


def skip_reasons(result: pytest.RunResult) -> set[str]:
    """Reasons of the -ra summary lines ``SKIPPED [n] path:line: reason``."""
    return {re.sub(r"^SKIPPED \[\d+\] [^:]+:\d+: ", "", line) for line in result.outlines
            if line.startswith("SKIPPED [")}


def read_report(directory: Path) -> dict:
    return json.loads((directory / "report.json").read_text())


def test_without_ascend_tools_every_om_test_skips_with_one_reason(tmp_path: Path, no_ascend,
                                                                   toy_gate: dict, toy_cache: Path) -> None:
    if tools.discover().anything:
        pytest.skip("real Ascend tools are installed on this machine: nothing-available cannot be simulated")
    from intrada.ascend.setup import NOTHING_REASON

    result = run_gate(tmp_path, toy_cache, "-m", "om", *toy_gate["args"], "--batch-sizes", "1,4")
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped") == 8 and "passed" not in outcomes and "failed" not in outcomes, outcomes
    # the device tests skip with one reason; the pre-flight says why it has no prediction for the toy
    predicted = {r for r in skip_reasons(result) if r.startswith("om [fp16-prediction]: not judged: predicted for "
                                                                 "force_fp16: no prediction: the force_fp16 emulation "
                                                                 "cannot run this model")}
    assert len(predicted) == 1 and skip_reasons(result) - predicted == {NOTHING_REASON}, skip_reasons(result)
    # -m om asked for the om gate: a run that judged nothing is not a pass
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert re.search(r"om +NOT JUDGED \(required: -m 'om'\): no Ascend om to judge", result.stdout.str())
    assert "pass --dumps DIR" in NOTHING_REASON and "ais_bench" in NOTHING_REASON and "set_env.sh" in NOTHING_REASON


@pytest.mark.parametrize("setup, reason, broken", [
    ("om-only", "--om was given but nothing can run it: install ais_bench with its aclruntime (`pip install msit` then "
                "`msit install benchmark`, or the wheels; see README)", False),
    ("benchmark-only", "benchmark can run an om but there is none: pass --om PATH", False),
    ("cli-requested", "--om-runner ais_bench-cli: ais_bench is not installed for this Python", True),
    ("no-soc", "atc needs --soc_version (no --soc-version and no npu-smi on PATH): pass --soc-version", True),
])
def test_partial_setups_say_what_is_missing_and_never_pass(tmp_path: Path, fakes, toy: dict,
                                                         toy_gate: dict, toy_cache: Path,
                                                         setup: str, reason: str, broken: bool) -> None:
    """-m om asks for the om gate. Something missing (nothing can run the --om; a runner with no om)
    skips the live-om tests with the reason; something asked for and missing (--om-runner), or a
    device host that cannot tell atc its SoC, fails them. Either way the run does not pass."""
    args = ["-m", "om", *toy_gate["args"], "--batch-sizes", "1"]
    only = tmp_path / "only"
    only.mkdir()
    if setup == "om-only":
        args += ["--om", str(_convert(toy, 1))]  # converted while atc is still reachable
        fakes.setenv("PATH", _base_path())
        without_fake_ais_bench(fakes)
    elif setup == "benchmark-only":
        (only / tools.benchmark_name()).symlink_to(FAKE_BIN / "benchmark.x86_64")
        fakes.setenv("PATH", os.pathsep.join([str(only), _base_path()]))
        without_fake_ais_bench(fakes)
    elif setup == "cli-requested":
        without_fake_ais_bench(fakes)
        args += ["--om-runner", "ais_bench-cli"]
    else:  # atc and ais_bench, but nothing tells atc the SoC
        (only / "atc").symlink_to(FAKE_ATC_BIN / "atc")
        fakes.setenv("PATH", os.pathsep.join([str(only), _base_path()]))
    result = run_gate(tmp_path, toy_cache, *args)
    outcomes = result.parseoutcomes()
    assert result.ret != 0, outcomes
    if broken:
        assert outcomes.get("errors", 0) + outcomes.get("failed", 0) == 4 and "passed" not in outcomes, outcomes
        assert f"ToolError: om gate: {reason}" in result.stdout.str()
    else:
        assert outcomes.get("skipped") == 7 and "failed" not in outcomes and "error" not in outcomes, outcomes
        live = {r for r in skip_reasons(result) if "--dumps" not in r.split(":")[0]}
        assert any(reason in r for r in live), live
        assert re.search(r"om +NOT JUDGED \(required: -m 'om'", result.stdout.str())


def test_a_device_id_the_host_does_not_have_fails_with_npu_smis_line(tmp_path: Path, fakes,
                                                                     toy_gate: dict, toy_cache: Path) -> None:
    """--device-id 1 on a one-device host: npu-smi's own line, every live-om test fails, exit 1 (it
    used to skip with "atc needs --soc_version" and pass)."""
    result = run_gate(tmp_path, toy_cache, "-m", "om", *toy_gate["args"], "--batch-sizes", "1",
                      "--device-id", "1")
    outcomes = result.parseoutcomes()
    assert result.ret == pytest.ExitCode.TESTS_FAILED and "passed" not in outcomes, outcomes
    assert outcomes.get("errors", 0) + outcomes.get("failed", 0) == 4, outcomes
    assert "ToolError: om gate: npu-smi info: no device 1 (devices: 0)" in result.stdout.str()


def test_a_renamed_om_fails_the_gate_naming_both_batch_sizes(tmp_path: Path, fakes, toy: dict, generation: str,
                                                             toy_gate: dict, toy_cache: Path) -> None:
    """A bs1 om passed as <name>_bs4.om with the CLI runner: it used to pass parity and report 4x its
    throughput. Now the run fails with both numbers."""
    renamed = tmp_path / "intraDA_deeplabv2_bs4.om"
    shutil.copyfile(_convert(toy, 1), renamed)
    result = run_gate(tmp_path, toy_cache, "-m", "om", *toy_gate["args"], "--om", str(renamed),
                      "--om-runner", "ais_bench-cli", "--batch-sizes", "4")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "passed" not in result.parseoutcomes()
    assert re.search(r"the om's batch size is 1 \(ais_bench: 'try get model batchsize'\) but it was given as bs4",
                     result.stdout.str())


def test_faithful_om_passes_and_is_reported_as_a_contract_test(tmp_path: Path, fakes, toy_gate: dict,
                                                                 toy_cache: Path, generation: str) -> None:
    """fp16 rounding (the fake's force_fp16) stays within the om limits; the 310P3 bs1 target is met
    by the reported NPU time; bs2 has no target and is recorded, not judged. Every record says FAKE.
    In a subprocess: a new process finds the tools from PATH and PYTHONPATH alone, as on a device host."""
    fakes.setenv("INTRADA_FAKE_NPU_MS", "20")  # 1000 * 1 / 20 = 50 fps >= 46.25
    report = tmp_path / "report"
    result = run_gate(tmp_path, toy_cache, "-m", "om and not accuracy", *toy_gate["args"], "--om-runner",
                      "ais_bench-cli", "--batch-sizes", "1,2", "--report", str(report), subprocess=True)
    outcomes = result.parseoutcomes()
    # skipped: the two --dumps tests, bs2's throughput (no target), the pre-flight (the toy is no DeepLabv2)
    assert outcomes.get("passed") == 3 and outcomes.get("skipped") == 4 and "failed" not in outcomes, \
        "\n".join(result.outlines[-30:])
    # the header says which ais_bench was found, from its files (nothing imported at pytest start)
    layout = {"tools": "github.com/Ascend/tools ais-bench_workload/tool/ais_bench",
              "msit": "github.com/Ascend/msit ait/components/benchmark (msit install benchmark)"}[generation]
    result.stdout.fnmatch_lines([f"intrada gate: om runners: ais_bench at {FAKES}/ais_bench_{generation}/ais_bench "
                                 f"(ais_bench 0.0.2; {generation} generation files: {layout}): ais_bench-api import "
                                 "not checked yet, ais_bench-cli*"])
    data = read_report(report)
    setup = data["sections"]["om.setup"]
    assert setup["tools"]["ais_bench"]["cli_generation"] == generation
    assert setup["runner"] == "ais_bench-cli" and setup["soc_version"] == "Ascend310P3"
    assert setup["soc_source"] == "npu-smi info"
    assert setup["fake_components"] == ["ais_bench", "atc", "benchmark", "npu-smi", "om"]
    (parity,) = results(data, gate="om", kind="parity", subject="om")
    assert parity["state"] == "passed" and parity["details"]["contract_fake"] and parity["details"]["run"]["fake"]
    assert "| no force_fp16 prediction to compare with (the force_fp16 emulation cannot run this model" in \
        parity["summary"] and parity["details"]["fp16_prediction"]["gate"] == "off"
    assert "FAKE: contract-test" in parity["details"]["candidate"]
    throughput = {r["details"]["batch_size"]: r for r in results(data, kind="throughput")}
    rows = {bs: r["details"] for bs, r in throughput.items()}
    assert rows[1]["fps"] == pytest.approx(50.0, rel=1e-4) and rows[1]["min_fps"] == 46.25
    assert throughput[1]["state"] == "passed" and rows[1]["batch_source"].startswith("the om's input shape")
    assert rows[1]["contract_fake"] and "FAKE: contract-test" in rows[1]["device"]
    assert "Ascend310P3 (device 0)" in rows[1]["device"] and "not a device result" in rows[1]["device"]
    assert "summary.json 'throughput'" in rows[1]["fps_basis"]
    assert rows[2]["fps"] == pytest.approx(100.0, rel=1e-4) and throughput[2]["state"] == "not judged"
    assert any("no [[devices]] target for Ascend310P3 at bs2" in r for r in skip_reasons(result))
    (delta,) = results(data, kind="miou_delta", subject="om")
    assert delta["details"]["contract_fake"] and delta["state"] == "passed"
    assert data["verdicts"]["om"]["verdict"] == "PASS" and result.ret == 0
    # the om is cached under everything that made it, with atc's log beside it
    manifests = [json.loads(p.read_text()) for p in (toy_cache / "om").glob("*/manifest.json")]
    (bs1,) = [m for m in manifests if m["parts"]["flags"] == atc.seed_flags(1, "Ascend310P3")]
    assert bs1["parts"]["onnx_sha256"] == tools.file_sha256(toy_gate["onnx"])
    assert bs1["parts"]["cann_version"] == "0.0.0.intrada-contract-fake"
    assert bs1["parts"]["atc_sha256"] == tools.file_sha256(FAKE_ATC_BIN / "atc")
    assert set(bs1["files"]) == {"intraDA_deeplabv2_bs1.om", "atc.log"}


@pytest.mark.parametrize("mode, failure", [
    ("swap", r"main: cosine -?0\.\d+ < 0\.99"),
    ("noise", r"rel\. euclidean 0\.\d+ > 0\.05"),
    ("perturb", r"main: argmax agreement \d+\.\d+% < 99\.000%"),
])
def test_broken_om_fails_the_om_gate(tmp_path: Path, fakes, toy_gate: dict, toy_cache: Path,
                                     mode: str, failure: str, generation: str) -> None:
    """Wrong output order, fp16-like noise beyond the limits, perturbed logits: each fails om-vs-ONNX
    parity (the Python API runner is used: it is the default when importable)."""
    fakes.setenv("INTRADA_FAKE_NPU_OUTPUTS", mode)
    result = run_gate(tmp_path, toy_cache, "-m", "om", "-k", "test_om_matches_onnx and not dumps", *toy_gate["args"],
                      "--batch-sizes", "1")
    failed = [line for line in result.outlines if line.startswith("FAILED")]
    assert len(failed) == 1 and "test_om_matches_onnx[om]" in failed[0], "\n".join(result.outlines[-30:])
    text = result.stdout.str()
    assert re.search(failure, text), text[-3000:]
    assert "via ais_bench-api" in text and "FAKE: contract-test" in text


def test_slow_om_fails_the_device_target(tmp_path: Path, fakes, toy_gate: dict,
                                         toy_cache: Path, generation: str) -> None:
    fakes.setenv("INTRADA_FAKE_NPU_MS", "40")  # 25 fps < 46.25
    result = run_gate(tmp_path, toy_cache, "-m", "om", "-k", "throughput", *toy_gate["args"],
                      "--batch-sizes", "1")
    result.assert_outcomes(failed=1)
    assert re.search(r"perf \[om\]: FAIL: 25\.000 fps < 46\.250 \(target: seed README", result.stdout.str())


def test_one_gate_run_judges_several_batch_sizes_on_one_acl_lifetime(tmp_path: Path, fakes, toy_gate: dict,
                                                                     toy_cache: Path, generation: str) -> None:
    """One gate process, the API runner, bs1, bs2 and bs4: parity on bs1, then at each batch size its
    outputs against the ONNX and its throughput, a session each, on a fake ACL that refuses every call
    after aclFinalize. Sessions are released one by one; ACL is initialized and finalized once."""
    log = tmp_path / "acl.log"
    fakes.setenv("INTRADA_FAKE_ACL_LOG", str(log))
    fakes.setenv("INTRADA_FAKE_NPU_MS", "20")
    report = tmp_path / "report"
    result = run_gate(tmp_path, toy_cache, "-m", "om and not accuracy", *toy_gate["args"], "--om-runner",
                      "ais_bench-api", "--batch-sizes", "1,2,4", "--report", str(report), subprocess=True)
    outcomes = result.parseoutcomes()
    # skipped: the dumps' two tests, the throughput at bs2 and bs4 (no [[devices]] target: recorded) and
    # the force_fp16 pre-flight (the toy ONNX is not a DeepLabv2 export: no prediction)
    assert outcomes.get("passed") == 3 and outcomes.get("skipped") == 5 and "failed" not in outcomes, \
        "\n".join(result.outlines[-30:])
    data = read_report(report)
    rows = {r["details"]["batch_size"]: r for r in results(data, kind="throughput")}
    assert sorted(rows) == [1, 2, 4]
    for bs, row in rows.items():  # judged (bs1) or recorded: each ran, its outputs matched the ONNX first
        assert row["details"]["fps"] == pytest.approx(1000.0 * bs / 20, rel=1e-4)
    assert rows[1]["state"] == "passed"
    (parity,) = results(data, kind="parity", subject="om")
    run = parity["details"]["run"]
    assert run["ais_bench_generation"] == generation and run["ais_bench_version"] == "0.0.2"
    assert run["ais_bench_interface"].startswith(str(FAKES / f"ais_bench_{generation}"))
    pids = acl_events(log)
    (gate_pid,) = [pid for pid, events in pids.items() if "aclInit" in events]
    events = pids[gate_pid]
    assert events[0] == "aclInit" and events[-1] == "aclFinalize" and events.count("aclFinalize") == 1
    assert sorted(e for e in events if e.startswith("aclmdlUnload")) == [
        f"aclmdlUnload intraDA_deeplabv2_bs{bs}.om" for bs in (1, 2, 4)]
    assert not any(e.startswith("refused") for evs in pids.values() for e in evs), pids


def test_310_card_throughput_is_the_per_chip_rate_times_four(tmp_path: Path, fakes, toy_gate: dict,
                                                              toy_cache: Path) -> None:
    """The seed's 310 figure: benchmark's per-chip Interface throughputRate x 4 chips (7.27 x 4 = 29.09
    >= 28.792, while the per-chip rate alone would fail); the report row says so."""
    fakes.setenv("INTRADA_FAKE_NPU_CHIP", "310")
    fakes.setenv("INTRADA_FAKE_NPU_MS", "550")  # bs4: 1000 * 4 / 550 = 7.2727 per chip
    report = tmp_path / "report"
    result = run_gate(tmp_path, toy_cache, "-m", "om", "-k", "throughput", *toy_gate["args"],
                      "--om-runner", "benchmark", "--batch-sizes", "4", "--report", str(report))
    result.assert_outcomes(passed=1)
    (verdict,) = results(read_report(report), kind="throughput")
    row = verdict["details"]
    assert verdict["state"] == "passed" and row["batch_source"].startswith("atc --input_shape=image:4,")
    assert "Ascend310 (device 0) [FAKE" in row["device"] and row["backend"] == "ascend om (benchmark)"
    assert row["fps_per_chip"] == pytest.approx(7.2727, rel=1e-3) and row["chips_per_card"] == 4
    assert row["fps"] == pytest.approx(29.0909, rel=1e-3) and row["min_fps"] == 28.792
    assert "Interface throughputRate" in row["fps_basis"] and "x 4 chips per Ascend310 card" in row["fps_basis"]


def _fake_env(generation: str = DEFAULT_GENERATION, **extra: str) -> dict[str, str]:
    return fake_env(generation, **extra)


@pytest.mark.parametrize("mode", ["fp16", "swap"])
def test_recorded_dumps_alone_are_judged_against_the_onnx(tmp_path: Path, no_ascend, toy_gate: dict,
                                                           toy_cache: Path, mode: str, generation: str) -> None:
    """The workflow without a device here: ais_bench ran on an Ascend machine and its output folder
    is passed with --dumps. Parity and |delta mIoU| are judged; the live-om tests say why they skip."""
    from intrada.dataset.cityscapes import list_samples
    from intrada.dataset.preprocess import preprocess_split

    bins = tmp_path / "bins"
    preprocess_split(list_samples(toy_gate["split"]), bins, workers=1)
    # on "the device": the seed's conversion and the README's ais_bench command
    subprocess.run(["atc", "--framework=5", f"--model={toy_gate['onnx']}", f"--output={tmp_path / 'toy_bs1'}",
                    "--input_format=NCHW", "--input_shape=image:1,3,512,1024", "--soc_version=Ascend310P3",
                    "--log=error"], check=True, env=_fake_env(), capture_output=True)
    subprocess.run([sys.executable, "-m", "ais_bench", "--model", str(tmp_path / "toy_bs1.om"), "--batchsize", "1",
                    "--input", str(bins), "--output", str(tmp_path / "result"), "--output_dirname", "result_bs1"],
                   check=True, env=_fake_env(generation, INTRADA_FAKE_NPU_OUTPUTS=mode), capture_output=True)
    result = run_gate(tmp_path, toy_cache, "-m", "om", *toy_gate["args"], "--batch-sizes", "1",
                      "--dumps", str(tmp_path / "result" / "result_bs1"))
    outcomes = result.parseoutcomes()
    failed = [line for line in result.outlines if line.startswith("FAILED")]
    if mode == "fp16":
        assert outcomes.get("passed") == 2 and outcomes.get("skipped") == 5, "\n".join(result.outlines[-30:])
    else:  # the toy's two heads score alike, so only the tensor comparison can catch the swap here
        assert len(failed) == 1 and "test_om_matches_onnx[dumps]" in failed[0], "\n".join(result.outlines[-30:])
        assert "recorded device outputs --dumps" in result.stdout.str() and "main: cosine" in result.stdout.str()
    assert any(r.startswith("judging --dumps only: no atc, ais_bench or benchmark here") for r in skip_reasons(result))


def test_atc_failure_fails_the_om_tests_quoting_its_log(tmp_path: Path, fakes, toy_gate: dict,
                                                        toy_cache: Path) -> None:
    fakes.setenv("INTRADA_FAKE_ATC_FAIL", "Op[Conv_1] unsupported on this SoC")
    # a SoC no other test converts for: the om cache must miss so that atc really runs
    result = run_gate(tmp_path, toy_cache, "-m", "om", "-k", "not dumps", *toy_gate["args"],
                      "--batch-sizes", "1", "--soc-version", "Ascend310B1")
    outcomes = result.parseoutcomes()
    # every live-om test errors with the same atc failure; atc ran once (the failure is remembered)
    assert outcomes.get("errors", 0) + outcomes.get("failed", 0) == 4 and "passed" not in outcomes, outcomes
    assert re.search(r"\d+ built \(0 after corruption, 1 failed\)", result.stdout.str())
    text = result.stdout.str()
    m = re.search(r"ToolError: atc \(\S+ -> intraDA_deeplabv2_bs1\.om, Ascend310B1\): exited with code 1; last "
                  r"output: .*Op\[Conv_1\] unsupported on this SoC.*full log: (\S+\.log)", text)
    assert m, text[-3000:]
    assert "INTRADA_FAKE_ATC_FAIL" in Path(m.group(1)).read_text()


# ---------------------------------------------------------------------------------------------
# the embedded demo submission (the real DeepLabv2 graph) through the fakes

@pytest.fixture(scope="module")
def demo_om_cache(gate_seed, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session cache plus what every demo om run below reads and none should rebuild: the bins of
    the first 4 demo images and ONNX Runtime's outputs on the run plan's sample of them. Built once, by
    a gate run in this process judging zero-valued --dumps (device outputs make the plan sample, as an
    om does; no fake is needed for that). Each test copies it (hard links)."""
    from _gate import run_gate_here
    from intrada.dataset.cityscapes import list_samples
    from intrada.dataset.dumps import write_dumps

    root = tmp_path_factory.mktemp("demo-om")
    cache = gate_seed.copy(root / "cache")
    zeros = np.zeros(protocol.OUTPUT_SHAPE_CHW, np.float32)
    for s in list_samples(gate_seed.cityscapes)[:4]:
        write_dumps(root / "dumps", s.name, zeros, zeros)
    run = run_gate_here(root, "--benchmark-disable", "-m", "om", "-k", "dumps", *_demo_files(gate_seed),
                        "--max-images", "4", "--dumps", str(root / "dumps"), cache=cache)
    plan = run.report["sections"]["plan"]
    assert plan["onnx_images"] == 3 and plan["images"] == 4, run.tail()
    return cache


def _demo_files(gate_seed) -> list[str]:
    """The demo as files (session cache): its ONNX export, split and thresholds, so the runs below hit
    the artifacts seeded for those paths."""
    return ["--onnx", str(gate_seed.onnx), "--cityscapes", str(gate_seed.cityscapes), "--thresholds",
            str(gate_seed.thresholds)]


@pytest.mark.slow
@pytest.mark.parametrize("mode, generation", [*[(m, "msit") for m in ("fp16", "swap", "noise", "perturb")],
                                              ("fp16", "tools")])
def test_demo_om_through_the_fakes(tmp_path: Path, fakes, gate_seed, demo_om_cache: Path, mode: str,
                                   generation: str) -> None:
    """The full om gate on the demo's DeepLabv2 (4 images): atc with the seed's flags, the ais_bench
    API, parity, |delta mIoU|, om mIoU and throughput. An om is judged, so ONNX Runtime runs only on
    the run plan's sample (3 of the 4 images, the demo's [om] onnx_sample_images) and that sample
    still catches swapped, noisy and perturbed oms. fp16 rounding of the real network stays within
    every limit. Every record is labelled as a contract test. The demo is passed as files (its ONNX,
    split and thresholds), on this test's own copy of ``demo_om_cache``."""
    from _gate import seed_cache

    fakes.setenv("INTRADA_FAKE_NPU_MS", "20")
    fakes.setenv("INTRADA_FAKE_NPU_OUTPUTS", mode)
    report = tmp_path / "report"
    result = run_gate(tmp_path, seed_cache(tmp_path / "cache", demo_om_cache), "-m", "om",
                      *_demo_files(gate_seed), "--max-images", "4", "--batch-sizes", "1", "--report", str(report))
    outcomes = result.parseoutcomes()
    data = read_report(report)
    plan = data["sections"]["plan"]
    assert plan["onnx_images"] == 3 and plan["images"] == 4 and plan["device_outputs"] == ["om"]
    result.stdout.fnmatch_lines(["intrada gate: plan: ONNX Runtime on 3 of 4 images (*): a sample spread over*"])
    (parity,) = results(data, kind="parity", subject="om")
    assert parity["details"]["images"] == 3
    # the om's rel. Euclidean distance over the force_fp16 prediction's (emulated in PyTorch, intrada.diagnosis.fp16),
    # on the same 3 images: the fake's fp16 mode computes what the emulation says (an ONNX rewrite run by
    # ONNX Runtime, tests/fakes/python/intrada_fake_fp16.py) and lands near 1; a broken om far above
    ratio = parity["details"]["fp16_prediction"]["ratio_rel_euclidean"]
    assert set(ratio) == {"aux", "main"} and "rel. euclidean over the force_fp16 prediction: aux" in parity["summary"]
    (predicted,) = results(data, kind="prediction")
    assert predicted["state"] == "passed" and predicted["details"]["images"] == 3
    if mode == "fp16":
        assert all(0.8 < r < 1.25 for r in ratio.values()), ratio
    else:
        assert min(ratio.values()) > 10, ratio
    if mode == "fp16":
        assert outcomes.get("passed") == 5 and outcomes.get("skipped") == 2, "\n".join(result.outlines[-30:])
        (om_acc,) = results(data, kind="accuracy", subject="om")
        assert om_acc["details"]["contract_fake"] and "FAKE: contract-test" in om_acc["details"]["device"]
        assert om_acc["details"]["images"] == 4  # the om's own mIoU is over the whole (sub)split
        (delta,) = results(data, kind="miou_delta", subject="om")
        assert abs(delta["details"]["delta"]) < 0.47 and delta["details"]["images"] == 3
        (row,) = results(data, kind="throughput")
        assert row["details"]["contract_fake"] and "not a device result" in row["details"]["device"]
        assert result.ret == 0
    else:
        failed = sorted(line.split()[1].split("::")[-1] for line in result.outlines if line.startswith("FAILED"))
        assert "test_om_matches_onnx[om]" in failed and "test_om_throughput[bs1]" in failed, \
            "\n".join(result.outlines[-30:])
        assert parity["state"] == "failed" and parity["where"], parity  # says which classes turn into which
        # the report shows where: a picture per sample image and the per-class IoU table
        pictures = list(report.glob("disagreement-om-*.png"))  # one per sample image whose maps differ
        assert len(pictures) == 3 if mode == "swap" else pictures
        assert "| class | onnxruntime IoU | om IoU | delta |" in (report / "report.md").read_text()
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        if mode == "swap":
            assert failed == ["test_om_matches_onnx[om]", "test_om_miou", "test_om_miou_matches_onnx[om]",
                              "test_om_throughput[bs1]"], "\n".join(result.outlines[-30:])
    assert data["verdicts"]["om"]["verdict"] == ("PASS" if mode == "fp16" else "FAIL")
