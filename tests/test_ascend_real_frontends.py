"""The gate's om path with the REAL ais_bench frontend of each generation on the fake aclruntime binding.

The contract fakes of tests/fakes imitate both ais_bench generations; these tests run the real Python
code of each instead (the API the gate imports and the ``python3 -m ais_bench`` CLI it starts), on the
fake binding (tests/fakes/aclruntime_<generation>), the fake om runtime and the fake ACL lifetime.
The frontend is extracted at test time from a repository given by an environment variable and is
never part of this repository:

``INTRADA_AIS_BENCH_TOOLS_REPO``  a git directory (or work tree) of github.com/Ascend/tools, optionally
                                  ``@<commit>`` (default 9d6da90); its ais-bench_workload/tool/ais_bench/ais_bench
``INTRADA_AIS_BENCH_MSIT_REPO``   a git directory (or work tree) of github.com/Ascend/msit, optionally
                                  ``@<commit>`` (default 42a9c80); its ait/components/benchmark/ais_bench

e.g. ``INTRADA_AIS_BENCH_MSIT_REPO=$HOME/src/msit/.git@42a9c80``. Without the variable the tests of
that generation skip, saying so. The msit CLI reads aclruntime's version with ``pkg_resources``;
where the host has none (setuptools 82+), tests/fakes/compat stands in for it, and one test shows what
the gate says without it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import io
from pathlib import Path

import numpy as np
import pytest

from _ascend_fakes import DECLARED, FAKES, GENERATIONS, acl_events, generation_path, tool_path
from _report import results
from intrada.ascend import aisbench, runners
from intrada.core.errors import ToolError
from test_ascend_contract import (_convert, _drop_fake_modules, _ort_outputs, fake_npu_memo, no_ascend,  # noqa: F401
                                  read_report, run_gate, toy, toy_cache, toy_gate, use_generation)

SOURCES = {
    "tools": ("INTRADA_AIS_BENCH_TOOLS_REPO", "9d6da90", "ais-bench_workload/tool/ais_bench/ais_bench"),
    "msit": ("INTRADA_AIS_BENCH_MSIT_REPO", "42a9c80", "ait/components/benchmark/ais_bench"),
}


def extract_frontend(generation: str, dest: Path) -> Path | None:
    """The real ``ais_bench`` package of ``generation`` under ``dest`` (returned: the folder to put on
    the import path), or None when its variable is not set."""
    var, default_commit, subdir = SOURCES[generation]
    spec = os.environ.get(var)
    if not spec:
        return None
    repo, _, commit = spec.partition("@")
    root = dest / generation
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    work_tree = Path(repo) / subdir
    if not commit and work_tree.is_dir():
        shutil.copytree(work_tree, root / "ais_bench")
        return root
    proc = subprocess.run(["git", "-C", repo, "archive", "--format=tar", commit or default_commit, subdir],
                          capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{var}={spec}: git archive failed: {proc.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(root / "tree", filter="data")
    shutil.move(str(root / "tree" / subdir), str(root / "ais_bench"))
    shutil.rmtree(root / "tree")
    return root


@pytest.fixture(scope="module")
def frontends(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | None]:
    dest = tmp_path_factory.mktemp("real-ais-bench")
    return {g: extract_frontend(g, dest) for g in GENERATIONS}


@pytest.fixture(params=GENERATIONS)
def real(request: pytest.FixtureRequest, frontends: dict[str, Path | None], monkeypatch: pytest.MonkeyPatch,
         no_ascend: None, fake_npu_memo: Path):  # noqa: F811
    """The real frontend of the generation on the fake binding, reachable as an installed ais_bench is."""
    generation = request.param
    frontend = frontends[generation]
    if frontend is None:
        var, commit, subdir = SOURCES[generation]
        pytest.skip(f"{var} is not set: point it at a git directory of the {generation} repository (@{commit}) to "
                    f"run its real ais_bench frontend ({subdir}) on the fake aclruntime")
    monkeypatch.setenv("INTRADA_FAKE_NPU_MEMO", str(fake_npu_memo))
    monkeypatch.setenv("PATH", tool_path())
    monkeypatch.setenv("INTRADA_CONTRACT_FAKES", DECLARED)
    use_generation(monkeypatch, generation, frontend)
    yield monkeypatch, generation, frontend
    _drop_fake_modules()


def test_the_real_frontend_is_detected_by_what_it_offers(real) -> None:
    _, generation, frontend = real
    import ais_bench.infer.interface as interface

    assert interface.__file__ == str(frontend / "ais_bench" / "infer" / "interface.py")
    front = aisbench.detect_frontend(interface)
    assert front.generation == generation
    package = aisbench.find_package()
    assert package.inference_tool and package.layout == generation and package.checks_paths is (generation == "msit")


@pytest.mark.parametrize("kind", ["ais_bench-api", "ais_bench-cli"])
def test_the_runners_on_the_real_frontend(real, toy: dict, tmp_path: Path, kind: str) -> None:  # noqa: F811
    """bs2 om, 3 images (the last batch padded): the tool's outputs and its own throughput; the CLI on a
    bins folder of symlinks (what msit's CLI refuses: the runner stages real files)."""
    monkeypatch, generation, _ = real
    monkeypatch.setenv("INTRADA_FAKE_NPU_MS", "40")
    bins = tmp_path / "bins"
    bins.mkdir()
    for n in toy["names"]:
        os.symlink(toy["bins"] / f"{n}.bin", bins / f"{n}.bin")
    run = runners.make_runner(kind, _convert(toy, 2), batch_size=2).run_split(bins, toy["names"], tmp_path / "out")
    assert run.throughput == pytest.approx(50.0, rel=1e-4) and run.batch_verified
    for name in toy["names"]:
        aux, main = _ort_outputs(toy["onnx"], toy["bins"], name)
        np.testing.assert_array_equal(run.open().read(name, "main"), main)
        np.testing.assert_array_equal(run.open().read(name, "aux"), aux)
    key = "ais_bench_generation" if kind == "ais_bench-api" else "ais_bench_cli_generation"
    assert run.details[key] == generation


@pytest.mark.parametrize("kind", ["ais_bench-api", "ais_bench-cli"])
def test_a_dynamic_batch_om_on_the_real_frontend(real, toy: dict, tmp_path: Path, kind: str) -> None:  # noqa: F811
    monkeypatch, generation, _ = real
    monkeypatch.setenv("INTRADA_FAKE_NPU_MS", "40")
    subprocess.run(["atc", "--framework=5", f"--model={toy['onnx']}", f"--output={tmp_path / 'dyn_bs2'}",
                    "--input_shape=image:-1,3,512,1024", "--dynamic_batch_size=1,2", "--soc_version=Ascend310P3"],
                   check=True, capture_output=True)
    run = runners.make_runner(kind, tmp_path / "dyn_bs2.om", batch_size=2).run_split(toy["bins"], toy["names"],
                                                                                     tmp_path / "out")
    assert run.throughput == pytest.approx(50.0, rel=1e-4) and "bs2 profile" in run.batch_source
    np.testing.assert_array_equal(run.open().read(toy["names"][2], "main"),
                                  _ort_outputs(toy["onnx"], toy["bins"], toy["names"][2])[1])


@pytest.mark.parametrize("runner", ["ais_bench-api", "ais_bench-cli"])
@pytest.mark.parametrize("mode", ["fp16", "swap", "noise", "slow"])
def test_om_given_by_hand_through_the_real_frontend(real, toy: dict, toy_gate: dict, toy_cache: Path,  # noqa: F811
                                                    tmp_path: Path, runner: str, mode: str) -> None:
    """``--om DIR`` of hand-converted *_bs1.om / *_bs2.om, in a new gate process: a faithful device passes
    parity and the bs1 target at each batch size; one that swaps the heads or adds noise fails
    parity; a slow one fails the throughput target. One process runs both batch sizes: ACL is
    initialized and finalized once, and nothing is refused after aclFinalize."""
    monkeypatch, generation, _ = real
    oms = tmp_path / "oms"
    oms.mkdir()
    for bs in (1, 2):
        shutil.copyfile(_convert(toy, bs), oms / f"intraDA_deeplabv2_bs{bs}.om")
    log = tmp_path / "acl.log"
    monkeypatch.setenv("INTRADA_FAKE_ACL_LOG", str(log))
    monkeypatch.setenv("INTRADA_FAKE_NPU_MS", "40" if mode == "slow" else "20")
    if mode in ("swap", "noise"):
        monkeypatch.setenv("INTRADA_FAKE_NPU_OUTPUTS", mode)
    report = tmp_path / "report"
    result = run_gate(tmp_path, toy_cache, "-m", "om and not accuracy", *toy_gate["args"], "--om", str(oms),
                      "--om-runner", runner, "--batch-sizes", "1,2", "--report", str(report), subprocess=True)
    outcomes = result.parseoutcomes()
    failed = sorted(line.split()[1].split("::")[-1] for line in result.outlines if line.startswith("FAILED"))
    tail = "\n".join(result.outlines[-30:])
    if mode == "fp16":
        assert outcomes.get("passed") == 3 and not failed, tail
    elif mode == "slow":
        assert failed == ["test_om_throughput[bs1]"], tail
        assert "perf [om]: FAIL: 25.000 fps < 46.250" in result.stdout.str()
    else:
        assert "test_om_matches_onnx[om]" in failed, tail
    data = read_report(report)
    (parity,) = results(data, kind="parity", subject="om")
    run = parity["details"]["run"]
    assert run[("ais_bench_generation" if runner == "ais_bench-api" else "ais_bench_cli_generation")] == generation
    if runner == "ais_bench-api":
        (gate_pid,) = [pid for pid, ev in acl_events(log).items() if "aclInit" in ev]
        events = acl_events(log)[gate_pid]
        assert events.count("aclInit") == 1 and events.count("aclFinalize") == 1 and events[-1] == "aclFinalize"
    assert not any(e.startswith("refused") for ev in acl_events(log).values() for e in ev), acl_events(log)


@pytest.mark.parametrize("mode", ["fp16", "swap"])
def test_recorded_with_the_real_cli_then_judged_with_dumps(real, toy: dict, toy_gate: dict,  # noqa: F811
                                                           toy_cache: Path, tmp_path: Path, mode: str) -> None:
    """The seed README's command on "the device" (the real CLI), its output folder judged with --dumps."""
    from intrada.dataset.cityscapes import list_samples
    from intrada.dataset.preprocess import preprocess_split

    monkeypatch, _, frontend = real
    bins = tmp_path / "bins"
    preprocess_split(list_samples(toy_gate["split"]), bins, workers=1)
    out = tmp_path / "result"
    out.mkdir(mode=0o750)
    proc = subprocess.run([sys.executable, "-m", "ais_bench", "--model", str(_convert(toy, 1)), "--batchsize", "1",
                           "--input", str(bins), "--output", str(out), "--output_dirname", "result_bs1"],
                          env={**os.environ, "INTRADA_FAKE_NPU_OUTPUTS": mode}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                               if "fakes" not in p))  # no tool here: judge the dumps only
    monkeypatch.delenv("PYTHONPATH")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not p.startswith((str(FAKES), str(frontend)))])
    _drop_fake_modules()
    result = run_gate(tmp_path, toy_cache, "-m", "om", *toy_gate["args"], "--batch-sizes", "1",
                      "--dumps", str(out / "result_bs1"))
    outcomes = result.parseoutcomes()
    failed = [line for line in result.outlines if line.startswith("FAILED")]
    if mode == "fp16":
        assert outcomes.get("passed") == 2 and not failed, "\n".join(result.outlines[-30:])
    else:
        assert len(failed) == 1 and "test_om_matches_onnx[dumps]" in failed[0], "\n".join(result.outlines[-30:])


def test_the_real_msit_cli_without_pkg_resources_is_one_line(frontends: dict[str, Path | None], toy: dict,  # noqa: F811
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              no_ascend: None) -> None:  # noqa: F811
    """Where setuptools 82+ removed pkg_resources, msit's CLI fails (infer/miscellaneous.py:49-70): the
    gate fails the run with that line and says what to do; the tools CLI falls back to tensor mode and
    runs."""
    frontend = frontends["msit"]
    if frontend is None:
        pytest.skip("INTRADA_AIS_BENCH_MSIT_REPO is not set")
    blocker = tmp_path / "no_pkg_resources"
    blocker.mkdir()
    (blocker / "pkg_resources.py").write_text("raise ImportError(\"No module named 'pkg_resources'\")\n")
    monkeypatch.setenv("PATH", tool_path())
    monkeypatch.setenv("INTRADA_CONTRACT_FAKES", DECLARED)
    use_generation(monkeypatch, "msit", frontend)  # found by this process, as the gate's discovery finds it
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(map(str, [blocker, *generation_path("msit", frontend,
                                                                                         compat=False)])))
    with pytest.raises(ToolError) as err:
        runners.make_runner("ais_bench-cli", _convert(toy, 1), batch_size=1).run_split(
            toy["bins"], toy["names"][:1], tmp_path / "out")
    assert "UnboundLocalError" in str(err.value) and "pip install 'setuptools<82'" in str(err.value)
    if frontends["tools"] is not None:
        use_generation(monkeypatch, "tools", frontends["tools"])
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(map(str, [blocker, *generation_path(
            "tools", frontends["tools"], compat=False)])))
        run = runners.make_runner("ais_bench-cli", _convert(toy, 1), batch_size=1).run_split(
            toy["bins"], toy["names"][:1], tmp_path / "out-tools")
        assert "--run_mode tensor" not in " ".join(run.command)  # chosen by the tool itself
        assert "aclruntime version:None is lower" in Path(run.log).read_text()
